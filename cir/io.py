"""Atomic file writes (readers never see a half-written file) with the permissions of ordinary files."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_temp_dir(parent: str | Path, prefix: str) -> Path:
    """A fresh folder in `parent` (to fill, then rename into place) with an ordinary folder's mode.

    mkdtemp makes it 0700; a published folder (a checkpoint, a world, a model) must be readable
    by other users as far as the umask allows.
    """
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    tmp.chmod(0o777 & ~_umask())
    return tmp


def restore_mode(path: str | Path) -> None:
    """Give a file the mode a plain open() would have (0666 less the umask): undo a library's 0600."""
    os.chmod(path, 0o666 & ~_umask())


class FileRefusedError(ValueError):
    """A path is not a regular file, or is larger than the caller allows: it is not read."""


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


def human_size(n: float) -> str:
    """'512 B', '43.1 KiB', '64.0 MiB'."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def check_regular(st: os.stat_result, max_bytes: int) -> None:
    """Raise FileRefusedError unless `st` is a regular file of at most max_bytes."""
    if not stat.S_ISREG(st.st_mode):
        raise FileRefusedError(f"not a regular file ({_KINDS.get(stat.S_IFMT(st.st_mode), 'special')})")
    if st.st_size > max_bytes:
        raise FileRefusedError(f"{human_size(st.st_size)}, over the {human_size(max_bytes)} file limit")


def read_regular_file(path: str | Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most max_bytes, else FileRefusedError; never blocks, never reads more.

    A FIFO or a link to /dev/zero named like an image would block or read forever: the path is
    checked before it is opened (no device is ever opened), opened non-blocking, checked again on
    the open descriptor (it may have been swapped), and read up to max_bytes + 1 bytes.
    """
    check_regular(os.stat(path), max_bytes)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        check_regular(os.fstat(fd), max_bytes)
        chunks, size = [], 0
        while size <= max_bytes and (block := os.read(fd, min(1 << 20, max_bytes + 1 - size))):
            chunks.append(block)
            size += len(block)
    finally:
        os.close(fd)
    if size > max_bytes:  # it grew after the check
        raise FileRefusedError(f"over the {human_size(max_bytes)} file limit")
    return b"".join(chunks)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes to a temp file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); published files must be readable by other users.
        restore_mode(tmp)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomically write UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Atomically write an object as JSON."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def replace_dir(new: str | Path, out: str | Path) -> None:
    """Move the finished folder `new` to `out`, replacing an old `out` with two renames."""
    new, out = Path(new), Path(out)
    if not out.exists():
        new.rename(out)
        return
    old = out.with_name(f".{out.name}.old-{new.name}")
    out.rename(old)
    new.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; ValueError names path:line on bad input."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON: {exc}") from exc
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: each line must be a JSON object")
            yield lineno, row
