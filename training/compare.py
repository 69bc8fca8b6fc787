"""`python -m training.compare RUN_DIR...`: a markdown table of TAT runs' before/after numbers.

One row per run (its report.json): labels, temperature, steps, the held-out paired cosine and
centroid distance, and Slerp R@1/R@5/R@10 on the eval set, overall and for held-out targets.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

GROUPS = ("all", "seen", "heldout")


def _recall(report: dict, side: str, group: str, key: str, metric: str) -> float | None:
    return report.get(side, {}).get("cir", {}).get(group, {}).get(key, {}).get(metric)


def _fmt(before: float | None, after: float | None, digits: int) -> str:
    if after is None:
        return "-"
    if before is None:
        return f"{after:.{digits}f}"
    return f"{before:.{digits}f} → {after:.{digits}f}"


def row(name: str, report: dict, key: str, metrics: tuple[str, ...], groups: tuple[str, ...]) -> list[str]:
    """One table row of a run."""
    cfg = report.get("config", {})
    b, a = report.get("before", {}).get("gap", {}), report.get("after", {}).get("gap", {})
    cells = [name, report.get("labels", "?"), f"{report.get('temperature', float('nan')):.3g}",
             f"{cfg.get('lr', float('nan')):.0e}", str(report.get("steps", "?")),
             _fmt(b.get("paired_cosine"), a.get("paired_cosine"), 3),
             _fmt(b.get("centroid_distance"), a.get("centroid_distance"), 3)]
    for group in groups:
        for metric in metrics:
            cells.append(_fmt(_recall(report, "before", group, key, metric),
                              _recall(report, "after", group, key, metric), 1))
    return cells


def table(runs: list[Path], key: str, metrics: tuple[str, ...], groups: tuple[str, ...]) -> str:
    """The markdown table of the given run folders."""
    header = ["run", "labels", "τ", "lr", "steps", "paired cos", "centroid dist"]
    header += [f"{metric} {group}" for group in groups for metric in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        report = json.loads((run / "report.json").read_text())
        lines.append("| " + " | ".join(row(run.name, report, key, metrics, groups)) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the comparison table; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders (each with a report.json)")
    p.add_argument("--fusion", default="slerp@0.80", help="results key to show (default slerp@0.80)")
    p.add_argument("--metrics", default="R@1,R@10", help="comma-separated metrics (default R@1,R@10)")
    p.add_argument("--groups", default="all,heldout", help=f"comma-separated groups of {', '.join(GROUPS)}")
    args = p.parse_args(argv)
    missing = [str(r) for r in args.runs if not (r / "report.json").is_file()]
    if missing:
        print(f"no report.json in: {', '.join(missing)}", file=sys.stderr)
        return 2
    print(table(args.runs, args.fusion, tuple(args.metrics.split(",")), tuple(args.groups.split(","))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
