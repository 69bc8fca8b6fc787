"""`python -m evaluation.composition`: composition beyond one image and one text, measured on a shapes world.

(a) negative text: single-change queries ("make it blue") with the old value ("red") as the
    negative, R@1 / R@10 against beta; two-change queries with both old values as negatives.
(b) several references: 1, 2 and 4 renders of the reference combination, merged by the
    spherical mean (and, for comparison, the normalised Euclidean mean).
(c) composed gallery items (the paper's open question 3): each gallery item titled with 1 to 3
    of its attributes, some wrong; R@1 over query alpha x item weight B (B = 0: images only).
Every query vector is made by `cir.fusion.compose` (composed items: `cir.fusion.fuse("slerp")`,
as `cir index build --item-text` does), ranked with the CIRR protocol (`composition_world`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from cir.benchmarks import default_cache_dir
from cir.encoder import load_encoder, loading_bars
from cir.fusion import compose, fuse, l2_normalize, negative
from cir.io import atomic_write_text
from cir.models import ModelLoadError
from evaluation.composition_plots import composition_plot
from evaluation.composition_tables import tables
from evaluation.composition_world import Texts, World, WorldError, item_titles, load_world, recalls

ALPHAS = (0.5, 0.6, 0.7, 0.8, 0.9)
BETAS = tuple(round(0.1 * i, 1) for i in range(11))
TWO_BETAS = (0.15, 0.3, 0.6)
GALLERY_ALPHAS = (0.3, 0.4) + ALPHAS
ITEM_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
REFERENCE_COUNTS = (1, 2, 4)
NEGATED = ("colour", "shape", "size", "pattern", "position")


def _refs(world: World, queries: list[dict]) -> np.ndarray:
    return world.images[[world.gallery[world.pos(q["reference"])] for q in queries]]


def _old(q: dict, name: str) -> str:
    """The words of the reference's value that the change removes: "red"; "right" for top right -> top left."""
    new = q["target_attrs"][name].split()
    return " ".join(word for word in q["reference_attrs"][name].split() if word not in new)


def negatives(world: World, texts: Texts, alpha: float) -> dict:
    """(a): beta sweep on single-change queries, per attribute, and two ways to apply two negatives."""
    single = [q for q in world.queries if len(q["changed"]) == 1]
    v, w = _refs(world, single), texts([q["caption"] for q in single])
    n = texts([_old(q, q["changed"][0]) for q in single])
    sweep = {b: recalls(world, single, compose("slerp", v, w, alpha, negatives=n, beta=b)) for b in BETAS}
    by_attr = {}
    for name in NEGATED:
        pick = [i for i, q in enumerate(single) if q["changed"][0] == name]
        qs = [single[i] for i in pick]
        by_attr[name] = {b: recalls(world, qs, compose("slerp", v[pick], w[pick], alpha, negatives=n[pick],
                                                       beta=b))["all"] for b in BETAS}
    return {"queries": len(single), "sweep": sweep, "by_attribute": by_attr, "two_changes": _two(world, texts, alpha)}


def _two(world: World, texts: Texts, alpha: float) -> dict:
    """Two-change queries: both old values through their spherical mean, in turn, or as one joined text."""
    qs = [q for q in world.queries if len(q["changed"]) == 2]
    v, w = _refs(world, qs), texts([q["caption"] for q in qs])
    n1, n2 = (texts([_old(q, q["changed"][j]) for q in qs]) for j in (0, 1))
    joined = texts([" ".join(_old(q, name) for name in q["changed"]) for q in qs])
    plain = compose("slerp", v, w, alpha)
    ways = {"spherical mean": lambda b: compose("slerp", v, w, alpha, negatives=np.stack([n1, n2], 1), beta=b),
            "in turn": lambda b: negative(negative(plain, n1, b), n2, b),
            "in turn, reversed": lambda b: negative(negative(plain, n2, b), n1, b),
            "one joined text": lambda b: compose("slerp", v, w, alpha, negatives=joined, beta=b)}
    results = {"none": {0.0: recalls(world, qs, plain)}}
    results.update({k: {b: recalls(world, qs, make(b)) for b in TWO_BETAS} for k, make in ways.items()})
    return {"queries": len(qs), "results": results}


def references(world: World, texts: Texts, alpha: float) -> dict:
    """(b): 1, 2, 4 renders of the reference combination per query (the canonical render first)."""
    qs = [q for q in world.queries if len(world.by_combo[_combo(q)]) >= max(REFERENCE_COUNTS)]
    rows = np.array([world.by_combo[_combo(q)][:max(REFERENCE_COUNTS)] for q in qs])
    w = texts([q["caption"] for q in qs])
    out: dict = {"queries": len(qs), "skipped": len(world.queries) - len(qs)}
    alphas = sorted({*ALPHAS, alpha})
    for n in REFERENCE_COUNTS:
        refs = world.images[rows[:, :n]]
        out[n] = {a: recalls(world, qs, compose("slerp", refs, w, a)) for a in alphas}
    euclid = l2_normalize(world.images[rows].mean(1))
    out[f"{max(REFERENCE_COUNTS)}, Euclidean mean"] = {a: recalls(world, qs, compose("slerp", euclid, w, a))
                                                      for a in alphas}
    return out


def _combo(q: dict) -> tuple:
    return tuple(q["reference_attrs"].values())


def _gallery(world: World, texts: Texts, titles: list[str | None], weight: float) -> np.ndarray:
    """The CIRR gallery with each titled item composed as `cir index build --item-text` does (B = 0: images)."""
    images = world.images[world.gallery]
    titled = [i for i, t in enumerate(titles) if t is not None]
    if weight == 0.0 or not titled:
        return images
    composed = images.copy()
    composed[titled] = fuse("slerp", images[titled], texts([titles[i] for i in titled]), weight)
    return composed


def composed_gallery(world: World, texts: Texts, alpha: float, wrong_share: float, title_seed: int) -> dict:
    """(c): R@1 over query alpha x item weight B, and at `alpha` for other title qualities."""
    qs = world.queries
    v, w = _refs(world, qs), texts([q["caption"] for q in qs])
    queries = {a: compose("slerp", v, w, a) for a in sorted({*GALLERY_ALPHAS, alpha})}
    main = f"1-3 attributes, {wrong_share:.0%} wrong"
    # label -> (wrong share, titled share, attributes stated)
    variants = {main: (wrong_share, 1.0, (1, 3)), "1-3 attributes, none wrong": (0.0, 1.0, (1, 3)),
                "1-3 attributes, 50% wrong": (0.5, 1.0, (1, 3)),
                f"1-3 attributes, {wrong_share:.0%} wrong, half the items titled": (wrong_share, 0.5, (1, 3)),
                "all 5 attributes, none wrong": (0.0, 1.0, (5, 5))}
    out: dict = {"queries": len(qs), "main": main, "examples": {}, "variants": {}}
    for label, (wrong, share, stated) in variants.items():
        titles = item_titles(world, wrong, share, title_seed, stated)
        alphas = list(queries) if label in (main, "all 5 attributes, none wrong") else [alpha]
        grid: dict = {a: {} for a in alphas}
        for b in ITEM_WEIGHTS:
            gallery = _gallery(world, texts, titles, b)
            for a in alphas:
                grid[a][b] = recalls(world, qs, queries[a], gallery)
        out["variants"][label], out["examples"][label] = grid, titles[:5]
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m evaluation.composition`."""
    p = argparse.ArgumentParser(prog="python -m evaluation.composition", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", required=True, type=Path, help="a shapes world from `cir toyworld` (use an unseen seed)")
    p.add_argument("--model", default="toy", help="'toy' (default), a hub id or a local model folder")
    p.add_argument("--adapter", type=Path, help="a TAT LoRA adapter folder")
    p.add_argument("--alpha", type=float, default=0.7, help="query text weight for (a) and the (c) variants (0.7)")
    p.add_argument("--wrong-share", type=float, default=0.2, help="(c): share of titles with one wrong word (0.2)")
    p.add_argument("--title-seed", type=int, default=0, help="(c): seed of the item titles (0)")
    p.add_argument("--cache-dir", type=Path, help=f"render embedding cache (default {default_cache_dir()})")
    p.add_argument("--workers", type=int, default=1, help="image decoding worker processes (1)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: the work is many small steps)")
    p.add_argument("--out", type=Path, help="write composition.json and composition.md here")
    p.add_argument("--plot", type=Path, metavar="PNG", help="write the three panels' figure here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args, argv: list[str]) -> dict:
    """Load the model and world, run (a), (b), (c); returns the report."""
    if not 0 <= args.alpha <= 1 or not 0 <= args.wrong_share <= 1:
        raise ValueError("--alpha and --wrong-share must be in [0, 1]")
    if args.threads:
        torch.set_num_threads(args.threads)
    with loading_bars(not args.no_progress):
        encoder = load_encoder(args.model, adapter=args.adapter, device="cpu")
    world = load_world(args.world, encoder, args.cache_dir or default_cache_dir(), workers=args.workers,
                       progress=not args.no_progress)
    texts = Texts(encoder)
    return {"command": ["python", "-m", "evaluation.composition", *argv], "world": str(args.world),
            "world_seed": world.seed, "encoder": encoder.info(), "alpha": args.alpha,
            "negatives": negatives(world, texts, args.alpha), "references": references(world, texts, args.alpha),
            "gallery": composed_gallery(world, texts, args.alpha, args.wrong_share, args.title_seed)}


def main(argv: list[str] | None = None) -> int:
    """Entry point; prints the tables (markdown)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = run(args, argv)
    except (WorldError, ModelLoadError, ValueError, OSError) as exc:
        print(f"evaluation.composition: error: {exc}", file=sys.stderr)
        return 2
    text = tables(report)
    print(text, end="")
    if args.out:
        atomic_write_text(args.out / "composition.json", json.dumps(report, indent=1, default=str))
        atomic_write_text(args.out / "composition.md", text)
    if args.plot:
        composition_plot(report, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
