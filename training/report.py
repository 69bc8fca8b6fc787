"""What a TAT run did: the modality gap on held-out pairs and composed-retrieval recall, before and after."""

from __future__ import annotations

import logging

import numpy as np

import cir.benchmarks
from cir.benchmarks.gap import modality_gap
from training.batches import Chunks, PairBatches, make_loader
from training.data import PairSource

log = logging.getLogger(__name__)

RECALL_KEYS = ("R@1", "R@5", "R@10", "R@50", "Rs@1", "Rs@2", "Rs@3", "mAP@5", "mAP@10", "mAP@25", "mAP@50")


def embed_pairs(encoder, source: PairSource, indices: np.ndarray, batch_size: int = 256,
                workers: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """Unit image and caption embeddings of the given pairs (unreadable images dropped) and the drop count."""
    chunks = Chunks(np.asarray(indices), batch_size)
    loader = make_loader(PairBatches(source, encoder.preprocess, chunks), range(len(chunks)), workers)
    images, texts, failed = [], [], 0
    for batch in loader:
        failed += len(batch["failed"])
        if batch["captions"]:
            images.append(encoder.encode_pixels(batch["pixels"]))
            texts.append(encoder.encode_texts(batch["captions"]))
    if not images:
        empty = np.zeros((0, encoder.dim), np.float32)
        return empty, empty, failed
    return np.concatenate(images), np.concatenate(texts), failed


def measure_gap(encoder, source: PairSource, indices: np.ndarray, batch_size: int, workers: int) -> dict:
    """The modality gap of an encoder on held-out pairs (with the number of unreadable images)."""
    images, texts, failed = embed_pairs(encoder, source, indices, batch_size, workers)
    gap = {k: round(v, 5) if isinstance(v, float) else v for k, v in modality_gap(images, texts).items()}
    return {**gap, "skipped_images": failed}


def _recalls(results: dict) -> dict:
    return {name: {k: round(v, 3) for k, v in metrics.items() if k in RECALL_KEYS}
            for name, metrics in results.items()}


def cir_recall(encoder, root: str, split: str, alphas, batch_size: int, workers: int = 0) -> dict:
    """Recall of the Slerp query (and the image-only / text-only baselines) on a CIRR-layout set.

    Shapes worlds are also split into queries whose target is a seen or a held-out combination.
    """
    fusions = [("slerp", a) for a in alphas] + [("image", 0.0), ("text", 1.0)]
    result = cir.benchmarks.evaluate(encoder, "cirr", root, split, fusions=fusions, batch_size=batch_size,
                                     workers=workers, progress=False)
    out = {"all": _recalls(result["results"])}
    for group, metrics in (result.get("groups") or {}).items():
        out[group] = _recalls(metrics.get("results", metrics))
    return out


def measure(encoder, source: PairSource, holdout: np.ndarray, eval_root: str | None, split: str,
            alphas, batch_size: int, workers: int) -> dict:
    """Gap on the held-out pairs and, with an eval set, Slerp recall: the 'before' or 'after' section."""
    section = {"encoder": encoder.info()}
    if len(holdout):
        section["gap"] = measure_gap(encoder, source, holdout, batch_size, workers)
    if eval_root:
        section["cir"] = cir_recall(encoder, eval_root, split, alphas, batch_size, workers)
    return section


def _delta(before, after):
    if isinstance(before, dict) and isinstance(after, dict):
        keys = [k for k in before if k in after]
        return {k: d for k in keys if (d := _delta(before[k], after[k])) is not None}
    if isinstance(before, (int, float)) and isinstance(after, (int, float)) and not isinstance(before, bool):
        return round(after - before, 5)
    return None


def compare(before: dict, after: dict) -> dict:
    """after - before for every shared metric in the gap and recall sections."""
    out = {k: _delta(before[k], after[k]) for k in ("gap", "cir", "triplets") if k in before and k in after}
    for key in ("pairs", "skipped_images"):
        out.get("gap", {}).pop(key, None)
    return out


def summary_lines(report: dict) -> list[str]:
    """A few human-readable lines for the end of a CLI run."""
    lines = []
    before, after = report.get("before", {}), report.get("after", {})
    if "gap" in before and "gap" in after and before["gap"].get("pairs"):
        b, a = before["gap"], after["gap"]
        lines.append(f"paired cosine {b['paired_cosine']:.4f} -> {a['paired_cosine']:.4f}, centroid distance "
                     f"{b['centroid_distance']:.4f} -> {a['centroid_distance']:.4f} ({b['pairs']} held-out pairs)")
    if after.get("triplets", {}).get("triplets"):
        b, a = before.get("triplets", {}), after["triplets"]
        lines.append(f"held-out triplets (Slerp at {a['alpha']}, {a['triplets']} queries, {a['candidates']} targets): "
                     f"R@1 {b.get('R@1', float('nan')):.2f} -> {a['R@1']:.2f}, "
                     f"R@10 {b.get('R@10', float('nan')):.2f} -> {a['R@10']:.2f}")
    for group, results in after.get("cir", {}).items():
        for name, metrics in results.items():
            old = before.get("cir", {}).get(group, {}).get(name, {})
            parts = [f"{k} {old.get(k, float('nan')):.2f} -> {v:.2f}" for k, v in metrics.items()
                     if k in ("R@1", "R@5", "R@10")]
            lines.append(f"{group} {name}: " + ", ".join(parts))
    return lines
