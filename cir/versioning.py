"""Writing, verifying, publishing and pruning versions under an index root (`cir index build` and compaction)."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

from cir import index_store as store
from cir.columns import COLUMNS_DIR, Columns, write_columns
from cir.errors import OutputError
from cir.io import atomic_write_json
from cir.version_edit import ItemsEdit
from cir.version_names import record_pruned

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
_COUNTER = re.compile(r"^(?:\.tmp-)?v(\d+)-")


def check_writable(root: Path) -> None:
    """Create the root if needed and prove we can write into it."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test-", dir=root)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise OutputError(f"output root {root} is not writable: {exc}") from exc


# Lock fds this process holds. A forked child (a DataLoader decode worker) would share the lock
# and keep it after a kill -9 of the build, so that an immediate rerun found the root "locked":
# children close their copies at once, and the lock lives and dies with the build process.
_HELD_LOCKS: set[int] = set()


def _drop_inherited_locks() -> None:
    for fd in _HELD_LOCKS:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


@contextmanager
def root_lock(root: Path):
    """Hold an exclusive lock on ROOT/.lock for the whole build (one writer per root)."""
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise OutputError(f"another build holds {root / '.lock'}; wait for it to finish") from exc
        _HELD_LOCKS.add(fd)
        yield
    finally:
        _HELD_LOCKS.discard(fd)
        os.close(fd)


def new_version_name(root: Path, fingerprint: str) -> str:
    """A sortable, unique name: v<counter>-<UTC time>-<short fingerprint>."""
    base = root / store.VERSIONS
    counters = [int(m.group(1)) for p in (base.iterdir() if base.is_dir() else []) if (m := _COUNTER.match(p.name))]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"v{max(counters, default=0) + 1:06d}-{stamp}-{fingerprint[:8]}"


def remove_stale_tmp(root: Path) -> None:
    """Delete half-written version folders left by a crashed build (we hold the lock)."""
    base = root / store.VERSIONS
    for path in base.glob(TMP_PREFIX + "*") if base.is_dir() else []:
        shutil.rmtree(path, ignore_errors=True)


def write_version(root: Path, version: str, vectors: np.ndarray, items: list[dict] | ItemsEdit, index,
                  manifest: dict, report: dict, ranked: np.ndarray | None = None,
                  columns: Columns | None = None) -> Path:
    """Write every file into a temp folder, manifest last, verify it, then rename it into place.

    `vectors` are the image embeddings; `ranked`, when given, the composed vectors the index holds;
    `columns` the typed metadata columns (cir.columns) filters run on; `items` the item records in row
    order, or an edit of another version's table (cir.version_edit, a compaction).
    """
    tmp_name = TMP_PREFIX + version
    tmp = root / store.VERSIONS / tmp_name
    tmp.mkdir(parents=True)
    try:
        np.save(tmp / store.EMBEDDINGS_FILE, vectors)
        if ranked is not None:
            np.save(tmp / store.INDEX_VECTORS_FILE, ranked)
        if isinstance(items, ItemsEdit):
            items.write(tmp / store.ITEMS_FILE)
            ids = items.ids
        else:
            store.write_items(tmp / store.ITEMS_FILE, items)
            ids = [it["id"] for it in items]
        if columns is not None:
            write_columns(tmp / COLUMNS_DIR, columns)
        faiss.write_index(index, str(tmp / store.INDEX_FILE))
        atomic_write_json(tmp / store.REPORT_FILE, report)
        atomic_write_json(tmp / store.MANIFEST, manifest)
        verify(root, tmp_name, vectors, ids, vectors if ranked is None else ranked)
        final = root / store.VERSIONS / version
        os.rename(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk must not keep a half-written version
        if isinstance(exc, (RuntimeError, sqlite3.Error)) and not isinstance(exc, OutputError):
            # faiss and sqlite report a failed write in their own ways (a full disk among them)
            raise OSError(errno.EIO, f"cannot write version {version}: {exc}") from exc
        raise
    return final


def verify(root: Path, version: str, vectors: np.ndarray, ids: list[str], ranked: np.ndarray) -> None:
    """Reload a written version and check counts, ids and that stored rows find themselves."""
    loaded = store.load_version(root, version, mmap=True)
    try:
        if loaded.ids != ids:
            raise OutputError(f"version {version}: item ids do not match what was built")
        sample = np.linspace(0, len(ids) - 1, num=min(8, len(ids)), dtype=int)
        emb = np.stack([loaded.embedding(ids[i]) for i in sample])
        if not np.array_equal(emb, vectors[sample]) or not np.array_equal(loaded.vectors[sample], ranked[sample]):
            raise OutputError(f"version {version}: stored embeddings differ from the built ones")
        scores, ids = loaded.search(ranked[sample], 1)
        if any(len(row) != 1 for row in ids) or not np.isfinite(scores).all():
            raise OutputError(f"version {version}: the index does not answer searches")
        if loaded.manifest["factory"] == "Flat" and scores.min() < 0.999:
            raise OutputError(f"version {version}: exact search does not find stored rows")
    finally:
        loaded.close()


def prune(root: Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` complete versions, never the published one."""
    idx = store.IndexRoot(root)
    current = idx.current_version()
    versions = idx.versions()
    doomed = [v for v in versions[: max(len(versions) - keep, 0)] if v != current]
    record_pruned(root, doomed)  # first: a rollback to one of them then says it was pruned
    for v in doomed:
        shutil.rmtree(idx.version_dir(v), ignore_errors=True)
    return doomed
