"""What `cir eval` writes into --out: metrics.json, submission-format predictions, a markdown table, a sweep plot."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from cir.benchmarks import EvalRun, PartRun
from cir.benchmarks.cirr import FILE_SPLIT, VERSION
from cir.io import atomic_write_json, atomic_write_text
from evaluation.plots import sweep_plot

log = logging.getLogger(__name__)

# The metric that picks the "best alpha" and the columns shown first, per benchmark.
HEADLINE = {"cirr": "R@1", "circo": "mAP@10", "fashioniq": "R@10"}
CIRR_SUBSET_TOP = 3


def _as_id(value: str):
    """CIRCO ids are integers in its files and its server's format; keep other ids as strings."""
    return int(value) if value.isdigit() else value


def cirr_submissions(part: PartRun, key: str) -> dict[str, dict]:
    """CIRR's two server files: top 50 names for `recall` and top 3 img_set names for `recall_subset`."""
    recall = {"version": VERSION, "metric": "recall"}
    subset = {"version": VERSION, "metric": "recall_subset"}
    for q in part.data.queries:
        recall[q.qid] = part.rankings[key][q.qid]
        subset[q.qid] = part.subsets[key][q.qid][:CIRR_SUBSET_TOP]
    split = FILE_SPLIT[part.data.split]
    return {f"cirr_{split}_recall.json": recall, f"cirr_{split}_recall_subset.json": subset}


def circo_submission(part: PartRun, key: str) -> dict[str, dict]:
    """CIRCO's server file: {"<query id>": [50 image ids]} ordered by query id."""
    queries = sorted(part.data.queries, key=lambda q: _as_id(q.qid) if q.qid.isdigit() else 1 << 62)
    return {f"circo_{part.data.split}.json": {q.qid: [_as_id(g) for g in part.rankings[key][q.qid]]
                                              for q in queries}}


def fashioniq_predictions(part: PartRun, key: str) -> dict[str, list]:
    """FashionIQ has no live server: one record per query in annotation order, with its top-k ranking."""
    rows = []
    for q in part.data.queries:
        row = {"candidate": q.reference, "captions": q.raw.get("captions")}
        if q.target:
            row["target"] = q.target
        rows.append({**row, "ranking": part.rankings[key][q.qid]})
    return {f"fashioniq_{part.data.part}_{part.data.split}.json": rows}


def prediction_files(run: EvalRun, key: str) -> dict[str, object]:
    """Every predictions file of one fusion key: file name -> JSON-able content."""
    files: dict[str, object] = {}
    for part in run.parts:
        if run.config.benchmark == "cirr":
            files.update(cirr_submissions(part, key))
        elif run.config.benchmark == "circo":
            files.update(circo_submission(part, key))
        else:
            files.update(fashioniq_predictions(part, key))
    return files


def write_predictions(run: EvalRun, out: Path) -> dict[str, list[str]]:
    """Write out/predictions/<fusion>@<alpha>/<files>; returns key -> relative paths."""
    written: dict[str, list[str]] = {}
    for key in run.config.keys:
        written[key] = []
        for name, content in prediction_files(run, key).items():
            rel = Path("predictions") / key / name
            atomic_write_text(out / rel, json.dumps(content) + "\n")
            written[key].append(str(rel))
    return written


def best_keys(report: dict, metric: str | None = None) -> dict[str, dict]:
    """Per fusion, the key with the highest headline metric (ties: the lower alpha)."""
    metric = metric or HEADLINE[report["benchmark"]]
    best: dict[str, dict] = {}
    for f in report["fusions"]:
        value = report["results"].get(f["key"], {}).get(metric)
        if value is None:
            continue
        if f["fusion"] not in best or value > best[f["fusion"]]["value"]:
            best[f["fusion"]] = {"key": f["key"], "alpha": f["alpha"], "metric": metric, "value": value}
    return best


def _columns(report: dict) -> list[str]:
    seen: dict[str, None] = {}
    for metrics in report["results"].values():
        seen.update(dict.fromkeys(metrics))
    return list(seen)


def markdown_table(report: dict, groups: bool = True) -> str:
    """Results as markdown: one row per fusion key (and per shapes-world group when present)."""
    cols = _columns(report)
    if not cols:
        return (f"{report['benchmark']} {report['split']}: no ground truth in this split; "
                "upload the files under predictions/ to the benchmark's server.\n")
    blocks = [("all", report["results"])]
    if groups:
        blocks += [(name, block) for name, block in report.get("groups", {}).items()]
    head = "| fusion | queries | " + " | ".join(cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    for name, block in blocks:
        n = report["counts"]["queries"] if name == "all" else report.get("group_counts", {}).get(name, "")
        for f in report["fusions"]:
            row = block.get(f["key"], {})
            label = f["key"] if name == "all" else f"{f['key']} ({name})"
            lines.append(f"| {label} | {n} | " + " | ".join(f"{row[c]:.2f}" if c in row else "" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(run: EvalRun, out: str | Path, command: list[str] | None = None,
                  label: str | None = None) -> dict:
    """Write metrics.json, predictions/, results.md and (for a sweep) alpha_sweep.png; returns metrics.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = dict(run.report)
    enc = report["encoder"]
    report["label"] = label or (enc["model"] + (f" + {Path(enc['adapter']).name}" if enc.get("adapter") else ""))
    report["command"] = command
    report["best"] = best_keys(report) if _columns(report) else {}
    report["files"] = {"predictions": write_predictions(run, out), "table": "results.md"}
    if sweep_plot([(report["label"], report)], out / "alpha_sweep.png",
                  title=f"{report['benchmark']} {report['split']}: {report['label']}"):
        report["files"]["plot"] = "alpha_sweep.png"
    if report["counts"]["skipped_queries"] and run.config.split == "test":
        log.warning("test predictions lack %d skipped queries: the server will reject them",
                    report["counts"]["skipped_queries"])
    title = f"# {report['benchmark']} {report['split']}: {report['label']}\n\n"
    atomic_write_text(out / "results.md", title + markdown_table(report))
    atomic_write_json(out / "metrics.json", report)
    return report
