"""The Milvus side of `cir index`: --store milvus://... on build, and info on a collection alias."""

from __future__ import annotations

import json
from pathlib import Path

from cir.defaults import is_remote_store
from cir.errors import StoreError
from indexer.config import BuildConfig
from indexer.milvus_config import MilvusBuildConfig, default_work_root


def milvus_config(args) -> MilvusBuildConfig | None:
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


def report_milvus(args, cfg: BuildConfig, mcfg: MilvusBuildConfig, executor) -> int:
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


def milvus_info(args) -> int:
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
