"""Index structures on synthetic unit vectors: build time, memory, single-query latency, recall@10.

    nice -n 10 python perf/ann.py                          # 100k x 512 (default)
    nice -n 10 python perf/ann.py --sizes 100000,1000000   # the 1M run (long on 2 cores)

Vectors have the low intrinsic dimension of real embeddings (indexer.synthetic); queries are
fresh draws from the same distribution, held out of the index. Each structure's search knob is
tuned at build time (as `cir index build` does) to reach recall@10 >= 0.95 on composed-style
queries; recall here is then measured on the held-out queries against exact search.
Goal at 1M: the structure `auto` picks reaches recall@10 >= 0.95 with p99 <= 5 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


import faiss
import numpy as np

from cir.index_store import rerank_search
from indexer.config import BuildConfig
from indexer.factory import PQ_M, build_index, choose_factory, exact_topk, ivf_nlist, recall_at_k
from indexer.synthetic import synthetic_vectors


def candidates(n: int, dim: int, names: str) -> list[str]:
    """The structures to compare at size n ('IVF' expands to the auto nlist)."""
    nlist = ivf_nlist(n)
    m = next(m for m in PQ_M if dim % m == 0)
    default = ["Flat", "HNSW32", f"IVF{nlist},Flat", f"IVF{nlist},PQ{m}x4fs"]
    return default if names == "default" else [s.replace("IVF,", f"IVF{nlist},") for s in names.split(";")]


def index_bytes(index) -> int:
    """Serialized size, a close proxy for the resident size of these structures."""
    with tempfile.NamedTemporaryFile(suffix=".faiss") as fh:
        faiss.write_index(index, fh.name)
        return os.path.getsize(fh.name)


def latencies_ms(built, vectors: np.ndarray, queries: np.ndarray, count: int, threads: int) -> np.ndarray:
    """Single-query search times (ms), one query at a time, after a warm-up."""
    return interleaved_latencies_ms([built], vectors, queries[:count], threads)[0]


def interleaved_latencies_ms(builts: list, vectors: np.ndarray, queries: np.ndarray, threads: int) -> list[np.ndarray]:
    """Each index's single-query search times (ms), one query at a time after a warm-up.

    The indexes take turns on every query (the order rotating), so a change in the machine's load
    falls on all of them alike.
    """
    build_threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    for built in builts:
        rerank_search(built.index, vectors, queries[:5], 10, built.rerank)
    out = [[] for _ in builts]
    for i, q in enumerate(queries):
        for j in range(len(builts)):
            side = (i + j) % len(builts)
            start = time.perf_counter()
            rerank_search(builts[side].index, vectors, q[None, :], 10, builts[side].rerank)
            out[side].append((time.perf_counter() - start) * 1000)
    faiss.omp_set_num_threads(build_threads)
    return [np.array(times) for times in out]


def run_size(n: int, args) -> dict:
    """Build and measure every candidate at one size."""
    x = synthetic_vectors(n, args.dim, seed=0)
    q = synthetic_vectors(args.queries, args.dim, seed=99)
    truth = exact_topk(x, q, 10)
    auto = choose_factory(n, args.dim, args.flat_max, args.max_memory_gb)
    rows = []
    for factory in candidates(n, args.dim, args.structures):
        built = build_index(x, factory, recall_target=0.95)
        # Exact search over 1M rows takes ~100 ms a query here: time fewer of them.
        lat = latencies_ms(built, x, q, args.queries if factory != "Flat" or n <= 200_000 else 50, args.search_threads)
        found = rerank_search(built.index, x, q, 10, built.rerank)[1]
        rows.append({"n": n, "factory": factory, "auto": factory == auto, "build_s": round(built.build_seconds, 1),
                     "index_mb": round(index_bytes(built.index) / 2**20, 1), "params": built.search_params,
                     "rerank": built.rerank, "p50_ms": round(float(np.percentile(lat, 50)), 3),
                     "p99_ms": round(float(np.percentile(lat, 99)), 3),
                     "recall_at_10": round(recall_at_k(found, truth), 4)})
        print_row(rows[-1])
        del built
    return {"n": n, "auto": auto, "rows": rows}


def print_row(r: dict) -> None:
    flag = "*" if r["auto"] else " "
    knob = ",".join(f"{k}={v}" for k, v in r["params"].items()) + (f",rerank={r['rerank']}" if r["rerank"] else "")
    print(f"{r['n']:>9} {flag}{r['factory']:<20} build {r['build_s']:>7.1f}s  mem {r['index_mb']:>8.1f} MB  "
          f"p50 {r['p50_ms']:>7.3f} ms  p99 {r['p99_ms']:>7.3f} ms  recall@10 {r['recall_at_10']:.3f}  {knob}",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one table row per structure and a summary."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000", help="comma-separated gallery sizes (default 100000)")
    p.add_argument("--dim", type=int, default=512, help="vector dimension (default 512)")
    p.add_argument("--queries", type=int, default=1000, help="held-out queries for latency and recall (1000)")
    p.add_argument("--structures", default="default",
                   help="';'-separated factory strings ('IVF,' gets the auto nlist), or 'default'")
    p.add_argument("--threads", type=int, default=2, help="FAISS OpenMP threads for building (default 2: this machine)")
    p.add_argument("--search-threads", type=int, default=1,
                   help="FAISS threads while timing single queries (default 1: a server runs queries side by side)")
    p.add_argument("--flat-max", type=int, default=BuildConfig.flat_max,
                   help="auto's exact-search limit (as cir index build; default %(default)s)")
    p.add_argument("--max-memory-gb", type=float, default=None, help="auto's memory budget (default half the RAM)")
    p.add_argument("--json", action="store_true", help="print one final JSON line with every row")
    args = p.parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    print(f"# synthetic unit vectors dim {args.dim}, {args.queries} held-out queries, {args.threads} FAISS build "
          f"threads, {args.search_threads} search thread(s); * = auto's pick")
    results = [run_size(int(s), args) for s in args.sizes.split(",")]
    for res in results:
        pick = next(r for r in res["rows"] if r["auto"]) if any(r["auto"] for r in res["rows"]) else None
        if pick:
            ok = pick["recall_at_10"] >= 0.95 and pick["p99_ms"] <= 5.0
            print(f"auto at {res['n']}: {res['auto']} recall@10 {pick['recall_at_10']:.3f} p99 {pick['p99_ms']:.2f} ms "
                  f"(goal recall >= 0.95, p99 <= 5 ms: {'met' if ok else 'NOT met'})")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
