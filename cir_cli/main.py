"""`cir <command> ...`: dispatch to the apps' CLIs without the library importing any app."""

from __future__ import annotations

import importlib
import sys

# Modules are imported only for the command that runs, so `cir serve` never pays for Ray etc.
COMMANDS = {
    "toyworld": ("cir.toyworld.cli", "generate the procedural shapes world (gallery, captions, CIRR/CIRCO layouts)"),
    "train": ("training.cli", "Text-Anchored Tuning: LoRA-tune the image tower against the frozen text tower"),
    "index": ("indexer.cli", "build, publish and inspect versioned FAISS gallery indexes"),
    "serve": ("service.cli", "run the composed image retrieval HTTP service"),
    "search": ("cir_cli.search", "run one query against a published index (no server), with metadata filters"),
    "eval": ("evaluation.cli", "evaluate on CIRR, CIRCO, FashionIQ or the shapes world"),
    "feedback": ("cir_cli.feedback", "export a server's search feedback log as training triplets"),
    "demo": ("cir_cli.demo", "one-command offline demo: world, TAT, index, server"),
}


def usage() -> str:
    """The top-level help text."""
    lines = ["usage: cir <command> [options]   (cir <command> --help for details)", "", "commands:"]
    lines += [f"  {name:<9} {desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `cir` console script."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] in ("-V", "--version"):
        print(importlib.import_module("cir").__version__)
        return 0
    if args[0] not in COMMANDS:
        print(f"cir: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[args[0]][0])
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
