"""Compaction: fold a live root's pending changes into a new published version, embedding nothing.

The new version's rows are the base version's rows still live, in order (a patched item keeps
its row, with its new metadata), then the upserted items. Its vectors are read from the base
version's files and the log; the FAISS index is the base index with the new rows added when no
base row went away (Flat, HNSW and IVF all take additions: a small change set costs its own
size, not the gallery's). When rows went away, Flat drops them in place, IVF refills its
trained lists (no training) and HNSW is rebuilt from the stored vectors (no embedding). The
version is written and verified like a build's (cir.versioning), published, and only then is
the log trimmed of the changes it folded. Writes go on meanwhile: they land in the log above the
folded sequence number and apply on the new version (cir.stores.faiss_root).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass

import faiss
import numpy as np

from cir import index_store as store
from cir.columns import Columns, build_columns, describe
from cir.errors import StoreError, error_text
from cir.index_factory import factory_kind
from cir.stores.changelog import Record
from cir.stores.faiss_root import FaissRootStore, lineage_of
from cir.stores.overlay import write_deleted
from cir.version_edit import ItemsEdit, edit_columns
from cir.versioning import (
    new_version_name,
    prune,
    remove_stale_tmp,
    root_lock,
    write_version,
)

log = logging.getLogger(__name__)
DEFAULT_KEEP = 3  # complete versions kept, as `cir index build --keep`
# HNSW/IVF: deleted rows stay in the index, masked (ROOT/versions/<v>/deleted.npy), up to this share of its rows
REBUILD_SHARE = 0.10


@dataclass
class CompactResult:
    """What a compaction did: status 'compacted' or 'nothing_pending'."""

    status: str
    version: str | None
    previous: str | None
    folded: int = 0
    count: int = 0
    added: int = 0
    removed: int = 0
    index: str = ""  # how the index was made: 'added', 'removed+added', 'refilled' or 'rebuilt'
    seconds: float = 0.0


def _index(base_dir, manifest: dict, removed: np.ndarray, tombstones: bool, kept: np.ndarray,
           new_rows: np.ndarray) -> tuple[object, str]:
    """The new version's FAISS index from the base's, without re-embedding; (index, how)."""
    index = faiss.read_index(str(base_dir / store.INDEX_FILE))  # a private, writable copy
    kind = factory_kind(manifest.get("factory", ""))
    if not removed.any() or tombstones:
        how = "added" if not removed.any() else "added, deleted rows masked"
    elif kind == "Flat":
        index.remove_ids(faiss.IDSelectorBatch(np.flatnonzero(removed).astype(np.int64)))
        how = "removed+added"
    elif kind == "IVF":
        index.reset()  # the trained quantizer (and PQ codebooks) stay: only the lists are refilled
        index.add(np.ascontiguousarray(kept))
        how = "refilled"
    else:
        ef = faiss.downcast_index(index).hnsw.efConstruction
        index = faiss.index_factory(kept.shape[1], manifest["factory"], faiss.METRIC_INNER_PRODUCT)
        faiss.downcast_index(index).hnsw.efConstruction = ef
        index.add(np.ascontiguousarray(kept))
        how = "rebuilt"
    if len(new_rows):
        index.add(np.ascontiguousarray(new_rows))
    store.apply_search_params(index, manifest.get("search_params"))
    return index, how


def _tombstone(row: int) -> dict:
    """The item record of a deleted row kept in place (a control character: no live id can equal it)."""
    return {"id": f"\x00deleted:{row}", "path": None, "width": None, "height": None, "sha256": None, "size": None,
            "metadata": {}}


def _new_rows(view) -> list[int]:
    """Overlay rows of the items the compaction appends (upserts; a patch keeps its base row)."""
    return [r for r in view._live_rows if view._rows[r].get("base_row") is None]


def _record(rec: dict) -> dict:
    return {k: rec.get(k) for k in ("id", "path", "width", "height", "sha256", "size", "metadata")}


def _vectors(view, keep: np.ndarray, new: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(image embeddings, ranked vectors) of the folded view: the kept base rows, then the new items."""
    base = view.base
    emb = np.load(store.IndexRoot(base.root).version_dir(base.version) / store.EMBEDDINGS_FILE, mmap_mode="r")
    embeddings = np.concatenate([np.asarray(emb[keep], np.float32), view._emb[new]])
    ranked = np.concatenate([np.asarray(base.vectors[keep], np.float32), view._vec[new]])
    return embeddings, ranked


def _rows(view, removed: np.ndarray, patched: dict, tombstones: bool, new: list[int]) -> tuple[list[dict], Columns]:
    """Items and columns of a folded view, its removed rows dropped (or kept as tombstones): every row read
    and written again."""
    base = view.base
    vdir = store.IndexRoot(base.root).version_dir(base.version)
    items = []
    for item in store.iter_items(vdir / store.ITEMS_FILE):
        row = item.pop("row")
        if removed[row]:
            if tombstones:
                items.append(_tombstone(row))
            continue
        if row in patched:
            item = {**item, "metadata": view._rows[patched[row]]["metadata"]}
        items.append(item)
    items += [_record(view._rows[r]) for r in new]
    return items, build_columns(view._types, [it["metadata"] for it in items])


def _edited(view, removed: np.ndarray, patched: dict, new_rows: list[int]) -> tuple[ItemsEdit, Columns]:
    """Items and columns of a folded view whose rows all stay (removed ones as tombstones): the base's
    table and columns edited where rows changed, and the new items appended; nothing else is read."""
    base = view.base
    dead = [int(r) for r in np.flatnonzero(removed)]
    new = [_record(view._rows[r]) for r in new_rows]
    ids = list(base.ids)
    for r in dead:
        ids[r] = _tombstone(r)["id"]
    ids += [it["id"] for it in new]
    patched_meta = {int(row): view._rows[r]["metadata"] for row, r in patched.items()}
    items = ItemsEdit(store.IndexRoot(base.root).version_dir(base.version) / store.ITEMS_FILE, ids,
                      metadata=patched_meta, replaced={r: _tombstone(r) for r in dead}, appended=new)
    rows = np.asarray(list(patched_meta) + dead, np.int64)
    metadatas = list(patched_meta.values()) + [{}] * len(dead) + [it["metadata"] for it in new]
    return items, edit_columns(base.columns, view._types, rows, metadatas, len(new))


def _removed(view) -> tuple[np.ndarray, dict]:
    """(base rows that leave the live set, {base row: overlay row} of the patched ones, which keep their row)."""
    excluded = view._excluded if view._excluded is not None else np.zeros(view.base.count, bool)
    patched = {view._rows[r]["base_row"]: r for r in view._live_rows if view._rows[r].get("base_row") is not None}
    removed = excluded.copy()
    removed[list(patched)] = False
    return removed, patched


def compact(root, keep_versions: int = DEFAULT_KEEP, store_: FaissRootStore | None = None,
            rebuild_share: float = REBUILD_SHARE) -> CompactResult:
    """Fold the pending changes of the published version into a new published version."""
    t0 = time.perf_counter()
    live = store_ or FaissRootStore(root)
    with root_lock(live.root):  # one build or compaction per root at a time
        remove_stale_tmp(live.root)  # what a killed compaction or build left
        with live.write_lock():
            view = live.open()
        base = view.base
        if not view.pending:
            return CompactResult("nothing_pending", base.version, base.version)
        manifest = dict(base.manifest)
        removed, patched = _removed(view)
        # HNSW and IVF keep deleted rows in place, masked, until they pass a share of the rows (FAISS HNSW
        # cannot remove; an IVF refill costs the whole gallery); Flat drops them in place cheaply
        tombstones = factory_kind(manifest.get("factory", "")) in ("HNSW", "IVF") and \
            removed.sum() <= rebuild_share * base.count
        new = _new_rows(view)
        if tombstones and base.columns is not None:
            items, columns = _edited(view, removed, patched, new)
        else:
            items, columns = _rows(view, removed, patched, tombstones, new)
        n_items = columns.count
        embeddings, ranked = _vectors(view, np.ones(base.count, bool) if tombstones else ~removed, new)
        n_base = base.count if tombstones else int((~removed).sum())
        vdir = store.IndexRoot(base.root).version_dir(base.version)
        index, how = _index(vdir, manifest, removed, tombstones, ranked[:n_base], ranked[n_base:])
        dead = removed if tombstones else np.zeros(n_base, bool)
        version = new_version_name(live.root, manifest["fingerprint"])
        lineage, _ = lineage_of(base.manifest)
        composed = manifest.get("index_vectors") == store.INDEX_VECTORS_FILE
        manifest.update(version=version, count=n_items, fields=describe(columns), previous=base.version,
                        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        live={"lineage": list(lineage), "folded_seq": view.seq, "folded": view.pending,
                              "index": how})
        manifest["deleted_rows"] = int(dead.sum())
        result = CompactResult("compacted", version, base.version, view.pending, n_items - int(dead.sum()),
                               n_items - n_base, int(removed.sum()), how)
        final = write_version(live.root, version, embeddings, items, index, manifest, {"version": version,
                              "compaction": vars(result)}, ranked if composed else None, columns)
        if dead.any():  # before publishing: a served version is never without its mask
            write_deleted(final, np.concatenate([dead, np.zeros(n_items - n_base, bool)]))
        with live.write_lock():
            live.publish(version)
            _trim(live, (version, *lineage), view.seq)
        prune(live.root, keep_versions)
    result.seconds = round(time.perf_counter() - t0, 3)
    log.info("compacted %d changes of %s into %s (%d items, index %s) in %.2f s", result.folded, base.version,
             version, result.count, how, result.seconds)
    return result


def _trim(live: FaissRootStore, lineage: tuple[str, ...], folded_seq: int) -> None:
    """Drop the folded records from the log (the new version is published); keep every other one."""
    records, _, _, _ = live.log.read(0)
    keep = [r for r in records if r.header.get("op") != "mark"
            and not (r.header.get("base") in lineage and r.seq <= folded_seq)]
    top = max((r.seq for r in records), default=folded_seq)
    if not keep or keep[-1].seq < top:  # the next write must not reuse a sequence number
        keep.append(Record(top, {"op": "mark"}))
    live.log.rewrite(keep)


def main(argv: list[str] | None = None) -> int:
    """`python -m cir.stores.compact ROOT [KEEP]`: compact in a process of its own (the server's way); one JSON line."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m cir.stores.compact ROOT [KEEP]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    try:
        result = compact(args[0], keep_versions=int(args[1]) if len(args) == 2 else DEFAULT_KEEP)
    except (StoreError, OSError, ValueError) as exc:
        print(f"compaction failed: {error_text(exc, with_type=False)}", file=sys.stderr)
        return 2
    print(json.dumps(vars(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
