"""`cir toyworld`: write a shapes world (training captions, gallery, CIRR and CIRCO files)."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from cir.toyworld.spec import DEFAULT_IMAGE_SIZE
from cir.toyworld.styles import DEFAULT_STYLE, STYLES
from cir.toyworld.world import generate_world

DESCRIPTION = """\
Write a procedurally rendered shapes world to DIR:
  DIR/images/train/*.png + DIR/captions.jsonl   training image-caption pairs (seen combinations only)
  DIR/cirr/...                                  the queries in CIRR val layout (one render per combination)
  DIR/circo/...                                 the same queries in CIRCO val layout (every render)
  DIR/circo/gallery_manifest.jsonl              the CIRCO renders as an index manifest (attributes as fields)
  DIR/queries.jsonl                             per-query attributes, changed attributes, held-out flag
  DIR/gallery.jsonl                             per-render ids, file names and attributes
  DIR/world.json                                world configuration and the held-out combinations
  DIR/cirr/captions/cap.rc2.train.json + image_splits/split.rc2.train.json + train/<n>/*.png
                                                with --train-triplets N: supervised triplets in CIRR's train
                                                layout, seen combinations only (for `cir train --triplets`)
The same arguments always give the same files."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `cir toyworld`."""
    p = argparse.ArgumentParser(prog="cir toyworld", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (created; an existing shapes world there is replaced)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the world is a pure function of it (default 0)")
    p.add_argument("--gallery-size", type=int, default=3000, metavar="N",
                   help="gallery renders for the CIRCO layout; the first of each combination also "
                        "forms the CIRR split (default 3000; 480 combinations exist)")
    p.add_argument("--queries", type=int, default=1000, metavar="N", help="composed queries (default 1000)")
    p.add_argument("--captions", type=int, default=10000, metavar="N",
                   help="training image-caption pairs, disjoint from the gallery (default 10000)")
    p.add_argument("--train-triplets", type=int, default=0, metavar="N",
                   help="also write a CIRR-layout train split of N triplets whose references and targets are all "
                        "seen combinations, rendered afresh (default 0: none)")
    p.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, metavar="PX",
                   help=f"image side in pixels (default {DEFAULT_IMAGE_SIZE}, what the built-in toy model reads)")
    p.add_argument("--style", choices=STYLES, default=DEFAULT_STYLE,
                   help="backgrounds of the renders: 'plain' flat grey, what the built-in toy model trained on "
                        "(default); 'textured' tinted, textured, cluttered and unevenly lit backgrounds that no "
                        "caption mentions, the same objects, captions and queries (a shifted image domain for TAT)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run `cir toyworld`; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already explained on stderr
        return int(exc.code or 0)
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    try:
        info = generate_world(args.out, seed=args.seed, gallery_size=args.gallery_size, n_queries=args.queries,
                              n_captions=args.captions, image_size=args.image_size, progress=not args.quiet,
                              style=args.style, n_train_triplets=args.train_triplets)
    except (ValueError, OSError) as exc:
        print(f"cir toyworld: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({args.style}): {info['gallery_size']} gallery renders ({info['n_cirr_images']} in the CIRR split), "
          f"{info['n_queries']} queries ({info['n_heldout_queries']} with held-out targets), "
          f"{info['n_captions']} training captions"
          + (f", {args.train_triplets} train triplets" if args.train_triplets else "")
          + f" in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
