"""Supervised CIR on the shapes worlds: zero-shot Slerp, TAT, supervised from base and from TAT.

    nice -n 10 flock /tmp/cir-bench.lock python perf/supervised.py --work /tmp/cir-supervised

For each style (plain, textured) it runs exactly the commands a user types (printed as it goes):
1. cir toyworld --out WORK/STYLE/train --style STYLE --seed 1 --train-triplets 10000      (training seed)
   cir toyworld --out WORK/STYLE/eval --style STYLE --seed 2 --captions 0                  (unseen seed)
2. cir train --model toy --data WORK/STYLE/train/captions.jsonl --out WORK/STYLE/tat --max-steps 100 \
       --batch-size 64 --lr 1e-3
3. per size N in 100, 1000, 10000: the first N train triplets (WORK/STYLE/triplets_N/, CIRR layout), and
   cir train --model toy --triplets .../cap.rc2.train.json --out WORK/STYLE/sup_{base,tat}_N \
       [--init-adapter WORK/STYLE/tat] --max-steps 60 --batch-size 32 --lr 1e-3 --holdout 0
   plus the text-LoRA ablation (--text-lora, from TAT) at the --ablation sizes
4. cir eval --benchmark {cirr,circo} --root WORK/STYLE/eval/{cirr,circo} --model toy [--adapter RUN]
       --alpha-sweep 0.3:0.9:0.1
and prints the table: CIRR R@1 and R@10, CIRCO mAP@10 (each at its best Slerp alpha), overall
and on held-out target combinations, plus a learning-curve plot (--plot). Every supervised run uses
the same 60 optimiser steps of 32 triplets (the same compute at every size: 19 epochs of 100
triplets, 1.9 of 1,000, 0.19 of 10,000). Finished runs and evaluations are
reused, so running it again finishes what an interrupted run left.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from cir.toyworld import holds_world
from cir.toyworld.cli import main as toyworld_main
from evaluation.cli import main as eval_main
from training.cli import main as train_main
from tat_textured import _run  # one way to run a cir command and time it

# Sized for 2 CPU cores shared by five developers (docs/supervised.md): 6,400 TAT pairs, 1,920 triplets a run.
TAT_RECIPE = ["--max-steps", "100", "--batch-size", "64", "--lr", "1e-3"]
SUP_RECIPE = ["--max-steps", "60", "--batch-size", "32", "--lr", "1e-3", "--holdout", "0"]
SWEEP = "0.3:0.9:0.1"
SIZES = (100, 1000, 10000)
TRAIN_SEED, EVAL_SEED = 1, 2


def make_worlds(work: Path, style: str, triplets: int) -> tuple[Path, Path]:
    """The training world (captions and train triplets) and the evaluation world of one style."""
    train, evaluation = work / style / "train", work / style / "eval"
    if not holds_world(train, seed=TRAIN_SEED, style=style, n_train_triplets=triplets):
        _run("toyworld", toyworld_main, ["--out", str(train), "--seed", str(TRAIN_SEED), "--style", style,
                                         "--train-triplets", str(triplets), "--quiet"])
    if not holds_world(evaluation, seed=EVAL_SEED, n_captions=0, style=style):
        _run("toyworld", toyworld_main, ["--out", str(evaluation), "--seed", str(EVAL_SEED), "--style", style,
                                         "--captions", "0", "--quiet"])
    return train, evaluation


def subset(train: Path, dest: Path, n: int) -> Path:
    """The first n triplets of the world's CIRR train split, in CIRR's layout (images linked, not copied)."""
    captions = dest / "captions" / "cap.rc2.train.json"
    if not captions.is_file():
        entries = json.loads((train / "cirr" / "captions" / "cap.rc2.train.json").read_text())[:n]
        (dest / "image_splits").mkdir(parents=True, exist_ok=True)
        captions.parent.mkdir(parents=True, exist_ok=True)
        split = (train / "cirr" / "image_splits" / "split.rc2.train.json").read_text()
        (dest / "image_splits" / "split.rc2.train.json").write_text(split)
        if not (dest / "train").exists():
            os.symlink(train / "cirr" / "train", dest / "train")
        captions.write_text(json.dumps(entries))
    return captions


def evaluate(work: Path, style: str, evaluation: Path, name: str, adapter: Path | None, extra: list[str]) -> dict:
    """metrics.json of CIRR and CIRCO for one model (evaluated unless already there)."""
    out = {}
    for bench in ("cirr", "circo"):
        dest = work / style / "evals" / f"{name}_{bench}"
        if not (dest / "metrics.json").is_file():
            _run("eval", eval_main, ["--benchmark", bench, "--root", str(evaluation / bench), "--model", "toy",
                                     *(["--adapter", str(adapter)] if adapter else []), "--alpha-sweep", SWEEP,
                                     "--cache-dir", str(work / "cache"), "--no-progress", "--out", str(dest),
                                     "--workers", "0", *extra])
        out[bench] = json.loads((dest / "metrics.json").read_text())
    return out


def row(metrics: dict) -> dict:
    """CIRR R@1, R@10 and CIRCO mAP@10 at each benchmark's best Slerp alpha, overall and held-out."""
    out = {}
    for bench, keys in (("cirr", ("R@1", "R@10")), ("circo", ("mAP@10",))):
        m = metrics[bench]
        best = m["best"]["slerp"]
        out[f"{bench}_alpha"] = best["alpha"]
        for key in keys:
            out[f"{bench} {key}"] = m["results"][best["key"]][key]
            out[f"{bench} {key} held-out"] = m["groups"]["heldout"][best["key"]][key]
    return out


def runs(work: Path, style: str, train: Path, sizes, ablation, recipe: list[str],
         tag: str) -> list[tuple[str, int | None, list[str]]]:
    """(name, size, cir train argv) of every supervised run, the most telling first."""
    tat = work / style / f"tat{tag}"
    plan = []
    for n in sorted(sizes):
        data = str(subset(train, work / style / f"triplets_{n}", n))
        variants = [("base", []), ("tat", ["--init-adapter", str(tat)])]
        if n in ablation:
            variants.append(("tat_textlora", ["--init-adapter", str(tat), "--text-lora"]))
        for init, options in variants:
            name = f"sup_{init}{tag}_{n}"
            plan.append((name, n, ["--model", "toy", "--triplets", data, "--out", str(work / style / name), *recipe,
                                   *options]))
    return plan


def table(results: dict) -> str:
    """The markdown table of every (style, model) row measured so far."""
    cols = ["cirr R@1", "cirr R@1 held-out", "cirr R@10", "cirr R@10 held-out", "circo mAP@10",
            "circo mAP@10 held-out"]
    lines = ["| world | model | triplets | " + " | ".join(cols) + " | alpha (CIRR/CIRCO) |",
             "|---|---|---|" + "---|" * len(cols) + "---|"]
    for (style, name, n), r in results.items():
        lines.append(f"| {style} | {name} | {n if n else '-'} | " + " | ".join(f"{r[c]:.2f}" for c in cols)
                     + f" | {r['cirr_alpha']:.1f}/{r['circo_alpha']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """Learning curves: CIRR R@1 (all and held-out) against triplets, zero-shot and TAT as lines."""
    import matplotlib  # noqa: PLC0415 (only with --plot)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    styles = sorted({s for s, _, _ in results})
    fig, axes = plt.subplots(1, len(styles), figsize=(6 * len(styles), 4), squeeze=False)
    for ax, style in zip(axes[0], styles):
        for metric, dash in (("cirr R@1", "-"), ("cirr R@1 held-out", ":")):
            for init, colour in (("base", "tab:blue"), ("tat", "tab:orange")):
                pts = sorted((n, r[metric]) for (s, name, n), r in results.items()
                             if s == style and name == f"sup_{init}")
                if pts:
                    ax.plot(*zip(*pts), dash, marker="o", color=colour, label=f"supervised from {init}, {metric}")
            for name, colour in (("zero-shot", "tab:gray"), ("TAT", "tab:green")):
                if (style, name, None) in results:
                    ax.axhline(results[(style, name, None)][metric], linestyle=dash, color=colour,
                               label=f"{name}, {metric}")
        ax.set_xscale("log")
        ax.set_xlabel("training triplets")
        ax.set_ylabel("CIRR Recall@1 (best Slerp alpha)")
        ax.set_title(f"{style} shapes world (eval seed {EVAL_SEED})")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/cir-supervised"))
    p.add_argument("--styles", default="textured,plain")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)))
    p.add_argument("--ablation", default="1000", help="sizes with the text-LoRA ablation")
    p.add_argument("--run-args", default="--workers 1", help="extra cir train options that do not change results")
    p.add_argument("--plot", type=Path, help="write the learning-curve PNG here")
    p.add_argument("--tat-recipe", default=shlex.join(TAT_RECIPE), help="cir train options of the TAT runs")
    p.add_argument("--sup-recipe", default=shlex.join(SUP_RECIPE), help="cir train options of the supervised runs")
    p.add_argument("--tag", default="", help="suffix of run folders, to keep runs of another recipe apart")
    args = p.parse_args(argv)
    work, sizes = args.work.expanduser(), [int(s) for s in args.sizes.split(",")]
    ablation = {int(s) for s in args.ablation.split(",") if s}
    extra = shlex.split(args.run_args)
    results = {}
    print(f"load average {os.getloadavg()[0]:.1f} at the start, {os.cpu_count()} CPUs", flush=True)
    for style in args.styles.split(","):
        train, evaluation = make_worlds(work, style, max(sizes))
        results[(style, "zero-shot", None)] = row(evaluate(work, style, evaluation, "zeroshot", None, []))
        tat = work / style / f"tat{args.tag}"
        _run("train", train_main, ["--model", "toy", "--data", str(train / "captions.jsonl"), "--out", str(tat),
                                   *shlex.split(args.tat_recipe), "--resume", "--no-progress", *extra])
        results[(style, "TAT", None)] = row(evaluate(work, style, evaluation, f"tat{args.tag}", tat, []))
    recipe = shlex.split(args.sup_recipe)
    plan = [(style, *r) for style in args.styles.split(",")
            for r in runs(work, style, work / style / "train", sizes, ablation, recipe, args.tag)]
    # every style at the largest size first: the point a short budget cannot show (runs are independent)
    for style, name, n, argv_ in sorted(plan, key=lambda r: -r[2]):
        _run("train", train_main, [*argv_, "--resume", "--no-progress", *extra])
        key = name.rsplit("_", 1)[0].removesuffix(args.tag)
        results[(style, key, n)] = row(evaluate(work, style, work / style / "eval", name, work / style / name, []))
        print(table(results), flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    print(table(results), end="")
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
