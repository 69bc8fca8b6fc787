"""`cir index` / `python -m indexer`: build, publish and inspect versioned gallery indexes."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

# Light imports only: the parser is built, and --help answered, before torch and faiss load.
from cir.defaults import is_remote_store
from cir.errors import StoreError
from cir.runtimes import RUNTIMES
from indexer.config import DEFAULT_ITEM_ALPHA, DEVICES, EXECUTORS, GPU_INDEX, BuildConfig
from indexer.errors import BuildError
from indexer.live_cli import cmd_apply, cmd_compact, live_parsers
from indexer.milvus_cli import milvus_config, milvus_info, report_milvus
from indexer.milvus_config import MILVUS_INDEXES
from indexer.skips import skip_report

D = BuildConfig  # field defaults of the one config: the CLI never restates them


def _build_parser(sub) -> None:
    p = sub.add_parser("build", help="embed a gallery and publish a new index version",
                       description="Embed a gallery (folder or JSONL/CSV manifest) and publish a new version under "
                                   "ROOT. Rerunning resumes a killed job; building into an existing ROOT embeds only "
                                   "new or changed files.")
    p.add_argument("--gallery", required=True, type=Path,
                   help="image folder (walked recursively: jpg jpeg png webp bmp) or a .jsonl/.csv manifest with "
                        "'path' and optional 'id' and metadata fields")
    p.add_argument("--model", required=True, help="model: 'toy', a local model folder or a hub id")
    p.add_argument("--adapter", type=Path, default=D.adapter, help="LoRA adapter folder from `cir train` (TAT)")
    p.add_argument("--out", type=Path, help="index root (ROOT/versions/<v>/, ROOT/CURRENT); with a Milvus --store, "
                                             "the local work root that caches embeddings (default under "
                                             "~/.cache/cir/milvus-builds/)")
    p.add_argument("--store", default=os.environ.get("CIR_STORE") or None, metavar="LOCATION",
                   help="where the gallery goes: an index root (same as --out) or milvus://HOST:PORT/NAME (a new "
                        "collection, then the alias NAME switches to it; credentials from CIR_MILVUS_TOKEN, TLS "
                        "with milvuss:// or CIR_MILVUS_TLS=1) [CIR_STORE]")
    p.add_argument("--milvus-index", default="HNSW", choices=MILVUS_INDEXES,
                   help="Milvus vector index (default %(default)s; FLAT is exact)")
    p.add_argument("--milvus-index-params", metavar="JSON", help='Milvus index parameters, e.g. \'{"M": 16, '
                                                                  '"efConstruction": 200}\' (default per index)')
    p.add_argument("--milvus-search-params", metavar="JSON", help='Milvus search parameters, e.g. \'{"ef": 128}\'')
    p.add_argument("--full", action="store_true",
                   help="Milvus: fill a new collection and switch the alias, even when an incremental upsert of "
                        "the changes into the published collection would do")
    p.add_argument("--factory", default=D.factory,
                   help="auto (default: Flat for small galleries, HNSW32, or IVF+PQ when memory is short), Flat, "
                        "HNSW<M>, IVF<nlist>,Flat or IVF<nlist>,PQ<m>")
    p.add_argument("--batch-size", type=int, default=D.batch_size,
                   help="images per encoder batch (default %(default)s)")
    p.add_argument("--workers", type=int, default=D.workers,
                   help="decode/preprocess worker processes (default: cores - 1, at most 8; here %(default)s; "
                        "0 = inline)")
    p.add_argument("--device", default=D.device, choices=DEVICES, help="encoder device (default %(default)s)")
    p.add_argument("--dtype", default=D.dtype, help="autocast dtype: auto (bf16 on GPU), float32, bfloat16, float16")
    p.add_argument("--runtime", default=D.runtime, choices=RUNTIMES,
                   help="encoder runtime: torch (default) or onnx (ONNX Runtime on the CPU; the towers are exported "
                        "once and cached by fingerprint; the index is the same model's, servable by either runtime)")
    p.add_argument("--onnx-cache", type=Path, default=D.onnx_cache,
                   help="folder of cached ONNX exports (default ~/.cache/cir/onnx)")
    p.add_argument("--executor", default=D.executor, choices=EXECUTORS,
                   help="local (default) or ray: embed on a Ray cluster (RAY_ADDRESS), one GPU actor per device")
    p.add_argument("--keep", type=int, default=D.keep,
                   help="complete versions to keep (default %(default)s; CURRENT always kept)")
    p.add_argument("--alpha", type=float, default=D.alpha,
                   help="default Slerp text weight recorded in the manifest (default %(default)s)")
    p.add_argument("--force-new", action="store_true",
                   help="allow a root built with another encoder: re-embed everything, publish a new version")
    p.add_argument("--shard-size", type=int, default=D.shard_size,
                   help="images per crash-safe embedding shard (default %(default)s)")
    p.add_argument("--recall-target", type=float, default=D.recall_target,
                   help="ANN search knobs are tuned to reach this recall@10 vs exact search (default %(default)s)")
    p.add_argument("--flat-max", type=int, default=D.flat_max,
                   help="auto: exact Flat up to this many images (default %(default)s)")
    p.add_argument("--max-memory-gb", type=float, default=D.max_memory_gb,
                   help="auto: memory budget for the index (default half the RAM); over it IVF+PQ is used")
    p.add_argument("--gpu-index", default=D.gpu_index, choices=GPU_INDEX,
                   help="build Flat/IVF indexes on the GPU with faiss-gpu (auto: when the encoder is on CUDA)")
    p.add_argument("--item-text", metavar="FIELD", default=D.item_text,
                   help="compose each gallery item that has this manifest field (e.g. title) with its text: "
                        "the index holds slerp(image, text, --item-alpha); items without it keep their image "
                        "embedding; the image embeddings stay stored for reference_id queries and rebuilds")
    p.add_argument("--item-alpha", metavar="B", type=float, default=D.item_alpha,
                   help=f"text weight of composed items, 0..1 (default {DEFAULT_ITEM_ALPHA}; 0 = the image-only "
                        "index). A new field or weight re-composes without re-encoding any image")
    p.add_argument("--max-pixels", type=int, default=D.max_pixels,
                   help="decompression-bomb guard: images with more pixels are skipped (default %(default)s)")
    p.add_argument("--max-file-mb", type=float, default=D.max_file_mb,
                   help="larger files are skipped, never read (default %(default)s MiB)")
    p.add_argument("--follow-symlinks", action="store_true",
                   help="index symlinks in a gallery folder that point outside it (default: skipped with a reason)")
    p.add_argument("--faiss-threads", type=int, default=0, help="FAISS OpenMP threads (default 0 = all cores)")
    p.add_argument("--max-skipped", metavar="N|P%", default=D.max_skipped,
                   help="fail, publishing nothing, when more than N files (or P%% of the gallery) are skipped as "
                        "missing or unreadable (default: no limit; every skip is reported on stderr)")
    p.add_argument("--no-progress", action="store_true", help="hide every progress bar")
    p.add_argument("--json", action="store_true", help="print one final JSON line with the counts and images/s")
    p.add_argument("--discard-live-changes", action="store_true",
                   help="build even though ROOT has live changes (API or `cir index apply` writes) not yet folded "
                        "into a version: the new version leaves them out and they are archived under ROOT/live/ "
                        "(default: refuse, and say to run `cir index compact ROOT` first)")


def _config(args) -> BuildConfig:
    return BuildConfig(
        gallery=args.gallery, model=args.model, out=args.out, adapter=args.adapter, factory=args.factory,
        batch_size=args.batch_size, workers=args.workers, device=args.device, dtype=args.dtype,
        runtime=args.runtime, onnx_cache=args.onnx_cache, executor=args.executor, keep=args.keep, alpha=args.alpha,
        force_new=args.force_new, shard_size=args.shard_size, recall_target=args.recall_target, flat_max=args.flat_max,
        max_memory_gb=args.max_memory_gb, gpu_index=args.gpu_index, item_text=args.item_text,
        item_alpha=args.item_alpha, max_pixels=args.max_pixels, max_file_mb=args.max_file_mb,
        follow_symlinks=args.follow_symlinks, progress=not args.no_progress, max_skipped=args.max_skipped,
        discard_live_changes=args.discard_live_changes)


def cmd_build(args) -> int:
    """Run a build and report it."""
    mcfg = milvus_config(args)
    cfg = _config(args)
    # Heavy (torch, transformers, faiss): imported only once the arguments are known to be good.
    import faiss  # noqa: PLC0415

    from indexer.build import build, embed_local  # noqa: PLC0415

    if args.faiss_threads > 0:
        faiss.omp_set_num_threads(args.faiss_threads)
    executor = embed_local
    if cfg.executor == "ray":
        # Ray is an optional dependency, imported only when its executor is chosen.
        from indexer import ray_executor  # noqa: PLC0415

        executor = ray_executor.embed_ray
    if mcfg is not None:
        return report_milvus(args, cfg, mcfg, executor)
    result = build(cfg, executor=executor)
    if result.skipped:
        _report_skips(cfg.out, result)
    if args.json:
        keys = ("status", "version", "count", "embedded", "reused", "skipped", "seconds", "images_per_s")
        print(json.dumps({k: getattr(result, k) for k in keys}))
    elif result.status == "unchanged":
        print(f"unchanged: {result.version} already holds these {result.count} items ({result.skipped} skipped); "
              "nothing published (--force-new publishes anyway)")
    else:
        print(f"published {result.version}: {result.count} items ({result.embedded} embedded, {result.reused} "
              f"reused, {result.skipped} skipped) in {result.seconds:.1f}s, {result.images_per_s:.1f} images/s; "
              f"index {result.factory}, recall@10 {result.recall_at_10:.3f}")
    return 0


def _report_skips(root: Path, result) -> None:
    """How many files the build left out, and why: on stderr, whatever --json says."""
    from cir import index_store as store  # noqa: PLC0415 - loaded already by the build

    report = store.IndexRoot(root).version_dir(result.version) / store.REPORT_FILE
    skipped = store.read_json(report).get("skipped", []) if report.is_file() else []
    if skipped:
        print(f"cir index build: {skip_report(skipped, result.count + len(skipped), str(root))}", file=sys.stderr)


def cmd_publish(args) -> int:
    """Point CURRENT (or a Milvus alias) at an existing version (roll back or forward)."""
    from cir import index_store as store  # noqa: PLC0415 - heavy (faiss), after parsing
    from cir.stores import open_store  # noqa: PLC0415
    from cir.stores.faiss_root import pending_changes  # noqa: PLC0415

    if is_remote_store(args.root):
        target = open_store(args.root)
        try:
            target.publish(args.version)
        finally:
            target.close()
        print(f"published {args.version}")
        return 0
    root = store.IndexRoot(args.root)
    version = root.resolve(args.version)  # a unique prefix (v000003) names its version
    current = root.current_version()
    hidden = pending_changes(args.root, current) if current and current != version else 0
    root.publish(version)
    print(f"published {version}")
    if hidden:
        print(f"cir index publish: note: {hidden} live changes written on {current} are not applied to "
              f"{version}; they are kept and apply again if {current} is published again", file=sys.stderr)
    return 0


def cmd_info(args) -> int:
    """Print the manifest of a version (default CURRENT) and the versions present."""
    from cir import index_store as store  # noqa: PLC0415 - heavy (faiss), after parsing

    if is_remote_store(args.root):
        return milvus_info(args)
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
    live_parsers(sub)
    p = sub.add_parser("publish", help="point ROOT/CURRENT (or the Milvus alias) at VERSION (rollback)",
                       description=cmd_publish.__doc__)
    p.add_argument("root", help="index root, or milvus://HOST:PORT/NAME")
    p.add_argument("version", help="a complete version (under ROOT/versions/, or a unique prefix of its name such "
                                   "as v000003; or a complete Milvus collection)")
    p = sub.add_parser("info", help="print a version's manifest and counts", description=cmd_info.__doc__)
    p.add_argument("root", help="index root, or milvus://HOST:PORT/NAME")
    p.add_argument("--version", default=None, help="version to describe (default: CURRENT)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _expected(exc: Exception) -> bool:
    """A failure the user can act on (one line on stderr), as opposed to a bug (a traceback)."""
    return isinstance(exc, (ValueError, ImportError, BuildError, StoreError))


def main(argv: list[str] | None = None) -> int:
    """Entry point of `cir index` and `python -m indexer`."""
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), as a return code for callers
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    commands = {"build": cmd_build, "publish": cmd_publish, "info": cmd_info, "apply": cmd_apply,
                "compact": cmd_compact}
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        hint = ": finished shards are kept, rerun the same command to resume" if args.command == "build" else ""
        print(f"cir index {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - expected failures become one line; bugs re-raise
        if not _expected(exc):
            raise
        extra = " (install the 'ray' extra: pip install 'cir[ray]')" if isinstance(exc, ImportError) else ""
        print(f"cir index {args.command}: error: {exc}{extra}", file=sys.stderr)
        return 2
