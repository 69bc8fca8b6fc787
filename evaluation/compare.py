"""`cir eval --compare A.json B.json ...`: metrics.json files side by side as one markdown table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from evaluation.outputs import HEADLINE, best_keys

GROUP_NAMES = {"seen": "seen", "heldout": "held-out"}


class CompareError(ValueError):
    """A metrics file cannot be read or the files do not compare."""


def load_report(path: str | Path) -> dict:
    """Read a metrics.json written by `cir eval` (or a dict from `evaluate`)."""
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CompareError(f"cannot read {path}: {exc}") from exc
    if not isinstance(report, dict) or "results" not in report or "fusions" not in report:
        raise CompareError(f"{path} is not a cir eval metrics.json (no results/fusions)")
    return report


def compare_label(report: dict, path: str | Path) -> str:
    """A run's name in tables: its --label, else model [+ adapter]."""
    if report.get("label"):
        return report["label"]
    enc = report.get("encoder", {})
    return enc.get("model", Path(path).parent.name) + (" + adapter" if enc.get("adapter") else "")


def _rows(report: dict, best: str | None) -> list[str]:
    """The fusion keys to show: all, or the best alpha per fusion by metric `best`."""
    if not best:
        return [f["key"] for f in report["fusions"]]
    return [b["key"] for b in best_keys(report, best).values()]


def _fusion_name(key: str) -> str:
    name, alpha = key.split("@")
    pretty = {"image": "image-only", "text": "text-only", "linear": "linear", "slerp": "Slerp"}.get(name, name)
    return pretty if name in ("image", "text") else f"{pretty} a={float(alpha):.2f}"


def compare_table(reports: Sequence[dict], paths: Sequence[str | Path], labels: Sequence[str] | None = None,
                  metrics: Sequence[str] | None = None, best: str | None = None, groups: bool = False) -> str:
    """A markdown table: one row per (file, fusion key), one column per metric (and per group)."""
    if labels and len(labels) != len(reports):
        raise CompareError(f"{len(labels)} labels for {len(reports)} files")
    benches = {r.get("benchmark") for r in reports}
    if len(benches) > 1:
        raise CompareError(f"files come from different benchmarks: {', '.join(sorted(map(str, benches)))}")
    if best == "headline":
        best = HEADLINE.get(next(iter(benches)), "R@1")
    cols = list(metrics or dict.fromkeys(m for r in reports for res in r["results"].values() for m in res))
    blocks = [None] + (list(GROUP_NAMES) if groups else [])
    heads = [c if g is None else f"{c} {GROUP_NAMES[g]}" for c in cols for g in blocks]
    lines = ["| run | fusion | " + " | ".join(heads) + " |", "|" + "---|" * (len(heads) + 2)]
    for i, (report, path) in enumerate(zip(reports, paths)):
        label = labels[i] if labels else compare_label(report, path)
        for key in _rows(report, best):
            cells = []
            for c in cols:
                for g in blocks:
                    res = report["results"] if g is None else report.get("groups", {}).get(g, {})
                    value = res.get(key, {}).get(c)
                    cells.append("" if value is None else f"{value:.2f}")
            lines.append(f"| {label} | {_fusion_name(key)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
