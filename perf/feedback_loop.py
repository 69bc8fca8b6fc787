"""The feedback loop, simulated: users search a live `cir serve`, click, and the service learns from it.

    nice -n 10 flock /tmp/cir-bench.lock python perf/feedback_loop.py --work /tmp/cir-feedback-loop

Runs exactly the commands a user types, and talks to the server only over HTTP:
1. cir toyworld --out WORK/world --seed 5 --captions 0 --queries 6000 [--style STYLE]
   cir index build --gallery WORK/world/circo/gallery_manifest.jsonl --model toy --alpha 0.7 --out WORK/index_0
2. cir serve --index WORK/index_0 --feedback-dir WORK/feedback
   simulated users: POST /search {reference_id, text, k: 20} for the world's queries in order; a user
   clicks (POST /feedback kind=click) the true target when it is in the top 20, and with probability
   0.1 also a random result of the 20 (noise).
3. after 1,000 and after 5,000 searches in all:
   cir feedback export WORK/feedback --out WORK/triplets_N.jsonl
   cir train --model toy --triplets WORK/triplets_N.jsonl --gallery WORK/index_0 --out WORK/run_N \\
       --max-steps 60 --batch-size 32 --lr 1e-3 --holdout 0
   cir index build ... --adapter WORK/run_N --out WORK/index_N, and the server restarts on it
4. Recall@1/@10 (any render of the target combination counts, as in CIRCO) on the world's last
   --test queries, which the loop never searched, measured over HTTP before and after each round.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from cir.toyworld import holds_world
from cir.toyworld.cli import main as toyworld_main
from cir_cli.feedback import main as feedback_main
from indexer.cli import main as index_main
from training.cli import main as train_main

SEED, QUERIES, ALPHA = 5, 6000, "0.7"
TRAIN = ["--max-steps", "60", "--batch-size", "32", "--lr", "1e-3", "--holdout", "0"]
NOISE, TOP = 0.1, 20


def _run(tool: str, main, argv: list[str]) -> None:
    print(f"$ cir {tool} {shlex.join(argv)}", flush=True)
    if main(argv) != 0:
        raise SystemExit(f"cir {tool} failed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`cir serve` in a child process, ready when /readyz says so."""

    def __init__(self, index: Path, feedback: Path):
        self.port = _free_port()
        self.argv = ["serve", "--index", str(index), "--port", str(self.port), "--feedback-dir", str(feedback),
                     "--log-level", "warning"]

    def __enter__(self) -> httpx.Client:
        print(f"$ cir {shlex.join(self.argv)} &", flush=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "cir_cli.main", *self.argv])
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120)
        for _ in range(600):
            try:
                if self.client.get("/readyz").status_code == 200:
                    return self.client
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit("cir serve exited")
            time.sleep(0.2)
        raise SystemExit("cir serve did not become ready")

    def __exit__(self, *exc) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(timeout=60)


def load_queries(world: Path) -> list[dict]:
    """The world's queries as CIRCO has them, with the held-out flag and gallery ids (manifest ids are file names)."""
    circo = json.loads((world / "circo" / "annotations" / "val.json").read_text())
    heldout = {json.loads(line)["pairid"]: json.loads(line)["heldout"] for line in open(world / "queries.jsonl")}
    return [{"reference": f"{q['reference_img_id']:012d}.png", "text": q["relative_caption"],
             "targets": {f"{g:012d}.png" for g in q["gt_img_ids"]}, "heldout": heldout[q["id"]]} for q in circo]


def search(client: httpx.Client, q: dict, k: int) -> dict:
    r = client.post("/search", data={"reference_id": q["reference"], "text": q["text"], "k": str(k)})
    r.raise_for_status()
    return r.json()


def simulate(client: httpx.Client, queries: list[dict], rng: np.random.Generator) -> dict:
    """Search each query as a user and click what such a user clicks; returns counts."""
    counts = {"searches": 0, "true_clicks": 0, "random_clicks": 0}
    for q in queries:
        body = search(client, q, TOP)
        ids = [h["id"] for h in body["results"]]
        counts["searches"] += 1
        hit = next((i for i in ids if i in q["targets"]), None)
        clicks = [hit] if hit else []
        counts["true_clicks"] += bool(hit)
        if ids and rng.random() < NOISE:
            clicks.append(ids[int(rng.integers(len(ids)))])
            counts["random_clicks"] += 1
        for item in clicks:
            r = client.post("/feedback", json={"query_id": body["query_id"], "item_id": item, "kind": "click"})
            r.raise_for_status()
    return counts


def recall(client: httpx.Client, queries: list[dict]) -> dict:
    """Recall@1 and @10 over HTTP, all queries and those with held-out targets (no clicks: nothing to export)."""
    ranks = []
    for q in queries:
        ids = [h["id"] for h in search(client, q, 10)["results"]]
        ranks.append(next((r for r, i in enumerate(ids) if i in q["targets"]), 99))
    ranks, held = np.array(ranks), np.array([q["heldout"] for q in queries])
    out = {}
    for name, mask in (("all", np.ones_like(held)), ("held-out", held)):
        r = ranks[mask.astype(bool)]
        out[name] = {"R@1": round(100 * float(np.mean(r < 1)), 2), "R@10": round(100 * float(np.mean(r < 10)), 2),
                     "queries": int(len(r))}
    return out


def build_index(work: Path, manifest: Path, name: str, adapter: Path | None) -> Path:
    root = work / name
    if not (root / "CURRENT").is_file():
        _run("index", index_main, ["build", "--gallery", str(manifest), "--model", "toy", "--alpha", ALPHA,
                                   "--out", str(root), "--no-progress", "--workers", "0",
                                   *(["--adapter", str(adapter)] if adapter else [])])
    return root


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/cir-feedback-loop"))
    p.add_argument("--rounds", default="1000,5000", help="total searches after which to retrain")
    p.add_argument("--test", type=int, default=1000, help="held-back queries for recall")
    p.add_argument("--style", default="plain")
    p.add_argument("--queries", type=int, default=QUERIES, help="queries of the world (loop + test)")
    p.add_argument("--gallery-size", type=int, default=3000)
    p.add_argument("--run-args", default="--workers 1", help="extra cir train options that do not change results")
    p.add_argument("--train-args", default=shlex.join(TRAIN), help="cir train options of each retraining")
    p.add_argument("--tag", default="", help="suffix of the run and index folders of each round")
    args = p.parse_args(argv)
    work, rounds = args.work.expanduser(), [int(r) for r in args.rounds.split(",")]
    world = work / "world"
    if not holds_world(world, seed=SEED, n_queries=args.queries, n_captions=0, style=args.style,
                       gallery_size=args.gallery_size):
        _run("toyworld", toyworld_main, ["--out", str(world), "--seed", str(SEED), "--captions", "0", "--queries",
                                         str(args.queries), "--gallery-size", str(args.gallery_size), "--style",
                                         args.style, "--quiet"])
    queries = load_queries(world)
    loop, test = queries[:-args.test], queries[-args.test:]
    manifest = world / "circo" / "gallery_manifest.jsonl"
    index, rng, done, rows = build_index(work, manifest, "index_0", None), np.random.default_rng(0), 0, []
    print(f"load average {os.getloadavg()[0]:.1f} at the start, {os.cpu_count()} CPUs", flush=True)
    for total in rounds:
        with Server(index, work / "feedback") as client:
            if not rows:
                rows.append(("zero-shot (no feedback)", 0, 0, recall(client, test)))
            counts = simulate(client, [loop[i % len(loop)] for i in range(done, total)], rng)
            print(f"searches {done}..{total}: {counts}", flush=True)
        done = total
        triplets = work / f"triplets_{total}.jsonl"
        _run("feedback", feedback_main, ["export", str(work / "feedback"), "--out", str(triplets)])
        n = sum(1 for _ in open(triplets))
        run = work / f"run{args.tag}_{total}"
        _run("train", train_main, ["--model", "toy", "--triplets", str(triplets), "--gallery", str(work / "index_0"),
                                   "--out", str(run), *shlex.split(args.train_args), "--resume", "--no-progress",
                                   *shlex.split(args.run_args)])
        index = build_index(work, manifest, f"index{args.tag}_{total}", run)
        with Server(index, work / "feedback") as client:
            rows.append((f"after {total} searches", total, n, recall(client, test)))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    print("| model | searches | triplets | R@1 | R@10 | held-out R@1 | held-out R@10 |\n|---|---|---|---|---|---|---|")
    for name, total, n, r in rows:
        print(f"| {name} | {total} | {n} | {r['all']['R@1']:.2f} | {r['all']['R@10']:.2f} | "
              f"{r['held-out']['R@1']:.2f} | {r['held-out']['R@10']:.2f} |")
    print(f"recall on the last {args.test} queries of the world, never searched by the loop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
