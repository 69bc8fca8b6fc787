"""Alpha-sweep plots: metrics against the text weight, one run or several side by side (PNG, matplotlib)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
except ImportError as exc:  # the lean serving install: plotting is the `eval` extra
    raise ImportError(f"cir eval's plots need matplotlib ({exc}): pip install 'cir[eval]'") from exc

from cir.io import atomic_write_bytes

PLOT_METRICS = {"cirr": ["R@1", "R@5", "R@10", "Rs@1"], "circo": ["mAP@5", "mAP@10", "mAP@25", "mAP@50"],
                "fashioniq": ["R@10", "R@50"]}
GROUP_TITLES = {"seen": "seen targets", "heldout": "held-out targets"}
STYLES = {"slerp": "-", "linear": ":"}
COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]


def swept_curves(report: dict) -> dict[str, list[tuple[float, str]]]:
    """fusion -> [(alpha, key)] for slerp/linear evaluated at two or more alphas."""
    curves = {name: sorted((f["alpha"], f["key"]) for f in report["fusions"] if f["fusion"] == name)
              for name in STYLES}
    return {k: v for k, v in curves.items() if len(v) > 1}


def _blocks(runs: Sequence[tuple[str, dict]]) -> list[tuple[str, str | None]]:
    groups = [g for g in GROUP_TITLES if all(g in r.get("groups", {}) for _, r in runs)]
    return [("all queries", None)] + [(GROUP_TITLES[g], g) for g in groups]


def _draw(ax, runs: Sequence[tuple[str, dict]], group: str | None, metric: str) -> None:
    for c, (label, report) in enumerate(runs):
        block = report["results"] if group is None else report["groups"][group]
        color = COLORS[c % len(COLORS)]
        prefix = f"{label}: " if len(runs) > 1 else ""
        for fname, pts in swept_curves(report).items():
            ax.plot([a for a, _ in pts], [block.get(k, {}).get(metric) for _, k in pts], STYLES[fname],
                    marker="o", ms=3, color=color, label=f"{prefix}{fname}")
        for fname, x, marker in (("image", 0.0, "s"), ("text", 1.0, "^")):
            y = block.get(f"{fname}@{x:.2f}", {}).get(metric)
            if y is not None:
                ax.plot([x], [y], marker, ms=7, mfc="none", color=color, label=f"{prefix}{fname}-only")


def sweep_plot(runs: Sequence[tuple[str, dict]], path: str | Path, metrics: Sequence[str] | None = None,
               title: str = "") -> bool:
    """Plot metrics against alpha (one row per query group); False when nothing was swept."""
    runs = [(label, r) for label, r in runs if swept_curves(r)]
    if not runs:
        return False
    have = {m for _, r in runs for res in r["results"].values() for m in res}
    metrics = [m for m in (metrics or PLOT_METRICS.get(runs[0][1]["benchmark"], [])) if m in have]
    if not metrics:
        return False
    blocks = _blocks(runs)
    fig = Figure(figsize=(3.8 * len(metrics), 3.2 * len(blocks) + 0.4), dpi=90)
    FigureCanvasAgg(fig)
    for r, (btitle, group) in enumerate(blocks):
        for i, metric in enumerate(metrics):
            ax = fig.add_subplot(len(blocks), len(metrics), r * len(metrics) + i + 1)
            _draw(ax, runs, group, metric)
            ax.set_title(f"{metric} ({btitle})" if len(blocks) > 1 else metric, fontsize=9)
            ax.grid(alpha=0.3)
            if r == len(blocks) - 1:
                ax.set_xlabel("alpha (text weight)")
            if i == 0:
                ax.set_ylabel("x100")
            if r == 0 and i == 0:
                ax.legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return True
