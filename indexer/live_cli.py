"""`cir index apply` and `cir index compact`: live changes to an index root without a server."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from indexer.config import DEVICES, BuildConfig

D = BuildConfig  # field defaults of the one config: the CLI never restates them


def live_parsers(sub) -> None:
    p = sub.add_parser("apply", help="apply live changes (upserts, patches, deletes) from a JSONL file",
                       description=APPLY_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="index root with a published version")
    p.add_argument("changes", type=Path, help="JSONL file, one operation per line (see above)")
    p.add_argument("--batch", type=int, default=1000, help="operations per locked, fsync'ed batch (default %(default)s)")
    p.add_argument("--device", default=D.device, choices=DEVICES, help="encoder device for images (default %(default)s)")
    p.add_argument("--max-file-mb", type=float, default=D.max_file_mb,
                   help="larger image files are refused, never read (default %(default)s MiB)")
    p.add_argument("--max-pixels", type=int, default=D.max_pixels,
                   help="decompression-bomb guard: images with more pixels are refused (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the counts")
    p = sub.add_parser("compact", help="fold the pending live changes into a new published version",
                       description="Fold ROOT's pending live changes into a new version and publish it, embedding "
                                   "nothing (vectors come from the published version and the log); a running "
                                   "server swaps it in. Then trim the log of what was folded.")
    p.add_argument("root", type=Path, help="index root")
    p.add_argument("--keep", type=int, default=D.keep, help="complete versions to keep (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object with what was done")


APPLY_HELP = """Apply live changes to ROOT without a server: the same operations as POST /items/bulk, one per line.

  {"op": "upsert", "id": "sku-1", "image": "img/sku-1.jpg", "metadata": {"title": "red shoe", "price": 40}}
  {"op": "patch", "id": "sku-2", "metadata": {"price": 35, "sale": null}}
  {"op": "delete", "id": "sku-3"}

An upsert inserts or replaces an item; its image (relative to the file's folder) is embedded with
the published version's model and kept under ROOT/live/images. Without "image" it replaces the
metadata of an existing item. A patch merges metadata (null removes a field), a delete removes.
Each batch is fsync'ed to ROOT/live/changes.log under the root's write lock: a server on ROOT
takes turns with this command and serves the changes within its reload interval. Refused lines
are listed on stderr (exit 1); the others are applied. `cir index compact ROOT` folds them into
a version."""


def cmd_apply(args) -> int:
    """Apply a JSONL file of live changes."""
    if args.batch < 1:
        raise ValueError("--batch must be >= 1")
    if not args.changes.is_file():
        raise ValueError(f"{args.changes} is not a file")
    # Heavy (torch, faiss): imported only once the arguments are known to be good.
    from indexer.apply import apply_changes  # noqa: PLC0415

    report = apply_changes(args.root, args.changes, batch=args.batch, max_bytes=int(args.max_file_mb * 2**20),
                           max_pixels=args.max_pixels, device=args.device)
    for line, item_id, reason in report.refused:
        print(f"cir index apply: {args.changes}:{line}: {item_id}: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps({"applied": report.applied, "refused": len(report.refused), "last_change": report.last_change}))
    else:
        print(f"applied {report.applied} changes (last change {report.last_change}), refused {len(report.refused)}")
    return 1 if report.refused else 0


def cmd_compact(args) -> int:
    """Fold pending live changes into a new published version."""
    if args.keep < 1:
        raise ValueError("--keep must be >= 1 (the published version is always kept)")
    from cir.stores.compact import compact  # noqa: PLC0415 - heavy (faiss), after parsing

    result = compact(args.root, keep_versions=args.keep)
    if args.json:
        print(json.dumps(vars(result)))
    elif result.status == "nothing_pending":
        print(f"nothing to compact: {result.version} has no pending live changes")
    else:
        print(f"published {result.version}: {result.folded} changes folded into {result.previous} "
              f"({result.count} items, {result.added} added, {result.removed} removed; index {result.index}) "
              f"in {result.seconds:.1f}s")
    return 0
