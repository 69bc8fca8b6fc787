"""CIR against its peers, side by side on this machine in one run: clip-retrieval's clip_inference and autofaiss.

    flock /tmp/cir-bench.lock nice -n 10 python perf/peers.py               # both comparisons (~1 h on 2 cores)
    python perf/peers.py --part indexer --images 2000 --batch-size 64 --workers 1 --threads 2
    flock /tmp/cir-bench.lock python perf/peers.py --part ann --n 1000000

The peers are the real packages, pip-installed into their own virtualenv (WORKDIR/venv: a pinned
torch/torchvision pair first, then PEERS; see TORCH_PAIR for why it is not cir's CPU torch 2.13.0);
if that or a peer run fails, the script prints the exact error and reports the peer as
unavailable (no stand-in is measured).

indexer: the random-weight ViT-B/32-sized CLIP of perf/serving.py, saved as a Hugging Face
folder with a real CLIP BPE tokenizer (built from the vocabulary of the `clip` package that
clip-retrieval installs), over WORKDIR/gallery (generated JPEGs, perf/indexing.py). Each side is
one fresh process with the same batch size, decode workers and OMP/MKL threads:
`clip-retrieval inference --clip_model hf_clip:MODEL` and `cir index build` (torch, then onnx).
Reported per side: the embedding stage's images/s (clip_inference: images / the sum of its
per-batch read+inference+write times from its stats file; cir: `--json` images_per_s, the
overlapped decode+embed loop) and the whole command's wall time (imports, model loading
(clip_inference loads it twice and warms up both towers), cir's file hashing, index and publish).

ann: N x 512 synthetic unit vectors (perf/ann.py's generator) saved as one .npy; autofaiss
`build_index` with clip-retrieval's defaults (max_index_memory_usage 4G, current_memory_available
16G) in the peer venv, and cir's `auto` structure via indexer.factory.build_index (tuned to
recall@10 0.95), both timed from the .npy file to a tuned index with the same build threads.
Both indexes are then searched here, with the same FAISS, the same 1000 held-out queries, one
query at a time on --search-threads: recall@10 against exact search and p50/p99 latency.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from transformers import CLIPTokenizer

from ann import latencies_ms
from cir.index_store import EMBEDDINGS_FILE, ITEMS_FILE, IndexRoot, iter_items, rerank_search
from indexer.config import BuildConfig
from indexer.factory import BuiltIndex, build_index, choose_factory, exact_topk, recall_at_k
from indexer.synthetic import synthetic_vectors
from indexing import make_gallery
from serving import make_vit_b32

# clip-retrieval imports torchvision, and PyPI's torchvision is built against CUDA torch: with the CPU
# torch 2.13.0 `import torchvision` fails ("operator torchvision::nms does not exist": its _C.so needs
# libc10_cuda.so). So the peer venv gets a matched CUDA-build pair, installed first and pinned so pip
# never swaps it (on this machine both lie on local disk; elsewhere it is a multi-GB download). It
# runs on the CPU like cir.
TORCH_PAIR = ("torch==2.14.1", "torchvision==0.29.1")
# clip-anytorch imports pkg_resources, which setuptools 81 removed.
PEERS = ("clip-retrieval==2.45.0", "autofaiss==2.18.0", "setuptools<81", *TORCH_PAIR)
# Run by the peer venv's Python: the `clip` package's own BPE vocabulary and merges, as JSON.
CLIP_VOCAB = ("import json, sys\nfrom clip.simple_tokenizer import SimpleTokenizer\nt = SimpleTokenizer()\n"
              "merges = [list(m) for m, _ in sorted(t.bpe_ranks.items(), key=lambda kv: kv[1])]\n"
              "json.dump({'vocab': t.encoder, 'merges': merges}, open(sys.argv[1], 'w'))\n")
PARQUET_PATHS = ("import json, sys\nimport pandas as pd\n"
                 "print(json.dumps(pd.read_parquet(sys.argv[1])['image_path'].tolist()))\n")
AUTOFAISS = ("import json, sys, time\nfrom autofaiss import build_index\nemb, out, threads, mem, avail = sys.argv[1:6]\n"
             "t = time.perf_counter()\n"
             "index, _ = build_index(embeddings=emb, index_path=out + '/knn.index', index_infos_path=out + "
             "'/infos.json', metric_type='ip', max_index_memory_usage=mem, current_memory_available=avail, "
             "nb_cores=int(threads))\n"
             "print(json.dumps({'seconds': time.perf_counter() - t, 'built': index is not None}))\n")


class PeerUnavailable(RuntimeError):
    """A peer could not be installed or run here; the message holds the exact error."""


def run(cmd: list[str], env: dict | None = None, log: Path | None = None) -> tuple[str, float]:
    """Run cmd; returns (stdout, wall seconds); raises PeerUnavailable with the error's tail on failure."""
    start = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if log is not None:
        log.write_text(f"$ {' '.join(map(str, cmd))}\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise PeerUnavailable(f"`{' '.join(map(str, cmd[:4]))} ...` exited {proc.returncode}:\n{tail}")
    return proc.stdout, seconds


def peer_venv(venv: Path) -> Path:
    """The peer virtualenv's Python, created and filled on first use (torch pinned first)."""
    python, stamp = venv / "bin" / "python", venv / ".cir-peers"
    wanted = " ".join(PEERS)
    if stamp.is_file() and stamp.read_text() == wanted:
        return python
    print(f"# installing the peers into {venv}: {wanted}", flush=True)
    run([sys.executable, "-m", "venv", venv])
    run([python, "-m", "pip", "install", "-q", *TORCH_PAIR])
    run([python, "-m", "pip", "install", "-q", *PEERS])
    stamp.write_text(wanted)
    return python


def clip_tokenizer(python: Path, work: Path) -> CLIPTokenizer:
    """OpenAI CLIP's BPE tokenizer (49408 tokens) from the vocabulary clip-retrieval's `clip` package ships."""
    out = work / "clip_vocab.json"
    run([python, "-c", CLIP_VOCAB, out])
    data = json.loads(out.read_text())
    return CLIPTokenizer(vocab=data["vocab"], merges=[tuple(m) for m in data["merges"]], model_max_length=77)


def thread_env(threads: int) -> dict:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), CUDA_VISIBLE_DEVICES="",
                HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="disabled")


def run_clip_inference(python: Path, model: str, gallery: Path, out: Path, args) -> dict:
    """clip-retrieval inference on the folder; its rate from its own per-batch stats."""
    cmd = [python.parent / "clip-retrieval", "inference", "--input_dataset", gallery, "--output_folder", out,
           "--input_format", "files", "--batch_size", args.batch_size, "--num_prepro_workers", args.workers,
           "--enable_text", "False", "--enable_metadata", "False", "--clip_model", f"hf_clip:{model}",
           "--use_jit", "False"]
    _, wall = run(cmd, thread_env(args.threads), out.parent / "clip_inference.log")
    stats = json.loads((out / "stats" / "0.json").read_text())
    paths = json.loads(run([python, "-c", PARQUET_PATHS, out / "metadata" / "metadata_0.parquet"])[0])
    emb = np.load(out / "img_emb" / "img_emb_0.npy").astype(np.float32)
    return {"side": "clip-retrieval clip_inference (torch)", "images": int(stats["sample_count"]),
            "images_per_s": stats["sample_count"] / stats["total_duration"], "wall_s": wall,
            "embeddings": dict(zip((str(Path(p).resolve()) for p in paths), emb))}


def run_cir_build(model: str, gallery: Path, out: Path, runtime: str, args) -> dict:
    """`cir index build` on the folder; its rate from its --json line."""
    cmd = [sys.executable, "-m", "cir_cli", "index", "build", "--gallery", gallery, "--model", model, "--out", out,
           "--batch-size", args.batch_size, "--workers", args.workers, "--device", "cpu", "--factory", "Flat",
           "--runtime", runtime, "--onnx-cache", out.parent / "onnx-cache", "--no-progress", "--json"]
    stdout, wall = run(cmd, thread_env(args.threads), out.parent / f"cir_{runtime}.log")
    result = json.loads(stdout.strip().splitlines()[-1])
    vdir = IndexRoot(out).version_dir(result["version"])
    emb = np.load(vdir / EMBEDDINGS_FILE)
    paths = [it["path"] for it in iter_items(vdir / ITEMS_FILE)]
    return {"side": f"cir index build ({runtime})", "images": result["embedded"],
            "images_per_s": result["images_per_s"], "wall_s": wall,
            "embeddings": dict(zip((str(Path(p).resolve()) for p in paths), emb))}


def compare_indexer(python: Path, work: Path, args) -> list[dict]:
    """The indexer against clip_inference: same model folder, images, batch, workers and threads."""
    model = make_vit_b32(work / "hf_clip_vit_b32", tokenizer=clip_tokenizer(python, work))
    gallery = work / "gallery"
    if not gallery.is_dir():
        make_gallery(gallery, args.images, (480, 360))
    runs = work / f"indexer-{time.strftime('%Y%m%d-%H%M%S')}"
    runs.mkdir()
    rows = []
    for side in (lambda: run_cir_build(model, gallery, runs / "cir_torch", "torch", args),
                 lambda: run_clip_inference(python, model, gallery, runs / "clip_inference", args),
                 lambda: run_cir_build(model, gallery, runs / "cir_onnx", "onnx", args)):
        load = os.getloadavg()[0]
        rows.append({**side(), "load_1min": [round(load, 1), round(os.getloadavg()[0], 1)]})
        print(f"# {rows[-1]['side']}: {rows[-1]['images']} images, {rows[-1]['images_per_s']:.2f} images/s, "
              f"wall {rows[-1]['wall_s']:.1f} s, load {rows[-1]['load_1min']}", flush=True)
    peer = rows[1]
    for row in rows:
        shared = sorted(set(row["embeddings"]) & set(peer["embeddings"]))
        cos = [float(row["embeddings"][p] @ peer["embeddings"][p]) /
               float(np.linalg.norm(peer["embeddings"][p]) * np.linalg.norm(row["embeddings"][p])) for p in shared]
        row.update(same_images=len(shared), min_cosine_to_peer=round(min(cos), 5) if cos else None,
                   ratio_to_peer=round(row["images_per_s"] / peer["images_per_s"], 3))
    return [{k: v for k, v in row.items() if k != "embeddings"} for row in rows]


def search_row(name: str, built: BuiltIndex, build_s: float, x, q, truth, args) -> dict:
    """Recall@10 and single-query latency of one built index on the shared queries."""
    load = os.getloadavg()[0]
    lat = latencies_ms(built, x, q, len(q), args.search_threads)
    found = rerank_search(built.index, x, q, 10, built.rerank)[1]
    return {"side": name, "factory": built.factory, "params": built.search_params, "build_s": round(build_s, 1),
            "recall_at_10": round(recall_at_k(found, truth), 4), "p50_ms": round(float(np.percentile(lat, 50)), 3),
            "p99_ms": round(float(np.percentile(lat, 99)), 3),
            "search_load_1min": [round(load, 1), round(os.getloadavg()[0], 1)]}


def compare_ann(python: Path, work: Path, args) -> list[dict]:
    """cir's auto index against autofaiss at N x 512: build time, recall@10, p99 (one query at a time)."""
    ann = work / f"ann-{args.n}"
    ann.mkdir(exist_ok=True)
    emb_dir = ann / "emb"
    emb_dir.mkdir(exist_ok=True)
    x = synthetic_vectors(args.n, 512, seed=0)
    np.save(emb_dir / "emb.npy", x)
    q = synthetic_vectors(args.queries, 512, seed=99)
    truth = exact_topk(x, q, 10)
    del x
    rows = []
    try:
        cmd = [python, "-c", AUTOFAISS, emb_dir, ann, args.threads, "4G", "16G"]
        load = [round(os.getloadavg()[0], 1)]
        stdout, _ = run(cmd, thread_env(args.threads), ann / "autofaiss.log")
        load.append(round(os.getloadavg()[0], 1))
        peer = json.loads(stdout.strip().splitlines()[-1])
        infos = json.loads((ann / "infos.json").read_text())
        index = faiss.read_index(str(ann / "knn.index"))
        faiss.ParameterSpace().set_index_parameters(index, infos["index_param"])
        built = BuiltIndex(index, infos["index_key"], {"index_param": infos["index_param"]}, 0.0, peer["seconds"], False)
        x = np.load(emb_dir / "emb.npy")
        rows.append({**search_row("autofaiss 2.18.0 build_index", built, peer["seconds"], x, q, truth, args),
                     "build_load_1min": load})
        del built, index, x
    except PeerUnavailable as exc:
        rows.append({"side": "autofaiss", "unavailable": str(exc)})
        print(f"autofaiss unavailable:\n{exc}", flush=True)
    faiss.omp_set_num_threads(args.threads)
    start, load = time.perf_counter(), [round(os.getloadavg()[0], 1)]
    x = np.load(emb_dir / "emb.npy")
    built = build_index(x, choose_factory(len(x), x.shape[1], BuildConfig.flat_max), recall_target=0.95)
    seconds = time.perf_counter() - start
    load.append(round(os.getloadavg()[0], 1))
    rows.append({**search_row("cir (indexer.factory, auto)", built, seconds, x, q, truth, args), "build_load_1min": load})
    return rows


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", default="all", choices=("all", "indexer", "ann"), help="which comparison (all)")
    p.add_argument("--workdir", type=Path, default=Path("runs/peers"), help="venv, model, data (runs/peers)")
    p.add_argument("--images", type=int, default=2000, help="generated JPEGs in the gallery (2000)")
    p.add_argument("--batch-size", type=int, default=64, help="encoder batch, both sides (64: cir's default)")
    p.add_argument("--workers", type=int, default=1, help="decode worker processes, both sides (1)")
    p.add_argument("--threads", type=int, default=2, help="torch / FAISS build threads, both sides (2)")
    p.add_argument("--n", type=int, default=1_000_000, help="vectors for the ANN comparison (1000000)")
    p.add_argument("--queries", type=int, default=1000, help="held-out queries for recall and latency (1000)")
    p.add_argument("--search-threads", type=int, default=1, help="FAISS threads while timing single queries (1)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Install the peers, run the chosen comparisons, print one table each; 1 if a peer was unavailable."""
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    try:
        python = peer_venv(args.workdir / "venv")
    except PeerUnavailable as exc:
        print(f"the peers cannot be installed here, nothing compared:\n{exc}", file=sys.stderr)
        return 1
    if args.part in ("all", "indexer"):
        try:
            results["indexer"] = compare_indexer(python, args.workdir, args)
        except PeerUnavailable as exc:
            results["indexer"] = [{"side": "clip-retrieval", "unavailable": str(exc)}]
            print(f"clip_inference unavailable:\n{exc}", flush=True)
        print_table("indexer", results["indexer"], args)
    if args.part in ("all", "ann"):
        results["ann"] = compare_ann(python, args.workdir, args)
        print_table("ann", results["ann"], args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if any("unavailable" in r for rows in results.values() for r in rows) else 0


def print_table(part: str, rows: list[dict], args) -> None:
    if part == "indexer":
        print(f"\n# indexer: {args.images} JPEGs 480x360, ViT-B/32-sized CLIP fp32 on CPU, batch {args.batch_size}, "
              f"{args.workers} decode worker(s), {args.threads} threads")
        print(f"{'side':<40} {'images':>6} {'images/s':>9} {'wall s':>7} {'ratio':>6} {'min cos':>8}")
    else:
        print(f"\n# ann: {args.n} x 512, {args.queries} queries, build threads {args.threads}, "
              f"search threads {args.search_threads} (one query at a time)")
        print(f"{'side':<32} {'factory':<10} {'build s':>8} {'recall@10':>9} {'p50 ms':>7} {'p99 ms':>7}  params")
    for r in rows:
        if "unavailable" in r:
            print(f"{r['side']:<40} UNAVAILABLE: {r['unavailable'].splitlines()[-1]}")
        elif part == "indexer":
            print(f"{r['side']:<40} {r['images']:>6} {r['images_per_s']:>9.1f} {r['wall_s']:>7.1f} "
                  f"{r['ratio_to_peer']:>6.2f} {r['min_cosine_to_peer']:>8}")
        else:
            print(f"{r['side']:<32} {r['factory']:<10} {r['build_s']:>8.1f} {r['recall_at_10']:>9.4f} "
                  f"{r['p50_ms']:>7.3f} {r['p99_ms']:>7.3f}  {r['params']}")


if __name__ == "__main__":
    sys.exit(main())
