"""Encoder speed, torch vs ONNX Runtime on the CPU: both towers, batch 1 and 32, the same thread counts.

    flock /tmp/cir-bench.lock nice -n 10 python perf/onnx_speed.py            # ViT-B/32-sized, 1 and 2 threads
    python perf/onnx_speed.py --model toy --threads 1 --batches 1,8            # any model

Builds the random-weight ViT-B/32-sized CLIP of perf/serving.py (224 px, patch 32, 12 x 768 image
tower; a 12 x 768 text tower over 77 tokens) unless --model is given, loads it with the torch
runtime (fp32) and exports it once with cir.onnx_runtime, then for each thread count and batch
size times `encode_pixels` on ready (preprocessed) batches and `encode_texts` on raw texts
(tokenization included on both sides). torch and ONNX Runtime take turns, `--rounds` times, and
the median round counts (after one warm-up call each). Prints images (texts)/s and the ONNX / torch ratio per row.
(Named onnx_speed.py: a perf/onnx.py would shadow the `onnx` package when run as a script.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from cir.encoder import load_encoder
from cir.onnx_runtime import onnx_encoder
from serving import make_vit_b32

TEXTS = ["make it blue", "a large red circle instead", "turn it into a small striped star at the top left",
         "same shape but green", "move it to the bottom right and make it bigger"]


def rate(fn, items_per_call: int, min_seconds: float) -> float:
    """Items/s of fn() over at least one call and min_seconds."""
    calls, start = 0, time.perf_counter()
    while calls < 1 or time.perf_counter() - start < min_seconds:
        fn()
        calls += 1
    return calls * items_per_call / (time.perf_counter() - start)


def measure(encoders: dict, tower: str, batch: int, args) -> dict:
    """Median items/s of each runtime on one tower and batch size, runtimes alternating per round."""
    size = encoders["torch"].preprocess(Image.new("RGB", (256, 256))).shape
    pixels = torch.randn((batch, *size), generator=torch.Generator().manual_seed(0))
    texts = [TEXTS[i % len(TEXTS)] for i in range(batch)]
    calls = {name: ((lambda e=enc: e.encode_pixels(pixels)) if tower == "image" else
                    (lambda e=enc: e.encode_texts(texts, batch_size=batch)))
             for name, enc in encoders.items()}
    outputs = {name: fn() for name, fn in calls.items()}  # warm-up, and the outputs to compare
    rounds: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(args.rounds):
        for name, fn in calls.items():
            rounds[name].append(rate(fn, batch, args.min_seconds))
    out = {name: statistics.median(r) for name, r in rounds.items()}
    return {"tower": tower, "batch": batch, "torch_per_s": round(out["torch"], 2), "onnx_per_s": round(out["onnx"], 2),
            "onnx_over_torch": round(out["onnx"] / out["torch"], 3),
            "min_cosine": round(float((outputs["torch"] * outputs["onnx"]).sum(1).min()), 6)}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit-b32", help="'vit-b32' (random weights, built here) or any model")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts, torch and ORT alike (1,2)")
    p.add_argument("--batches", default="1,32", help="comma-separated batch sizes (1,32)")
    p.add_argument("--towers", default="image,text", help="image, text or both (default both)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per row (3); the median counts")
    p.add_argument("--min-seconds", type=float, default=2.0, help="least time per timed run (2 s)")
    p.add_argument("--workdir", type=Path, default=None, help="keep the model and its ONNX export here")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every (threads, tower, batch) row and print the table."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cir-bench-onnx-") as tmp:
        work = args.workdir or Path(tmp)
        model = make_vit_b32(work / "vit_b32") if args.model == "vit-b32" else args.model
        torch_enc = load_encoder(model, device="cpu", dtype="float32")
        start = time.perf_counter()
        onnx_encoder(torch_enc, work / "onnx-cache")
        print(f"# {args.model}: ONNX export (or cache hit) in {time.perf_counter() - start:.1f} s; torch "
              f"{torch.__version__}, dim {torch_enc.dim}", flush=True)
        rows = []
        print(f"{'threads':>7} {'tower':>5} {'batch':>5} {'torch/s':>9} {'onnx/s':>9} {'onnx/torch':>10} {'min cos':>9}")
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            encoders = {"torch": torch_enc, "onnx": onnx_encoder(torch_enc, work / "onnx-cache", threads=threads)}
            for tower in args.towers.split(","):
                for batch in (int(b) for b in args.batches.split(",")):
                    row = {"threads": threads, **measure(encoders, tower, batch, args)}
                    rows.append(row)
                    print(f"{threads:>7} {tower:>5} {batch:>5} {row['torch_per_s']:>9.1f} {row['onnx_per_s']:>9.1f} "
                          f"{row['onnx_over_torch']:>10.2f} {row['min_cosine']:>9.6f}", flush=True)
    print("(items/s: images for the image tower on preprocessed batches, texts for the text tower incl. tokenization)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
