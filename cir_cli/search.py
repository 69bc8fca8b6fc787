"""`cir search`: one composed query against a published index, no server, through the server's engine.

It loads the index version (default ROOT/CURRENT) and the encoder its manifest names (or
--model/--adapter), and answers with `SearchEngine.search_sync`, the exact code path the
service's batched search is tested against. `--json` prints the HTTP response's shape.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXAMPLES = """\
examples:
  cir search --index .demo/index --reference-id 000000000042.png --text "make it blue"
  cir search --index .demo/index --text "a red star" --filter '{"size": "large", "pattern": {"ne": "plain"}}'
  cir search --index ROOT --image query.jpg --text "same but in black" --filter @filter.json --k 5 --json
  cir search --index ROOT --image a.jpg --image b.jpg --reference-id 0042.png --image-weights 2,1,1 \
             --text "make it blue" --negative-text striped --negative-weight 0.4

Exit status: 0 with results (possibly none), 2 for bad input (no query, a bad image, filter or
weights, more than 8 references, unknown reference id, an index or model that cannot be loaded)."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `cir search`."""
    p = argparse.ArgumentParser(prog="cir search", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Run one composed query (reference image and/or modification text, "
                                            "optionally filtered by metadata) against a published index.")
    p.add_argument("--index", required=True, type=Path, metavar="ROOT", help="index root (from `cir index build`)")
    p.add_argument("--version", help="index version to search (default: the published ROOT/CURRENT)")
    p.add_argument("--image", type=Path, action="append", default=[], metavar="FILE",
                   help="reference image: a JPEG, PNG, WebP or BMP file (repeatable)")
    p.add_argument("--reference-id", action="append", default=[], metavar="ID",
                   help="use this gallery item as a reference image (repeatable; up to 8 references in all, "
                        "merged by their spherical mean)")
    p.add_argument("--image-weights", metavar="W,W,...",
                   help="one weight per reference, comma-separated: the --image files first, then the "
                        "--reference-ids (default equal)")
    p.add_argument("--text", help="the modification text")
    p.add_argument("--negative-text", action="append", default=[], metavar="TEXT",
                   help="move the query away from this text (repeatable; several are merged first)")
    p.add_argument("--negative-weight", type=float, metavar="BETA",
                   help="how far to move away from the negative text, 0..1 (default 0.3)")
    p.add_argument("--filter", metavar="JSON", help='metadata filter, e.g. \'{"colour": "blue", "price": {"lt": 50}}\', '
                                                   "or @FILE to read it from a file (fields: cir index info ROOT)")
    p.add_argument("--k", type=int, default=10, help="number of results (default 10, at most 1000)")
    p.add_argument("--offset", type=int, default=0, help="skip this many results: the page after them (offset + k "
                                                         "<= 10000; --json shows next_offset)")
    p.add_argument("--exclude-id", action="append", default=[], metavar="ID",
                   help="never return this gallery item (repeatable)")
    p.add_argument("--keep-references", action="store_true",
                   help="also return the query's own references (left out by default: the --reference-ids, and "
                        "gallery items whose file equals an --image)")
    p.add_argument("--alpha", type=float, help="text weight 0..1 (default: the index manifest's)")
    p.add_argument("--fusion", default="slerp", help="slerp (default), linear, image or text")
    p.add_argument("--min-score", type=float, help="drop hits scoring below this cosine")
    p.add_argument("--model", help="encoder override (default: the model named in the index manifest)")
    p.add_argument("--adapter", help="LoRA adapter override (default: the manifest's adapter)")
    p.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:N or auto")
    p.add_argument("--runtime", default="torch", help="encoder runtime: torch (default) or onnx (as `cir serve`)")
    p.add_argument("--json", action="store_true", help="print one JSON object shaped like the HTTP response")
    return p


def _read_filter(spec: str | None) -> str | None:
    if spec is None or not spec.startswith("@"):
        return spec
    return Path(spec[1:]).expanduser().read_text(encoding="utf-8")


def _check(args, max_k: int) -> None:
    if not args.image and not args.reference_id and not (args.text or "").strip():
        raise ValueError("give a query: --image FILE, --reference-id ID and/or --text TEXT")
    if not 1 <= args.k <= max_k:
        raise ValueError(f"--k must be between 1 and {max_k}")
    if args.alpha is not None and not 0.0 <= args.alpha <= 1.0:
        raise ValueError("--alpha must be between 0 and 1 (the text weight)")


def _print_text(body: dict, count: int, filter_text: str | None) -> None:
    t = body["timings_ms"]
    note = f" · filter {filter_text}" if filter_text else ""
    if body["references"] > 1:
        note = f" · {body['references']} references" + note
    if body["negative_weight"] is not None:
        note = f" · not beta={body['negative_weight']:.2f}" + note
    print(f"index {body['index_version']} ({count} items) · {body['fusion']} alpha={body['alpha']:.2f}{note} · "
          f"{len(body['results'])} hits · {t['total']:.1f} ms")
    for warning in body["warnings"]:
        print(f"warning: {warning}")
    if body["results"]:
        width = max(len(h["id"]) for h in body["results"])
        print(f"{'rank':>4}  {'score':>7}  {'id':<{width}}  metadata")
    for h in body["results"]:
        meta = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in h["metadata"].items())
        print(f"{h['rank']:>4}  {h['score']:>7.4f}  {h['id']:<{width}}  {meta}")


def run(args) -> int:
    """Load the index and encoder, answer the query, print it; 2 on bad input."""
    # Imported after parsing, so `--help` and usage errors answer at once: torch, transformers
    # and faiss take seconds to import.
    from cir.errors import StoreError
    from cir.models import ModelLoadError

    try:
        return _answer(args)
    except (ValueError, OSError, StoreError, ModelLoadError) as exc:  # QueryErrors are ValueErrors
        print(f"cir search: error: {exc}", file=sys.stderr)
        return 2


def _answer(args) -> int:
    # Heavy imports after parsing (see run).
    from cir.filters import parse_filter
    from cir.fusion import FUSIONS
    from cir.images import DEFAULT_MAX_PIXELS
    from cir.stores import check_encoder, open_store
    from cir.runtimes import load_runtime_encoder
    from cir.search import IndexState, Query, SearchEngine
    from cir.search.query import MAX_K, check_reference_count, parse_weights, result_dict
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one query: the weight-loading bar is noise on stderr
    _check(args, MAX_K)
    if args.fusion not in FUSIONS:
        raise ValueError(f"--fusion must be one of {', '.join(FUSIONS)}")
    flt = parse_filter(_read_filter(args.filter))
    check_reference_count(len(args.image) + len(args.reference_id))
    query = Query(images=tuple(path.expanduser().read_bytes() for path in args.image),
                  reference_ids=tuple(args.reference_id), text=(args.text or "").strip() or None, k=args.k,
                  alpha=args.alpha, fusion=args.fusion, min_score=args.min_score, filter=flt,
                  image_weights=parse_weights(args.image_weights) if args.image_weights else None,
                  negative_texts=tuple(t.strip() for t in args.negative_text), negative_weight=args.negative_weight,
                  offset=args.offset, exclude_ids=tuple(args.exclude_id), keep_references=args.keep_references)
    query.check()  # before the model loads: bad weights or references fail fast
    index = open_store(args.index).open(args.version)
    try:
        if flt is not None:
            flt.bind(index.fields)  # before the model loads: a bad filter fails fast
        encoder = load_runtime_encoder(args.model or index.manifest.get("model"),
                                       adapter=args.adapter or index.manifest.get("adapter"), device=args.device,
                                       runtime=args.runtime)
        check_encoder(index.manifest, encoder)
        engine = SearchEngine(encoder, max_pixels=DEFAULT_MAX_PIXELS)
        engine.swap(IndexState.of(index))
        result = engine.search_sync(query)
        body = result_dict(result, encoder.text_max_length)
    finally:
        index.close()
    if args.json:
        print(json.dumps(body, ensure_ascii=False))
    else:
        _print_text(body, index.count, json.dumps(flt.to_dict(), ensure_ascii=False) if flt else None)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run `cir search`; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), as a return code for callers
        return int(exc.code or 0)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
