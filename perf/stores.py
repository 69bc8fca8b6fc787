"""FAISS store against Milvus store on one machine: latency, QPS, recall, writes, memory.

    flock /tmp/cir-bench.lock nice -n 5 python perf/stores.py                 # 100k x 512, both HNSW
    python perf/stores.py --n 20000 --seconds 5                               # quicker
    python perf/stores.py --milvus milvus://HOST:19530/bench                 # an existing server

Both stores hold the same synthetic vectors (`indexer.synthetic.synthetic_vectors`, seed 0;
queries seed 99), written the way `cir index build` writes them: a FAISS root version with
HNSW32 tuned to recall 0.95 (`indexer.factory.build_index`), and the Milvus collection filled
from that version by `cir.stores.milvus_sync` (HNSW M=16, efConstruction=200, ef=128, Strong
reads). Without --milvus a standalone server from the `milvus` wheel starts in a temp folder.

Per store, through the GalleryView calls the engine makes (`view.search(q, 10)`, one query per
call): p50/p99 latency and QPS at concurrency 1, 8 and 32 (threads, --seconds each), recall@10
against exact search; Milvus at consistency Strong (the default) and Session. For Milvus also: upsert throughput (`store.write`, batches of 500),
visibility latency (an upsert's acknowledgement to the first search that finds it), the build
(fill + index + load) time and the server's resident memory before and after loading.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cir import index_store as store
from cir.columns import build_columns, describe
from cir.stores import Upsert, open_store
from cir.stores.milvus_sync import sync_version
from indexer.factory import build_index
from indexer.synthetic import synthetic_vectors
from cir.versioning import write_version

K = 10
HNSW = {"index_type": "HNSW", "params": {"M": 16, "efConstruction": 200}}


def faiss_root(root: Path, x: np.ndarray) -> store.LoadedIndex:
    """A published FAISS version of x (HNSW32 tuned to recall 0.95, as `cir index build` makes it)."""
    built = build_index(x, "HNSW32", recall_target=0.95)
    metas = [{"group": f"g{i % 10}"} for i in range(len(x))]
    columns = build_columns({"group": "string"}, metas)
    items = [{"id": f"i{i}", "path": f"/g/{i}.jpg", "width": 1, "height": 1, "sha256": "", "size": 1,
              "mtime_ns": 1, "metadata": m} for i, m in enumerate(metas)]
    manifest = {"format": 1, "version": "v000001-bench", "dim": x.shape[1], "count": len(x), "metric": "ip",
                "factory": built.factory, "search_params": built.search_params, "rerank": built.rerank,
                "fingerprint": "bench", "model": "bench", "adapter": None, "default_alpha": 0.8,
                "fields": describe(columns)}
    write_version(root, "v000001-bench", x, items, built.index, manifest, {}, columns=columns)
    store.IndexRoot(root).publish("v000001-bench")
    return store.load_version(root)


def load_test(view, queries: np.ndarray, concurrency: int, seconds: float) -> dict:
    """Single-query searches from `concurrency` threads for `seconds`: p50, p99 (ms) and QPS."""
    latencies: list[float] = []
    lock, stop = threading.Lock(), time.perf_counter() + seconds

    def worker(offset: int) -> None:
        i, mine = offset, []
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            view.search(queries[i % len(queries)][None], K)
            mine.append(time.perf_counter() - t0)
            i += concurrency
        with lock:
            latencies.extend(mine)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "qps": round(len(ms) / wall, 1)}


def recall(view, queries: np.ndarray, truth: list[set]) -> float:
    """Mean recall@10 of the view's top 10 against the exact top 10."""
    _, ids = view.search(queries, K)
    return round(float(np.mean([len(set(got) & want) / K for got, want in zip(ids, truth)])), 4)


def writes(target, dim: int, n: int, batch: int = 500) -> dict:
    """Upsert throughput (items/s, acknowledged) and visibility latency (ack to first search hit)."""
    x = synthetic_vectors(n, dim, seed=7)
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        ops = [Upsert(f"w{i}", x[i], x[i], {"group": "new"}) for i in range(start, min(start + batch, n))]
        assert all(r.status == "ok" for r in target.write(ops))
    rate = n / (time.perf_counter() - t0)
    view, lags = target.open(), []
    for i in range(20):
        v = synthetic_vectors(1, dim, seed=1000 + i)[0]
        target.write([Upsert(f"vis{i}", v, v, {"group": "vis"})])
        t0 = time.perf_counter()
        while view.search(v[None], 1)[1][0] != [f"vis{i}"]:
            pass
        lags.append((time.perf_counter() - t0) * 1000)
    return {"upserts_per_s": round(rate, 1), "visibility_p50_ms": round(float(np.median(lags)), 2),
            "visibility_max_ms": round(float(np.max(lags)), 2)}


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of a process (MiB), or None."""
    if pid is None:
        return None
    out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return round(int(out) / 1024, 1) if out else None


def start_server(base: Path):
    """A standalone Milvus from the `milvus` wheel; returns (server, url)."""
    from milvus import MilvusServer  # noqa: PLC0415 - only when no --milvus server is given

    server = MilvusServer()
    server.set_base_dir(str(base))
    t0 = time.perf_counter()
    server.start()
    print(f"milvus standalone started in {time.perf_counter() - t0:.1f} s (pid {server.server_proc.pid})",
          file=sys.stderr)
    return server, f"milvus://127.0.0.1:{server.listen_port}/bench"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--seconds", type=float, default=10.0, help="per concurrency level")
    p.add_argument("--writes", type=int, default=5000, help="items upserted for the write throughput")
    p.add_argument("--milvus", help="an existing milvus:// server (default: start one from the wheel)")
    p.add_argument("--out", type=Path, default=Path("runs/perf_stores.json"))
    args = p.parse_args(argv)
    x = synthetic_vectors(args.n, args.dim, seed=0)
    queries = synthetic_vectors(args.queries, args.dim, seed=99)
    exact = np.argsort(-(queries @ x.T), axis=1)[:, :K]
    truth = [{f"i{r}" for r in row} for row in exact]
    tmp = Path(tempfile.mkdtemp(prefix="cir-perf-stores-"))
    server, url = (None, args.milvus) if args.milvus else start_server(tmp / "milvus")
    pid = server.server_proc.pid if server else None
    report: dict = {"n": args.n, "dim": args.dim, "load": os.getloadavg(), "cpus": os.cpu_count()}
    try:
        t0 = time.perf_counter()
        local = faiss_root(tmp / "root", x)
        report["faiss_build_s"] = round(time.perf_counter() - t0, 1)
        target = open_store(url, timeout_s=600)
        report["milvus_rss_mb_empty"] = rss_mb(pid)
        t0 = time.perf_counter()
        sync_version(target, local, index=HNSW, search_params={"ef": 128}, full=True)
        report["milvus_build_s"] = round(time.perf_counter() - t0, 1)
        report["milvus_rss_mb_loaded"] = rss_mb(pid)
        session = open_store(url, timeout_s=600, consistency="Session")
        views = {"faiss": local, "milvus": target.open(), "milvus_session": session.open()}
        for name, view in views.items():
            report[name] = {"recall_at_10": recall(view, queries, truth)}
            for c in (1, 8, 32):
                report[name][f"c{c}"] = load_test(view, queries, c, args.seconds)
        report["milvus"]["writes"] = writes(target, args.dim, args.writes)
        report["milvus_session"]["writes"] = writes(session, args.dim, args.writes // 5)
        report["load_after"] = os.getloadavg()
        target.close()
        session.close()
    finally:
        if server is not None:
            server.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(table(report))
    return 0


def table(r: dict) -> str:
    """The side-by-side table (markdown)."""
    rows = ["| store | recall@10 | c=1 p50/p99 ms | c=1 QPS | c=8 p50/p99 ms | c=8 QPS | c=32 p50/p99 ms | c=32 QPS |",
            "|---|---|---|---|---|---|---|---|"]
    for name in ("faiss", "milvus", "milvus_session"):
        s = r[name]
        cells = [f"{s[f'c{c}']['p50_ms']} / {s[f'c{c}']['p99_ms']} | {s[f'c{c}']['qps']}" for c in (1, 8, 32)]
        rows.append(f"| {name} | {s['recall_at_10']} | " + " | ".join(cells) + " |")
    w, ws = r["milvus"]["writes"], r["milvus_session"]["writes"]
    rows.append(f"\nMilvus writes: {w['upserts_per_s']} upserts/s acknowledged (batches of 500); visibility "
                f"p50 {w['visibility_p50_ms']} ms, max {w['visibility_max_ms']} ms (Strong), p50 "
                f"{ws['visibility_p50_ms']} ms, max {ws['visibility_max_ms']} ms (Session). Build: FAISS "
                f"{r['faiss_build_s']} s, Milvus fill+index+load {r['milvus_build_s']} s. Milvus RSS "
                f"{r['milvus_rss_mb_empty']} MiB empty, {r['milvus_rss_mb_loaded']} MiB loaded. "
                f"n={r['n']} dim={r['dim']}, load {r['load']} -> {r['load_after']}")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
