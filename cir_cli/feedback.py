"""`cir feedback export DIR --out FILE.jsonl`: turn a service's feedback log into training triplets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cir.feedback import KINDS, export_triplets, segments  # light: no torch, faiss or FastAPI

DESCRIPTION = """\
Read the feedback log a server wrote (`cir serve --feedback-dir DIR`) and write one JSONL row per
(query, result) that a person clicked or selected: {"reference": gallery id(s) or kept upload
file(s), "text": ..., "target": gallery id, ...}, the format `cir train --triplets` reads (give it
the index with --gallery so the ids resolve). Queries without a text, text-only queries and queries
whose upload was not kept (CIR_FEEDBACK_KEEP_UPLOADS off) give no row; the counts say how many."""

EXAMPLES = """\
example:
  cir feedback export /var/lib/cir/feedback --out /tmp/triplets.jsonl
  cir train --model toy --triplets /tmp/triplets.jsonl --gallery /srv/index --init-adapter runs/tat --out runs/sup"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `cir feedback`."""
    p = argparse.ArgumentParser(prog="cir feedback", description=DESCRIPTION, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="write the clicked and selected results as training triplets (JSONL)")
    export.add_argument("dir", metavar="DIR", help="the feedback folder (--feedback-dir of cir serve)")
    export.add_argument("--out", required=True, metavar="FILE.jsonl", help="triplet file to write (replaced)")
    export.add_argument("--kinds", default="click,select",
                        help="feedback kinds that make a triplet (default %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run `cir feedback`; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already explained on stderr
        return int(exc.code or 0)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    if not kinds or any(k not in KINDS for k in kinds):
        print(f"cir feedback: error: --kinds must name some of {', '.join(KINDS)}", file=sys.stderr)
        return 2
    if not Path(args.dir).expanduser().is_dir() or not segments(Path(args.dir).expanduser()):
        print(f"cir feedback: error: {args.dir} holds no feedback log (feedback-*.jsonl)", file=sys.stderr)
        return 2
    try:
        counts = export_triplets(args.dir, args.out, kinds)
    except OSError as exc:
        print(f"cir feedback: error: {exc}", file=sys.stderr)
        return 2
    skipped = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()
                        if v and k not in ("queries", "feedback", "written"))
    print(f"cir feedback: {counts['written']} triplets from {counts['feedback']} feedback events on "
          f"{counts['queries']} logged queries -> {args.out}" + (f" (skipped: {skipped})" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
