"""`cir index build --store milvus://...`: embed with the ordinary pipeline, then fill Milvus.

The build runs exactly as for a FAISS root (resumable embedding shards, reuse of unchanged
files, typed metadata, composed items) into a local work root, which is the embedding cache of
the next build; cir.stores.milvus_sync then copies the version into a new collection and
switches the alias (full) or upserts and deletes what changed (incremental).
"""

from __future__ import annotations

import dataclasses
import logging

from cir import index_store as store
from cir.stores import MilvusStore
from cir.stores.milvus_sync import SyncResult, sync_version
from indexer.build import BuildResult, build, embed_local
from indexer.config import BuildConfig
from indexer.milvus_config import MilvusBuildConfig

log = logging.getLogger(__name__)


def build_milvus(cfg: BuildConfig, mcfg: MilvusBuildConfig, executor=embed_local,
                 encoder=None) -> tuple[BuildResult, SyncResult]:
    """Build (or resume) the local version, then bring the Milvus gallery to it."""
    if cfg.factory == "auto":
        # The local version is an embedding cache, not what is served: exact Flat costs no training.
        cfg = dataclasses.replace(cfg, factory="Flat")
    result = build(cfg, encoder=encoder, executor=executor)
    target = MilvusStore(mcfg.store)
    try:
        source = store.load_version(cfg.out, result.version)
        try:
            synced = sync_version(target, source, index=mcfg.index, search_params=mcfg.search,
                                  full=mcfg.full or cfg.force_new, keep=cfg.keep)
        finally:
            source.close()
    finally:
        target.close()
    log.info("Milvus %s: %s sync of %s (%d upserted, %d deleted)", mcfg.store, synced.mode, synced.version,
             synced.upserted, synced.deleted)
    return result, synced
