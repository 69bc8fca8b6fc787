"""cir's `auto` index against autofaiss at N x 512 (`perf/peers.py --part ann`), reusing finished artefacts.

WORKDIR/ann-N/ keeps what each step made: emb/emb.npy (the vectors), knn.index + infos.json +
autofaiss.json (autofaiss's index, its chosen parameters, the build record), cir.index + cir.json
(cir's). A rerun reuses every complete artefact built with the same --threads and redoes only
what is missing (--rebuild autofaiss,cir forces a side); an .npy that no longer holds the
generator's vectors is rewritten and both indexes are rebuilt. The search measurement (recall@10
and latency of both indexes, queries taking turns between them) always runs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import faiss
import numpy as np

from ann import interleaved_latencies_ms
from cir.index_store import apply_search_params, read_index, rerank_search
from cir.io import atomic_write_json
from indexer.config import BuildConfig
from indexer.factory import BuiltIndex, build_index, choose_factory, exact_topk, recall_at_k
from indexer.synthetic import synthetic_vectors
from peer_env import LoadWatch, PeerUnavailable, run, thread_env

AUTOFAISS = ("import json, sys, time\nfrom autofaiss import build_index\nemb, out, threads, mem, avail = sys.argv[1:6]\n"
             "t = time.perf_counter()\n"
             "index, _ = build_index(embeddings=emb, index_path=out + '/knn.index', index_infos_path=out + "
             "'/infos.json', metric_type='ip', max_index_memory_usage=mem, current_memory_available=avail, "
             "nb_cores=int(threads))\n"
             "print(json.dumps({'seconds': time.perf_counter() - t, 'built': index is not None}))\n")
AUTOFAISS_FILES = ("autofaiss.json", "autofaiss.log", "knn.index", "infos.json")
CIR_FILES = ("cir.json", "cir.index")
CHUNK = 100_000


def holds(path: Path, x: np.ndarray) -> bool:
    """Whether the .npy at path holds exactly x (compared in chunks on a memory map)."""
    try:
        old = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return old.shape == x.shape and old.dtype == x.dtype and all(
        np.array_equal(old[i : i + CHUNK], x[i : i + CHUNK]) for i in range(0, len(x), CHUNK))


def ann_data(ann: Path, n: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """The held-out queries and their exact top-10; (re)writes emb/emb.npy, and drops both indexes, if stale."""
    x = synthetic_vectors(n, 512, seed=0)
    path = ann / "emb" / "emb.npy"
    if not holds(path, x):
        print(f"# writing {path} ({n} x 512)", flush=True)
        for name in AUTOFAISS_FILES + CIR_FILES:
            (ann / name).unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        # autofaiss reads every *.npy in the folder: the partial file must not end in .npy.
        tmp = path.with_name(".emb.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, x)
        os.replace(tmp, path)
    q = synthetic_vectors(queries, 512, seed=99)
    return q, exact_topk(x, q, 10)


def earlier_autofaiss_run(ann: Path) -> dict | None:
    """The build record of an autofaiss run that predates autofaiss.json, from its log (no load was recorded)."""
    log = ann / "autofaiss.log"
    lines = log.read_text().splitlines() if log.is_file() else []
    for i, line in enumerate(lines):
        if line.startswith('{"seconds"') and i > 0:
            # The line before is the end of the logged command: "EMB_DIR OUT_DIR THREADS MEM AVAIL".
            return {"seconds": round(json.loads(line)["seconds"], 1), "threads": int(lines[i - 1].split()[-3]),
                    "load": None, "note": "an earlier run of this script, which did not record the load"}
    return None


def autofaiss_side(python: Path, ann: Path, args) -> dict:
    """autofaiss's build record: reused when its index is complete, else built now in the peer venv."""
    record_path = ann / "autofaiss.json"
    if "autofaiss" not in args.rebuild and (ann / "knn.index").is_file() and (ann / "infos.json").is_file():
        record = json.loads(record_path.read_text()) if record_path.is_file() else earlier_autofaiss_run(ann)
        if record is not None and record["threads"] == args.threads:
            atomic_write_json(record_path, record)
            return {**record, "reused": True}
    for name in AUTOFAISS_FILES:
        (ann / name).unlink(missing_ok=True)
    cmd = [python, "-c", AUTOFAISS, ann / "emb", ann, args.threads, "4G", "16G"]
    with LoadWatch() as load:
        stdout, _ = run(cmd, thread_env(args.threads), ann / "autofaiss.log")
    seconds = json.loads(stdout.strip().splitlines()[-1])["seconds"]
    record = {"seconds": round(seconds, 1), "threads": args.threads, "load": load.record()}
    atomic_write_json(record_path, record)
    return {**record, "reused": False}


def cir_side(ann: Path, args) -> dict:
    """cir's build record: reused when complete, else `auto` built and tuned as `cir index build` does, and saved."""
    record_path, index_path = ann / "cir.json", ann / "cir.index"
    if "cir" not in args.rebuild and record_path.is_file() and index_path.is_file():
        record = json.loads(record_path.read_text())
        if record["threads"] == args.threads:
            return {**record, "reused": True}
    record_path.unlink(missing_ok=True)
    faiss.omp_set_num_threads(args.threads)
    with LoadWatch() as load:
        start = time.perf_counter()
        x = np.load(ann / "emb" / "emb.npy")
        read = time.perf_counter()
        built = build_index(x, choose_factory(len(x), x.shape[1], BuildConfig.flat_max), recall_target=0.95)
        tuned = time.perf_counter()
        del x
        tmp = index_path.with_name(".cir.index.tmp")
        faiss.write_index(built.index, str(tmp))
        os.replace(tmp, index_path)
        seconds = time.perf_counter() - start
    record = {"seconds": round(seconds, 1), "read_s": round(read - start, 1), "add_s": round(built.build_seconds, 1),
              "tune_s": round(tuned - read - built.build_seconds, 1), "save_s": round(start + seconds - tuned, 1),
              "factory": built.factory, "params": built.search_params, "rerank": built.rerank,
              "build_recall_at_10": built.recall_at_10, "threads": args.threads, "load": load.record()}
    atomic_write_json(record_path, record)
    return {**record, "reused": False}


def load_autofaiss(ann: Path, record: dict) -> BuiltIndex:
    """autofaiss's saved index with the search parameters it chose (infos.json), set by FAISS's own parser."""
    infos = json.loads((ann / "infos.json").read_text())
    index = faiss.read_index(str(ann / "knn.index"))
    faiss.ParameterSpace().set_index_parameters(index, infos["index_param"])
    return BuiltIndex(index, infos["index_key"], {"index_param": infos["index_param"]}, 0.0, record["seconds"], False)


def load_cir(ann: Path, record: dict) -> BuiltIndex:
    """cir's saved index with its tuned parameters, loaded as the service loads a version."""
    index = read_index(ann / "cir.index", record["factory"])
    apply_search_params(index, record["params"])
    return BuiltIndex(index, record["factory"], record["params"], record["build_recall_at_10"], record["seconds"],
                      False, record["rerank"])


def measure(sides: list[tuple[str, dict, BuiltIndex]], x, q, truth, args) -> list[dict]:
    """Recall@10 against exact search and single-query p50/p99 of every side on the same queries."""
    with LoadWatch() as load:
        lats = interleaved_latencies_ms([built for _, _, built in sides], x, q, args.search_threads)
    rows = []
    for (name, record, built), lat in zip(sides, lats):
        found = rerank_search(built.index, x, q, 10, built.rerank)[1]
        rows.append({"side": name, "factory": built.factory, "params": built.search_params,
                     "build_s": record["seconds"], "build_reused": record["reused"], "build_load": record["load"],
                     "recall_at_10": round(recall_at_k(found, truth), 4),
                     "p50_ms": round(float(np.percentile(lat, 50)), 3),
                     "p99_ms": round(float(np.percentile(lat, 99)), 3),
                     "search_load": load.record()})
    return rows


def compare_ann(python: Path, work: Path, args) -> list[dict]:
    """cir's auto index against autofaiss at N x 512: build time, recall@10, p50/p99 (one query at a time)."""
    ann = work / f"ann-{args.n}"
    q, truth = ann_data(ann, args.n, args.queries)
    sides, unavailable = [], []
    try:
        record = autofaiss_side(python, ann, args)
        print(f"# autofaiss build: {record}", flush=True)
        sides.append(("autofaiss 2.18.0 build_index", record, load_autofaiss(ann, record)))
    except PeerUnavailable as exc:
        unavailable.append({"side": "autofaiss", "unavailable": str(exc)})
        print(f"autofaiss unavailable:\n{exc}", flush=True)
    record = cir_side(ann, args)
    print(f"# cir build: {record}", flush=True)
    sides.append(("cir (indexer.factory, auto)", record, load_cir(ann, record)))
    faiss.omp_set_num_threads(args.threads)
    return unavailable + measure(sides, np.load(ann / "emb" / "emb.npy", mmap_mode="r"), q, truth, args)
