"""The synthetic half of perf/live.py: a large random HNSW index, pending changes, compaction.

Measures, on N synthetic unit vectors (indexer.synthetic: real embeddings' low intrinsic dimension) (the issue asks for 1M x 512; smaller N for a laptop):
search p99 and recall@10 with 10,000 pending upserts and 10,000 pending deletions against the
same search on the compacted version; compaction time of 1% changes against the full build of
the same version (index build + write, nothing to embed); and search p99 while a compaction
runs against p99 at rest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from cir import index_store as store
from cir.columns import build_columns, describe
from cir.stores import Delete, FaissRootStore, Upsert
from cir.stores.compact import compact
from cir.versioning import write_version
from indexer.factory import build_index
from indexer.synthetic import synthetic_vectors


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """n unit rows with the low intrinsic dimension of real embeddings (indexer.synthetic), fresh per call."""
    return synthetic_vectors(n, dim, seed=int(rng.integers(1 << 30)))


def build_root(root: Path, vectors: np.ndarray, factory: str) -> float:
    """A full build of the version (index + files, what `cir index build` does after embedding); seconds."""
    t0 = time.perf_counter()
    built = build_index(vectors, factory, 0.95)
    items = [{"id": f"b{i}", "path": None, "width": None, "height": None, "sha256": None, "size": None,
              "mtime_ns": None, "metadata": {"shard": i % 10}} for i in range(len(vectors))]
    columns = build_columns({"shard": "number"}, [it["metadata"] for it in items])
    manifest = {"format": 1, "version": "v000001-synthetic", "dim": vectors.shape[1], "count": len(items),
                "factory": built.factory, "search_params": built.search_params, "rerank": built.rerank,
                "recall_at_10": built.recall_at_10, "fingerprint": "synthetic", "model": "none", "metric": "ip",
                "normalized": True, "index_vectors": store.EMBEDDINGS_FILE, "fields": describe(columns)}
    root.mkdir(parents=True, exist_ok=True)
    write_version(root, manifest["version"], vectors, items, built.index, manifest, {}, None, columns)
    store.IndexRoot(root).publish(manifest["version"])
    return time.perf_counter() - t0


def timed_searches(view, queries: np.ndarray, k: int = 10) -> tuple[list[float], list[list[str]]]:
    """Per-query latency (one query per call, as the engine's searches) and the ids found."""
    lat, found = [], []
    for q in queries:
        t = time.perf_counter()
        _, ids = view.search(q[None], k)
        lat.append(time.perf_counter() - t)
        found.append(ids[0])
    return lat, found


def p99(lat: list[float]) -> float:
    return float(np.percentile(np.asarray(lat) * 1000, 99))


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def truth(live: dict[str, np.ndarray], queries: np.ndarray, k: int = 10) -> list[list[str]]:
    ids = list(live)
    mat = np.stack([live[i] for i in ids])
    _, rows = faiss.knn(queries, mat, k, metric=faiss.METRIC_INNER_PRODUCT)
    return [[ids[r] for r in row] for row in rows]


def run(workdir: Path, n: int, dim: int, factory: str, pending: int, queries: int = 300) -> dict:
    """Every synthetic measurement, as a dict."""
    rng = np.random.default_rng(0)
    vectors = unit(rng, n, dim)
    root = workdir / "synthetic"
    full_build_s = build_root(root, vectors, factory)
    qs = unit(np.random.default_rng(1), queries, dim)
    live_store = FaissRootStore(root)
    new = unit(rng, pending, dim)
    doomed = rng.choice(n, size=pending, replace=False)
    ops = [Upsert(f"n{i}", v, v, {"shard": 11}) for i, v in enumerate(new)] + [Delete(f"b{r}") for r in doomed]
    for start in range(0, len(ops), 5000):
        live_store.write(ops[start:start + 5000])
    live = {f"b{i}": vectors[i] for i in range(n)}
    for r in doomed:
        del live[f"b{r}"]
    live.update({f"n{i}": v for i, v in enumerate(new)})
    want = truth(live, qs)
    view = live_store.open()
    timed_searches(view, qs[:20])  # warm up (the lazy masks)
    lat_pending, found_pending = timed_searches(view, qs)
    t0 = time.perf_counter()
    result = compact(root, store_=live_store)
    compact_s = time.perf_counter() - t0
    compacted = FaissRootStore(root).open()
    timed_searches(compacted, qs[:20])
    lat_compacted, found_compacted = timed_searches(compacted, qs)
    during = serving_during_compaction(root, compacted, qs, rng, dim, pending=n // 100)
    return {"n": n, "dim": dim, "factory": factory, "pending_upserts": pending, "pending_deletes": pending,
            "full_build_s": round(full_build_s, 2), "compaction_s": round(compact_s, 2), "compaction": result.index,
            "search_p99_ms_pending": round(p99(lat_pending), 3), "search_p99_ms_compacted": round(p99(lat_compacted), 3),
            "recall_pending": round(recall(found_pending, want), 4),
            "recall_compacted": round(recall(found_compacted, want), 4), **during}


def serving_during_compaction(root: Path, view, qs: np.ndarray, rng, dim: int, pending: int) -> dict:
    """1% new changes; search p99 at rest, then while they are compacted on another thread; seconds it took."""
    store_ = FaissRootStore(root)
    n = view.count
    half = pending // 2
    ops = [Upsert(f"m{i}", v, v, {"shard": 12}) for i, v in enumerate(unit(rng, half, dim))]
    ops += [Delete(i) for i in rng.choice(view.ids, size=half, replace=False)]
    for start in range(0, len(ops), 5000):
        store_.write(ops[start:start + 5000])
    busy = store_.open()
    timed_searches(busy, qs[:20])
    rest, _ = timed_searches(busy, qs)
    lat = []
    t0 = time.perf_counter()
    # as the server runs it (service.compaction): a child process at nice 10
    child = subprocess.Popen([sys.executable, "-m", "cir.stores.compact", str(root)], stdout=subprocess.DEVNULL,
                             preexec_fn=lambda: os.nice(10))
    while child.poll() is None:
        lat += timed_searches(busy, qs[: 50])[0]
    if child.returncode != 0:
        raise RuntimeError(f"the compaction failed (exit status {child.returncode})")
    return {"compaction_1pct_s": round(time.perf_counter() - t0, 2), "changes_1pct": 2 * half, "items": n,
            "search_p99_ms_rest": round(p99(rest), 3), "search_p99_ms_during_compaction": round(p99(lat), 3)}
