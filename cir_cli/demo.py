"""`cir demo`: the whole system offline in one command: world -> index -> server, TAT behind it.

This orchestrator sits beside the dispatcher, outside the library, and calls each app's own
`main(argv)`, exactly the commands a user would type (it prints them). On a first start the
base model's index is served at once and the TAT run goes on in the background
(cir_cli/demo_background.py): its adapter's index is published into the same root when it is
done, and the running server swaps it in. With an adapter already trained (a second start),
`--no-serve` or `--no-tat`, the steps run one after the other as before.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The apps' CLI modules are light (they import torch only once their arguments parse).
from cir.toyworld.cli import main as toyworld_main
from cir.toyworld.layouts import CIRCO_MANIFEST
from cir.toyworld.styles import DEFAULT_STYLE, STYLES
from cir_cli.demo_background import BackgroundTat
from indexer.cli import main as index_main
from service.cli import main as serve_main
from training.cli import main as train_main

WORLD_SEED = 1
DEMO_QUERIES = 500
STATUS_FILE = "status.json"  # the background TAT job's status, shown by /info and the page
TAT_LOG = "tat.log"
TAT_DATA = "tat-data"  # TAT's training captions (a world of their own, see _tat_data)


@dataclass(frozen=True)
class DemoStyle:
    """What the demo builds for one world style."""

    folder: str  # under --workdir ("" for plain: the layout from before styles existed)
    captions: int  # training image-caption pairs in the world
    train_args: tuple[str, ...]  # the TAT run on the toy model (docs/tat.md measures each); --resume is added
    alpha: float  # the best Slerp text weight after TAT (docs/tat.md); written into the index manifest
    eval_before_after: bool  # let the TAT job print Slerp recall before/after on the world's CIRR queries


DEMOS = {
    # a short TAT run: the toy model was trained on plain renders, so there is little to gain
    "plain": DemoStyle("", 4000, ("--max-steps", "150", "--batch-size", "128", "--lr", "1e-3", "--workers", "0"),
                       0.7, False),
    # a shifted image domain: the recipe of docs/tat.md recovers most of what the backgrounds cost
    "textured": DemoStyle("textured", 10000, ("--max-steps", "600", "--lr", "1e-3", "--workers", "0"), 0.7, True),
}
# Every render of the world (several per attribute combination) as an index manifest whose
# fields are the five attributes, so the demo can filter by them; ids are the image file names.
GALLERY = CIRCO_MANIFEST


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
    p.add_argument("--style", choices=STYLES, default=DEFAULT_STYLE,
                   help="world style: 'plain' (default; what the toy model was trained on) or 'textured' "
                        "(backgrounds it never saw: TAT's before/after, with a longer TAT run of about 10 "
                        "minutes on 2 cores; its files go to WORKDIR/textured/)")
    p.add_argument("--retrain", action="store_true", help="run the TAT job again even if an adapter exists")
    p.add_argument("--no-tat", action="store_true", help="index and serve the base toy model, no TAT adapter")
    p.add_argument("--no-serve", action="store_true", help="prepare everything, print the serve command, exit")
    return p


class Stopped(Exception):
    """A step stopped early: by Ctrl-C (status 130) or a failure it explained already."""

    def __init__(self, status: int, what: str):
        super().__init__(what)
        self.status = status


def _step(title: str, argv: list[str] | None = None) -> None:
    print(f"\n==> {title}" + (f"\n    $ cir {shlex.join(argv)}" if argv else ""), flush=True)


def _run(main, argv: list[str], what: str) -> None:
    """Run one app's `main(argv)` as the printed command would; a non-zero status stops the demo."""
    status = main(argv[1:])
    if status:
        raise Stopped(status, what)


def _world(workdir: Path, gallery_size: int, style: str) -> Path:
    world = workdir / "world"
    if (world / "world.json").is_file() and (world / GALLERY).is_file():  # older worlds lack the manifest
        found = json.loads((world / "world.json").read_text()).get("style", DEFAULT_STYLE)
        if found != style:
            raise ValueError(f"{world} holds a {found} world, not {style}; remove it or choose another --workdir")
        _step(f"shapes world: reusing {world}")
        return world
    # the training captions are TAT's data, rendered apart (_tat_data): the page need not wait for them
    argv = ["toyworld", "--out", str(world), "--seed", str(WORLD_SEED), "--gallery-size", str(gallery_size),
            "--queries", str(DEMO_QUERIES), "--captions", "0"]
    argv += ["--style", style] if style != DEFAULT_STYLE else []
    _step(f"shapes world: generating {gallery_size} renders into {world}", argv)
    _run(toyworld_main, argv, "generating the shapes world")
    return world


def _tat_data(workdir: Path, world: Path, style: str) -> tuple[Path, list[str] | None]:
    """TAT's image-caption pairs, and the command that renders them when they are not there yet.

    The same seed gives the same captions whatever the gallery size (cir.toyworld), so they come
    from a world of its own with a minimal gallery; a world of an older demo holds them already.
    """
    for folder in (world, workdir / TAT_DATA):
        captions = folder / "captions.jsonl"
        if (folder / "world.json").is_file() and captions.is_file() and captions.stat().st_size:
            return captions, None
    argv = ["toyworld", "--out", str(workdir / TAT_DATA), "--seed", str(WORLD_SEED), "--gallery-size", "8",
            "--queries", "0", "--captions", str(DEMOS[style].captions), "--quiet"]
    argv += ["--style", style] if style != DEFAULT_STYLE else []
    return workdir / TAT_DATA / "captions.jsonl", argv


def _train_argv(data: Path, world: Path, adapter: Path, demo: DemoStyle) -> list[str]:
    # --resume: a demo stopped during training continues from its checkpoint on the next start.
    argv = ["train", "--model", "toy", "--data", str(data), "--out", str(adapter),
            *demo.train_args, "--resume"]
    if demo.eval_before_after:
        argv += ["--eval-cir", str(world / "cirr"), "--eval-alpha", str(demo.alpha)]
    return argv


def _trained(adapter: Path) -> bool:
    return (adapter / "adapter_config.json").is_file()


def _new_adapter(workdir: Path, retrain: bool) -> Path:
    adapter = workdir / "adapter"
    if retrain and _trained(adapter):
        adapter = workdir / f"adapter-{time.strftime('%Y%m%dT%H%M%S')}"
    return adapter


def _adapter(workdir: Path, world: Path, retrain: bool, demo: DemoStyle, style: str) -> Path:
    adapter = workdir / "adapter"
    if _trained(adapter) and not retrain:
        _step(f"TAT adapter: reusing {adapter}")
        return adapter
    adapter = _new_adapter(workdir, retrain)
    data, render = _tat_data(workdir, world, style)
    if render is not None:
        _step("TAT's training captions", render)
        _run(toyworld_main, render, "rendering the training captions")
    argv = _train_argv(data, world, adapter, demo)
    _step("Text-Anchored Tuning of the toy model's image tower", argv)
    _run(train_main, argv, "the TAT job")
    return adapter


def _served_adapter(index: Path) -> str | None | bool:
    """The adapter of the index's CURRENT version (None: the base model), or False when nothing is published."""
    try:
        version = (index / "CURRENT").read_text().strip()
        return json.loads((index / "versions" / version / "manifest.json").read_text()).get("adapter")
    except (OSError, ValueError):
        return False


def _build_argv(world: Path, index: Path, adapter: Path | None, demo: DemoStyle) -> list[str]:
    argv = ["index", "build", "--gallery", str(world / GALLERY), "--model", "toy",
            "--out", str(index), "--workers", "0", "--alpha", str(demo.alpha)]
    if adapter is not None:
        argv[6:6] = ["--adapter", str(adapter)]
    served = _served_adapter(index)
    wanted = str(adapter.resolve()) if adapter is not None else None
    if served is not False and served != wanted:  # the root holds another encoder's vectors
        argv.append("--force-new")
    return argv


def _index(world: Path, index: Path, adapter: Path | None, demo: DemoStyle, title: str) -> None:
    argv = _build_argv(world, index, adapter, demo)
    _step(title, argv)
    _run(index_main, argv, "indexing")


def _max_steps(demo: DemoStyle) -> int:
    args = list(demo.train_args)
    return int(args[args.index("--max-steps") + 1]) if "--max-steps" in args else 0


def _prepare(args, demo: DemoStyle, workdir: Path) -> tuple[Path, Path | None, BackgroundTat | None]:
    """World and index ready to serve; with TAT still to train (and a server to start), its background job."""
    world = _world(workdir, args.gallery_size, args.style)
    index = workdir / "index"
    background = not (args.no_tat or args.no_serve) and (args.retrain or not _trained(workdir / "adapter"))
    if not background:
        adapter = None if args.no_tat else _adapter(workdir, world, args.retrain, demo, args.style)
        _index(world, index, adapter, demo, "indexing the gallery")
        return index, adapter, None
    if _served_adapter(index) is False:  # nothing to serve yet: the base model's index, at once
        _index(world, index, None, demo, "indexing the gallery with the base model (TAT follows in the background)")
    else:
        _step(f"index: serving what {index} holds until TAT's index is published")
    adapter = _new_adapter(workdir, args.retrain)
    data, render = _tat_data(workdir, world, args.style)
    train = _train_argv(data, world, adapter, demo) + ["--log-every", "5", "--no-progress"]
    job = BackgroundTat(render, train, lambda: _build_argv(world, index, adapter, demo) + ["--no-progress"],
                        adapter, _max_steps(demo), workdir / STATUS_FILE, workdir / TAT_LOG)
    _step(f"Text-Anchored Tuning in the background (log: {workdir / TAT_LOG}); the page's info line shows "
          "its step, then the adapter once its index is swapped in")
    for argv in (render, train, ["index", "build", "--adapter", str(adapter), "..."]):
        if argv:
            print(f"    $ cir {shlex.join(argv)}")
    return index, None, job


def main(argv: list[str] | None = None) -> int:
    """Run `cir demo`; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), as a return code for callers
        return int(exc.code or 0)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    demo = DEMOS[args.style]
    workdir = args.workdir / demo.folder
    (workdir / STATUS_FILE).unlink(missing_ok=True)  # a previous run's job is over
    try:
        index, adapter, job = _prepare(args, demo, workdir)
    except KeyboardInterrupt:
        return _stopped()
    except Stopped as exc:
        if exc.status == 130:
            return _stopped()
        print(f"cir demo: error: {exc} failed (see above)", file=sys.stderr)
        return exc.status
    except (OSError, ValueError) as exc:
        print(f"cir demo: error: {exc}", file=sys.stderr)
        return 2
    serve = ["serve", "--index", str(index), "--host", args.host, "--port", str(args.port)]
    if job is not None:
        serve += ["--status-file", str(job.status)]
    print(f"\nDemo ready in {time.perf_counter() - start:.0f} s: world {workdir / 'world'}, "
          f"adapter {adapter or ('training in the background' if job else 'none')}, index {index}.")
    if args.no_serve:
        _step("to serve it", serve)
        return 0
    _step(f"serving on http://{args.host}:{args.port}/  (Ctrl-C stops)", serve)
    if job is not None:
        job.start()
    try:
        return serve_main(serve[1:])
    finally:
        if job is not None:
            job.stop()


def _stopped() -> int:
    print("cir demo: interrupted; run it again to continue (finished steps are reused)", file=sys.stderr)
    return 130
