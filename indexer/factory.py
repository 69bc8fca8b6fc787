"""Index choice, construction and build-time recall measurement (inner product on unit rows)."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass

import faiss
import numpy as np

from cir.fusion import l2_normalize
from cir.index_factory import parse_factory
from cir.index_store import rerank_search

log = logging.getLogger(__name__)

HNSW_M = 32
EF_SEARCH = (16, 32, 64, 128, 256, 512)
NPROBE = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
PQ_M = (64, 48, 32, 16, 8)
# PQ codes alone rank poorly; candidates are re-scored exactly on the memory-mapped embeddings.
PQ_RERANK = 10


@dataclass
class BuiltIndex:
    """A trained and filled index with its tuned search parameters and measured recall@10."""

    index: object
    factory: str
    search_params: dict
    recall_at_10: float
    build_seconds: float
    on_gpu: bool
    rerank: int = 0


def memory_budget(max_memory_gb: float | None) -> int:
    """Bytes an index may take: the given GB, else half of this machine's RAM."""
    if max_memory_gb is not None:
        return int(max_memory_gb * 2**30)
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


def ivf_nlist(n: int) -> int:
    """A power of two near 4*sqrt(n), with at least ~39 training points per list."""
    target = 4 * math.sqrt(max(n, 1))
    nlist = 2 ** round(math.log2(max(target, 16)))
    while nlist > 16 and n < 39 * nlist:
        nlist //= 2
    return int(min(nlist, 65536))


def estimate_bytes(factory: str, n: int, dim: int) -> int:
    """Rough resident size of an index of n vectors."""
    spec = parse_factory(factory)
    if spec.kind == "Flat":
        return n * dim * 4
    if spec.kind == "HNSW":
        return n * (dim * 4 + spec.hnsw_m * 2 * 4 + 16)
    return n * (spec.code_bytes(dim) + 8) + spec.nlist * dim * 4


def choose_factory(n: int, dim: int, flat_max: int, max_memory_gb: float | None = None) -> str:
    """'auto': exact Flat up to flat_max, HNSW while it fits the memory budget, else IVF+PQ."""
    if n <= flat_max:
        return "Flat"
    hnsw = f"HNSW{HNSW_M}"
    budget = memory_budget(max_memory_gb)
    if estimate_bytes(hnsw, n, dim) <= budget:
        return hnsw
    m = next((m for m in PQ_M if dim % m == 0 and m <= dim), 1)
    factory = f"IVF{ivf_nlist(n)},PQ{m}x4fs"
    if estimate_bytes(factory, n, dim) > budget:
        log.warning("even %s (~%.1f GB) exceeds the memory budget", factory, estimate_bytes(factory, n, dim) / 2**30)
    return factory


def _gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _train_sample(vectors: np.ndarray, factory: str, seed: int) -> np.ndarray:
    nlist = parse_factory(factory).nlist or 256
    # ~40 points per coarse centroid (FAISS's lower bound) keeps k-means affordable on a CPU;
    # 64k rows are ample for the PQ codebooks.
    size = min(len(vectors), max(40 * nlist, 65_536))
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), size=size, replace=False))
    return np.ascontiguousarray(vectors[rows])


def make_index(vectors: np.ndarray, factory: str, use_gpu: bool = False, seed: int = 0):
    """Create, train (on a fixed-seed sample) and fill an inner-product index; returns (index, on_gpu)."""
    n, dim = vectors.shape
    spec = parse_factory(factory)
    if spec.kind == "IVF" and n < spec.nlist:
        raise ValueError(f"{factory} needs at least {spec.nlist} vectors to train; "
                         f"the gallery has {n}: use a smaller nlist or --factory auto")
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    on_gpu = False
    if use_gpu and spec.kind != "HNSW" and _gpu_available():
        try:
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
            on_gpu = True
        except RuntimeError as exc:  # e.g. a PQ size the GPU kernels do not support
            log.warning("building %s on the CPU: %s", factory, exc)
    if not index.is_trained:
        index.train(_train_sample(vectors, factory, seed))
    for start in range(0, n, 262_144):
        index.add(np.ascontiguousarray(vectors[start : start + 262_144]))
    if on_gpu:
        index = faiss.index_gpu_to_cpu(index)
    return index, on_gpu


def heldout_queries(vectors: np.ndarray, count: int = 500, seed: int = 1) -> np.ndarray:
    """Composed-style queries not in the index: normalised mid-points of two random gallery rows."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, len(vectors), count)
    b = rng.integers(0, len(vectors), count)
    return l2_normalize(np.asarray(vectors[a] + vectors[b], dtype=np.float32))


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Brute-force inner-product top-k row ids (the ground truth)."""
    _, rows = faiss.knn(np.ascontiguousarray(queries), np.ascontiguousarray(vectors), k,
                        metric=faiss.METRIC_INNER_PRODUCT)
    return rows


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the true top-k that the approximate top-k contains."""
    k = truth.shape[1]
    hits = sum(len(set(f[:k].tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    return hits / truth.size


def rerank_factor(factory: str) -> int:
    """How many candidates per result a structure needs re-scored exactly (PQ only)."""
    return PQ_RERANK if parse_factory(factory).pq else 0


def tune(index, factory: str, queries: np.ndarray, truth: np.ndarray, target: float,
         vectors: np.ndarray | None = None) -> tuple[dict, float]:
    """Smallest efSearch/nprobe whose recall@10 reaches target (else the best); returns (params, recall)."""
    k, rerank = truth.shape[1], rerank_factor(factory)

    def recall() -> float:
        return recall_at_k(rerank_search(index, vectors, queries, k, rerank)[1], truth)

    spec = parse_factory(factory)
    if spec.kind == "HNSW":
        name, grid = "efSearch", EF_SEARCH
    elif spec.kind == "IVF":
        name, grid = "nprobe", [p for p in NPROBE if p <= spec.nlist]
    else:
        return {}, recall()
    space, best = faiss.ParameterSpace(), ({}, -1.0)
    for value in grid:
        space.set_index_parameter(index, name, value)
        found = recall()
        if found > best[1] + 1e-9:
            best = ({name: value}, found)
        if found >= target:
            break
    space.set_index_parameter(index, name, best[0][name])
    if best[1] < target:
        log.warning("%s reaches recall@10 %.3f < target %.2f at best", factory, best[1], target)
    return best


def build_index(vectors: np.ndarray, factory: str, recall_target: float = 0.95,
                use_gpu: bool = False, queries: int = 500) -> BuiltIndex:
    """Build `factory` over unit rows, tune its search knob and measure recall@10 vs exact search."""
    start = time.perf_counter()
    index, on_gpu = make_index(vectors, factory, use_gpu=use_gpu)
    seconds = time.perf_counter() - start
    if len(vectors) == 0:
        return BuiltIndex(index, factory, {}, 1.0, seconds, on_gpu)
    q = heldout_queries(vectors, queries)
    truth = exact_topk(vectors, q, min(10, len(vectors)))
    params, recall = tune(index, factory, q, truth, recall_target, vectors)
    return BuiltIndex(index, factory, params, round(float(recall), 4), seconds, on_gpu, rerank_factor(factory))
