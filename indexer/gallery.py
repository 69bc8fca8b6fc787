"""Gallery discovery: a folder walked recursively or a JSONL/CSV manifest, with stable ids."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from cir.images import iter_image_files
from cir.io import iter_jsonl
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


def read_gallery(source: str | Path) -> list[GalleryEntry]:
    """List a gallery folder or manifest in a stable order; ids must be unique."""
    source = Path(source).expanduser()
    if source.is_dir():
        root = source.resolve()
        entries = [GalleryEntry(p.relative_to(root).as_posix(), str(p)) for p in iter_image_files(root)]
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
        entries.append(GalleryEntry(item_id, str(full), row, lineno))
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
        if entry.id in seen:
            raise GalleryError(f"duplicate gallery id {entry.id!r}; ids must be unique")
        seen.add(entry.id)


def stat_file(path: str) -> tuple[int, int] | None:
    """(size, mtime_ns) of a file, or None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns
