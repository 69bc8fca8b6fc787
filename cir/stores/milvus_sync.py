"""Fill Milvus from a built version: a full copy into a new collection, or an incremental sync.

`cir index build --store milvus://...` runs the ordinary embedding pipeline (local or Ray) into a
local work root, then calls `sync_version` with the version it built:

- full (a first build, `--full`, or when the encoder, fields, composition or Milvus index
  changed): a new collection `NAME__VERSION` is filled, flushed, indexed, loaded and counted,
  marked complete, and only then does the alias switch to it. A killed build leaves a partial
  collection that is never aliased; the rerun drops it and fills it again (the local embedding
  shards make the rerun cheap). Older complete versions beyond `keep` are dropped.
- incremental (otherwise): the published collection gets an upsert of every new or changed item
  (by a digest of its record and vectors) and a delete of every item the gallery no longer has.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from cir import index_store as store
from cir.stores.milvus import MilvusStore
from cir.stores.milvus_expr import literal
from cir.stores.milvus_schema import DEFAULT_INDEX, DEFAULT_SEARCH, field_columns, item_row, version_slug

log = logging.getLogger(__name__)

BATCH = 1000
MANIFEST_KEYS = ("format", "created", "model", "adapter", "fingerprint", "base_fingerprint", "runtime", "dim",
                 "metric", "normalized", "default_alpha", "gallery", "item_text", "recall_target")


@dataclass
class SyncResult:
    """What a sync did: mode 'full', 'incremental' or 'unchanged', the version served, rows written."""

    mode: str
    version: str
    upserted: int
    deleted: int
    count: int


def milvus_manifest(source, index: dict, search_params: dict) -> dict:
    """The Milvus version's manifest: the source's encoder facts plus the column mapping and index."""
    m = source.manifest
    types = {name: info["type"] for name, info in (m.get("fields") or {}).items()}
    out = {k: m.get(k) for k in MANIFEST_KEYS}
    out.update(source_version=source.version, factory=f"milvus:{index['index_type']}", search_params=search_params,
               milvus={"columns": field_columns(types), "embedding_field": m.get("index_vectors") not in
                       (None, store.EMBEDDINGS_FILE), "index": index, "search_params": search_params})
    return out


def _rows(source, columns: dict, with_embedding: bool, seq0: int):
    """The source version's items as Milvus rows, in row order (seq = seq0 + row: newest last)."""
    vdir = store.IndexRoot(source.root).version_dir(source.version)
    embeddings = np.load(vdir / store.EMBEDDINGS_FILE, mmap_mode="r")
    for item in store.iter_items(vdir / store.ITEMS_FILE):
        row = item["row"]
        yield item_row(item, source.vectors[row], embeddings[row], columns, with_embedding, seq=seq0 + row)


def _batches(rows, size: int | None = None):
    size = size or BATCH
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _compatible(old: dict | None, new: dict) -> bool:
    if old is None:
        return False
    keys = ("fingerprint", "dim", "item_text")
    return all(old.get(k) == new.get(k) for k in keys) and old.get("milvus", {}).get("columns") == \
        new["milvus"]["columns"] and old["milvus"].get("index") == new["milvus"]["index"] and \
        old["milvus"].get("embedding_field") == new["milvus"]["embedding_field"]


def sync_version(target: MilvusStore, source, *, index: dict | None = None, search_params: dict | None = None,
                 full: bool = False, keep: int = 3) -> SyncResult:
    """Bring the Milvus gallery to `source` (a loaded local version): incrementally when possible."""
    index = index or DEFAULT_INDEX
    search_params = DEFAULT_SEARCH.get(index["index_type"], {}) if search_params is None else search_params
    manifest = milvus_manifest(source, index, search_params)
    current = target.current_version()
    if not full and current is not None and _compatible(target.manifest(current), manifest):
        return _incremental(target, source, current, manifest)
    return _full(target, source, manifest, keep)


def _full(target: MilvusStore, source, manifest: dict, keep: int) -> SyncResult:
    version = version_slug(source.version)
    columns, with_embedding = manifest["milvus"]["columns"], manifest["milvus"]["embedding_field"]
    if target.manifest(version) is None:  # not built yet, or a killed build's partial collection
        dropped = target.drop_partial()
        if dropped:
            log.info("dropped partial collections of killed builds: %s", ", ".join(dropped))
        collection = target.create_version(version, int(manifest["dim"]), columns, with_embedding)
        seq0 = int(time.time() * 1000)
        for batch in _batches(_rows(source, columns, with_embedding, seq0)):
            target.call("insert", collection, batch)
        manifest["version"] = version
        target.complete_version(version, manifest, manifest["milvus"]["index"], source.count)
    target.publish(version)
    target.prune(keep)
    return SyncResult("full", version, source.count, 0, source.count)


def _incremental(target: MilvusStore, source, version: str, manifest: dict) -> SyncResult:
    collection = target.location.collection(version)
    digests = {}
    for batch in target.scan(collection, ["digest"]):
        digests.update((r["id"], r["digest"]) for r in batch)
    columns, with_embedding = manifest["milvus"]["columns"], manifest["milvus"]["embedding_field"]
    seq0 = int(time.time() * 1000)
    upserted, seen = 0, set()
    changed = []
    for row in _rows(source, columns, with_embedding, seq0):
        seen.add(row["id"])
        if digests.get(row["id"]) != row["digest"]:
            changed.append(row)
        if len(changed) >= BATCH:
            target.call("upsert", collection, changed)
            upserted, changed = upserted + len(changed), []
    if changed:
        target.call("upsert", collection, changed)
        upserted += len(changed)
    gone = [i for i in digests if i not in seen]
    for batch in _batches(gone):
        target.call("delete", collection, filter=f"id in {literal(batch)}")
    manifest["version"] = version
    target.set_manifest(version, manifest)
    mode = "incremental" if upserted or gone else "unchanged"
    return SyncResult(mode, version, upserted, len(gone), source.count)
