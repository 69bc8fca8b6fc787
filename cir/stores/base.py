"""The store interface: the one way the engine, the service and the CLIs reach a gallery.

A *store* is where a gallery lives: the versioned FAISS root (cir.stores.faiss_root, the
default) or a Milvus collection (cir.stores.milvus). It names its published snapshot
(`current_version`), opens read views of it (`open`) and takes writes (`write`). A *view*
(`GalleryView`) is what one query searches: top-k over the ranked vectors, optionally under a
filter bound to the view's fields, the items' records and stored image embeddings, and the
fields a filter can use with their facets.

Search, filters, composition, paging and the write routes go through these two types, never
around them, so every store gets every feature through one code path. Writes are operations
(`Upsert`, `Patch`, `Delete`) whose vectors the caller has already embedded: a store never
loads a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

import numpy as np

from cir.errors import ReadOnlyStoreError, StoreError

if TYPE_CHECKING:
    from cir.filters import BoundFilter


@dataclass(frozen=True)
class Upsert:
    """Insert an item or replace it whole: its image embedding, the vector the index ranks, record."""

    id: str
    embedding: np.ndarray  # unit image embedding (what reference_id queries read)
    vector: np.ndarray  # what the index ranks: the embedding, or the item composed with its text
    metadata: dict = field(default_factory=dict)
    path: str | None = None  # the stored image, so /images serves it and a full build can re-embed it
    width: int | None = None
    height: int | None = None
    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class Patch:
    """Merge metadata into an existing item (JSON merge patch: a None value removes the field)."""

    id: str
    metadata: dict


@dataclass(frozen=True)
class Delete:
    """Remove an item from every result, image route and reference lookup."""

    id: str


Operation = Upsert | Patch | Delete


@dataclass(frozen=True)
class WriteResult:
    """What one operation did: status 'ok', 'not_found' or 'invalid' (with `error`), and the change that wrote it."""

    id: str
    op: str
    status: str
    change: int | None = None
    error: str | None = None


@runtime_checkable
class GalleryView(Protocol):
    """One searchable snapshot of a gallery, as every query that starts on it sees it."""

    version: str
    manifest: dict  # model, adapter, fingerprint, dim, factory, default_alpha, fields, ...
    count: int

    @property
    def fields(self) -> dict[str, dict]:
        """The filterable fields: type, count, facet values or min/max (what GET /facets shows)."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k inner-product search of (B, dim) queries: scores (B, <=k) and ids per query."""

    def search_where(self, query: np.ndarray, k: int, bound: "BoundFilter") -> tuple[np.ndarray, list[str]]:
        """Top-k of one query among the items that match `bound` (a filter bound to `fields`)."""

    def item(self, item_id: str) -> dict | None:
        """An item's record (id, path, width, height, sha256, metadata, ...), or None."""

    def embedding(self, item_id: str) -> np.ndarray | None:
        """The stored unit image embedding of an item, or None."""

    def ids_with_sha256(self, sha256: str) -> list[str]:
        """The ids of the items whose image bytes have this SHA-256 (hex): an upload that is a gallery item."""

    def browse(self, n: int, order: str = "random", seed: int | None = None) -> list[str]:
        """Up to n ids to show before any search: 'random' (seeded when seed is given) or 'newest' first."""

    def close(self) -> None:
        """Release what the view holds open (files, connections)."""


class GalleryStore:
    """Where a gallery lives: its published versions, read views of them, and writes."""

    #: a name for logs and public messages, never a server path
    name: str = "store"

    def current_version(self) -> str | None:
        """The published version's name, or None while nothing is published."""
        raise NotImplementedError

    def versions(self) -> list[str]:
        """The complete versions kept, oldest first."""
        raise NotImplementedError

    def unpublished_reason(self) -> str | None:
        """Why there is nothing to serve yet (with what to do about it), or None once a version is published."""
        return None if self.current_version() is not None else f"{self.name} has no published version"

    def open(self, version: str | None = None) -> GalleryView:
        """A read view of `version` (default: the published one); StoreError if it cannot be opened."""
        raise NotImplementedError

    def publish(self, version: str) -> None:
        """Make a complete version the published one (also the rollback)."""
        raise NotImplementedError

    def write(self, ops: Sequence[Operation]) -> list[WriteResult]:
        """Apply operations durably, in order; one result per operation. Acknowledged means durable."""
        raise ReadOnlyStoreError(f"{self.name} does not take writes")

    def refresh(self) -> bool:
        """Pick up writes other processes made since the last look; True when the next view differs."""
        return False

    def keep_images(self, images: Sequence[tuple[bytes, str]]) -> list[str]:
        """Keep upserted images' (bytes, suffix) where /images serves them and a full build can embed them; their paths."""
        raise ReadOnlyStoreError(f"{self.name} does not keep uploaded images")

    def close(self) -> None:
        """Release the store's own resources (clients, locks)."""


def check_encoder(manifest: dict, encoder) -> None:
    """StoreError unless a version was built with this encoder (same fingerprint and dim)."""
    version, fingerprint = manifest.get("version"), manifest.get("fingerprint")
    if fingerprint != encoder.fingerprint:
        raise StoreError(
            f"index {version} was built with encoder fingerprint {str(fingerprint)[:12]}, "
            f"but the running encoder {encoder.name} has {encoder.fingerprint[:12]}; "
            "rebuild the index with this model or use the index's model")
    if int(manifest.get("dim", encoder.dim)) != encoder.dim:
        raise StoreError(f"index {version} has dim {manifest.get('dim')}, the encoder {encoder.dim}")
