"""One GPU check suite: every GPU path of CIR measured once, in about 8 minutes, into runs/gpu_suite/.

    make gpu-suite            # on a CUDA host: runs/gpu_suite/report.json and report.md
    make gpu-suite DRY=1      # the same code on the CPU with tiny sizes (runs/gpu_suite_dry/; the tests run it)
    python perf/gpu_suite.py --sections faiss,service      # a subset, e.g. to rerun one

Sections (perf/gpu_checks.py), each in its own process with its own time budget: a failing or
overrunning one is recorded with its error and log, and the suite goes on; one that cannot run
here is skipped with the reason.
  throughput  image-tower images/s (bf16 autocast) of ViT-B/32, B/16 and L/14-sized CLIPs at batch
              256, as TFLOP/s (METHOD.md section 7: 8.8 / 35 / 162 GFLOP per image) and as a share
              of the device's dense bf16 peak when the device is known (perf/tat_speed.PEAK_TFLOPS)
  indexer     the indexer end to end on a generated JPEG gallery with decode workers, against its
              decode-only and encode-only rates (perf/indexing.py's ratio)
  faiss       faiss-gpu Flat and IVF: build and search time against the CPU index, the same ids for
              Flat, recall@10 against exact search for IVF (needs faiss-gpu)
  service     the HTTP service at concurrency 1, 8 and 32 (perf/serving.py): p50/p99, requests/s,
              the micro-batching gain and the HTTP overhead
  tat         TAT on an L/14-sized CLIP (perf/tat_speed.py): compute-only and `cir train` steps/s
  docker      docker/Dockerfile.gpu built, then nvidia-smi and torch.cuda inside the container (needs
              Docker with the NVIDIA runtime)
Models have random weights: the speed of a forward pass does not depend on them. Exit status 0
when every section passed or was skipped, 1 when one failed or ran out of time, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import faiss
import torch
import transformers
from gpu_checks import REPO, SECTIONS, SIZES
from isolate import run_part

from cir.io import atomic_write_json, atomic_write_text

BUDGET_S = 480
DRY_BUDGET_S = 900  # the dry run's sizes take ~2 minutes on 2 idle cores; the budget allows a loaded machine
MIN_SECTION_S = 20
CHECKS = Path(__file__).with_name("gpu_checks.py")


def host_info(device: str) -> dict:
    """What the numbers were measured on."""
    info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "faiss": faiss.__version__, "faiss_gpus": faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0,
            "cpus": os.cpu_count(), "device": "cpu"}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, cuda=torch.version.cuda, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}")
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    info["commit"] = commit.stdout.strip() or None
    return info


SERVER_KEYS = ("model", "device", "index_version", "count", "factory", "dim")


def _cell(value) -> str:
    if isinstance(value, dict):
        return "/".join(_cell(v) for v in value.values())
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def section_markdown(name: str, result: dict) -> list[str]:
    """One section as Markdown: its scalars as a list, its `rows` as a table."""
    lines = [f"## {name}: {result['status']} ({result['seconds']} s of {result.get('budget_s', '?')} s)", ""]
    for key in ("reason", "error"):
        if result.get(key):
            lines.append(f"- {key}: {result[key]}")
    skip = {"status", "seconds", "budget_s", "reason", "error", "rows", "log_tail", "info"}
    lines += [f"- {k}: {_cell(v)}" for k, v in result.items() if k not in skip]
    if result.get("info"):
        lines.append("- server: " + ", ".join(f"{k} {result['info'].get(k)}" for k in SERVER_KEYS))
    rows = result.get("rows") or []
    if rows:
        columns = list(dict.fromkeys(k for r in rows for k in r))
        lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    if result.get("log_tail"):
        lines += ["", "```", result["log_tail"], "```"]
    return lines + [""]


def report_markdown(report: dict) -> str:
    """The whole report as Markdown: host, a summary line per section, then each section."""
    host = report["host"]
    lines = [f"# CIR GPU suite{' (dry run on the CPU)' if report['dry'] else ''}", "",
             f"{host['device']}, torch {host['torch']}, CUDA {host.get('cuda')}, faiss {host['faiss']} "
             f"({host['faiss_gpus']} GPUs), {host['cpus']} CPUs, commit {host['commit']}; started "
             f"{report['started']}, {report['seconds']} s of the {report['budget_s']} s budget.", "",
             "| section | status | seconds | budget | note |", "|---|---|---|---|---|"]
    for name, r in report["sections"].items():
        lines.append(f"| {name} | {r['status']} | {r['seconds']} | {r.get('budget_s', '')} | "
                     f"{(r.get('reason') or r.get('error') or '')[:120]} |")
    lines.append("")
    for name, r in report["sections"].items():
        lines += section_markdown(name, r)
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry", action="store_true", help="run on the CPU with tiny sizes (checks the suite itself)")
    p.add_argument("--out", type=Path, default=None,
                   help="report folder (default runs/gpu_suite, or runs/gpu_suite_dry with --dry)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {', '.join(SECTIONS)}")
    p.add_argument("--budget", type=float, default=None,
                   help=f"seconds for the whole suite (default {BUDGET_S}; {DRY_BUDGET_S} with --dry)")
    args = p.parse_args(argv)
    args.out = args.out or REPO / "runs" / ("gpu_suite_dry" if args.dry else "gpu_suite")
    args.budget = args.budget or (DRY_BUDGET_S if args.dry else BUDGET_S)
    args.names = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in args.names if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def run_suite(args, device: str) -> dict:
    """Every selected section in its own process, within the suite's budget; the report."""
    mode = "dry" if args.dry else "full"
    work = args.out / "work"
    start, started = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S%z")
    sections = {}
    for name in args.names:
        budget = SIZES[mode][name]["budget_s"]
        left = args.budget - (time.perf_counter() - start)
        if left < MIN_SECTION_S:
            sections[name] = {"status": "skipped", "seconds": 0, "budget_s": budget,
                              "reason": f"only {left:.0f} s of the suite's {args.budget:.0f} s budget left"}
            continue
        extra = ["--work", str(work)] + (["--dry"] if args.dry else [])
        result = run_part(CHECKS, name, extra, min(budget, left), args.out / "logs" / f"{name}.log")
        sections[name] = {**result, "budget_s": budget}
        print(f"{name}: {result['status']} in {result['seconds']} s"
              + (f" ({result.get('reason') or result.get('error')})" if result["status"] != "ok" else ""), flush=True)
    return {"suite": "cir-gpu-suite", "version": 1, "dry": args.dry, "started": started,
            "seconds": round(time.perf_counter() - start, 1), "budget_s": args.budget, "host": host_info(device),
            "sections": sections,
            "skipped": {n: r["reason"] for n, r in sections.items() if r["status"] == "skipped"},
            "failed": {n: r.get("error") for n, r in sections.items() if r["status"] in ("failed", "timeout")}}


def main(argv: list[str] | None = None) -> int:
    """Run the suite and write the report."""
    args = parse_args(argv)
    device = "cpu" if args.dry else "cuda"
    if not args.dry and not torch.cuda.is_available():
        print("gpu_suite: no CUDA device here; `make gpu-suite DRY=1` runs the suite's code on the CPU",
              file=sys.stderr)
        return 2
    report = run_suite(args, device)
    atomic_write_json(args.out / "report.json", report)
    atomic_write_text(args.out / "report.md", report_markdown(report))
    print(f"report: {args.out / 'report.md'} ({report['seconds']} s; failed: {', '.join(report['failed']) or 'none'};"
          f" skipped: {', '.join(report['skipped']) or 'none'})")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
