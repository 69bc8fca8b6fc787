"""Gallery discovery: a folder walked recursively or a JSONL/CSV manifest, with stable ids.

Hostile entries never stop a build; each is skipped with a reason (`GalleryEntry.problem`, or
`file_facts` at plan time): a name that is not valid UTF-8 (ids and paths are stored as UTF-8
text: such a file is listed under its name with the bad bytes written as \\xNN escapes), a
symlink leaving a gallery folder (unless follow_symlinks), anything that is not a regular
file (a FIFO, a device, a link to /dev/zero), a file over the size limit.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from cir.images import iter_image_files
from cir.io import FileRefusedError, check_regular, iter_jsonl
from cir.metadata import MetadataError, infer_types

MANIFEST_SUFFIXES = (".jsonl", ".ndjson", ".csv")


class GalleryError(ValueError):
    """The gallery source is missing, malformed or has duplicate ids."""


@dataclass(frozen=True)
class GalleryEntry:
    """One gallery image: its stable id, absolute path, free metadata and manifest line (if any)."""

    id: str
    path: str
    metadata: dict = field(default_factory=dict, hash=False, compare=False)
    line: int | None = field(default=None, hash=False, compare=False)
    problem: str | None = field(default=None, compare=False)  # why it is skipped, found while listing


def printable(text: str) -> str:
    """`text` with bytes that are not UTF-8 (os.fsdecode's surrogates) written as \\xNN escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _folder_entry(path: Path, root: Path, follow_symlinks: bool) -> GalleryEntry:
    rel = path.relative_to(root).as_posix()
    if not _is_utf8(rel):
        return GalleryEntry(printable(rel), printable(str(path)),
                            problem="file name is not valid UTF-8: rename the file")
    if path.is_symlink() and not follow_symlinks:
        target = path.resolve()
        if not target.is_relative_to(root):
            return GalleryEntry(rel, str(path), problem=f"symlink to {printable(str(target))}, outside the gallery "
                                                        "folder (--follow-symlinks indexes such files)")
    return GalleryEntry(rel, str(path))


def read_gallery(source: str | Path, follow_symlinks: bool = False) -> list[GalleryEntry]:
    """List a gallery folder or manifest in a stable order; ids must be unique."""
    source = Path(source).expanduser()
    if source.is_dir():
        root = source.resolve()
        entries = [_folder_entry(p, root, follow_symlinks) for p in iter_image_files(root)]
    elif source.is_file() and source.suffix.lower() in MANIFEST_SUFFIXES:
        entries = _read_manifest(source.resolve())
    elif source.is_file():
        raise GalleryError(f"{source} is neither a folder nor a manifest ({', '.join(MANIFEST_SUFFIXES)})")
    else:
        raise GalleryError(f"gallery {source} does not exist")
    _check_unique(entries)
    return entries


def _manifest_rows(path: Path):
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            for lineno, row in enumerate(csv.DictReader(fh), start=2):
                yield lineno, {k: v for k, v in row.items() if k is not None and v not in (None, "")}
        return
    try:
        yield from iter_jsonl(path)
    except ValueError as exc:
        raise GalleryError(str(exc)) from exc


def _read_manifest(path: Path) -> list[GalleryEntry]:
    base = path.parent
    entries = []
    for lineno, row in _manifest_rows(path):
        raw = row.pop("path", None)
        if not raw:
            raise GalleryError(f"{path}:{lineno}: missing the required 'path' field")
        full = Path(os.path.normpath(base / Path(str(raw)).expanduser()))
        given = row.pop("id", None)
        item_id = str(given) if given not in (None, "") else _default_id(full, base)
        if _is_utf8(item_id) and _is_utf8(str(full)):
            entries.append(GalleryEntry(item_id, str(full), row, lineno))
        else:  # JSON can spell lone surrogates ("\\udcff"), which no UTF-8 table can store
            entries.append(GalleryEntry(printable(item_id), printable(str(full)), line=lineno,
                                        problem=f"{path.name}:{lineno}: id or path is not valid UTF-8"))
    return entries


def field_types(source: str | Path, entries: list[GalleryEntry]) -> dict[str, str]:
    """The type of every metadata field (cir.metadata); a type conflict is a GalleryError naming the line."""
    try:
        return infer_types(((e.line, e.metadata) for e in entries), csv=Path(source).suffix.lower() == ".csv")
    except MetadataError as exc:
        raise GalleryError(f"{Path(source).expanduser()}: {exc}") from exc


def _default_id(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def _check_unique(entries: list[GalleryEntry]) -> None:
    seen: set[str] = set()
    for entry in entries:
        if entry.problem is not None:  # skipped anyway; its id is only for the report
            continue
        if entry.id in seen:
            raise GalleryError(f"duplicate gallery id {entry.id!r}; ids must be unique")
        seen.add(entry.id)


def file_facts(path: str, max_bytes: int) -> tuple[int, int] | str:
    """(size, mtime_ns) of a readable regular file of at most max_bytes, else the reason to skip it."""
    try:
        st = os.stat(path)
        check_regular(st, max_bytes)
    except FileRefusedError as exc:
        return str(exc)
    except OSError:
        return "missing: file not found or not readable"
    return st.st_size, st.st_mtime_ns
