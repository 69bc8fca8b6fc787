"""A GalleryView over one Milvus collection: searches, records, embeddings and facets.

Every read runs at the store's consistency level: Strong by default, so an acknowledged write
(by this or any other replica) is seen by the next query; Session (CIR_MILVUS_CONSISTENCY)
sees this process's own writes at once and other replicas' within Milvus's bound, and answers
without waiting for the server's time tick (200 ms by default). The only caches are short: a hit's record from the search
that found it (read back by the engine a moment later, at most `RECORD_TTL_S` old), the item
count (`COUNT_TTL_S`) and the facets (`FACETS_TTL_S`, counted by scanning the scalar fields;
a write by this process clears them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import numpy as np

from cir.metadata import BOOLEAN, OBJECT, STRING, TAGS, TIME_TYPES, format_epoch
from cir.stores.milvus_expr import literal, to_expression
from cir.stores.milvus_schema import RECORD_FIELDS, row_record

log = logging.getLogger(__name__)

RECORD_TTL_S, COUNT_TTL_S, FACETS_TTL_S = 2.0, 2.0, 30.0
MAX_FACET_VALUES = 1000
QUERY_LIMIT = 16384  # Milvus's largest offset + limit of one query


class MilvusView:
    """One searchable collection (a version), as the engine sees it (cir.stores.base.GalleryView)."""

    def __init__(self, store, collection: str, version: str, manifest: dict):
        self.store, self.collection, self.version = store, collection, version
        self.reads = {"consistency_level": store.consistency}
        milvus = manifest["milvus"]
        self.columns: dict[str, dict] = milvus["columns"]
        self.with_embedding: bool = milvus["embedding_field"]
        index_type = milvus["index"]["index_type"]
        self.search_params = {"metric_type": "IP", "params": dict(milvus.get("search_params") or {})}
        self.index_type = index_type
        self._lock = threading.Lock()
        self._records: dict[str, tuple[float, dict]] = {}
        self._count: tuple[float, int] | None = None
        self._facets: tuple[float, dict] | None = None
        self.manifest = dict(manifest, version=version, count=self.count, fields=self.fields)

    # --- sizes and facets ----------------------------------------------------------------
    @property
    def count(self) -> int:
        """Items in the collection (a Strong count, cached for COUNT_TTL_S)."""
        cached = self._count
        if cached is None or time.monotonic() - cached[0] > COUNT_TTL_S:
            rows = self.store.call("query", self.collection, filter="", output_fields=["count(*)"], **self.reads)
            cached = self._count = (time.monotonic(), int(rows[0]["count(*)"]))
        return cached[1]

    @property
    def fields(self) -> dict[str, dict]:
        """The filterable fields with facets, as the FAISS manifest's `fields` (recounted every FACETS_TTL_S)."""
        cached = self._facets
        if cached is None or time.monotonic() - cached[0] > FACETS_TTL_S:
            with self._lock:
                cached = self._facets
                if cached is None or time.monotonic() - cached[0] > FACETS_TTL_S:
                    cached = self._facets = (time.monotonic(), self._count_facets())
        return cached[1]

    def _count_facets(self) -> dict[str, dict]:
        names = [n for info in self.columns.values() for n in (info["field"], info["flag"]) if n]
        if not self.columns:
            return {}
        counters = {name: Counter() for name in self.columns}
        ranges: dict[str, list] = {}
        for batch in self.store.scan(self.collection, names):
            for row in batch:
                for name, info in self.columns.items():
                    _observe(counters[name], ranges, name, info, row)
        return {name: _facet(info["type"], counters[name], ranges.get(name)) for name, info in self.columns.items()}

    def invalidate(self) -> None:
        """Forget cached counts, facets and records (after a write by this process)."""
        self._count = self._facets = None
        self._records.clear()

    # --- search ----------------------------------------------------------------------------
    def _search(self, data: list, k: int, expr: str = "") -> list[list[dict]]:
        return self.store.call("search", self.collection, data=data, limit=int(k), filter=expr, anns_field="vector",
                               search_params=self.search_params, output_fields=RECORD_FIELDS, **self.reads)

    def _hits(self, hits: list[dict]) -> tuple[np.ndarray, list[str]]:
        now = time.monotonic()
        if len(self._records) > 20_000:
            self._records.clear()
        for h in hits:
            entity = dict(h.get("entity") or {}, id=h["id"])
            self._records[h["id"]] = (now, row_record(entity))
        return np.array([h["distance"] for h in hits], np.float32), [h["id"] for h in hits]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k inner-product search of (B, dim) queries: scores (B, k; -inf padded) and ids."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.manifest["dim"]:
            raise ValueError(f"query dim {q.shape[1]} != index dim {self.manifest['dim']}")
        results = self._search(q.tolist(), k)
        scores = np.full((len(q), k), -np.inf, np.float32)
        ids = []
        for row, hits in enumerate(results):
            s, i = self._hits(list(hits))
            scores[row, :len(s)] = s
            ids.append(i)
        return scores, ids

    def search_where(self, query: np.ndarray, k: int, bound) -> tuple[np.ndarray, list[str]]:
        """Top-k of one query among the items matching `bound`, filtered inside Milvus."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        expr = to_expression(bound, self.columns)
        return self._hits(list(self._search(q.tolist(), k, expr)[0]))

    # --- items -----------------------------------------------------------------------------
    def _get(self, item_id: str, fields: list[str]) -> dict | None:
        rows = self.store.call("query", self.collection, filter=f"id == {literal(item_id)}", output_fields=fields,
                               **self.reads)
        return rows[0] if rows else None

    def item(self, item_id: str) -> dict | None:
        """An item's record (id, path, width, height, sha256, metadata, ...), or None."""
        cached = self._records.get(item_id)
        if cached is not None and time.monotonic() - cached[0] <= RECORD_TTL_S:
            return cached[1]
        row = self._get(item_id, RECORD_FIELDS)
        return None if row is None else row_record(row)

    def embedding(self, item_id: str) -> np.ndarray | None:
        """The stored unit image embedding of an item, or None."""
        field = "embedding" if self.with_embedding else "vector"
        row = self._get(item_id, [field])
        return None if row is None else np.asarray(row[field], dtype=np.float32)

    def ids_with_sha256(self, sha256: str) -> list[str]:
        """The ids of the items whose image bytes have this SHA-256 (hex)."""
        rows = self.store.call("query", self.collection, filter=f"sha256 == {literal(str(sha256))}",
                               output_fields=["id", "seq"], limit=QUERY_LIMIT, **self.reads)
        return [r["id"] for r in sorted(rows, key=lambda r: (r["seq"], r["id"]))]

    def browse(self, n: int, order: str = "random", seed: int | None = None) -> list[str]:
        """Up to n ids: 'newest' (latest written first) or 'random' (the nearest to a seeded random direction)."""
        n = max(0, min(int(n), self.count, QUERY_LIMIT))
        if order not in ("random", "newest"):
            raise ValueError(f"order must be 'random' or 'newest', got {order!r}")
        if n == 0:
            return []
        if order == "random":
            # Milvus has no sampling: a seeded random direction's neighbours are a cheap, varied screen.
            v = np.random.default_rng(seed).normal(size=(1, int(self.manifest["dim"]))).astype(np.float32)
            return [h["id"] for h in self._search((v / np.linalg.norm(v)).tolist(), n)[0]]
        return self._newest(n)

    def _newest(self, n: int) -> list[str]:
        # No ORDER BY in Milvus: widen a window back from now until it holds n items.
        now_ms, window = int(time.time() * 1000), 3_600_000
        while True:
            since = now_ms - window
            rows = self.store.call("query", self.collection, filter=f"seq >= {since}", output_fields=["id", "seq"],
                                   limit=QUERY_LIMIT, **self.reads)
            if len(rows) >= n or since <= 0 or len(rows) >= QUERY_LIMIT:
                rows.sort(key=lambda r: (-r["seq"], r["id"]))
                return [r["id"] for r in rows[:n]]
            window *= 8

    def close(self) -> None:
        """Nothing to release: the store owns the client."""


def _observe(counter: Counter, ranges: dict, name: str, info: dict, row: dict) -> None:
    value = row.get(info["field"])
    if info["type"] == TAGS:
        counter.update(set(value or ()))
        counter["\0present"] += bool(value)
        return
    if not row.get(info["flag"]):
        return
    counter["\0present"] += 1
    if info["type"] == OBJECT:
        return
    if info["type"] in (STRING, BOOLEAN):
        counter[value] += 1
    else:
        lo_hi = ranges.setdefault(name, [value, value])
        lo_hi[0], lo_hi[1] = min(lo_hi[0], value), max(lo_hi[1], value)


def _facet(ftype: str, counter: Counter, lo_hi: list | None) -> dict:
    """One field's facets, with the keys cir.columns.describe gives a FAISS version."""
    present = counter.pop("\0present", 0)
    info: dict = {"type": ftype, "count": int(present)}
    if ftype in (STRING, TAGS):
        info["distinct"] = len(counter)
        if len(counter) <= MAX_FACET_VALUES:
            info["values"] = {v: int(c) for v, c in sorted(counter.items())}
    elif ftype == BOOLEAN:
        info["values"] = {"true": int(counter.get(True, 0)), "false": int(counter.get(False, 0))}
    elif present and lo_hi:
        lo, hi = float(lo_hi[0]), float(lo_hi[1])
        if ftype in TIME_TYPES:
            lo, hi = format_epoch(lo, ftype), format_epoch(hi, ftype)
        info.update(min=lo, max=hi)
    return info
