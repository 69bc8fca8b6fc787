"""Measure the mechanism on a fresh shapes world: zero-shot attributes, composed retrieval, modality gap.

`python -m training.toy.report --model cir/assets/toy --seed 1` generates a world with a seed
the model never trained on, reads its CIRR files, and reports: zero-shot accuracy per attribute,
image-only / text-only / linear / Slerp Recall@K over alphas (all, seen and held-out targets),
full-caption text-to-image recall, and the modality gap (paired cosine, centroid distance).
Loading, ranking (one tie rule: the earlier gallery image first), Recall@K and the gap are
cir.benchmarks', exactly as `cir eval` computes them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from cir.benchmarks.cirr import load_cirr
from cir.benchmarks.data import BenchmarkData, CIRQuery
from cir.benchmarks.gap import modality_gap
from cir.benchmarks.metrics import cirr_metrics, recall_at_k
from cir.benchmarks.ranking import rank_gallery
from cir.encoder import Encoder, load_encoder
from cir.fusion import fuse
from cir.images import decode_image
from cir.io import iter_jsonl
from cir.toyworld import ATTRIBUTES, full_caption, generate_world, is_heldout, to_attrs, words

log = logging.getLogger(__name__)

ALPHAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
KS = (1, 5, 10, 50)
EVAL_SEED = 1


def zero_shot_prompts(attribute: str) -> dict[str, str]:
    """Class prompts for one attribute, worded like the training captions."""
    if attribute == "shape":
        return {v: f"a {v}" for v in ATTRIBUTES["shape"]}
    if attribute == "position":
        return {v: f"a shape in the {v}" for v in ATTRIBUTES["position"]}
    return {v: f"a {v} shape" for v in ATTRIBUTES[attribute]}


def attribute_accuracy(enc: Encoder, image_emb: np.ndarray, attrs: list[dict]) -> dict[str, float]:
    """Zero-shot accuracy per attribute: the nearest class prompt must name the true value."""
    result = {}
    for name in ATTRIBUTES:
        prompts = zero_shot_prompts(name)
        values = list(prompts)
        text = enc.encode_texts(list(prompts.values()))
        pred = (image_emb @ text.T).argmax(1)
        result[name] = float(np.mean([values[p] == a[name] for p, a in zip(pred, attrs)]))
    return result


def load_world(world: Path) -> tuple[BenchmarkData, list[dict], dict[str, dict]]:
    """The world's CIRR split (cir.benchmarks' loader), each gallery image's attributes, each query's side info."""
    data = load_cirr(world / "cirr", "val")
    by_name = {g["cirr_name"]: g["attributes"] for _, g in iter_jsonl(world / "gallery.jsonl")}
    side = {str(q["pairid"]): q for _, q in iter_jsonl(world / "queries.jsonl")}
    return data, [by_name[n] for n in data.require_gallery()], side


def rank_queries(queries: np.ndarray, gallery: np.ndarray, data: BenchmarkData) -> tuple[list, list]:
    """Each query's top 50 (reference removed) and its img_set in rank order: cir.benchmarks' exact ranking."""
    names = data.require_gallery()
    row = {n: i for i, n in enumerate(names)}
    exclude = [row[q.reference] for q in data.queries]
    subsets = [[row[m] for m in q.members if m != q.reference] for q in data.queries]
    tops, ordered = rank_gallery(queries, gallery, max(KS), exclude, subsets)
    return [[names[i] for i in t] for t in tops], [[names[i] for i in o] for o in ordered]


def recall_at(rankings: list, subsets: list, queries: list[CIRQuery]) -> dict[str, float]:
    """CIRR Recall@K (reference removed) and Recall_subset@1, x100 (cir.benchmarks.cirr_metrics)."""
    m = cirr_metrics(rankings, [q.target for q in queries], [q.reference for q in queries],
                     [q.members for q in queries], subset_rankings=subsets)
    return {k: m[k] for k in (*(f"R@{k}" for k in KS), "Rs@1")}


def query_groups(queries: list[CIRQuery], side: dict) -> dict[str, np.ndarray]:
    """Row indices per reporting group: all, seen / held-out targets, one / two changes, per attribute."""
    info = [side[q.qid] for q in queries]
    groups = {"all": [True] * len(info), "seen": [not i["heldout"] for i in info],
              "heldout": [i["heldout"] for i in info], "1 change": [len(i["changed"]) == 1 for i in info],
              "2 changes": [len(i["changed"]) == 2 for i in info]}
    for name in ATTRIBUTES:
        groups[f"only {name}"] = [i["changed"] == [name] for i in info]
    # "turn the circle into a star": the text names the value being replaced as well as the new one.
    names_old = [any(i["reference_attrs"][n] in words(i["caption"]) for n in i["changed"]) for i in info]
    groups["text names the old value"] = names_old
    groups["text names only the new value"] = [not x for x in names_old]
    return {k: np.flatnonzero(v) for k, v in groups.items()}


def composed_retrieval(enc: Encoder, gallery: np.ndarray, data: BenchmarkData, side: dict) -> dict:
    """Recall of image-only, text-only, linear and Slerp queries, per query group."""
    row = {n: i for i, n in enumerate(data.require_gallery())}
    queries = data.queries
    v = gallery[[row[q.reference] for q in queries]]
    w = enc.encode_texts([q.text for q in queries])
    methods = {"image": fuse("image", v, w, 0.0), "text": fuse("text", v, w, 1.0),
               "linear": fuse("linear", v, w, 0.5)}
    for alpha in ALPHAS:
        methods[f"slerp@{alpha}"] = fuse("slerp", v, w, alpha)
    groups = query_groups(queries, side)
    report = {}
    for name, query in methods.items():
        rankings, subsets = rank_queries(query, gallery, data)
        report[name] = {g: recall_at([rankings[i] for i in rows], [subsets[i] for i in rows],
                                     [queries[i] for i in rows])
                        for g, rows in groups.items() if len(rows)}
    return report


def _captions(attrs: list[dict], seed: int, stream: int) -> list[str]:
    rng = np.random.default_rng([seed, stream])
    return [full_caption(to_attrs(a), rng) for a in attrs]


def text_to_image(enc: Encoder, gallery: np.ndarray, attrs: list[dict], seed: int) -> dict[str, float]:
    """Full-caption text-to-image Recall@1/@10 over one render per combination, x100."""
    tops, _ = rank_gallery(enc.encode_texts(_captions(attrs, seed, 99)), gallery, 10)
    recall = recall_at_k([[str(i) for i in t] for t in tops], [str(i) for i in range(len(attrs))], (1, 10))
    return {f"R@{k}": v for k, v in recall.items()}


def caption_gap(enc: Encoder, gallery: np.ndarray, attrs: list[dict], seed: int) -> dict[str, float]:
    """The modality gap between each render and a full caption of it (cir.benchmarks.gap)."""
    return modality_gap(gallery, enc.encode_texts(_captions(attrs, seed, 98)))


def evaluate(model: str, seed: int = EVAL_SEED, n_queries: int = 2000, gallery_size: int = 3000,
             world: Path | None = None) -> dict:
    """Generate (or reuse) a shapes world with `seed` and measure the model on it."""
    enc = load_encoder(model, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        if world is None:
            world = Path(tmp) / "world"
            generate_world(world, seed=seed, gallery_size=gallery_size, n_queries=n_queries, n_captions=0)
        data, attrs, side = load_world(world)
        cirr = enc.encode_images([decode_image(data.image_path(n)) for n in data.require_gallery()])
        rows = [g for _, g in iter_jsonl(world / "gallery.jsonl")]
        circo_dir = world / "circo/COCO2017_unlabeled/unlabeled2017"
        every = enc.encode_images([decode_image(circo_dir / r["file_name"]) for r in rows])
        every_attrs = [r["attributes"] for r in rows]
    held = [i for i, a in enumerate(every_attrs) if is_heldout(a)]
    return {
        "eval_seed": seed,
        "n_queries": len(data.queries), "n_heldout_queries": int(sum(side[q.qid]["heldout"] for q in data.queries)),
        "n_cirr_images": len(attrs), "n_gallery_renders": len(rows),
        "zero_shot": attribute_accuracy(enc, every, every_attrs),
        "zero_shot_heldout": attribute_accuracy(enc, every[held], [every_attrs[i] for i in held]),
        "text_to_image": text_to_image(enc, cirr, attrs, seed),
        "modality_gap": caption_gap(enc, cirr, attrs, seed),
        "retrieval": composed_retrieval(enc, cirr, data, side),
    }


def best_alpha(report: dict, split: str = "all", metric: str = "R@1") -> float:
    """The Slerp alpha with the highest metric on the given split."""
    slerps = {k: v for k, v in report["retrieval"].items() if k.startswith("slerp@")}
    return float(max(slerps, key=lambda k: slerps[k][split][metric]).split("@")[1])


def format_report(report: dict) -> str:
    """A markdown summary of an evaluation report."""
    lines = ["| attribute | " + " | ".join(report["zero_shot"]) + " |", "|---" * (len(report["zero_shot"]) + 1) + "|"]
    lines.append("| zero-shot acc (all renders) | "
                 + " | ".join(f"{v:.3f}" for v in report["zero_shot"].values()) + " |")
    lines.append("| zero-shot acc (held-out combos) | "
                 + " | ".join(f"{v:.3f}" for v in report["zero_shot_heldout"].values()) + " |")
    lines += ["", "| query | split | R@1 | R@5 | R@10 | R@50 | Rs@1 |", "|---|---|---|---|---|---|---|"]
    for name, splits in report["retrieval"].items():
        for split in ("all", "seen", "heldout"):
            m = splits[split]
            cells = " | ".join(f"{m[k]:.1f}" for k in ("R@1", "R@5", "R@10", "R@50", "Rs@1"))
            lines.append(f"| {name} | {split} | {cells} |")
    best = f"slerp@{best_alpha(report)}"
    picks = ("image", "text", "linear", best)
    groups = [g for g in report["retrieval"][best] if g not in ("all", "seen", "heldout")]
    lines += ["", "| R@1 by query group | " + " | ".join(picks) + " |", "|---" * (len(picks) + 1) + "|"]
    for g in groups:
        lines.append(f"| {g} | " + " | ".join(f"{report['retrieval'][p][g]['R@1']:.1f}" for p in picks) + " |")
    gap, t2i = report["modality_gap"], report["text_to_image"]
    lines += ["", f"full-caption text->image R@1 {t2i['R@1']:.1f}, R@10 {t2i['R@10']:.1f}; "
              f"paired cosine {gap['paired_cosine']:.3f}, centroid distance {gap['centroid_distance']:.3f} "
              f"(centroid cosine {gap['centroid_cosine']:.3f}); best Slerp alpha {best_alpha(report)}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Evaluate a model on a fresh shapes world and print (and optionally save) the report."""
    p = argparse.ArgumentParser(prog="python -m training.toy.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy", help="model name or directory (default: the built-in toy model)")
    p.add_argument("--seed", type=int, default=EVAL_SEED, help=f"evaluation world seed (default {EVAL_SEED})")
    p.add_argument("--queries", type=int, default=2000, help="composed queries (default 2000)")
    p.add_argument("--gallery-size", type=int, default=3000, help="gallery renders (default 3000)")
    p.add_argument("--world", type=Path, help="evaluate on an existing world folder instead of generating one")
    p.add_argument("--json", type=Path, help="also write the full report to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    try:
        report = evaluate(args.model, args.seed, args.queries, args.gallery_size, args.world)
    except (OSError, ValueError) as exc:
        print(f"training.toy.report: error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
