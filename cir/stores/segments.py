"""Sealed segments of a live overlay: pending upserts searched through small HNSW graphs, not scanned.

On an HNSW or IVF version, every SEGMENT_ROWS overlay rows are sealed into an HNSW graph of their
own (built once, never changed: searches need no lock), as Milvus seals its growing segments; only
the rows since the last seal are scanned exactly. So a search with many pending upserts costs a
few small graph walks, not a scan of every pending vector. On a Flat version nothing is sealed:
the overlay is scanned exactly, and the live set ranks exactly as brute force.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from cir.index_search import top_k

SEGMENT_ROWS = 4096
HNSW_M = 32
EF_CONSTRUCTION = 80
DEFAULT_EF_SEARCH = 64


@dataclass(frozen=True)
class Segment:
    """Overlay rows [start, end) in an HNSW graph (graph id i is overlay row start + i)."""

    start: int
    end: int
    index: object
    ef: int


def seal(vectors: np.ndarray, start: int, end: int, ef: int) -> Segment:
    """An HNSW graph over overlay rows [start, end)."""
    index = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    index.add(np.ascontiguousarray(vectors[start:end]))
    index.hnsw.efSearch = ef
    return Segment(start, end, index, ef)


def scan(vectors: np.ndarray, rows: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of one query over `rows` (sorted), on the calling thread.

    No OpenMP region (faiss.fvec_inner_products_by_idx opens one): for a few thousand rows the
    scan takes about 0.2 ms, but on a busy machine the region waits milliseconds for its threads.
    """
    if rows[-1] - rows[0] + 1 == len(rows):
        block = vectors[rows[0]: rows[-1] + 1]  # a run of rows: read in place
    else:
        block = vectors[rows]
    return top_k(np.einsum("ij,j->i", block, query), rows, k)


def _segment_topk(seg: Segment, vectors: np.ndarray, rows: np.ndarray, query: np.ndarray, k: int):
    size = seg.end - seg.start
    if len(rows) <= size // 2:  # few live or matching rows: scanning them is cheaper and exact
        return scan(vectors, rows, query, min(k, len(rows)))
    params = bits = None
    if len(rows) < size:
        mask = np.zeros(size, bool)
        mask[rows - seg.start] = True
        bits = np.packbits(mask, bitorder="little")  # must outlive the search: the selector points into it
        params = faiss.SearchParametersHNSW(sel=faiss.IDSelectorBitmap(size, faiss.swig_ptr(bits)),
                                            efSearch=max(seg.ef, 2 * k))
    scores, found = seg.index.search(query[None], min(k, len(rows)), params=params)
    keep = found[0] >= 0
    del bits
    return scores[0][keep], found[0][keep] + seg.start


def overlay_topk(vectors: np.ndarray, segments: list[Segment], sealed: int, rows: np.ndarray, query: np.ndarray,
                 k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, overlay rows) of one query among `rows` (sorted): sealed segments walked, the rest scanned."""
    parts = []
    growing = rows[rows >= sealed]
    if len(growing):
        parts.append(scan(vectors, growing, query, min(k, len(growing))))
    for seg in segments:
        lo, hi = np.searchsorted(rows, [seg.start, seg.end])
        if hi > lo:
            parts.append(_segment_topk(seg, vectors, rows[lo:hi], query, k))
    if not parts:
        return np.empty(0, np.float32), np.empty(0, np.int64)
    scores = np.concatenate([p[0] for p in parts])
    found = np.concatenate([p[1] for p in parts])
    order = np.argsort(-scores, kind="stable")[:k]
    return scores[order], found[order]
