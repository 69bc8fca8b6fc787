"""Command line of `cir eval` (also `python -m evaluation`)."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

# Light imports only: the parser is built, and --help answered, before torch loads (see run_eval).
from cir.benchmarks.config import CAPTION_ORDERS, EvalConfig
from cir.benchmarks.data import BENCHMARKS, DEFAULT_ALPHA, SPLITS, default_cache_dir
from cir.benchmarks.fashioniq import CATEGORIES
from cir.defaults import FUSIONS
from cir.io import atomic_write_text

log = logging.getLogger("evaluation")

EPILOG = """examples:
  cir eval --benchmark cirr --root data/cirr --model openai/clip-vit-large-patch14 --alpha 0.9 --out runs/cirr
  cir eval --benchmark circo --root runs/world/circo --model toy --adapter runs/tat \\
           --fusion all --alpha-sweep 0:1:0.1 --out runs/eval_circo_tat
  cir eval --benchmark cirr --split test --root data/cirr --model M --out runs/cirr_test   (server files)
  cir eval --benchmark fashioniq --root data/fashioniq --model M --single-index --out runs/fiq_one_index
  cir eval --compare runs/a/metrics.json runs/b/metrics.json --best headline --groups
"""


def parse_sweep(spec: str) -> list[float]:
    """'START:STOP:STEP' (inclusive of STOP) -> alphas rounded to 6 decimals."""
    try:
        start, stop, step = (float(x) for x in spec.split(":"))
    except ValueError:
        raise ValueError(f"--alpha-sweep wants START:STOP:STEP, e.g. 0:1:0.1; got {spec!r}") from None
    if step <= 0 or start > stop or start < 0 or stop > 1:
        raise ValueError(f"--alpha-sweep {spec!r}: need 0 <= START <= STOP <= 1 and STEP > 0")
    n = int(math.floor((stop - start) / step + 1e-9)) + 1
    return [round(start + i * step, 6) for i in range(n)]


def parse_fusions(spec: str) -> list[str]:
    """Comma-separated fusion names; 'all' = image,text,linear,slerp (the paper's baselines and Slerp)."""
    names = ["image", "text", "linear", "slerp"] if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in FUSIONS]
    if unknown or not names:
        raise ValueError(f"--fusion: unknown {', '.join(unknown) or 'empty'}; choose from {', '.join(FUSIONS)} or all")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cir eval", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Evaluate a model (optionally + TAT adapter) on CIRR, CIRCO, FashionIQ "
                                            "or the shapes world, or compare metrics.json files.")
    p.add_argument("--benchmark", choices=BENCHMARKS, help="which benchmark --root holds")
    p.add_argument("--root", type=Path, help="the benchmark folder as downloaded (or a shapes world's cirr/ or circo/)")
    p.add_argument("--split", choices=SPLITS, default=EvalConfig.split, help="val (metrics) or test (server files); "
                   "CIRR's test is test1")
    p.add_argument("--model", help="'toy', a Hugging Face id or a local model folder")
    p.add_argument("--adapter", type=Path, help="a TAT LoRA adapter folder (from `cir train`)")
    p.add_argument("--fusion", default="slerp", help="comma list of slerp, linear, image, text, or 'all' "
                   "(default slerp)")
    alpha = p.add_mutually_exclusive_group()
    alpha.add_argument("--alpha", type=float, help="text weight for slerp/linear (default: the paper's, "
                       f"{', '.join(f'{k} {v}' for k, v in DEFAULT_ALPHA.items())})")
    alpha.add_argument("--alpha-sweep", metavar="START:STOP:STEP", help="sweep alpha, e.g. 0:1:0.1 (plot written)")
    p.add_argument("--categories", help=f"FashionIQ categories, comma list (default {','.join(CATEGORIES)})")
    p.add_argument("--single-index", action="store_true",
                   help="FashionIQ: rank all categories' queries against one gallery (the union of their splits), "
                        "each filtered to its category, as one shop index would; scored per category as usual")
    p.add_argument("--caption-order", choices=CAPTION_ORDERS, default=EvalConfig.caption_order,
                   help="FashionIQ: 'c1 and c2' (forward) or the average with 'c2 and c1' (both)")
    p.add_argument("--batch-size", type=int, default=EvalConfig.batch_size,
                   help="images per encoder batch (default %(default)s)")
    p.add_argument("--workers", type=int, default=EvalConfig.workers,
                   help="image decoding worker processes (default %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default auto)")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on GPU), float32, bfloat16, float16")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--cache-dir", type=Path, help=f"gallery embedding cache (default {default_cache_dir()}, "
                   "or $CIR_CACHE_DIR/eval-gallery)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the gallery cache")
    p.add_argument("--skip-missing", action="store_true", help="skip (and count) queries whose images are missing "
                   "instead of failing")
    p.add_argument("--out", type=Path, help="output folder (metrics.json, predictions/, results.md, alpha_sweep.png); "
                   "with --compare, a file for the table")
    p.add_argument("--label", help="name of this run in tables (default: model [+ adapter])")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--compare", nargs="+", type=Path, metavar="METRICS_JSON", help="print these runs side by side")
    p.add_argument("--labels", help="--compare: comma list of row labels, one per file")
    p.add_argument("--metrics", help="--compare: comma list of metric columns (default all)")
    p.add_argument("--best", metavar="METRIC", help="--compare: per fusion keep only the best alpha by METRIC "
                   "('headline' = R@1 CIRR, mAP@10 CIRCO, R@10 FashionIQ)")
    p.add_argument("--groups", action="store_true", help="--compare: add shapes-world seen / held-out columns")
    p.add_argument("--plot", type=Path, metavar="PNG", help="--compare: also plot the runs' alpha sweeps together "
                   "(metrics from --metrics, else the benchmark's main ones)")
    return p


def _fusions(args) -> list[tuple[str, float]]:
    alphas = parse_sweep(args.alpha_sweep) if args.alpha_sweep else [
        args.alpha if args.alpha is not None else DEFAULT_ALPHA[args.benchmark]]
    out = []
    for name in parse_fusions(args.fusion):
        out += [(name, a) for a in alphas] if name in ("slerp", "linear") else [(name, 0.0 if name == "image" else 1.0)]
    return out


def run_compare(args) -> int:
    # matplotlib (tables and plots): imported only once the arguments are known to be good.
    from evaluation.compare import CompareError, compare_label, compare_table, load_report  # noqa: PLC0415
    from evaluation.plots import sweep_plot  # noqa: PLC0415

    reports = [load_report(p) for p in args.compare]
    split = lambda s: [x.strip() for x in s.split(",")] if s else None  # noqa: E731
    table = compare_table(reports, args.compare, labels=split(args.labels), metrics=split(args.metrics),
                          best=args.best, groups=args.groups)
    print(table, end="")
    if args.out:
        atomic_write_text(args.out, table)
    if args.plot:
        labels = split(args.labels) or [compare_label(r, p) for r, p in zip(reports, args.compare)]
        if not sweep_plot(list(zip(labels, reports)), args.plot, metrics=split(args.metrics)):
            raise CompareError("--plot: none of the files holds an alpha sweep")
        print(f"wrote {args.plot}")
    return 0


def run_eval(args, argv: list[str]) -> int:
    missing = [f"--{n}" for n in ("benchmark", "root", "model", "out") if getattr(args, n) is None]
    if missing:
        raise ValueError(f"{', '.join(missing)} required (or use --compare)")
    # Heavy (torch, transformers): imported only once the arguments are known to be good.
    import torch  # noqa: PLC0415

    from cir.benchmarks.runner import run_evaluation  # noqa: PLC0415
    from cir.encoder import load_encoder, loading_bars  # noqa: PLC0415
    from evaluation.outputs import markdown_table, write_outputs  # noqa: PLC0415

    if args.threads:
        torch.set_num_threads(args.threads)
    cache = None if args.no_cache else (args.cache_dir or default_cache_dir())
    cats = tuple(c.strip() for c in args.categories.split(",")) if args.categories else None
    if cats and args.benchmark != "fashioniq":
        raise ValueError("--categories applies to --benchmark fashioniq only")
    cfg = EvalConfig(benchmark=args.benchmark, root=args.root, split=args.split, fusions=tuple(_fusions(args)),
                     batch_size=args.batch_size, workers=args.workers, cache_dir=cache,
                     skip_missing=args.skip_missing, categories=cats, caption_order=args.caption_order,
                     progress=not args.no_progress, single_index=args.single_index)
    try:
        with loading_bars(not args.no_progress):  # --no-progress: no "Loading weights" bar either
            encoder = load_encoder(args.model, adapter=args.adapter, device=args.device, dtype=args.dtype)
    except RuntimeError as exc:  # cir.models.ModelLoadError: a model that cannot be found or loaded
        raise ValueError(str(exc)) from exc
    run = run_evaluation(encoder, cfg)
    report = write_outputs(run, args.out, command=["cir", "eval", *argv], label=args.label)
    print(markdown_table(report), end="")
    counts = report["counts"]
    print(f"\n{counts['queries']} queries ({counts['skipped_queries']} skipped), gallery {counts['gallery']}; "
          f"wrote {args.out}/metrics.json, results.md, predictions/" +
          (", alpha_sweep.png" if "plot" in report["files"] else ""))
    for fusion, b in report.get("best", {}).items():
        if len(cfg.fusions) > 1 and fusion in ("slerp", "linear"):
            print(f"best {fusion}: alpha {b['alpha']:.2f} ({b['metric']} {b['value']:.2f})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `cir eval`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), as a return code for callers
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run_compare(args) if args.compare else run_eval(args, argv)
    except (ValueError, OSError, ImportError) as exc:  # BenchmarkError, CompareError, a model that does not
        # load, and matplotlib missing from a lean install (the `eval` extra)
        print(f"cir eval: error: {exc}", file=sys.stderr)
        return 2
