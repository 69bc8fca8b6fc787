"""`python -m training.diagnose`: where Slerp fails on a shapes world, by changed attribute, before/after TAT.

    python -m training.diagnose --world /tmp/eval --model toy --adapter runs/tat --alpha 0.7

For each encoder (the base model, then each --adapter) prints Slerp R@1 on the world's CIRR
split grouped by which attribute the query changes, and for single-attribute colour and shape
changes whether the modification text also names the OLD value ("a star instead of a circle").
A frozen text tower that reads such texts as a bag of words cannot tell old from new; TAT,
which only moves the image tower, cannot fix that.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from cir.benchmarks.cirr import load_cirr
from cir.benchmarks.data import BenchmarkData
from cir.benchmarks.ranking import rank_gallery
from cir.encoder import load_encoder
from cir.fusion import fuse
from cir.images import decode_image
from cir.io import iter_jsonl

ATTRIBUTES = ("shape", "colour", "size", "position", "pattern")


def _load(world: Path) -> tuple[BenchmarkData, list[dict]]:
    data = load_cirr(world / "cirr", "val")
    side = {str(q["pairid"]): q for _, q in iter_jsonl(world / "queries.jsonl")}
    return data, [side[q.qid] for q in data.queries]


def top1_hits(encoder, data: BenchmarkData, alpha: float) -> np.ndarray:
    """Whether each query's top-ranked gallery image (reference removed) is its target (cir.benchmarks' ranking)."""
    names = data.require_gallery()
    gallery = encoder.encode_images([decode_image(data.image_path(n)) for n in names])
    row = {n: i for i, n in enumerate(names)}
    refs = [row[q.reference] for q in data.queries]
    composed = fuse("slerp", gallery[refs], encoder.encode_texts([q.text for q in data.queries]), alpha)
    tops, _ = rank_gallery(composed, gallery, 1, exclude=refs)
    return np.array([names[t[0]] == q.target for t, q in zip(tops, data.queries)])


def breakdown(hits: np.ndarray, queries: list[dict]) -> dict[str, tuple[float, int]]:
    """R@1 (x100) and query count per group."""
    groups: dict[str, np.ndarray] = {
        "all": np.ones(len(queries), bool),
        "heldout": np.array([q["heldout"] for q in queries]),
        "one change": np.array([len(q["changed"]) == 1 for q in queries]),
        "two changes": np.array([len(q["changed"]) > 1 for q in queries]),
    }
    for attr in ATTRIBUTES:
        groups[f"changes {attr}"] = np.array([attr in q["changed"] for q in queries])
    for attr in ("shape", "colour"):
        only = np.array([q["changed"] == [attr] for q in queries])
        named = np.array([q["reference_attrs"][attr] in q["caption"].split() for q in queries])
        groups[f"{attr} only, old value named"] = only & named
        groups[f"{attr} only, old value not named"] = only & ~named
    return {k: (round(100.0 * float(hits[m].mean()), 1) if m.any() else float("nan"), int(m.sum()))
            for k, m in groups.items()}


def main(argv: list[str] | None = None) -> int:
    """Print the per-group R@1 table; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m training.diagnose", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", required=True, type=Path, help="a shapes world (with cirr/ and queries.jsonl)")
    p.add_argument("--model", default="toy", help="base model (default toy)")
    p.add_argument("--adapter", action="append", default=[], help="TAT adapter folder (repeatable)")
    p.add_argument("--alpha", type=float, default=0.7, help="Slerp text weight (default 0.7)")
    args = p.parse_args(argv)
    if not (args.world / "queries.jsonl").is_file():
        print(f"{args.world} is not a shapes world (no queries.jsonl)", file=sys.stderr)
        return 2
    data, queries = _load(args.world)
    columns = {}
    for adapter in [None, *args.adapter]:
        encoder = load_encoder(args.model, adapter=adapter, device="cpu")
        hits = top1_hits(encoder, data, args.alpha)
        columns[Path(adapter).name if adapter else "base"] = breakdown(hits, queries)
    groups = list(next(iter(columns.values())))
    print("| group | queries | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for g in groups:
        cells = [f"{columns[c][g][0]:.1f}" for c in columns]
        print(f"| {g} | {columns['base'][g][1]} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
