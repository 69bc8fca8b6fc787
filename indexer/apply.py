"""`cir index apply ROOT CHANGES.jsonl`: live changes without a server, through the same log and lock.

One operation per line, as in POST /items/bulk, except that an upsert names its image file:

    {"op": "upsert", "id": "sku-1", "image": "img/sku-1.jpg", "metadata": {"title": "red shoe", "price": 40}}
    {"op": "patch", "id": "sku-2", "metadata": {"price": 35, "sale": null}}
    {"op": "delete", "id": "sku-3"}

Relative image paths are read from the file's folder. Images are embedded with the published
version's model and adapter (composed with the item text field when the version composes
items), exactly as the server embeds an upload (cir.search.ingest). Operations are written in
batches; each batch takes the root's write lock, so a server writing to the same root takes
turns with it and follows the log. A refused line is reported with its line number and the
rest are applied.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from cir.images import sniff_image_type
from cir.io import FileRefusedError, iter_jsonl, read_regular_file
from cir.runtimes import load_runtime_encoder
from cir.search.engine import SearchEngine
from cir.search.ingest import composed, composing_text, embed_item_sync, image_size
from cir.search.query import QueryError
from cir.stores import Delete, FaissRootStore, Patch, Upsert, check_encoder
from cir.stores.livemeta import WriteRejected, check_id, check_metadata

log = logging.getLogger(__name__)
OPS = ("upsert", "patch", "delete")
SUFFIX = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "bmp": ".bmp"}


@dataclass
class ApplyReport:
    """What `cir index apply` did: operations applied, and the refused ones as (line, id, reason)."""

    applied: int = 0
    refused: list[tuple[int, str, str]] = field(default_factory=list)
    last_change: int | None = None


class Applier:
    """Turns change lines into store operations, loading the encoder on the first image."""

    def __init__(self, store: FaissRootStore, base_dir: Path, max_bytes: int, max_pixels: int, device: str):
        self.store, self.base_dir = store, base_dir
        self.max_bytes, self.max_pixels, self.device = max_bytes, max_pixels, device
        self._engine: SearchEngine | None = None

    def engine(self, manifest: dict) -> SearchEngine:
        if self._engine is None:
            encoder = load_runtime_encoder(manifest["model"], adapter=manifest.get("adapter"), device=self.device)
            check_encoder(manifest, encoder)
            self._engine = SearchEngine(encoder, max_pixels=self.max_pixels)
        return self._engine

    def operation(self, raw: dict):
        """The Upsert/Patch/Delete of one line (WriteRejected when it cannot be one)."""
        if raw.get("op") not in OPS:
            raise WriteRejected(f"op must be one of {', '.join(OPS)}")
        item_id = check_id(raw.get("id"))
        if raw["op"] == "delete":
            return Delete(item_id)
        metadata = check_metadata(raw.get("metadata", {}))
        if raw["op"] == "patch":
            return Patch(item_id, metadata)
        view = self.store.open()
        if raw.get("image") is None:
            item = view.item(item_id)
            if item is None:
                raise WriteRejected(f"no item with id {item_id!r}: a new item needs an image", status="not_found")
            emb = view.embedding(item_id)
            fields = {k: item.get(k) for k in ("path", "width", "height", "sha256", "size")}
            return Upsert(item_id, emb, self._ranked(emb, metadata, view.manifest), metadata, **fields)
        return self._upsert_image(item_id, Path(self.base_dir, raw["image"]), metadata, view.manifest)

    def _ranked(self, emb, metadata: dict, manifest: dict):
        text, alpha = composing_text(metadata, manifest)
        if text is None:
            return emb
        return composed(emb, self.engine(manifest).encode_text_batch([text])[0][0], alpha)

    def _upsert_image(self, item_id: str, path: Path, metadata: dict, manifest: dict) -> Upsert:
        try:
            data = read_regular_file(path, self.max_bytes)
        except (OSError, FileRefusedError) as exc:
            raise WriteRejected(f"image {path}: {exc}", field="image") from None
        kind = sniff_image_type(data)
        if kind is None:
            raise WriteRejected(f"image {path} is not a JPEG, PNG, WebP or BMP file", field="image")
        try:
            emb, vec = embed_item_sync(self.engine(manifest), data, metadata, manifest)
        except QueryError as exc:
            raise WriteRejected(f"image {path}: {exc}", field="image") from None
        width, height = image_size(data)
        return Upsert(item_id, emb, vec, metadata, path=self.store.keep_images([(data, SUFFIX[kind])])[0], width=width,
                      height=height, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def apply_changes(root: Path, changes: Path, *, batch: int = 1000, max_bytes: int, max_pixels: int,
                  device: str = "auto") -> ApplyReport:
    """Apply a JSONL file of operations to an index root in batches; ValueError on an unreadable file."""
    store = FaissRootStore(root)
    try:
        store.open()  # fails early on a root with nothing published
        applier = Applier(store, changes.parent, max_bytes, max_pixels, device)
        report, pending = ApplyReport(), []
        for lineno, raw in iter_jsonl(changes):
            try:
                pending.append((lineno, applier.operation(raw)))
            except WriteRejected as exc:
                report.refused.append((lineno, str(raw.get("id")), str(exc)))
            if len(pending) >= batch:
                _flush(store, pending, report)
        _flush(store, pending, report)
        return report
    finally:
        store.close()


def _flush(store: FaissRootStore, pending: list, report: ApplyReport) -> None:
    if not pending:
        return
    for (lineno, _), result in zip(pending, store.write([op for _, op in pending])):
        if result.status == "ok":
            report.applied += 1
            report.last_change = result.change
        else:
            report.refused.append((lineno, result.id, result.error or result.status))
    pending.clear()
