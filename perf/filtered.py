"""Filtered search on HNSW32 at 1M x 512: recall@10 against exact filtered search, p99 against unfiltered.

    flock /tmp/cir-bench.lock nice -n 5 python perf/filtered.py --index-cache /tmp/hnsw1m.faiss   # 1M x 512
    python perf/filtered.py --n 100000 --index-cache /tmp/hnsw100k.faiss     # quicker; reuse the build

Data and index as perf/ann.py: `indexer.synthetic.synthetic_vectors` (seed 0; queries seed 99)
and HNSW32 built and tuned by `indexer.factory.build_index`, as `cir index build` does. A
categorical field "group" is assigned at random: "s50" holds 50% of the items, "s5" 5%, "s0.5"
0.5%, "s0.05" 0.05%, "other" the rest. Each filtered query {"group": value} goes through what the
service runs per filtered query: `cir.filters` (parse, bind, mask on `cir.columns` arrays) and
`cir.index_search.filtered_search` (the plan); ground truth is the exact top 10 among the
matching rows. The planned search is timed on every query; each plan forced (the exact scan, the
ANN with an ID selector) on --forced-queries, which shows where the cut-over EXACT_MAX_MATCHES
belongs. One query at a time, one FAISS thread.

Goal: recall@10 >= 0.95 at every selectivity and filtered p99 <= 3x the unfiltered p99.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from cir.columns import build_columns, describe
from cir.filters import parse_filter
from cir.index_search import EXACT_MAX_MATCHES, filtered_search, rerank_search
from indexer.factory import build_index, recall_at_k
from indexer.synthetic import synthetic_vectors

SELECTIVITIES = {"s50": 0.5, "s5": 0.05, "s0.5": 0.005, "s0.05": 0.0005}
K = 10


def groups(n: int, seed: int = 7) -> list[dict]:
    """Item metadata: exactly round(share * n) items per group value, at random positions."""
    counts = [round(share * n) for share in SELECTIVITIES.values()]
    values = np.repeat([*SELECTIVITIES, "other"], [*counts, n - sum(counts)])
    return [{"group": str(v)} for v in np.random.default_rng(seed).permutation(values)]


def load_or_build(x: np.ndarray, cache: Path | None):
    """HNSW32 with its tuned efSearch (from --index-cache when it holds a build of the same data)."""
    meta = cache.with_suffix(".json") if cache else None
    shape = {"n": len(x), "dim": x.shape[1]}
    if cache and cache.is_file() and meta.is_file() and json.loads(meta.read_text())["shape"] == shape:
        index = faiss.read_index(str(cache))
        params = json.loads(meta.read_text())["params"]
        faiss.ParameterSpace().set_index_parameter(index, "efSearch", params["efSearch"])
        return index, params, 0.0
    built = build_index(x, "HNSW32", recall_target=0.95)
    if cache:
        faiss.write_index(built.index, str(cache))
        meta.write_text(json.dumps({"shape": shape, "params": built.search_params}))
    return built.index, built.search_params, built.build_seconds


def _top(scores: np.ndarray) -> np.ndarray:
    """Row ids of the K best scores of each row, best first."""
    top = np.argpartition(-scores, K, axis=1)[:, :K]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)


def exact_truth(x: np.ndarray, queries: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Exact top-K rows (unfiltered, and among each mask's rows) of every query, one pass per query chunk."""
    truth = {name: np.empty((len(queries), K), np.int64) for name in ("unfiltered", *masks)}
    for start in range(0, len(queries), 50):
        scores = queries[start:start + 50] @ x.T
        truth["unfiltered"][start:start + 50] = _top(scores)
        for name, mask in masks.items():
            truth[name][start:start + 50] = _top(np.where(mask, scores, -np.inf))
    return truth


def timed(fn, queries: np.ndarray) -> tuple[np.ndarray, list]:
    """Per-query milliseconds and results of fn(query), after a warm-up."""
    for q in queries[:5]:
        fn(q)
    times, results = [], []
    for q in queries:
        t = time.perf_counter()
        results.append(fn(q))
        times.append((time.perf_counter() - t) * 1000)
    return np.array(times), results


def measure(index, x, queries, name, bound, columns, truth, exact_max) -> dict:
    """Recall and latency of one filtered query kind through the filter + plan code."""
    def run(q):
        return filtered_search(index, x, q, K, bound.mask(columns), factory="HNSW32", exact_max=exact_max)

    ms, results = timed(run, queries)
    found = np.array([np.pad(r[1], (0, K - len(r[1])), constant_values=-1) for r in results])
    plans = sorted({r[2] for r in results})
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "recall_at_10": recall_at_k(found, truth[name][: len(queries)]), "plans": plans,
            "short": int(sum(len(r[1]) < K for r in results))}


def main(argv: list[str] | None = None) -> int:
    """Build (or load) the index, measure every selectivity, print the table and the verdict."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="gallery size (default 1,000,000)")
    p.add_argument("--dim", type=int, default=512, help="vector dimension (default 512)")
    p.add_argument("--queries", type=int, default=1000, help="held-out queries per selectivity (default 1000)")
    p.add_argument("--forced-queries", type=int, default=100, help="queries for each forced plan (default 100)")
    p.add_argument("--threads", type=int, default=2, help="FAISS threads for building (default 2)")
    p.add_argument("--index-cache", type=Path, help="save the built index here, or load it if present")
    p.add_argument("--json", action="store_true", help="print one final JSON line with every row")
    args = p.parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    x = synthetic_vectors(args.n, args.dim, seed=0)
    queries = synthetic_vectors(args.queries, args.dim, seed=99)
    index, params, build_s = load_or_build(x, args.index_cache)
    metadatas = groups(args.n)
    columns = build_columns({"group": "string"}, metadatas)
    fields = describe(columns)
    bound = {name: parse_filter({"group": name}).bind(fields) for name in SELECTIVITIES}
    truth = exact_truth(x, queries, {name: b.mask(columns) for name, b in bound.items()})
    faiss.omp_set_num_threads(1)
    ms, found = timed(lambda q: rerank_search(index, x, q[None], K)[1][0], queries)
    base = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "recall_at_10": recall_at_k(np.array(found), truth["unfiltered"])}
    print(f"# {args.n} x {args.dim} synthetic unit vectors, HNSW32 {params} (build {build_s:.0f} s), "
          f"{args.queries} queries, 1 search thread; exact cut-over {EXACT_MAX_MATCHES} matches; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"unfiltered: recall@10 {base['recall_at_10']:.3f}  p50 {base['p50_ms']:.2f} ms  p99 {base['p99_ms']:.2f} ms")
    print("| selectivity | matches | plan | recall@10 | p50 ms | p99 ms | p99 / unfiltered | exact scan p99 | "
          "ANN + selector p99 (recall) |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows, few = [], queries[: args.forced_queries]
    for name, share in SELECTIVITIES.items():
        planned = measure(index, x, queries, name, bound[name], columns, truth, EXACT_MAX_MATCHES)
        exact = measure(index, x, few, name, bound[name], columns, truth, args.n)
        ann = measure(index, x, few, name, bound[name], columns, truth, 0)
        row = {"selectivity": share, "matches": int(round(share * args.n)), **planned,
               "ratio": planned["p99_ms"] / base["p99_ms"], "exact_p99_ms": exact["p99_ms"],
               "ann_p99_ms": ann["p99_ms"], "ann_recall_at_10": ann["recall_at_10"]}
        rows.append(row)
        print(f"| {share:.2%} | {row['matches']:,} | {'+'.join(planned['plans'])} | {planned['recall_at_10']:.3f} | "
              f"{planned['p50_ms']:.2f} | {planned['p99_ms']:.2f} | {row['ratio']:.2f} | {exact['p99_ms']:.2f} | "
              f"{ann['p99_ms']:.2f} ({ann['recall_at_10']:.3f}) |", flush=True)
    ok_recall = all(r["recall_at_10"] >= 0.95 for r in rows)
    ok_ratio = all(r["ratio"] <= 3.0 for r in rows)
    short = sum(r["short"] for r in rows)
    print(f"goal recall@10 >= 0.95 at every selectivity: {'met' if ok_recall else 'NOT met'}; "
          f"filtered p99 <= 3x unfiltered: {'met' if ok_ratio else 'NOT met'} "
          f"(worst {max(r['ratio'] for r in rows):.2f}x); short pages: {short}; load average {os.getloadavg()[0]:.1f}")
    if args.json:
        print(json.dumps({"n": args.n, "dim": args.dim, "params": params, "unfiltered": base, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
