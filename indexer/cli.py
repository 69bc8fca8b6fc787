"""`cir index` / `python -m indexer`: build, publish and inspect versioned gallery indexes."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

import faiss

from cir import index_store as store
from cir.runtimes import DEFAULT_RUNTIME, RUNTIMES
from indexer.build import BuildError, build, embed_local
from indexer.config import DEFAULT_ITEM_ALPHA, BuildConfig

# One core stays with the encoder's process (collation, host-to-device copies).
DEFAULT_WORKERS = max(1, min(8, (os.cpu_count() or 2) - 1))


def _build_parser(sub) -> None:
    p = sub.add_parser("build", help="embed a gallery and publish a new index version",
                       description="Embed a gallery (folder or JSONL/CSV manifest) and publish a new version under "
                                   "ROOT. Rerunning resumes a killed job; building into an existing ROOT embeds only "
                                   "new or changed files.")
    p.add_argument("--gallery", required=True, type=Path,
                   help="image folder (walked recursively: jpg jpeg png webp bmp) or a .jsonl/.csv manifest with "
                        "'path' and optional 'id' and metadata fields")
    p.add_argument("--model", required=True, help="model: 'toy', a local model folder or a hub id")
    p.add_argument("--adapter", type=Path, default=None, help="LoRA adapter folder from `cir train` (TAT)")
    p.add_argument("--out", required=True, type=Path, help="index root (ROOT/versions/<v>/, ROOT/CURRENT)")
    p.add_argument("--factory", default="auto",
                   help="auto (default: Flat for small galleries, HNSW32, or IVF+PQ when memory is short), Flat, "
                        "HNSW<M>, IVF<nlist>,Flat or IVF<nlist>,PQ<m>")
    p.add_argument("--batch-size", type=int, default=64, help="images per encoder batch (default 64)")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                   help=f"decode/preprocess worker processes (default: cores - 1, at most 8; here {DEFAULT_WORKERS}; "
                        "0 = inline)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="encoder device (default auto)")
    p.add_argument("--dtype", default="auto", help="autocast dtype: auto (bf16 on GPU), float32, bfloat16, float16")
    p.add_argument("--runtime", default=DEFAULT_RUNTIME, choices=RUNTIMES,
                   help="encoder runtime: torch (default) or onnx (ONNX Runtime on the CPU; the towers are exported "
                        "once and cached by fingerprint; the index is the same model's, servable by either runtime)")
    p.add_argument("--onnx-cache", type=Path, default=None,
                   help="folder of cached ONNX exports (default ~/.cache/cir/onnx)")
    p.add_argument("--executor", default="local", choices=("local", "ray"),
                   help="local (default) or ray: embed on a Ray cluster (RAY_ADDRESS), one GPU actor per device")
    p.add_argument("--keep", type=int, default=3, help="complete versions to keep (default 3; CURRENT always kept)")
    p.add_argument("--alpha", type=float, default=0.8, help="default Slerp text weight recorded in the manifest (0.8)")
    p.add_argument("--force-new", action="store_true",
                   help="allow a root built with another encoder: re-embed everything, publish a new version")
    p.add_argument("--shard-size", type=int, default=4096, help="images per crash-safe embedding shard (4096)")
    p.add_argument("--recall-target", type=float, default=0.95,
                   help="ANN search knobs are tuned to reach this recall@10 vs exact search (0.95)")
    p.add_argument("--flat-max", type=int, default=20_000, help="auto: exact Flat up to this many images (20000)")
    p.add_argument("--max-memory-gb", type=float, default=None,
                   help="auto: memory budget for the index (default half the RAM); over it IVF+PQ is used")
    p.add_argument("--gpu-index", default="auto", choices=("auto", "yes", "no"),
                   help="build Flat/IVF indexes on the GPU with faiss-gpu (auto: when the encoder is on CUDA)")
    p.add_argument("--item-text", metavar="FIELD", default=None,
                   help="compose each gallery item that has this manifest field (e.g. title) with its text: "
                        "the index holds slerp(image, text, --item-alpha); items without it keep their image "
                        "embedding; the image embeddings stay stored for reference_id queries and rebuilds")
    p.add_argument("--item-alpha", metavar="B", type=float, default=None,
                   help=f"text weight of composed items, 0..1 (default {DEFAULT_ITEM_ALPHA}; 0 = the image-only "
                        "index). A new field or weight re-composes without re-encoding any image")
    p.add_argument("--faiss-threads", type=int, default=0, help="FAISS OpenMP threads (default 0 = all cores)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print one final JSON line with the counts and images/s")


def _config(args) -> BuildConfig:
    return BuildConfig(
        gallery=args.gallery, model=args.model, out=args.out, adapter=args.adapter, factory=args.factory,
        batch_size=args.batch_size, workers=args.workers, device=args.device, dtype=args.dtype,
        runtime=args.runtime, onnx_cache=args.onnx_cache, executor=args.executor, keep=args.keep, alpha=args.alpha,
        force_new=args.force_new, shard_size=args.shard_size, recall_target=args.recall_target, flat_max=args.flat_max,
        max_memory_gb=args.max_memory_gb, gpu_index=args.gpu_index, item_text=args.item_text,
        item_alpha=args.item_alpha, progress=not args.no_progress)


def cmd_build(args) -> int:
    """Run a build and report it."""
    cfg = _config(args)
    if args.faiss_threads > 0:
        faiss.omp_set_num_threads(args.faiss_threads)
    executor = embed_local
    if cfg.executor == "ray":
        # Ray is an optional dependency, imported only when its executor is chosen.
        from indexer import ray_executor

        executor = ray_executor.embed_ray
    result = build(cfg, executor=executor)
    if args.json:
        keys = ("version", "count", "embedded", "reused", "skipped", "seconds", "images_per_s")
        print(json.dumps({k: asdict(result)[k] for k in keys}))
    else:
        print(f"published {result.version}: {result.count} items ({result.embedded} embedded, {result.reused} "
              f"reused, {result.skipped} skipped) in {result.seconds:.1f}s, {result.images_per_s:.1f} images/s; "
              f"index {result.factory}, recall@10 {result.recall_at_10:.3f}")
    return 0


def cmd_publish(args) -> int:
    """Point CURRENT at an existing version (roll back or forward)."""
    store.IndexRoot(args.root).publish(args.version)
    print(f"published {args.version}")
    return 0


def cmd_info(args) -> int:
    """Print the manifest of a version (default CURRENT) and the versions present."""
    root = store.IndexRoot(args.root)
    version = args.version or root.current_version()
    if version is None:
        raise store.IndexStoreError(f"{args.root} has no published version")
    info = {"root": str(args.root), "current": root.current_version(), "versions": root.versions(),
            "manifest": root.manifest(version)}
    report = root.version_dir(version) / store.REPORT_FILE
    if report.is_file():
        info["skipped"] = store.read_json(report).get("skipped", [])
    if args.json:
        print(json.dumps(info))
        return 0
    m = info["manifest"]
    print(f"root {args.root}: current {info['current']}, versions {', '.join(info['versions'])}")
    print(f"version {version}: {m['count']} items, dim {m['dim']}, {m['factory']} {m.get('search_params') or ''} "
          f"recall@10 {m.get('recall_at_10')}, model {m['model']}, adapter {m.get('adapter')}, "
          f"fingerprint {m['fingerprint'][:12]}, default alpha {m['default_alpha']}")
    if m.get("item_text"):
        t = m["item_text"]
        print(f"items composed with their {t['field']!r} text at weight {t['alpha']}: {t['composed']} "
              f"composed, {t['without_text']} without text")
    print(f"skipped {len(info.get('skipped', []))}: " + ", ".join(s["id"] for s in info.get("skipped", [])[:10]))
    print(json.dumps(m, indent=2))
    return 0


def make_parser() -> argparse.ArgumentParser:
    """The `cir index` argument parser."""
    parser = argparse.ArgumentParser(prog="cir index", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True)
    _build_parser(sub)
    p = sub.add_parser("publish", help="point ROOT/CURRENT at VERSION (rollback)", description=cmd_publish.__doc__)
    p.add_argument("root", type=Path, help="index root")
    p.add_argument("version", help="a complete version under ROOT/versions/")
    p = sub.add_parser("info", help="print a version's manifest and counts", description=cmd_info.__doc__)
    p.add_argument("root", type=Path, help="index root")
    p.add_argument("--version", default=None, help="version to describe (default: CURRENT)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `cir index` and `python -m indexer`."""
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), as a return code for callers
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    commands = {"build": cmd_build, "publish": cmd_publish, "info": cmd_info}
    try:
        return commands[args.command](args)
    except (BuildError, store.IndexStoreError, ValueError) as exc:
        print(f"cir index {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"cir index {args.command}: error: {exc} (install the 'ray' extra: pip install 'cir[ray]')",
              file=sys.stderr)
        return 2
