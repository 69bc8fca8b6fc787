"""Measure the mechanism on a fresh shapes world: zero-shot attributes, composed retrieval, modality gap.

`python -m training.toy_report --model cir/assets/toy --seed 1` generates a world with a seed
the model never trained on, reads its CIRR files, and reports: zero-shot accuracy per attribute,
image-only / text-only / linear / Slerp Recall@K over alphas (all, seen and held-out targets),
full-caption text-to-image recall, and the modality gap (paired cosine, centroid distance).
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
from PIL import Image

from cir.encoder import Encoder, load_encoder
from cir.fusion import fuse
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


def load_cirr(world: Path) -> tuple[list[str], list[dict], list[dict], dict[str, dict]]:
    """The CIRR split names, their attributes, the CIRR queries and the side info per pairid."""
    split = json.loads((world / "cirr/image_splits/split.rc2.val.json").read_text())
    names = list(split)
    by_name = {g["cirr_name"]: g["attributes"] for g in map(json.loads, (world / "gallery.jsonl").open())}
    queries = json.loads((world / "cirr/captions/cap.rc2.val.json").read_text())
    side = {q["pairid"]: q for q in map(json.loads, (world / "queries.jsonl").open())}
    return names, [by_name[n] for n in names], queries, side


def recall_at(scores: np.ndarray, names: list[str], queries: list[dict]) -> dict[str, float]:
    """CIRR Recall@K (reference removed) and Recall_subset@1, x100."""
    index = {n: i for i, n in enumerate(names)}
    scores = scores.copy()
    hits = {k: [] for k in KS}
    subset = []
    for row, q in zip(scores, queries):
        row[index[q["reference"]]] = -np.inf
        target = index[q["target_hard"]]
        rank = int((row > row[target]).sum())
        for k in KS:
            hits[k].append(rank < k)
        members = [index[m] for m in q["img_set"]["members"] if m != q["reference"]]
        subset.append(max(members, key=lambda i: row[i]) == target)
    out = {f"R@{k}": 100 * float(np.mean(v)) for k, v in hits.items()}
    out["Rs@1"] = 100 * float(np.mean(subset))
    return out


def query_groups(queries: list[dict], side: dict) -> dict[str, np.ndarray]:
    """Row indices per reporting group: all, seen / held-out targets, one / two changes, per attribute."""
    info = [side[q["pairid"]] for q in queries]
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


def composed_retrieval(enc: Encoder, gallery: np.ndarray, names: list[str], queries: list[dict],
                       side: dict) -> dict:
    """Recall of image-only, text-only, linear and Slerp queries, per query group."""
    index = {n: i for i, n in enumerate(names)}
    v = gallery[[index[q["reference"]] for q in queries]]
    w = enc.encode_texts([q["caption"] for q in queries])
    methods = {"image": fuse("image", v, w, 0.0), "text": fuse("text", v, w, 1.0),
               "linear": fuse("linear", v, w, 0.5)}
    for alpha in ALPHAS:
        methods[f"slerp@{alpha}"] = fuse("slerp", v, w, alpha)
    groups = query_groups(queries, side)
    report = {}
    for name, query in methods.items():
        scores = query @ gallery.T
        report[name] = {g: recall_at(scores[rows], names, [queries[i] for i in rows])
                        for g, rows in groups.items() if len(rows)}
    return report


def text_to_image(enc: Encoder, gallery: np.ndarray, attrs: list[dict], seed: int) -> dict[str, float]:
    """Full-caption text-to-image Recall@1/@10 over one render per combination, x100."""
    rng = np.random.default_rng([seed, 99])
    text = enc.encode_texts([full_caption(to_attrs(a), rng) for a in attrs])
    scores = text @ gallery.T
    ranks = (scores > np.diag(scores)[:, None]).sum(1)
    return {"R@1": 100 * float(np.mean(ranks < 1)), "R@10": 100 * float(np.mean(ranks < 10))}


def modality_gap(enc: Encoder, gallery: np.ndarray, attrs: list[dict], seed: int) -> dict[str, float]:
    """Paired image-caption cosine and the distance between the image and text centroids."""
    rng = np.random.default_rng([seed, 98])
    text = enc.encode_texts([full_caption(to_attrs(a), rng) for a in attrs])
    ci, ct = gallery.mean(0), text.mean(0)
    return {"paired_cosine": float(np.mean((gallery * text).sum(1))),
            "centroid_distance": float(np.linalg.norm(ci - ct)),
            "centroid_cosine": float(ci @ ct / (np.linalg.norm(ci) * np.linalg.norm(ct)))}


def _open_all(paths: list[Path]) -> list[Image.Image]:
    images = []
    for p in paths:
        with Image.open(p) as im:
            images.append(im.convert("RGB"))
    return images


def evaluate(model: str, seed: int = EVAL_SEED, n_queries: int = 2000, gallery_size: int = 3000,
             world: Path | None = None) -> dict:
    """Generate (or reuse) a shapes world with `seed` and measure the model on it."""
    enc = load_encoder(model, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        if world is None:
            world = Path(tmp) / "world"
            generate_world(world, seed=seed, gallery_size=gallery_size, n_queries=n_queries, n_captions=0)
        names, attrs, queries, side = load_cirr(world)
        cirr = enc.encode_images(_open_all([world / "cirr" / "dev" / f"{n}.png" for n in names]))
        rows = [json.loads(line) for line in (world / "gallery.jsonl").open()]
        circo_dir = world / "circo/COCO2017_unlabeled/unlabeled2017"
        every = enc.encode_images(_open_all([circo_dir / r["file_name"] for r in rows]))
        every_attrs = [r["attributes"] for r in rows]
    held = [i for i, a in enumerate(every_attrs) if is_heldout(a)]
    return {
        "eval_seed": seed,
        "n_queries": len(queries), "n_heldout_queries": int(sum(side[q["pairid"]]["heldout"] for q in queries)),
        "n_cirr_images": len(names), "n_gallery_renders": len(rows),
        "zero_shot": attribute_accuracy(enc, every, every_attrs),
        "zero_shot_heldout": attribute_accuracy(enc, every[held], [every_attrs[i] for i in held]),
        "text_to_image": text_to_image(enc, cirr, attrs, seed),
        "modality_gap": modality_gap(enc, cirr, attrs, seed),
        "retrieval": composed_retrieval(enc, cirr, names, queries, side),
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
    p = argparse.ArgumentParser(prog="python -m training.toy_report", description=__doc__,
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
        print(f"toy_report: error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
