"""The pending changes on one base version: what log replay and live writes build, views snapshot.

Each upsert or patch appends an overlay row (the item's record, its image embedding and ranked
vector; a patch copies the vectors of the row it changes: nothing is embedded again); the row
or base row it supersedes is marked dead (overlay) or excluded (base). Rows are only appended,
never changed, so a view (cir.stores.live) keeps a consistent snapshot by remembering the row
count and copying two small masks and one dict.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np

from cir.index_factory import factory_kind
from cir.index_store import IndexRoot, IndexStoreError
from cir.stores import segments
from cir.io import atomic_write_bytes
from cir.stores.base import Delete, Patch, Upsert
from cir.stores.changelog import Record
from cir.stores.livemeta import WriteRejected, check_id, check_metadata, check_types, merge_patch

RECORD_KEYS = ("path", "width", "height", "sha256", "size")
BASE_CACHE = 200_000  # base item records kept from lookups (then the cache starts over)
DELETED_FILE = "deleted.npy"  # rows of a compacted version that are deleted but still in its FAISS index


def read_deleted(version_dir: Path, count: int) -> np.ndarray:
    """The deleted-rows mask a compaction left in a version (all False when it has none)."""
    path = version_dir / DELETED_FILE
    if not path.is_file():
        return np.zeros(count, bool)
    mask = np.load(path)
    if mask.shape != (count,):
        raise IndexStoreError(f"{path} has {mask.shape[0]} rows, the version {count}")
    return mask.astype(bool)


def write_deleted(version_dir: Path, mask: np.ndarray) -> None:
    """Persist a version's deleted-rows mask (atomically)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(mask, bool))
    atomic_write_bytes(version_dir / DELETED_FILE, buf.getvalue())


class Overlay:
    """Pending upserts, patches and deletes on top of one loaded base version (a cir.index_store.LoadedIndex)."""

    def __init__(self, base, lineage: tuple[str, ...], folded_seq: int):
        self.base = base
        self.lineage, self.folded_seq = lineage, folded_seq  # which log records apply (see cir.stores.live)
        self.dim = int(base.manifest["dim"])
        self.rows: list[dict] = []
        self.emb = np.empty((16, self.dim), np.float32)
        self.vec = np.empty((16, self.dim), np.float32)
        self.alive = np.zeros(16, bool)
        self.n = 0
        self.by_id: dict[str, int] = {}  # live overlay row of each id
        # base rows deleted, replaced or patched; a compacted version's deleted rows to begin with
        self.excluded = read_deleted(IndexRoot(base.root).version_dir(base.version), base.count)
        self.types = {name: info.get("type") for name, info in base.fields.items()}
        self.seq = folded_seq  # the last record applied
        self.pending = 0  # records applied (what compaction would fold)
        self.oldest: float | None = None  # when the oldest pending record was applied here
        self._base_items: dict[str, dict] = {}  # base records looked up (a patch reads one twice)
        # HNSW/IVF versions: overlay rows are sealed into small graphs (cir.stores.segments); Flat: scanned
        exact = factory_kind(base.manifest.get("factory", "")) in ("Flat", None)
        self.segment_rows = None if exact else segments.SEGMENT_ROWS
        self.ef = int((base.manifest.get("search_params") or {}).get("efSearch") or segments.DEFAULT_EF_SEARCH)
        self.segments: list[segments.Segment] = []  # replaced, never changed: views keep the list they saw
        self.sealed = 0

    # --- lookups ----------------------------------------------------------------------
    def current(self, item_id: str) -> tuple[dict, int | None, int | None] | None:
        """(record, overlay row, base row) of a live item, or None."""
        row = self.by_id.get(item_id)
        if row is not None:
            return self.rows[row], row, None
        item = self._base_items.get(item_id)
        if item is None:
            item = self.base.item(item_id)  # the base never changes: a lookup stays true
            if item is None:
                return None
            if len(self._base_items) >= BASE_CACHE:
                self._base_items.clear()
            self._base_items[item_id] = item
        if self.excluded[item["row"]]:
            return None
        return item, None, item["row"]

    # --- applying records -------------------------------------------------------------
    def _grow(self) -> None:
        if self.n < len(self.alive):
            return
        cap = 2 * len(self.alive)
        for name in ("emb", "vec"):  # a new array: views of the old one keep reading it
            grown = np.empty((cap, self.dim), np.float32)
            grown[: self.n] = getattr(self, name)[: self.n]
            setattr(self, name, grown)
        alive = np.zeros(cap, bool)
        alive[: self.n] = self.alive[: self.n]
        self.alive = alive

    def _remove(self, item_id: str) -> tuple[np.ndarray, np.ndarray, int | None] | None:
        """Take an item out of the live set: its (embedding, vector, base row its vectors are), or None."""
        found = self.current(item_id)
        if found is None:
            return None
        record, row, base_row = found
        if row is not None:
            self.alive[row] = False
            del self.by_id[item_id]
            return self.emb[row].copy(), self.vec[row].copy(), record.get("base_row")
        self.excluded[base_row] = True
        return self.base.row_embedding(base_row), np.asarray(self.base.vectors[base_row], np.float32), base_row

    def _append(self, record: dict, emb: np.ndarray, vec: np.ndarray) -> None:
        self._grow()
        self.emb[self.n], self.vec[self.n] = emb, vec
        self.alive[self.n] = True
        self.rows.append(record)
        self.by_id[record["id"]] = self.n
        self.n += 1
        if self.segment_rows and self.n - self.sealed >= self.segment_rows:
            self.segments = [*self.segments, segments.seal(self.vec, self.sealed, self.n, self.ef)]
            self.sealed = self.n

    def apply(self, rec: Record) -> None:
        """Apply one logged change (a replayed or just-appended record)."""
        h = rec.header
        op, item_id = h["op"], h["id"]
        old = self._remove(item_id)
        if op != "delete":
            record = {"id": item_id, **{k: h.get(k) for k in RECORD_KEYS}, "metadata": h.get("metadata") or {},
                      "change": rec.seq}
            try:
                self.types.update(check_types(record["metadata"], self.types))
            except WriteRejected:
                pass  # checked when written; a type the base later changed stays unfiltered for this item
            if op == "upsert":
                self._append(record, rec.embedding, rec.vector)
            elif old is not None:  # a patch of a live item keeps its vectors (and its base row: compaction keeps it)
                record["base_row"] = old[2]
                self._append(record, old[0], old[1])
        self.seq = max(self.seq, rec.seq)
        self.pending += 1
        self.oldest = self.oldest or time.time()

    # --- checking operations before they are logged -------------------------------------
    def prepare(self, ops, base_version: str) -> list[tuple[object, dict | None, WriteRejected | None]]:
        """Per operation: (op, record header to log or None, the rejection or None); earlier ops in the batch count."""
        batch: dict[str, dict | None] = {}  # id -> metadata after this batch's earlier ops (None: deleted)
        types = dict(self.types)
        out = []
        for op in ops:
            try:
                header = self._prepare_one(op, batch, types)
                header["base"] = base_version
                out.append((op, header, None))
            except WriteRejected as exc:
                out.append((op, None, exc))
        return out

    def _metadata_of(self, item_id: str, batch: dict) -> dict | None:
        if item_id in batch:
            return batch[item_id]
        found = self.current(item_id)
        if found is None:
            return None
        return {**{k: found[0].get(k) for k in RECORD_KEYS}, "metadata": found[0].get("metadata") or {}}

    def _prepare_one(self, op, batch: dict, types: dict) -> dict:
        item_id = check_id(op.id)
        if isinstance(op, Delete):
            if self._metadata_of(item_id, batch) is None:
                raise WriteRejected(f"no item with id {item_id!r}", status="not_found")
            batch[item_id] = None
            return {"op": "delete", "id": item_id}
        if isinstance(op, Patch):
            current = self._metadata_of(item_id, batch)
            if current is None:
                raise WriteRejected(f"no item with id {item_id!r} to patch", status="not_found")
            metadata = merge_patch(current["metadata"], check_metadata(op.metadata))
            types.update(check_types(metadata, types))
            batch[item_id] = {**current, "metadata": metadata}
            return {"op": "patch", "id": item_id, **{k: current.get(k) for k in RECORD_KEYS}, "metadata": metadata}
        if not isinstance(op, Upsert):
            raise WriteRejected(f"unknown operation {type(op).__name__}")
        metadata = {k: v for k, v in check_metadata(op.metadata).items() if v is not None}
        for name, vec in (("embedding", op.embedding), ("vector", op.vector)):
            if vec is None or np.shape(vec) != (self.dim,) or not np.isfinite(vec).all():
                raise WriteRejected(f"the {name} must be {self.dim} finite numbers", field=name)
        types.update(check_types(metadata, types))
        fields = {"path": op.path, "width": op.width, "height": op.height, "sha256": op.sha256, "size": op.size}
        batch[item_id] = {**fields, "metadata": metadata}
        return {"op": "upsert", "id": item_id, **fields, "metadata": metadata, "dim": self.dim}
