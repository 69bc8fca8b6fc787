"""The benchmarks' metrics, exactly as their own evaluation code computes them (docs/method.md, section 4).

Every function takes rankings as lists of gallery ids (best first) and returns percentages
(x100). Pure Python/numpy, so each can be checked against hand-computed cases.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

CIRR_KS = (1, 5, 10, 50)
CIRR_SUBSET_KS = (1, 2, 3)
CIRCO_KS = (5, 10, 25, 50)
FASHIONIQ_KS = (10, 50)

Ranking = Sequence[str]


def _mean100(values: Sequence[float]) -> float:
    return float(np.mean(values) * 100.0) if len(values) else float("nan")


def _check_lengths(*seqs: Sequence) -> None:
    if len({len(s) for s in seqs}) > 1:
        raise ValueError(f"rankings and ground truths differ in length: {[len(s) for s in seqs]}")


def recall_at_k(rankings: Sequence[Ranking], targets: Sequence[str], ks: Sequence[int]) -> dict[int, float]:
    """Share of queries whose single target is among the first K ranked ids, x100."""
    _check_lengths(rankings, targets)
    return {k: _mean100([t in list(r[:k]) for r, t in zip(rankings, targets)]) for k in ks}


def remove_reference(ranking: Ranking, reference: str) -> list[str]:
    """CIRR's rule: the reference image is deleted from its own ranking."""
    return [g for g in ranking if g != reference]


def cirr_subset_ranking(ranking: Ranking, members: Sequence[str], reference: str) -> list[str]:
    """The ranked ids that belong to the query's img_set, reference excluded, in global rank order."""
    keep = set(members) - {reference}
    return [g for g in ranking if g in keep]


def cirr_metrics(rankings: Sequence[Ranking], targets: Sequence[str], references: Sequence[str],
                 members: Sequence[Sequence[str]],
                 subset_rankings: Sequence[Ranking] | None = None) -> dict[str, float]:
    """CIRR Recall@1/5/10/50 (reference removed) and Recall_subset@1/2/3, x100.

    Recall_subset is read from `subset_rankings` when given (each member in global rank
    order), else from `rankings`, which must then cover every img_set member.
    """
    _check_lengths(rankings, targets, references, members)
    source = rankings if subset_rankings is None else subset_rankings
    _check_lengths(source, targets)
    cleaned = [remove_reference(r, ref) for r, ref in zip(rankings, references)]
    subsets = [cirr_subset_ranking(r, m, ref) for r, m, ref in zip(source, members, references)]
    out = {f"R@{k}": v for k, v in recall_at_k(cleaned, targets, CIRR_KS).items()}
    out.update({f"Rs@{k}": v for k, v in recall_at_k(subsets, targets, CIRR_SUBSET_KS).items()})
    return out


def circo_average_precision(prediction: Ranking, gt_ids: Sequence[str], k: int) -> float:
    """CIRCO AP@K (not x100): precision at ground-truth positions summed over the first K, / min(#gt, K)."""
    if len(set(prediction)) != len(prediction):
        raise ValueError("CIRCO predictions contain duplicate ids")
    if not gt_ids:
        raise ValueError("CIRCO AP needs at least one ground truth")
    labels = np.isin(np.asarray(list(prediction), dtype=object), np.asarray(list(gt_ids), dtype=object))
    precisions = np.cumsum(labels) * labels / np.arange(1, len(labels) + 1)
    return float(np.sum(precisions[:k]) / min(len(gt_ids), k))


def circo_metrics(predictions: Sequence[Ranking], gt_ids: Sequence[Sequence[str]],
                  targets: Sequence[str], top: int = 50) -> dict[str, float]:
    """CIRCO mAP@5/10/25/50 over all ground truths and Recall@K on the target image, x100 (top 50 used)."""
    _check_lengths(predictions, gt_ids, targets)
    preds = [list(p[:top]) for p in predictions]
    out = {f"mAP@{k}": _mean100([circo_average_precision(p, g, k) for p, g in zip(preds, gt_ids)])
           for k in CIRCO_KS}
    out.update({f"R@{k}": v for k, v in recall_at_k(preds, targets, CIRCO_KS).items()})
    return out


def fashioniq_metrics(per_category: dict[str, tuple[Sequence[Ranking], Sequence[str]]]) -> dict[str, float]:
    """FashionIQ Recall@10/50 per category ('dress/R@10') and their mean over categories ('R@10'), x100."""
    out: dict[str, float] = {}
    for cat, (rankings, targets) in per_category.items():
        out.update({f"{cat}/R@{k}": v for k, v in recall_at_k(rankings, targets, FASHIONIQ_KS).items()})
    for k in FASHIONIQ_KS:
        vals = [out[f"{cat}/R@{k}"] for cat in per_category]
        out[f"R@{k}"] = float(np.mean(vals)) if vals else float("nan")
    return out
