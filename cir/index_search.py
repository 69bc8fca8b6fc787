"""Top-k search on a loaded index: unfiltered (with PQ re-ranking) and the filtered per-query plan.

Filtered search picks, per query, by the number of matching rows (the plan's name in brackets):

    matching rows <= exact_max, or a GPU index   ->  exact: inner products over those rows of
                                                     the stored embeddings ("exact")
    Flat                                         ->  FAISS with an ID selector: exact ("selector")
    HNSW / IVF                                   ->  FAISS with an ID selector, efSearch / nprobe
                                                     widened, PQ candidates re-scored exactly as
                                                     unfiltered ("ann"); if it returns fewer than
                                                     min(k, matches) hits, the exact scan answers
                                                     instead ("fallback")

So whenever at least k items match, k hits come back. The cut-over EXACT_MAX_MATCHES and the
widening factors were chosen with perf/filtered.py (docs/indexer.md, "Filtered search").
"""

from __future__ import annotations

import math

import faiss
import numpy as np

# At or below this many matching rows the exact scan is cheaper than a filtered graph walk.
EXACT_MAX_MATCHES = 20_000
# A filtered HNSW walk keeps efSearch candidates of every kind but only matching rows count as
# results, so the k best matches lie among about k / selectivity nearest rows: efSearch grows to
# HNSW_EF_WIDEN * k / selectivity (never below the version's tuned value); 2 gave recall@10 0.950
# at 5% of 1M items, 3 gives 0.976 (docs/indexer.md, "Filtered search").
HNSW_EF_WIDEN = 3
# nprobe of a filtered IVF search grows with 1/selectivity, by at most this factor.
IVF_NPROBE_WIDEN_MAX = 16


def rerank_search(index, vectors: np.ndarray, queries: np.ndarray, k: int, rerank: int = 0, params=None):
    """Top-k search; with rerank > 1 the index proposes k*rerank candidates re-scored exactly on `vectors`.

    `params` (faiss.SearchParameters) carries an ID selector and search knobs for filtered queries.
    """
    if rerank <= 1:
        return index.search(queries, k, params=params)
    _, candidates = index.search(queries, k * rerank, params=params)
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    rows = np.full((len(queries), k), -1, dtype=np.int64)
    for i, cand in enumerate(candidates):
        cand = np.unique(cand[cand >= 0])  # sorted: memory-mapped rows are read in file order
        exact = np.asarray(vectors[cand], dtype=np.float32) @ queries[i]
        top = np.argsort(-exact, kind="stable")[:k]
        scores[i, : len(top)], rows[i, : len(top)] = exact[top], cand[top]
    return scores, rows


def top_k(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best candidates: score descending, then row ascending (a deterministic order)."""
    if len(scores) > k:
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= kth
        scores, rows = scores[keep], rows[keep]
    order = np.lexsort((rows, -scores))[:k]
    return scores[order], rows[order]


def exact_search(embeddings: np.ndarray, rows: np.ndarray, query: np.ndarray, k: int):
    """Exact top-k inner products of one query over `rows` of `embeddings`; (scores, rows).

    The rows are read in place (faiss.fvec_inner_products_by_idx), never copied out first: the
    scan is memory-bound, and a gather would read every row twice.
    """
    if not (embeddings.flags.c_contiguous and embeddings.dtype == np.float32):
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    q = np.ascontiguousarray(query, dtype=np.float32)
    scores = np.empty(len(rows), np.float32)
    faiss.fvec_inner_products_by_idx(faiss.swig_ptr(scores), faiss.swig_ptr(q), faiss.swig_ptr(embeddings),
                                     faiss.swig_ptr(rows), q.shape[0], 1, len(rows))
    return top_k(scores, rows, k)


def _params(index, factory: str, selector, k: int, selectivity: float):
    """Search parameters with the selector and the widened efSearch / nprobe."""
    if factory.startswith("HNSW"):
        ef = max(faiss.downcast_index(index).hnsw.efSearch, k, math.ceil(HNSW_EF_WIDEN * k / selectivity))
        return faiss.SearchParametersHNSW(sel=selector, efSearch=ef)
    if factory.startswith("IVF"):
        ivf = faiss.extract_index_ivf(index)
        widen = min(math.ceil(1.0 / selectivity), IVF_NPROBE_WIDEN_MAX)
        return faiss.SearchParametersIVF(sel=selector, nprobe=min(ivf.nlist, ivf.nprobe * widen))
    return faiss.SearchParameters(sel=selector)


def filtered_search(index, embeddings: np.ndarray, query: np.ndarray, k: int, mask: np.ndarray, *,
                    factory: str, rerank: int = 0, on_gpu: bool = False,
                    exact_max: int = EXACT_MAX_MATCHES, packed: tuple[int, np.ndarray] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, str]:
    """Top-k rows of `query` among the rows where `mask` is true: (scores, rows, plan name).

    `index` holds the same rows as `embeddings`; fewer than k rows come back only when fewer match.
    `packed` = (matches, np.packbits(mask, bitorder="little")), when a caller reuses one mask for
    many queries (a live view's deleted rows), saves counting and packing it per query.
    """
    matches = int(np.count_nonzero(mask)) if packed is None else packed[0]
    k = min(k, matches)
    if k == 0:
        return np.empty(0, np.float32), np.empty(0, np.int64), "exact"
    if matches <= exact_max or on_gpu:  # faiss-gpu has no ID selectors
        return (*exact_search(embeddings, np.flatnonzero(mask), query, k), "exact")
    # must outlive the search: the selector points into it
    bits = np.packbits(mask, bitorder="little") if packed is None else packed[1]
    selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
    params = _params(index, factory, selector, k, matches / len(mask))
    scores, found = rerank_search(index, embeddings, query[None], k, rerank if "PQ" in factory else 0, params)
    keep = found[0] >= 0
    if int(keep.sum()) < k:
        return (*exact_search(embeddings, np.flatnonzero(mask), query, k), "fallback")
    return scores[0][keep], found[0][keep], "selector" if factory == "Flat" else "ann"
