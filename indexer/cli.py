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
from indexer.milvus_config import MILVUS_INDEXES, MilvusBuildConfig, default_work_root
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


def _live_parsers(sub) -> None:
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


def _milvus_config(args) -> MilvusBuildConfig | None:
    """The Milvus half of the job (None for an index root); fills in --out."""
    if not is_remote_store(args.store):
        if args.out is None and args.store is None:
            raise ValueError("give --out ROOT (an index root) or --store milvus://HOST:PORT/NAME")
        if args.out is not None and args.store is not None and Path(args.store) != args.out:
            raise ValueError("give either --out or an index-root --store, not both")
        args.out = args.out or Path(args.store)
        return None
    args.out = args.out or default_work_root(args.store)
    return MilvusBuildConfig(args.store, index_type=args.milvus_index, index_params=args.milvus_index_params,
                             search_params=args.milvus_search_params, full=args.full)


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
    mcfg = _milvus_config(args)
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
        return _report_milvus(args, cfg, mcfg, executor)
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


def _report_milvus(args, cfg: BuildConfig, mcfg: MilvusBuildConfig, executor) -> int:
    from indexer.milvus_build import build_milvus  # noqa: PLC0415 - heavy (faiss, pymilvus), after parsing

    result, synced = build_milvus(cfg, mcfg, executor=executor)
    if args.json:
        print(json.dumps({"status": synced.mode, "version": synced.version, "count": synced.count,
                          "upserted": synced.upserted, "deleted": synced.deleted, "embedded": result.embedded,
                          "reused": result.reused, "skipped": result.skipped, "local_version": result.version}))
    else:
        print(f"{mcfg.store}: {synced.mode} sync, serving {synced.version}: {synced.count} items "
              f"({synced.upserted} written, {synced.deleted} deleted; {result.embedded} embedded, "
              f"{result.reused} reused, {result.skipped} skipped; work root {cfg.out})")
    return 0


def cmd_info(args) -> int:
    """Print the manifest of a version (default CURRENT) and the versions present."""
    from cir import index_store as store  # noqa: PLC0415 - heavy (faiss), after parsing

    if is_remote_store(args.root):
        return _milvus_info(args)
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


def _milvus_info(args) -> int:
    from cir.stores import open_store  # noqa: PLC0415 - heavy (pymilvus), after parsing

    target = open_store(args.root)
    try:
        version = args.version or target.current_version()
        if version is None:
            raise StoreError(f"{args.root} has no published version")
        view = target.open(version)
        info = {"store": str(args.root), "current": target.current_version(), "versions": target.versions(),
                "manifest": view.manifest}
    finally:
        target.close()
    if args.json:
        print(json.dumps(info))
    else:
        m = info["manifest"]
        print(f"{args.root}: current {info['current']}, versions {', '.join(info['versions'])}")
        print(f"version {version}: {m['count']} items, dim {m['dim']}, {m['factory']}, model {m['model']}, "
              f"fingerprint {str(m['fingerprint'])[:12]}, default alpha {m['default_alpha']}")
        print(json.dumps(m, indent=2))
    return 0


def make_parser() -> argparse.ArgumentParser:
    """The `cir index` argument parser."""
    parser = argparse.ArgumentParser(prog="cir index", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True)
    _build_parser(sub)
    _live_parsers(sub)
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
