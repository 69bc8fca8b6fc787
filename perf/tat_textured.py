"""TAT where it matters: the toy model on a textured shapes world, before and after `cir train`.

    python perf/tat_textured.py --work /tmp/tat_textured          # ~15-25 min on 2 CPU cores

Runs exactly the commands a user types (printed as it goes):
1. cir toyworld --out WORK/train --style textured --seed TRAIN_SEED       (default sizes)
   cir toyworld --out WORK/eval_textured --style textured --seed EVAL_SEED --captions 0
   cir toyworld --out WORK/eval_plain --seed EVAL_SEED --captions 0
2. cir train --model toy --data WORK/train/captions.jsonl --out WORK/run --max-steps 600 --lr 1e-3
3. cir eval --benchmark {cirr,circo} --root WORK/eval_{textured,plain}/{cirr,circo} --model toy
   [--adapter WORK/run] --alpha-sweep 0.3:0.9:0.1
and prints the issue's target table: textured Slerp R@1 after TAT must recover at least half of
what the backgrounds cost (also on held-out targets), plain-world Slerp R@1 may fall by at most
5 points, and the paired image-caption cosine on the textured world rises (report.json).
Worlds and the run are reused when WORK already holds them (cir train resumes or reports).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import sys
import time
from pathlib import Path

from cir.toyworld import holds_world
from cir.toyworld.cli import main as toyworld_main
from evaluation.cli import main as eval_main
from training.cli import main as train_main

RECIPE = ["--max-steps", "600", "--lr", "1e-3"]
SWEEP = "0.3:0.9:0.1"
DEFAULT_SIZES = dict(gallery_size=3000, n_queries=1000, image_size=32)


def _run(tool: str, main, argv: list[str]) -> float:
    """Run one CLI as the user would; returns its wall time in seconds."""
    print(f"$ cir {tool} {shlex.join(argv)}", flush=True)
    start = time.perf_counter()
    if main(argv) != 0:
        raise SystemExit(f"cir {tool} failed")
    return time.perf_counter() - start


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (DataLoader workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def make_worlds(work: Path, train_seed: int, eval_seed: int) -> dict[str, Path]:
    """The training world and the two evaluation worlds (generated unless already there)."""
    worlds = {"train": (work / "train", train_seed, "textured", 10000),
              "textured": (work / "eval_textured", eval_seed, "textured", 0),
              "plain": (work / "eval_plain", eval_seed, "plain", 0)}
    for path, seed, style, captions in worlds.values():
        if not holds_world(path, seed=seed, n_captions=captions, style=style, **DEFAULT_SIZES):
            _run("toyworld", toyworld_main, ["--out", str(path), "--seed", str(seed), "--style", style,
                                             "--captions", str(captions), "--quiet"])
    return {name: spec[0] for name, spec in worlds.items()}


def evaluate(work: Path, worlds: dict[str, Path], run: Path, extra: list[str]) -> dict:
    """metrics.json of every (world, benchmark, with/without adapter) evaluation."""
    out = {}
    for world in ("textured", "plain"):
        for bench in ("cirr", "circo"):
            for tuned in (False, True):
                dest = work / "eval" / f"{world}_{bench}_{'tat' if tuned else 'base'}"
                argv = ["--benchmark", bench, "--root", str(worlds[world] / bench), "--model", "toy",
                        *(["--adapter", str(run)] if tuned else []), "--alpha-sweep", SWEEP,
                        "--cache-dir", str(work / "cache"), "--no-progress", "--out", str(dest), *extra]
                _run("eval", eval_main, argv)
                out[(world, bench, tuned)] = json.loads((dest / "metrics.json").read_text())
    return out


def headline(metrics: dict) -> dict:
    """Best-alpha headline metric (CIRR R@1, CIRCO mAP@10) overall, and seen / held-out at that alpha."""
    best = metrics["best"]["slerp"]
    groups = metrics.get("groups", {})
    return {"alpha": best["alpha"], "all": best["value"],
            **{g: groups[g][best["key"]][best["metric"]] for g in ("seen", "heldout") if g in groups}}


def target_table(results: dict, report: dict) -> tuple[str, bool]:
    """The markdown table of the three targets and whether all of them hold."""
    lines = ["| benchmark | group | plain, base | textured, base | textured, TAT | needed | plain, TAT | plain drop |",
             "|---|---|---|---|---|---|---|---|"]
    ok = True
    for bench in ("cirr", "circo"):
        pb, tb, tt, pt = (headline(results[k]) for k in (("plain", bench, False), ("textured", bench, False),
                                                          ("textured", bench, True), ("plain", bench, True)))
        for group in ("all", "seen", "heldout"):
            need = tb[group] + 0.5 * (pb[group] - tb[group])
            drop = pb[group] - pt[group]
            if bench == "cirr" and group in ("all", "heldout"):
                ok &= tt[group] >= need and (group != "all" or drop <= 5)
            lines.append(f"| {bench} | {group} | {pb[group]:.2f} | {tb[group]:.2f} | {tt[group]:.2f} | {need:.2f} "
                         f"| {pt[group]:.2f} | {drop:+.2f} |")
    before, after = report["before"]["gap"]["paired_cosine"], report["after"]["gap"]["paired_cosine"]
    ok &= after > before
    lines.append(f"\npaired image-caption cosine on {report['before']['gap']['pairs']} held-out textured pairs: "
                 f"{before:.4f} -> {after:.4f} ({after - before:+.4f})")
    return "\n".join(lines) + "\n", ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/cir-tat-textured"))
    p.add_argument("--train-seed", type=int, default=1)
    p.add_argument("--eval-seed", type=int, default=2)
    p.add_argument("--run-args", default="", help="extra cir train options that do not change the result, "
                                                  "e.g. '--threads 1 --workers 1' on a busy machine")
    args = p.parse_args(argv)
    work = args.work.expanduser()
    worlds = make_worlds(work, args.train_seed, args.eval_seed)
    run = work / "run"
    load, cpu = os.getloadavg()[0], _cpu_seconds()
    seconds = _run("train", train_main, ["--model", "toy", "--data", str(worlds["train"] / "captions.jsonl"),
                                         "--out", str(run), *RECIPE, *shlex.split(args.run_args)])
    report = json.loads((run / "report.json").read_text())
    print(f"cir train: {seconds:.0f} s wall, {_cpu_seconds() - cpu:.0f} s of CPU time; load average {load:.1f} "
          f"at the start, {os.getloadavg()[0]:.1f} at the end, {os.cpu_count()} CPUs")
    table, ok = target_table(evaluate(work, worlds, run, ["--workers", "0"]), report)
    print(table, end="")
    print("all targets met" if ok else "a target is NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
