"""The Milvus store: a gallery as collections `NAME__VERSION` and the alias `NAME` (the published one).

`milvus://HOST:PORT/NAME` (`milvuss://` or CIR_MILVUS_TLS=1 for TLS; the token, `user:password`
or an API key, only from CIR_MILVUS_TOKEN). Publishing and rolling back switch the alias; a
collection is a version only once a build marked it complete (cir.stores.milvus_schema), so a
half-built one is never listed, opened or aliased. Writes go to the aliased collection and are
acknowledged once Milvus has them (its write-ahead log); reads are Strong unless
CIR_MILVUS_CONSISTENCY says otherwise (cir.stores.milvus_view). Any number of
service replicas can share one collection: nothing here is process state but short caches.
A server that cannot be reached or times out raises StoreUnavailableError (HTTP 503), never hangs.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
import weakref
from collections.abc import Iterator, Sequence

from cir.errors import StoreError, StoreUnavailableError, error_text
from cir.stores.base import GalleryStore, Operation
from cir.stores.milvus_expr import literal
from cir.stores.milvus_meta import delete_entry, meta_collection, read_entry, write_entry
from cir.stores.milvus_schema import LOAD_TIMEOUT_S, SEPARATOR, MilvusLocation, make_schema, scalar_index_params
from cir.stores.milvus_view import QUERY_LIMIT, MilvusView
from cir.stores.milvus_write import apply_operations

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
CONSISTENCY_LEVELS = ("Strong", "Session", "Bounded", "Eventually")
_TRANSIENT = ("unavailable", "connect", "deadline", "timeout", "timed out", "not ready", "channel", "closed",
              "no available", "not loaded", "socket", "refused")


def _transient(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(word in text for word in _TRANSIENT)


def _message(exc: BaseException) -> str:
    """pymilvus's own message (its str() repeats a gRPC dump), on one line and short."""
    text = " ".join(str(getattr(exc, "message", None) or error_text(exc, False)).split())
    return text if len(text) <= 300 else text[:297] + "..."


class MilvusStore(GalleryStore):
    """A gallery in Milvus: versions are complete collections, the alias is the published one."""

    def __init__(self, spec: str, *, timeout_s: float | None = None, consistency: str | None = None, **_options):
        self.location = MilvusLocation.parse(spec)
        self.name = f"Milvus collection {self.location}"
        self.timeout_s = float(timeout_s or os.environ.get("CIR_MILVUS_TIMEOUT_S") or DEFAULT_TIMEOUT_S)
        self.consistency = consistency or os.environ.get("CIR_MILVUS_CONSISTENCY") or "Strong"
        if self.consistency not in CONSISTENCY_LEVELS:
            raise StoreError(f"CIR_MILVUS_CONSISTENCY must be one of {', '.join(CONSISTENCY_LEVELS)}, "
                             f"got {self.consistency!r}")
        self._client = None
        self._views: weakref.WeakSet = weakref.WeakSet()

    # --- the client ------------------------------------------------------------------------
    def client(self):
        """The pymilvus client, connected on first use (StoreUnavailableError when the server is down)."""
        if self._client is None:
            try:
                from pymilvus import MilvusClient  # noqa: PLC0415 - optional dependency (the `milvus` extra)
            except ImportError as exc:
                raise StoreError("the Milvus store needs pymilvus: pip install 'cir[milvus]'") from exc
            try:
                # its own connection: pymilvus shares one per address, which a close() elsewhere would end
                self._client = MilvusClient(uri=self.location.uri, token=os.environ.get("CIR_MILVUS_TOKEN", ""),
                                            timeout=self.timeout_s, alias=f"cir-{uuid.uuid4().hex}")
            except Exception as exc:  # noqa: BLE001 - pymilvus raises several types for a refused dial
                raise StoreUnavailableError(f"cannot reach the Milvus server of {self.location}: {_message(exc)}") from exc
        return self._client

    def call(self, method: str, *args, **kwargs):
        """One pymilvus call with the store's timeout; failures become StoreError / StoreUnavailableError."""
        client = self.client()
        # pymilvus bounds its retries by `timeout` only when it is an int (a float retries 75 times, minutes)
        kwargs["timeout"] = math.ceil(kwargs.get("timeout") or self.timeout_s)
        try:
            return getattr(client, method)(*args, **kwargs)
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - pymilvus and grpc raise many types
            cls = StoreUnavailableError if _transient(exc) else StoreError
            raise cls(f"Milvus {method} on {self.location}: {_message(exc)}") from exc

    def scan(self, collection: str, fields: list[str], expr: str = "", batch: int = 4096) -> Iterator[list[dict]]:
        """Every row's `fields` (and id), in batches, by primary-key paging (Strong)."""
        last = None
        while True:
            where = f"id > {literal(last)}" if last is not None else ""
            where = " and ".join(f"({w})" for w in (where, expr) if w)
            rows = self.call("query", collection, filter=where or "id != \"\"", output_fields=["id", *fields],
                             limit=batch, consistency_level="Strong")
            if not rows:
                return
            rows.sort(key=lambda r: r["id"])
            yield rows
            if len(rows) < batch:
                return
            last = rows[-1]["id"]

    # --- versions ----------------------------------------------------------------------------
    def _alias_target(self) -> str | None:
        if not self.call("has_collection", self.location.name):  # resolves aliases; no error logged when absent
            return None
        try:
            return self.call("describe_alias", self.location.name)["collection_name"]
        except StoreUnavailableError:
            raise
        except StoreError:
            return None  # no such alias: nothing published

    def version_of(self, collection: str) -> str:
        """The version name of one of this gallery's collections."""
        return collection[len(self.location.name) + len(SEPARATOR):]

    def current_version(self) -> str | None:
        """The version the alias NAME points at, or None."""
        target = self._alias_target()
        return None if target is None else self.version_of(target)

    def describe(self, version: str) -> dict | None:
        """A version's collection description, or None when it does not exist."""
        collection = self.location.collection(version)
        if not self.call("has_collection", collection):
            return None
        return self.call("describe_collection", collection)

    def manifest(self, version: str) -> dict | None:
        """The manifest of a complete version, or None (missing or partial)."""
        entry = read_entry(self, version)
        if entry is None or not entry["complete"] or not self.call("has_collection", self.location.collection(version)):
            return None
        return entry["manifest"]

    def collections(self) -> list[str]:
        """Every collection of this gallery, complete or partial."""
        prefix, meta = self.location.name + SEPARATOR, meta_collection(self.location.name)
        return sorted(c for c in self.call("list_collections") if c.startswith(prefix) and c != meta)

    def versions(self) -> list[str]:
        """Complete versions, oldest first."""
        names = [self.version_of(c) for c in self.collections()]
        return [v for v in names if self.manifest(v) is not None]

    def unpublished_reason(self) -> str | None:
        """Why there is nothing to serve (no alias), or None; StoreUnavailableError while the server is down."""
        if self.current_version() is not None:
            return None
        return (f"{self.location} has no published version (no alias {self.location.name!r}): build one with "
                f"`cir index build --store {self.location} ...`")

    def open(self, version: str | None = None) -> MilvusView:
        """A read view of a complete version (default: the aliased one), loaded into query nodes."""
        version = version or self.current_version()
        if version is None:
            raise StoreError(f"{self.location} has no published version")
        manifest = self.manifest(version)
        if manifest is None:
            raise StoreError(f"{self.location}: version {version!r} is missing or was never completed")
        self._check_dim(version, manifest)
        collection = self.location.collection(version)
        self.call("load_collection", collection, timeout=max(self.timeout_s, LOAD_TIMEOUT_S))
        view = MilvusView(self, collection, version, manifest)
        self._views.add(view)
        return view

    def _check_dim(self, version: str, manifest: dict) -> None:
        info = self.describe(version) or {}
        dims = [int(f.get("params", {}).get("dim", 0)) for f in info.get("fields", []) if f.get("name") == "vector"]
        if dims != [int(manifest.get("dim", -1))]:
            raise StoreError(f"{self.location}: version {version!r} has vectors of dim {dims[:1]}, its manifest "
                             f"says {manifest.get('dim')}: rebuild it")

    def publish(self, version: str) -> None:
        """Point the alias at a complete version (publish, rollback); a partial collection is refused."""
        if self.manifest(version) is None:
            raise StoreError(f"{self.location}: {version!r} is not a complete version "
                             f"(versions: {', '.join(self.versions()) or 'none'})")
        collection = self.location.collection(version)
        if self._alias_target() is None:
            self.call("create_alias", collection, self.location.name)
        else:
            self.call("alter_alias", collection, self.location.name)
        log.info("published %s -> %s", self.location, collection)

    # --- building ----------------------------------------------------------------------------
    def create_version(self, version: str, dim: int, columns: dict, with_embedding: bool) -> str:
        """A new, empty (partial) collection for `version`; a leftover partial one of that name is dropped."""
        collection = self.location.collection(version)
        if self.call("has_collection", collection):
            if self.manifest(version) is not None or self._alias_target() == collection:
                raise StoreError(f"{self.location}: version {version!r} already exists")
            self.call("drop_collection", collection)
        schema = make_schema(self.client(), dim, columns, with_embedding)
        self.call("create_collection", collection, schema=schema, consistency_level="Strong")
        return collection

    def complete_version(self, version: str, manifest: dict, index: dict, expected: int) -> None:
        """Flush, index, load and count a filled collection, then mark it complete (publishable)."""
        collection = self.location.collection(version)
        slow = max(self.timeout_s, LOAD_TIMEOUT_S)
        # Sealed segments get the real index; rows left in growing segments are searched with an
        # interim index of lower recall (seen: HNSW recall@10 0.72 at 5k rows without this flush).
        self.call("flush", collection, timeout=slow)
        self.call("create_index", collection, scalar_index_params(self.client(), manifest["milvus"]["columns"], index),
                  timeout=slow)
        self.call("load_collection", collection, timeout=slow)
        count = int(self.call("query", collection, filter="", output_fields=["count(*)"],
                              consistency_level="Strong")[0]["count(*)"])
        if count != expected:
            raise StoreError(f"{collection} holds {count} items after the build, expected {expected}")
        write_entry(self, version, manifest, complete=True)

    def set_manifest(self, version: str, manifest: dict) -> None:
        """Replace a complete version's manifest (an incremental build's counts and source)."""
        write_entry(self, version, manifest, complete=True)

    def drop_partial(self) -> list[str]:
        """Drop this gallery's partial collections (a killed build's), never the aliased one."""
        target = self._alias_target()
        dropped = []
        for collection in self.collections():
            version = self.version_of(collection)
            if collection != target and self.manifest(version) is None:
                self.call("drop_collection", collection)
                delete_entry(self, version)
                dropped.append(version)
        return dropped

    def prune(self, keep: int) -> list[str]:
        """Drop the oldest complete versions beyond `keep` (never the published one)."""
        current = self.current_version()
        old = [v for v in self.versions() if v != current]
        drop = old[:max(0, len(old) - max(keep - 1, 0))]
        for version in drop:
            self.call("drop_collection", self.location.collection(version))
            delete_entry(self, version)
        return drop

    # --- writes --------------------------------------------------------------------------------
    def write(self, ops: Sequence[Operation]) -> list:
        """Apply operations to the published collection, in order, each acknowledged by Milvus."""
        version = self.current_version()
        if version is None:
            raise StoreError(f"{self.location} has no published version to write to")
        manifest = self.manifest(version)
        results = apply_operations(self, self.location.collection(version), manifest, ops)
        for view in list(self._views):
            view.invalidate()
        return results

    def close(self) -> None:
        """Close the client."""
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001 - closing a dead connection may raise; nothing to do
                pass
            self._client = None


__all__ = ["MilvusStore", "QUERY_LIMIT"]
