"""The composition report's figure: (a) R@1 against beta, (b) against alpha by references, (c) against B."""

from __future__ import annotations

import io
from pathlib import Path

try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
except ImportError as exc:  # the lean serving install: plotting is the `eval` extra
    raise ImportError(f"cir eval's plots need matplotlib ({exc}): pip install 'cir[eval]'") from exc

from cir.io import atomic_write_bytes

GROUP_STYLE = {"all": "-", "seen": "--", "heldout": ":"}
GROUP_LABEL = {"all": "all", "seen": "seen targets", "heldout": "held-out targets"}


def _negatives(ax, neg: dict) -> None:
    betas = list(neg["sweep"])
    for group, style in GROUP_STYLE.items():
        ax.plot(betas, [neg["sweep"][b][group]["R@1"] for b in betas], style, marker="o", ms=3,
                color="tab:blue", label=f"R@1 {GROUP_LABEL[group]}")
    ax.plot(betas, [neg["sweep"][b]["all"]["R@10"] for b in betas], "-", marker="s", ms=3, color="tab:orange",
            label="R@10 all")
    ax.set_xlabel("beta (negative weight)")
    ax.set_title(f"(a) negative text ({neg['queries']} queries)", fontsize=9)


def _references(ax, refs: dict) -> None:
    kinds = [k for k in refs if k not in ("queries", "skipped")]
    for kind in kinds:
        alphas = list(refs[kind])
        style = ":" if isinstance(kind, str) else "-"
        label = kind if isinstance(kind, str) else f"{kind} reference{'s' if kind != 1 else ''}"
        ax.plot(alphas, [refs[kind][a]["all"]["R@1"] for a in alphas], style, marker="o", ms=3, label=label)
    ax.set_xlabel("alpha (text weight)")
    ax.set_title(f"(b) several references ({refs['queries']} queries)", fontsize=9)


def _gallery(ax, gal: dict, alpha: float) -> None:
    for alpha_, by_b in gal["variants"][gal["main"]].items():
        weights = list(by_b)
        ax.plot(weights, [by_b[b]["all"]["R@1"] for b in weights], "-", marker="o", ms=3, label=f"alpha {alpha_}")
    full = gal["variants"]["all 5 attributes, none wrong"][alpha]
    ax.plot(list(full), [r["all"]["R@1"] for r in full.values()], "--", color="black",
            label=f"alpha {alpha}, complete correct titles")
    ax.set_xlabel("B (item text weight; 0 = images only)")
    ax.set_title(f"(c) composed gallery items ({gal['main']})", fontsize=9)


def composition_plot(report: dict, path: str | Path) -> None:
    """Write the three panels side by side as a PNG."""
    fig = Figure(figsize=(13.5, 3.8), dpi=90)
    FigureCanvasAgg(fig)
    for i, draw in enumerate((lambda ax: _negatives(ax, report["negatives"]),
                              lambda ax: _references(ax, report["references"]),
                              lambda ax: _gallery(ax, report["gallery"], report["alpha"]))):
        ax = fig.add_subplot(1, 3, i + 1)
        draw(ax)
        ax.set_ylabel("x100")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(f"Shapes world seed {report['world_seed']}, model {report['encoder'].get('model')}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
