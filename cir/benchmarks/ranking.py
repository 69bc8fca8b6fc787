"""Exact cosine ranking of queries against a gallery, with deterministic tie-breaking.

Scores are inner products of unit rows, computed in query chunks so a 123K-image gallery
never needs a full (queries x gallery) matrix. Order: score descending, then gallery
position ascending, so equal scores always rank the earlier gallery image first.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

CHUNK_CELLS = 1 << 25  # about 128 MB of float32 scores per chunk


def score_chunks(queries: np.ndarray, gallery: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first row, scores (b, N)) for consecutive chunks of queries."""
    n = max(1, gallery.shape[0])
    step = max(1, CHUNK_CELLS // n)
    g = torch.from_numpy(np.ascontiguousarray(gallery, dtype=np.float32))
    for start in range(0, queries.shape[0], step):
        q = torch.from_numpy(np.ascontiguousarray(queries[start:start + step], dtype=np.float32))
        yield start, (q @ g.T).numpy()


def stable_topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores of one row, score descending then index ascending (exact)."""
    n = scores.shape[0]
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k < n:
        # Everything at least as good as the k-th best, ties included, then an exact stable order.
        kth = np.partition(scores, n - k)[n - k]
        cand = np.flatnonzero(scores >= kth)
    else:
        cand = np.arange(n)
    order = np.lexsort((cand, -scores[cand]))
    return cand[order][:k]


def _subset_order(row: np.ndarray, indices: Sequence[int]) -> list[int]:
    """Order gallery `indices` as the full ranking of this score row would (score desc, index asc)."""
    idx = np.asarray(sorted(set(indices)), dtype=np.int64)
    if idx.size == 0:
        return []
    return [int(i) for i in idx[np.lexsort((idx, -row[idx]))]]


def rank_gallery(queries: np.ndarray, gallery: np.ndarray, k: int,
                 exclude: Sequence[int | None] | None = None,
                 subsets: Sequence[Sequence[int]] | None = None,
                 masks: Sequence[np.ndarray] | None = None) -> tuple[list[np.ndarray], list[list[int]]]:
    """Top-k gallery indices per query, and each query's `subsets[i]` in the same global order.

    `exclude[i]` (a gallery index, or None) is removed from query i's ranking (CIRR's rule);
    `masks[i]` (boolean per gallery row) restricts query i's ranking to its true rows.
    """
    tops: list[np.ndarray] = []
    ordered: list[list[int]] = []
    for start, block in score_chunks(queries, gallery):
        for j, row in enumerate(block):
            i = start + j
            if subsets is not None:
                ordered.append(_subset_order(row, subsets[i]))
            ex = exclude[i] if exclude is not None else None
            if masks is not None:
                keep = np.array(masks[i], dtype=bool)
                if ex is not None:
                    keep[ex] = False
                top = stable_topk(np.where(keep, row, -np.inf), k)
                tops.append(top[keep[top]])
                continue
            if ex is None:
                tops.append(stable_topk(row, k))
                continue
            row = row.copy()
            row[ex] = -np.inf
            top = stable_topk(row, k + 1)
            tops.append(top[top != ex][:k])
    return tops, ordered
