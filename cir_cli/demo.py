"""`cir demo`: the whole system offline in one command: world -> TAT -> index -> server.

This orchestrator sits beside the dispatcher, outside the library, and calls each app's own
`main(argv)`, exactly the commands a user would type (it prints them).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from cir.toyworld.world import generate_world
from indexer.cli import main as index_main
from service.cli import main as serve_main
from training.cli import main as train_main

# A short TAT run on the toy model; docs/tat.md measures what it does to the gap and recall.
DEMO_TRAIN_ARGS = ["--max-steps", "150", "--batch-size", "128", "--lr", "1e-3", "--workers", "0"]
WORLD_SEED = 1
# The toy model's best text weight after TAT (docs/tat.md); written into the index manifest.
DEMO_ALPHA = 0.7
# Every render of the world (the CIRCO layout's image folder), several per attribute combination.
GALLERY_DIR = Path("circo/COCO2017_unlabeled/unlabeled2017")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `cir demo`."""
    p = argparse.ArgumentParser(
        prog="cir demo",
        description="Generate a shapes-world gallery, run a short TAT job on the built-in toy model "
                    "(or reuse its adapter), build the index and serve it with the web page. "
                    "Everything stays under --workdir; a second run reuses what is there.")
    p.add_argument("--workdir", type=Path, default=Path(".demo"), help="where the demo's files go (default .demo)")
    p.add_argument("--host", default=os.environ.get("CIR_HOST", "127.0.0.1"), help="bind address (env CIR_HOST)")
    p.add_argument("--port", type=int, default=int(os.environ.get("CIR_PORT", "8000")), help="port (env CIR_PORT, default 8000)")
    p.add_argument("--gallery-size", type=int, default=1500, help="shapes-world renders to generate (default 1500)")
    p.add_argument("--retrain", action="store_true", help="run the TAT job again even if an adapter exists")
    p.add_argument("--no-tat", action="store_true", help="index and serve the base toy model, no TAT adapter")
    p.add_argument("--no-serve", action="store_true", help="prepare everything, print the serve command, exit")
    return p


def _step(title: str, argv: list[str] | None = None) -> None:
    print(f"\n==> {title}" + (f"\n    $ cir {shlex.join(argv)}" if argv else ""), flush=True)


def _world(workdir: Path, gallery_size: int) -> Path:
    world = workdir / "world"
    if (world / "world.json").is_file():
        _step(f"shapes world: reusing {world}")
        return world
    _step(f"shapes world: generating {gallery_size} renders into {world}",
          ["toyworld", "--out", str(world), "--seed", str(WORLD_SEED), "--gallery-size", str(gallery_size)])
    generate_world(world, seed=WORLD_SEED, gallery_size=gallery_size, n_queries=500, n_captions=4000, progress=True)
    return world


def _adapter(workdir: Path, world: Path, retrain: bool) -> Path:
    adapter = workdir / "adapter"
    if (adapter / "adapter_config.json").is_file() and not retrain:
        _step(f"TAT adapter: reusing {adapter}")
        return adapter
    if retrain and adapter.exists():
        adapter = workdir / f"adapter-{time.strftime('%Y%m%dT%H%M%S')}"
    argv = ["train", "--model", "toy", "--data", str(world / "captions.jsonl"), "--out", str(adapter),
            *DEMO_TRAIN_ARGS]
    _step("Text-Anchored Tuning of the toy model's image tower", argv)
    if train_main(argv[1:]) != 0:
        raise RuntimeError("the TAT job failed (see above)")
    return adapter


def main(argv: list[str] | None = None) -> int:
    """Run `cir demo`; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    try:
        world = _world(args.workdir, args.gallery_size)
        adapter = None if args.no_tat else _adapter(args.workdir, world, args.retrain)
        index = args.workdir / "index"
        build = ["index", "build", "--gallery", str(world / GALLERY_DIR), "--model", "toy",
                 "--out", str(index), "--workers", "0", "--alpha", str(DEMO_ALPHA)]
        if adapter is not None:
            build[6:6] = ["--adapter", str(adapter)]
        _step("indexing the gallery", build)
        if index_main(build[1:]) != 0:
            raise RuntimeError("indexing failed (see above)")
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"cir demo: error: {exc}", file=sys.stderr)
        return 1
    serve = ["serve", "--index", str(index), "--host", args.host, "--port", str(args.port)]
    print(f"\nDemo ready in {time.perf_counter() - start:.0f} s: world {world}, "
          f"adapter {adapter or 'none'}, index {index}.")
    if args.no_serve:
        _step("to serve it", serve)
        return 0
    _step(f"serving on http://{args.host}:{args.port}/  (Ctrl-C stops)", serve)
    return serve_main(serve[1:])
