"""The pending changes on one base version: what log replay and live writes build, views snapshot.

Each upsert or patch appends an overlay row (the item's record, its image embedding and ranked
vector); the row or base row it supersedes is marked dead (overlay) or excluded (base). Vectors
are searched by where they live: an upsert's in a new slot (cir.stores.overlay_graph), a patched
item's where they were (its slot, or its base row, which stays in the base search: nothing is
embedded or indexed again). Rows and slots are only appended, so a view (cir.stores.live) keeps a
consistent snapshot by remembering counts and copying a few small arrays and dicts.
"""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import numpy as np

from cir.index_factory import factory_kind
from cir.index_store import IndexRoot, IndexStoreError
from cir.io import atomic_write_bytes
from cir.stores.base import Delete, Patch, Upsert
from cir.stores.changelog import Record
from cir.stores.livemeta import (
    WriteRejected,
    check_id,
    check_metadata,
    check_types,
    merge_patch,
)
from cir.stores.overlay_graph import SlotGraph, overlay_ef

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
        self.vec_dead = self.excluded.copy()  # base rows whose vectors left the live set (a patch keeps them)
        self.base_patch: dict[int, int] = {}  # base row -> the overlay row of its patched item
        self.row_slot = np.full(16, -1, np.int64)  # each row's slot (-1: its vectors are a base row's)
        self.slot_row = np.empty(16, np.int64)  # each slot's latest row
        self.svec = np.empty((16, self.dim), np.float32)  # each slot's ranked vector
        self.nslots = 0
        self.types = {name: info.get("type") for name, info in base.fields.items()}
        self.seq = folded_seq  # the last record applied
        self.pending = 0  # records applied (what compaction would fold)
        self.oldest: float | None = None  # when the oldest pending record was applied here
        self._base_items: dict[str, dict] = {}  # base records looked up (a patch reads one twice)
        # HNSW/IVF versions: slots go into a graph of their own as they come; Flat: scanned exactly
        exact = factory_kind(base.manifest.get("factory", "")) in ("Flat", None)
        ef = int((base.manifest.get("search_params") or {}).get("efSearch") or 0)
        self.graph = None if exact else SlotGraph(self.dim, overlay_ef(ef))
        self._flush_lock = threading.Lock()

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
    @staticmethod
    def _grown(arr: np.ndarray, used: int, fill=None) -> np.ndarray:
        """A new array of twice the rows holding the first `used` (views of the old one keep reading it)."""
        grown = np.empty((2 * len(arr), *arr.shape[1:]), arr.dtype) if fill is None else \
            np.full((2 * len(arr), *arr.shape[1:]), fill, arr.dtype)
        grown[:used] = arr[:used]
        return grown

    def _grow(self) -> None:
        if self.n == len(self.alive):
            self.emb, self.vec = self._grown(self.emb, self.n), self._grown(self.vec, self.n)
            self.alive, self.row_slot = self._grown(self.alive, self.n, False), self._grown(self.row_slot, self.n, -1)
        if self.nslots == len(self.slot_row):
            self.slot_row, self.svec = self._grown(self.slot_row, self.nslots), self._grown(self.svec, self.nslots)

    def _remove(self, item_id: str) -> tuple[np.ndarray, np.ndarray, int | None, int] | None:
        """Take an item out of the live set: its (embedding, vector, base row, slot) or None.

        The base row and slot say where its vectors are searched (-1: no slot)."""
        found = self.current(item_id)
        if found is None:
            return None
        record, row, base_row = found
        if row is not None:
            self.alive[row] = False
            del self.by_id[item_id]
            return self.emb[row].copy(), self.vec[row].copy(), record.get("base_row"), int(self.row_slot[row])
        self.excluded[base_row] = True
        return self.base.row_embedding(base_row), np.asarray(self.base.vectors[base_row], np.float32), base_row, -1

    def _append(self, record: dict, emb: np.ndarray, vec: np.ndarray, slot: int) -> None:
        """Append a row; slot -1 on a new upsert gives it a new slot (its vectors are searched there)."""
        self._grow()
        if slot < 0 and record.get("base_row") is None:
            slot = self.nslots
            self.svec[slot] = vec
            self.nslots += 1
        if slot >= 0:
            self.slot_row[slot] = self.n
        elif record.get("base_row") is not None:
            self.base_patch[record["base_row"]] = self.n
        self.emb[self.n], self.vec[self.n] = emb, vec
        self.alive[self.n], self.row_slot[self.n] = True, slot
        self.rows.append(record)
        self.by_id[record["id"]] = self.n
        self.n += 1

    def flush(self) -> int:
        """Add the slots not yet in the graph to it; how many it holds (a writer calls this after its
        records, a view before its first search: replay and compaction, which never search, build no graph)."""
        if self.graph is None:
            return 0
        with self._flush_lock:
            n = self.nslots  # read before svec: a concurrent append grows svec before it counts the slot
            if self.graph.ntotal < n:
                self.graph.extend(self.svec[self.graph.ntotal: n])
            return self.graph.ntotal

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
                self._append(record, rec.embedding, rec.vector, -1)
            elif old is not None:  # a patch of a live item keeps its vectors where they are searched
                record["base_row"] = old[2]
                self._append(record, old[0], old[1], old[3])
        if old is not None and old[2] is not None and op != "patch":  # its vectors leave the base search
            self.vec_dead[old[2]] = True
            self.base_patch.pop(old[2], None)
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
