"""The write-ahead change log of a live gallery: ROOT/live/changes.log, framed, checksummed records.

    record  = MAGIC (4 bytes) | length u32 | crc32 u32 | seq u64 | payload (length bytes)
    payload = header length u32 | header JSON | float32 vectors (embedding, then the ranked vector)

One write (one acknowledged batch of operations) is one or more records, the last marked
`"last": true` in its header; a reader applies a batch only once it has that record.

The CRC covers seq and payload. A record is appended with one write and fsync'ed (and the folder
once, when the file is created) before the write it carries is acknowledged. Reading stops at
the first record that is incomplete or fails its checksum: a writer holding the write lock
truncates such a tail away (a crash mid-append, logged, never fatal); a reader only waits for it,
since it may be a record being written by another process right now.

Locks (fcntl.flock, released by the kernel when a process dies, kill -9 included):
ROOT/live/write.lock is held for each batch of appends (a server and `cir index apply` take
turns), ROOT/live/server.lock for the life of the one write-enabled server of the root.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

LIVE_DIR = "live"
LOG_FILE = "changes.log"
MAGIC = b"CIRL"
_FRAME = struct.Struct("<4sIIQ")  # magic, payload length, crc32(seq + payload), seq
_HEADER_LEN = struct.Struct("<I")
MAX_RECORD_BYTES = 64 << 20  # far above any real record: a bigger length is a corrupt frame


@dataclass(frozen=True)
class Record:
    """One logged change: its sequence number, its JSON header and its vectors (upserts only)."""

    seq: int
    header: dict
    embedding: np.ndarray | None = None
    vector: np.ndarray | None = None


def encode(record: Record) -> bytes:
    """The framed bytes of a record."""
    head = json.dumps(record.header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    parts = [_HEADER_LEN.pack(len(head)), head]
    for vec in (record.embedding, record.vector):
        if vec is not None:
            parts.append(np.ascontiguousarray(vec, dtype="<f4").tobytes())
    payload = b"".join(parts)
    seq = struct.pack("<Q", record.seq)
    return _FRAME.pack(MAGIC, len(payload), zlib.crc32(seq + payload), record.seq) + payload


def _decode_payload(seq: int, payload: bytes) -> Record:
    (n,) = _HEADER_LEN.unpack_from(payload)
    header = json.loads(payload[4:4 + n].decode("utf-8"))
    vectors = np.frombuffer(payload[4 + n:], dtype="<f4")
    dim = int(header.get("dim") or 0)
    embedding = vector = None
    if dim and len(vectors) >= dim:
        embedding = vectors[:dim].astype(np.float32)
        vector = vectors[dim:2 * dim].astype(np.float32) if len(vectors) >= 2 * dim else embedding
    return Record(seq, header, embedding, vector)


def _next(data: bytes, pos: int) -> tuple[Record | None, int, str | None]:
    """The record at `pos` and the offset after it, or (None, pos, what is wrong there)."""
    if len(data) - pos < _FRAME.size:
        return None, pos, "a torn record header"
    magic, length, crc, seq = _FRAME.unpack_from(data, pos)
    if magic != MAGIC or length > MAX_RECORD_BYTES:
        return None, pos, "a corrupt record frame"
    end = pos + _FRAME.size + length
    if end > len(data):
        return None, pos, "a torn record"
    payload = data[pos + _FRAME.size:end]
    if zlib.crc32(struct.pack("<Q", seq) + payload) != crc:
        return None, pos, "a record failing its checksum"
    try:
        return _decode_payload(seq, payload), end, None
    except (ValueError, UnicodeDecodeError, struct.error):
        return None, pos, "an unreadable record"


def read_records(data: bytes, start: int = 0) -> tuple[list[Record], int, str | None]:
    """Complete batches of valid records in data[start:]: (records, offset after the last batch, why it stopped).

    A batch (one acknowledged write) ends with a record marked `last`: the records of a batch
    cut short by a crash are dropped together, so no write is ever half applied.
    """
    records, batch, pos, committed = [], [], start, start
    while pos < len(data):
        rec, pos, why = _next(data, pos)
        if rec is None:
            return records, committed, why
        batch.append(rec)
        if rec.header.get("last"):
            records += batch
            batch, committed = [], pos
    return records, committed, "a batch without its last record" if batch else None


def fsync_dir(path: Path) -> None:
    """fsync a folder, so a file created (or renamed) in it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ChangeLog:
    """ROOT/live/changes.log: append (durably), read from an offset, truncate a torn tail."""

    def __init__(self, root: str | Path):
        self.dir = Path(root) / LIVE_DIR
        self.path = self.dir / LOG_FILE

    def identity(self) -> tuple[int, int] | None:
        """(device, inode) of the log file, or None while it does not exist: a rewrite changes it."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def read(self, offset: int = 0) -> tuple[list[Record], int, str | None, int]:
        """Records from `offset`: (records, end of the last good one, why reading stopped early, file size)."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            return [], 0, None, 0
        records, end, why = read_records(data)
        return records, offset + end, why, offset + len(data)

    def truncate(self, offset: int, why: str) -> None:
        """Cut a torn or corrupt tail off (call holding the write lock)."""
        size = os.path.getsize(self.path)
        log.warning("change log %s: %s at byte %d; dropping the last %d bytes (a write that was never "
                    "acknowledged)", self.path, why, offset, size - offset)
        with open(self.path, "r+b") as fh:
            fh.truncate(offset)
            os.fsync(fh.fileno())

    def append(self, records: list[Record]) -> int:
        """Append records with one write and fsync (call holding the write lock); returns the new size.

        On a failed write (a full disk) the file is cut back to its old size, so the log never
        keeps part of a batch that was not acknowledged.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        records = [*records[:-1], Record(records[-1].seq, {**records[-1].header, "last": True},
                                         records[-1].embedding, records[-1].vector)]
        data = b"".join(encode(r) for r in records)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                try:
                    os.ftruncate(fd, size)
                except OSError:
                    log.exception("cannot cut the change log back after a failed write")
                raise
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.dir)
        return size + len(data)

    def rewrite(self, records: list[Record]) -> None:
        """Replace the log with `records` (after a compaction; holding the write lock), atomically."""
        tmp = self.dir / f".{LOG_FILE}.tmp"
        with open(tmp, "wb") as fh:
            # every record is acknowledged already: each is a batch of its own
            fh.write(b"".join(encode(Record(r.seq, {**r.header, "last": True}, r.embedding, r.vector)) for r in records))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.dir)


@contextmanager
def file_lock(path: Path, blocking: bool = True):
    """Hold an exclusive flock on `path` (created if needed); BlockingIOError when busy and not blocking."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        yield fd
    finally:
        os.close(fd)


class ServerLock:
    """The one write-enabled server of a root: ROOT/live/server.lock, held until `release`."""

    def __init__(self, root: str | Path):
        self.path = Path(root) / LIVE_DIR / "server.lock"
        self.fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return True

    def holder(self) -> str:
        """The pid written by the holder (for messages), or '?'."""
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        """Give the lock up."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
