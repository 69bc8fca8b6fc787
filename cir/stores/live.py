"""A live view: a published version less its deleted, replaced and patched rows, plus the overlay rows.

A search ranks the base version's rows through its own index, with the rows whose vectors left
the live set masked out by the ID-selector plan of cir.index_search (so exact on Flat; on HNSW/IVF
with the widened efSearch/nprobe a filter gets), and the upserts' slots through the overlay's
graph (cir.stores.overlay_graph; scanned on Flat); the two top-k lists are merged by score. A
patched base item is found through its base row, ranked under its id with its new metadata.
Filters run on the base columns and on columns built for the overlay rows with the same typing
(cir.columns), and facets are computed over the live set. A view is a snapshot: writes after it
was made are not seen by the queries that hold it.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from cir.columns import Column, Columns, build_columns, describe, merged_dictionary, recode
from cir.metadata import STRING, TAGS
from cir.stores.overlay import Overlay
from cir.stores.overlay_graph import slot_topk
from cir.version_edit import empty_column


def _concat(ftype: str, a: Column, keep: np.ndarray, b: Column) -> Column:
    """Column a's kept rows followed by column b's rows (string/tag codes mapped to one dictionary)."""
    if ftype in (STRING, TAGS):
        union, a_map, b_map = merged_dictionary(a, b)
        if ftype == STRING:
            codes = [recode(np.asarray(a.data)[keep], a_map), recode(np.asarray(b.data), b_map)]
            return Column(ftype, np.concatenate(codes), dictionary=union)
        new_row = np.cumsum(keep) - 1
        kept = keep[a.rows]
        rows = np.concatenate([new_row[a.rows[kept]], b.rows + int(keep.sum())]).astype(np.int32)
        data = np.concatenate([a_map[a.data[kept]], b_map[b.data] if len(b.data) else np.empty(0, np.int32)])
        return Column(ftype, data.astype(np.int32), rows=rows, dictionary=union)
    return Column(ftype, np.concatenate([np.asarray(a.data)[keep], b.data]))


class LiveView:
    """One snapshot of a live gallery (cir.stores.base.GalleryView)."""

    def __init__(self, overlay: Overlay, owner=None):
        base = overlay.base
        self.base, self._owner = base, owner
        self.version = base.version
        self.n = overlay.n
        self._rows = overlay.rows  # entries [:n] never change
        self._emb, self._vec = overlay.emb, overlay.vec
        self._alive = overlay.alive[: self.n].copy()
        self._by_id = dict(overlay.by_id)
        self._excluded = overlay.excluded.copy() if overlay.excluded.any() else None
        self._types = dict(overlay.types)
        self._overlay, self._graph = overlay, overlay.graph
        self._svec, self._slot_row = overlay.svec, overlay.slot_row[: overlay.nslots].copy()
        self._vec_dead = overlay.vec_dead.copy() if overlay.vec_dead.any() else None
        self._base_patch = dict(overlay.base_patch)
        self.seq, self.pending = overlay.seq, overlay.pending
        self._live_rows = np.flatnonzero(self._alive)
        n_excluded = 0 if self._excluded is None else int(self._excluded.sum())
        self.count = base.count - n_excluded + len(self._live_rows)
        self.manifest = {**base.manifest, "count": self.count, "live": {"seq": self.seq, "pending": self.pending}}
        self.columns = base.columns  # the base version's (cir.filters reads a view's fields, not these)

    @cached_property
    def ids(self) -> list[str]:
        """Every live id: the base version's remaining rows in order, then the overlay's items."""
        if not self.changed:
            return self.base.ids
        keep = np.ones(self.base.count, bool) if self._excluded is None else ~self._excluded
        return [self.base.ids[r] for r in np.flatnonzero(keep)] + [self._rows[r]["id"] for r in self._live_rows]

    @property
    def changed(self) -> bool:
        """True when the view differs from its base version."""
        return self._excluded is not None or self.n > 0

    # --- fields and filters -------------------------------------------------------------
    @cached_property
    def _base_columns(self) -> Columns:
        """The base columns, with an empty column for each field only live writes have."""
        cols = self.base.columns or Columns(self.base.count, {})
        missing = {f: empty_column(t, cols.count) for f, t in self._types.items() if f not in cols.fields}
        return Columns(cols.count, {**cols.fields, **missing}) if missing else cols

    @cached_property
    def _overlay_columns(self) -> Columns:
        return build_columns(self._types, [self._rows[r]["metadata"] for r in range(self.n)])

    @cached_property
    def fields(self) -> dict[str, dict]:
        """Types and facets over the live set (computed once per view)."""
        if not self.n and not self.pending:
            return self.base.fields  # (a compaction's masked rows are already left out of the manifest's)
        keep = np.ones(self.base.count, bool) if self._excluded is None else ~self._excluded
        base, over = self._base_columns, self._overlay_columns
        merged = {f: _concat(t, base.fields[f], keep, _take(over.fields[f], self._live_rows, self.n))
                  for f, t in self._types.items()}
        return describe(Columns(self.count, merged))

    # --- search -------------------------------------------------------------------------
    @cached_property
    def _graphed(self) -> int:
        """How many of this view's slots the overlay graph holds (brought up to date on the first search)."""
        return min(self._overlay.flush(), len(self._slot_row))

    @cached_property
    def _live_slots(self) -> np.ndarray:
        """Per slot: does the view hold its latest row live (once per view)."""
        return self._alive[self._slot_row] if len(self._slot_row) else np.zeros(0, bool)

    def _merge(self, base_scores, base_ids, query: np.ndarray, live_slots: np.ndarray, k: int):
        """The base hits and the top-k of the live slots, merged by score."""
        if not live_slots.any():
            return np.asarray(base_scores, np.float32)[: len(base_ids)], list(base_ids)
        s, slots = slot_topk(self._svec, self._graph, self._graphed, live_slots, query, k)
        scores = np.concatenate([np.asarray(base_scores, np.float32)[: len(base_ids)], s])
        ids = list(base_ids) + [self._rows[r]["id"] for r in self._slot_row[slots]]
        order = np.argsort(-scores, kind="stable")[:k]
        return scores[order], [ids[i] for i in order]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k over the live set of each of (B, dim) queries."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if not self.changed:
            return self.base.search(q, k)
        if self._vec_dead is None:
            b_scores, b_ids = self.base.search(q, k)
            per = [(b_scores[i], b_ids[i]) for i in range(len(q))]
        else:
            keep, packed = self._keep
            per = [self.base.search_filtered(row, k, keep, packed) for row in q]
        out = [self._merge(s, ids, q[i], self._live_slots, k) for i, (s, ids) in enumerate(per)]
        width = max((len(ids) for _, ids in out), default=0)
        scores = np.full((len(q), width), -np.inf, np.float32)
        for i, (s, _) in enumerate(out):
            scores[i, : len(s)] = s
        return scores, [ids for _, ids in out]

    @cached_property
    def _keep(self) -> tuple[np.ndarray, tuple[int, np.ndarray]]:
        """The base rows whose vectors are live, and their (count, packed bits) for cir.index_search (once per view)."""
        keep = ~self._vec_dead
        return keep, (int(np.count_nonzero(keep)), np.packbits(keep, bitorder="little"))

    def search_where(self, query: np.ndarray, k: int, bound) -> tuple[np.ndarray, list[str]]:
        """Top-k of one query among the live items matching `bound` (a filter bound to `fields`)."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        mask = bound.mask(self._base_columns)
        over = bound.mask(self._overlay_columns) if self.n else np.zeros(0, bool)
        if self._excluded is not None:
            mask = mask & ~self._excluded
        if self._base_patch:  # a patched base item matches by its new metadata, through its base row
            base_rows = np.fromiter(self._base_patch.keys(), np.int64, len(self._base_patch))
            rows = np.fromiter(self._base_patch.values(), np.int64, len(self._base_patch))
            mask[base_rows] = over[rows]
        b_scores, b_ids = self.base.search_filtered(q, k, mask)
        live_slots = self._live_slots & over[self._slot_row] if len(self._slot_row) else self._live_slots
        return self._merge(b_scores, b_ids, q, live_slots, k)

    # --- items --------------------------------------------------------------------------
    def _base_item(self, item_id: str) -> dict | None:
        item = self.base.item(item_id)
        if item is None or (self._excluded is not None and self._excluded[item["row"]]):
            return None
        return item

    def item(self, item_id: str) -> dict | None:
        """The live record of an item (an overlay item's has its `change`), or None."""
        row = self._by_id.get(item_id)
        return dict(self._rows[row]) if row is not None else self._base_item(item_id)

    def embedding(self, item_id: str) -> np.ndarray | None:
        """The stored unit image embedding of a live item, or None."""
        row = self._by_id.get(item_id)
        if row is not None:
            return np.array(self._emb[row], dtype=np.float32)
        return self.base.embedding(item_id) if self._base_item(item_id) is not None else None

    def ids_with_sha256(self, sha256: str) -> list[str]:
        """Live items whose image has this SHA-256: base rows still live, then overlay rows."""
        ids = [i for i in self.base.ids_with_sha256(sha256) if i not in self._by_id and self._base_item(i)]
        return ids + [self._rows[r]["id"] for r in self._live_rows if self._rows[r].get("sha256") == sha256]

    def browse(self, n: int, order: str = "random", seed: int | None = None) -> list[str]:
        """Up to n live ids: 'newest' lists overlay items (latest first) before the base's newest."""
        if not self.changed:
            return self.base.browse(n, order, seed)
        overlay = [self._rows[r]["id"] for r in self._live_rows[::-1]]
        if order == "newest":
            rows = (r for r in range(self.base.count - 1, -1, -1) if self._excluded is None or not self._excluded[r])
            newest = overlay[: max(0, n)]
            for r in rows:
                if len(newest) >= n:
                    break
                newest.append(self.base.ids[r])
            return newest
        if order != "random":
            raise ValueError(f"order must be 'random' or 'newest', got {order!r}")
        pool = self.ids
        n = max(0, min(int(n), len(pool)))
        picks = np.random.default_rng(seed).choice(len(pool), size=n, replace=False) if n else []
        return [pool[int(i)] for i in picks]

    def close(self) -> None:
        """Close the base version (the store keeps it open while it is current; see FaissRootStore)."""
        if self._owner is not None:
            self._owner.view_closed(self)
        else:
            self.base.close()


def _take(col: Column, rows: np.ndarray, n: int) -> Column:
    """The overlay column restricted to the live overlay rows, renumbered."""
    if col.type == TAGS:
        keep = np.zeros(n, bool)
        keep[rows] = True
        new_row = np.cumsum(keep) - 1
        sel = keep[col.rows] if len(col.rows) else np.zeros(0, bool)
        return Column(col.type, col.data[sel], rows=new_row[col.rows[sel]].astype(np.int32), dictionary=col.dictionary)
    return Column(col.type, col.data[rows], dictionary=col.dictionary)
