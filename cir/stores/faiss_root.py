"""The default store: a versioned FAISS index root on a local or shared file system (cir.index_store),
with live writes: a change log under ROOT/live (cir.stores.changelog) replayed over the published
version into an overlay (cir.stores.overlay); views are snapshots of both (cir.stores.live).

Which logged changes apply to a version: each record names the version that was published when
it was written (`base`). A version built by `cir index build` takes the records written on it; a
version made by compaction (cir.stores.compact) also takes the records written on the versions
it was folded from (its manifest's `live.lineage`) with a sequence number above the last one it
folded (`live.folded_seq`). So publishing an older version (a rollback) hides the changes
written on newer ones, and publishing the newer version again brings them back: the log keeps
them until a compaction folds them.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Sequence

from cir.errors import ReadOnlyStoreError
from cir.index_store import IndexRoot, IndexStoreError, load_version
from cir.stores.base import GalleryStore, WriteResult
from cir.io import atomic_write_bytes
from cir.stores.changelog import LIVE_DIR, ChangeLog, Record, ServerLock, file_lock, fsync_dir
from cir.stores.live import LiveView
from cir.stores.overlay import Overlay

log = logging.getLogger(__name__)
WRITE_LOCK = "write.lock"
IMAGES_DIR = "images"


def lineage_of(manifest: dict) -> tuple[tuple[str, ...], int]:
    """(versions whose logged changes apply to this one, the last sequence number it folded)."""
    live = manifest.get("live") or {}
    return (manifest["version"], *live.get("lineage", ())), int(live.get("folded_seq", 0))


def applies(rec: Record, overlay: Overlay) -> bool:
    """True when a logged record changes the overlay's base version."""
    return rec.header.get("op") != "mark" and rec.header.get("base") in overlay.lineage and rec.seq > overlay.folded_seq


def pending_changes(root: str | Path, version: str | None = None) -> int:
    """How many logged changes apply to `version` (default: CURRENT) of an index root: what compaction would fold."""
    index_root = IndexRoot(root)
    version = version or index_root.current_version()
    if version is None or not (Path(root) / LIVE_DIR).is_dir():
        return 0
    lineage, folded = lineage_of(index_root.manifest(version))
    records, _, _, _ = ChangeLog(root).read(0)
    return sum(1 for r in records if r.header.get("op") != "mark" and r.header.get("base") in lineage and r.seq > folded)


def discard_changes(root: str | Path) -> Path | None:
    """Move the whole change log aside (ROOT/live/discarded-<time>.log) for a build that leaves it out; holding the write lock."""
    log_ = ChangeLog(root)
    records, _, _, _ = log_.read(0)
    if not any(r.header.get("op") != "mark" for r in records):
        return None
    archive = log_.dir / time.strftime("discarded-%Y%m%dT%H%M%SZ.log", time.gmtime())
    archive.write_bytes(log_.path.read_bytes())
    log_.rewrite([Record(max(r.seq for r in records), {"op": "mark"})])
    log.warning("archived %d live changes to %s: the new version leaves them out", len(records), archive)
    return archive


class FaissRootStore(GalleryStore):
    """ROOT/versions/<v>/ and ROOT/CURRENT, plus ROOT/live/: views are live snapshots, publish is an atomic rename."""

    def __init__(self, root: str | Path, *, gpu: bool = False, mmap: bool = True):
        self.root = Path(root)
        self.index_root = IndexRoot(self.root)
        self.gpu, self.mmap = gpu, mmap
        self.name = f"index root {self.root.name or self.root}"
        self.log = ChangeLog(self.root)
        self.read_only_reason: str | None = None
        self._server_lock: ServerLock | None = None
        self._mutex = threading.RLock()
        self._live: Overlay | None = None  # the overlay of the published version
        self._view: LiveView | None = None  # its latest snapshot (None: make one)
        self._log_pos, self._log_id, self._max_seq = 0, None, 0

    def current_version(self) -> str | None:
        """The version named in ROOT/CURRENT, or None."""
        return self.index_root.current_version()

    def versions(self) -> list[str]:
        """Complete versions, oldest first."""
        return self.index_root.versions()

    def unpublished_reason(self) -> str | None:
        """Why the root has nothing to serve (no folder, no published version), or None."""
        root = self.root
        if not root.is_dir():
            return f"index root {root} is not a directory"
        try:
            if self.current_version() is not None:
                return None
        except IndexStoreError:
            return None  # a version is published but unreadable: opening it reports why
        what = "versions but no CURRENT" if self.versions() else "no CURRENT and no versions/"
        return (f"{root} is not a published index root ({what}): build one with `cir index build --out {root}`, "
                "or pass --wait-for-index (CIR_WAIT_FOR_INDEX=1) to start unready and serve the first version "
                "published")

    # --- views ----------------------------------------------------------------------------
    def _replay(self, version: str) -> tuple[Overlay, int, tuple | None, int]:
        """Load a version and apply its logged changes: (overlay, log offset, log identity, highest seq)."""
        base = load_version(self.root, version, mmap=self.mmap, gpu=self.gpu)
        overlay = Overlay(base, *lineage_of(base.manifest))
        ident = self.log.identity()
        records, pos, why, size = self.log.read(0)
        if why is not None:
            log.warning("change log %s: %s at byte %d of %d; ignored (the next write cuts it off)",
                        self.log.path, why, pos, size)
        for rec in records:
            if applies(rec, overlay):
                overlay.apply(rec)
        return overlay, pos, ident, max((r.seq for r in records), default=0)

    def open(self, version: str | None = None) -> LiveView:
        """A live view of `version` (default: CURRENT): the version plus the logged changes that apply to it."""
        version = version or self.current_version()
        if version is None:
            raise IndexStoreError(f"{self.root} has no published version (no CURRENT file)")
        with self._mutex:
            if self._live is not None and self._live.base.version == version:
                self._tail(truncate=False)
                return self._snapshot()
        overlay, pos, ident, max_seq = self._replay(version)
        with self._mutex:
            if version != self.current_version():
                return LiveView(overlay)  # not the published version: a view of its own, closed with it
            self._live, self._view = overlay, None
            self._log_pos, self._log_id, self._max_seq = pos, ident, max(max_seq, overlay.folded_seq)
            self._tail(truncate=False)
            return self._snapshot()

    def _snapshot(self) -> LiveView:
        if self._view is None:
            self._view = LiveView(self._live, owner=self)
        return self._view

    def view_closed(self, view: LiveView) -> None:
        """A view is closed: close its base version (every snapshot of it is done with); a later open reloads it."""
        with self._mutex:
            if self._live is not None and view.base is self._live.base:
                self._live, self._view = None, None
            view.base.close()

    def refresh(self) -> bool:
        """Apply changes other processes logged since the last look; True when the live view changed."""
        with self._mutex:
            return self._live is not None and self._tail(truncate=False) > 0

    def _tail(self, truncate: bool) -> int:
        """Apply new log records to the overlay (cutting a torn tail off when we hold the write lock)."""
        ident = self.log.identity()
        start = self._log_pos if ident == self._log_id else 0
        records, pos, why, size = self.log.read(start)
        if why is not None and truncate:
            self.log.truncate(pos, why)
        applied = 0
        for rec in records:
            self._max_seq = max(self._max_seq, rec.seq)
            if rec.seq > self._live.seq and applies(rec, self._live):
                self._live.apply(rec)
                applied += 1
        self._log_pos, self._log_id = pos, ident
        if applied:
            self._view = None
        return applied

    # --- writes ---------------------------------------------------------------------------
    def claim_writer(self) -> bool:
        """Become the root's one write-enabled server (ROOT/live/server.lock); False if another holds it."""
        self._server_lock = ServerLock(self.root)
        if self._server_lock.acquire():
            return True
        self.read_only_reason = (f"another server (pid {self._server_lock.holder()}) takes the writes of this index "
                                 "root; send writes to it (this server only reads and follows them)")
        self._server_lock = None
        return False

    def write_lock(self):
        """The lock every writer of the root holds while it appends (servers and `cir index apply`)."""
        return file_lock(self.root / LIVE_DIR / WRITE_LOCK)

    def write(self, ops: Sequence) -> list[WriteResult]:
        """Check, log (fsync'ed) and apply operations in order; acknowledged means in the log on disk."""
        if self.read_only_reason:
            raise ReadOnlyStoreError(self.read_only_reason)
        with self._mutex, self.write_lock():
            version = self.current_version()
            if version is None:
                raise IndexStoreError(f"{self.root} has no published version: build one before writing to it")
            if self._live is None or self._live.base.version != version:
                self.open(version)
            self._tail(truncate=True)
            results, records = [], []
            for op, header, rejected in self._live.prepare(ops, version):
                kind = type(op).__name__.lower()
                if rejected is not None:
                    results.append(WriteResult(op.id if isinstance(op.id, str) else "", kind, rejected.status,
                                               error=str(rejected)))
                    continue
                self._max_seq += 1
                records.append(Record(self._max_seq, header, getattr(op, "embedding", None),
                                      getattr(op, "vector", None)))
                results.append(WriteResult(op.id, kind, "ok", change=self._max_seq))
            if records:
                try:
                    self._log_pos = self.log.append(records)
                except OSError:
                    self._max_seq -= len(records)
                    raise
                self._log_id = self.log.identity()
                for rec in records:
                    self._live.apply(rec)
                self._live.flush()  # the writer indexes its upserts, not the first search after it
                self._view = None
            return results

    def keep_images(self, images: Sequence[tuple[bytes, str]]) -> list[str]:
        """ROOT/live/images/<sha256><suffix> of each (bytes, suffix), written atomically and fsync'ed, the
        folder once (content-addressed: an image is kept once); their paths."""
        folder = self.root / LIVE_DIR / IMAGES_DIR
        created = not folder.is_dir()
        where, wrote = folder.resolve(), False
        paths = []
        for data, suffix in images:
            path = where / f"{hashlib.sha256(data).hexdigest()}{suffix}"
            if not path.is_file():
                atomic_write_bytes(path, data)
                wrote = True
            paths.append(str(path))
        if wrote:
            fsync_dir(where)
            if created:
                fsync_dir(where.parent)
        return paths

    def pending(self) -> dict:
        """What waits for compaction: the version, count of changes, the oldest one's age start, last seq."""
        with self._mutex:
            live = self._live
            if live is None:
                return {"version": None, "pending": 0, "oldest": None, "seq": self._max_seq}
            return {"version": live.base.version, "pending": live.pending, "oldest": live.oldest, "seq": live.seq}

    def publish(self, version: str) -> None:
        """Point CURRENT at a complete version."""
        self.index_root.publish(version)

    def close(self) -> None:
        """Close the published version's base and give the writer lock up."""
        with self._mutex:
            if self._live is not None:
                self._live.base.close()
                self._live, self._view = None, None
        if self._server_lock is not None:
            self._server_lock.release()
