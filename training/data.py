"""Image-caption pair sources: JSONL, CSV/TSV and WebDataset tar shards, read by random access.

A first pass indexes the data (byte offsets only, a few bytes per pair), so a 2M-pair set never
has to fit in memory: records, captions and images are read lazily, in any order, by index.
That gives the training loop an exact shuffle that is a pure function of (seed, epoch) and a
resume point that is just a position.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import tarfile
from array import array
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
from PIL import Image

from cir.images import IMAGE_EXTENSIONS, ImageDecodeError, decode_image

log = logging.getLogger(__name__)

TEXT_EXTENSIONS = ("txt",)
_IMAGE_EXTS = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)


class DataFormatError(ValueError):
    """The data file or folder is missing, empty or malformed."""


def load_image(path: str | Path) -> Image.Image:
    """One training image as RGB PIL, or BadImage with the reason (a missing file, or why it cannot decode)."""
    path = Path(path)
    if not path.is_file():
        raise BadImage(f"missing image file {path}", "missing")
    try:
        return decode_image(path)
    except ImageDecodeError as exc:
        raise BadImage(f"{path}: {exc}") from exc


class BadImage(Exception):
    """An image of one pair could not be read: it is skipped and counted, not fatal.

    `kind` is "missing" (no such file) or "undecodable" (the bytes are not an image we can read).
    """

    def __init__(self, reason: str, kind: str = "undecodable"):
        super().__init__(reason)
        self.kind = kind


class Record(NamedTuple):
    """One image-caption pair: where its image is (for messages), its caption, optional structure."""

    where: str
    caption: str
    meta: dict | None


class _Files:
    """Per-process cache of open binary file handles (never pickled: each worker opens its own)."""

    def __init__(self):
        self.pid, self.handles = os.getpid(), {}

    def get(self, path: Path):
        if self.pid != os.getpid():
            self.pid, self.handles = os.getpid(), {}
        if path not in self.handles:
            if len(self.handles) >= 16:
                self.handles.pop(next(iter(self.handles))).close()
            self.handles[path] = open(path, "rb")
        return self.handles[path]


class PairSource:
    """Random access to N image-caption pairs."""

    path: Path
    structured: bool = False  # rows carry shapes-world `mentions` and `attributes`
    incomplete: int = 0  # samples dropped while indexing (WebDataset members without a partner)

    def __init__(self):
        self._files = _Files()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_files"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._files = _Files()

    def __len__(self) -> int:
        raise NotImplementedError

    def record(self, i: int) -> Record:
        """The i-th pair's caption and metadata (no image decoding)."""
        raise NotImplementedError

    def image(self, i: int) -> Image.Image:
        """The i-th pair's image as RGB PIL, or raise BadImage with the reason."""
        raise NotImplementedError

    def resolve_hint(self) -> str:
        """How image references are resolved (for messages about missing images)."""
        return f"images are read from the .tar members of {self.path}"


class _RowSource(PairSource):
    """Rows of a text file with `image` (path relative to the file) and `caption` fields."""

    def __init__(self, path: Path, image_key: str, caption_key: str):
        super().__init__()
        self._last: tuple[int, dict] | None = None
        self.path, self.image_key, self.caption_key = path, image_key, caption_key
        self.root = path.parent
        self.offsets = self._index()
        if len(self.offsets) == 0:
            raise DataFormatError(f"{path} holds no image-caption pairs")
        meta = self.record(0).meta
        self.structured = bool(meta) and isinstance(meta.get("mentions"), dict) \
            and isinstance(meta.get("attributes"), dict)

    def __len__(self) -> int:
        return len(self.offsets)

    def _check(self, row, where: str) -> dict:
        if not isinstance(row, dict):
            raise DataFormatError(f"{where}: expected an object with {self.image_key!r} and {self.caption_key!r}")
        for key in (self.image_key, self.caption_key):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DataFormatError(f"{where}: field {key!r} is missing or empty (fields: {', '.join(row)})")
        return row

    def resolve_hint(self) -> str:
        """How relative image paths are resolved (for messages about missing images)."""
        return (f"image paths are resolved relative to {self.root}, the folder of {self.path.name} "
                "(absolute paths are used as they are)")

    def _image_path(self, row: dict) -> Path:
        p = Path(row[self.image_key]).expanduser()
        return p if p.is_absolute() else self.root / p

    def _record_from_row(self, row: dict) -> Record:
        meta = {k: v for k, v in row.items() if k in ("mentions", "attributes")} or None
        return Record(str(self._image_path(row)), row[self.caption_key].strip(), meta)

    def record(self, i: int) -> Record:
        return self._record_from_row(self._row(i))

    def image(self, i: int) -> Image.Image:
        return load_image(self._image_path(self._row(i)))


class JsonlSource(_RowSource):
    """One JSON object per line."""

    def _index(self) -> np.ndarray:
        offsets = array("q")
        with open(self.path, "rb") as fh:
            for lineno, line in enumerate(iter(fh.readline, b""), start=1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                        raise DataFormatError(f"{self.path}:{lineno}: not valid JSON ({exc}); expected one "
                                              "JSON object per line") from exc
                    self._check(row, f"{self.path}:{lineno}")
                    offsets.append(fh.tell() - len(line))
        return np.frombuffer(offsets, dtype=np.int64) if offsets else np.zeros(0, np.int64)

    def _row(self, i: int) -> dict:
        if self._last is None or self._last[0] != i:  # record(i) and image(i) come in pairs
            fh = self._files.get(self.path)
            fh.seek(int(self.offsets[i]))
            self._last = (i, json.loads(fh.readline()))
        return self._last[1]


class CsvSource(_RowSource):
    """A CSV (or, for .tsv, tab-separated) file with a header row."""

    def __init__(self, path: Path, image_key: str, caption_key: str):
        self.delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        self.header: list[str] = []
        super().__init__(path, image_key, caption_key)

    @staticmethod
    def _lines(fh) -> Iterator[str]:
        for line in iter(fh.readline, b""):
            yield line.decode("utf-8")

    def _index(self) -> np.ndarray:
        offsets = array("q")
        with open(self.path, "rb") as fh:
            reader = csv.reader(self._lines(fh), delimiter=self.delimiter)
            try:
                self.header = next(reader)
                while True:
                    start = fh.tell()  # csv reads whole lines and never ahead: this is where the row begins
                    try:
                        row = next(reader)
                    except StopIteration:
                        break
                    if row:
                        self._check(self._as_dict(row, reader.line_num), f"{self.path}:{reader.line_num}")
                        offsets.append(start)
            except StopIteration:
                raise DataFormatError(f"{self.path} is empty (no header row)") from None
            except (csv.Error, UnicodeDecodeError) as exc:
                raise DataFormatError(f"{self.path}: not a valid CSV file ({exc})") from exc
        return np.frombuffer(offsets, dtype=np.int64) if offsets else np.zeros(0, np.int64)

    def _as_dict(self, row: list[str], line: int) -> dict:
        if len(row) != len(self.header):
            raise DataFormatError(f"{self.path}:{line}: {len(row)} fields, the header has {len(self.header)}")
        return dict(zip(self.header, row))

    def _row(self, i: int) -> dict:
        if self._last is None or self._last[0] != i:  # record(i) and image(i) come in pairs
            fh = self._files.get(self.path)
            fh.seek(int(self.offsets[i]))
            self._last = (i, dict(zip(self.header, next(csv.reader(self._lines(fh), delimiter=self.delimiter)))))
        return self._last[1]


class WebDatasetSource(PairSource):
    """WebDataset tar shards: members `<key>.jpg|png|...` and `<key>.txt` form one pair."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.shards = [path] if path.is_file() else sorted(path.rglob("*.tar"))
        if not self.shards:
            raise DataFormatError(f"{path} holds no .tar shards")
        self.incomplete = 0
        columns = [array("q") for _ in range(6)]
        for s, shard in enumerate(self.shards):
            self._index_shard(s, shard, columns)
        self.shard, self.sample_no, self.img_off, self.img_size, self.txt_off, self.txt_size = (
            np.frombuffer(c, dtype=np.int64) if c else np.zeros(0, np.int64) for c in columns)
        if len(self.shard) == 0:
            raise DataFormatError(f"{path}: no shard holds an image with a .txt caption")
        if self.incomplete:
            log.warning("%s: %d samples lack an image or a caption and are skipped", path, self.incomplete)

    def _index_shard(self, s: int, shard: Path, columns) -> None:
        samples: dict[str, list[int]] = {}
        try:
            with tarfile.open(shard, mode="r:") as tf:
                for member in tf:
                    if not member.isfile():
                        continue
                    folder, _, base = member.name.rpartition("/")
                    stem, _, ext = base.partition(".")
                    slot = samples.setdefault(f"{folder}/{stem}", [-1, 0, -1, 0])
                    ext = ext.lower()
                    if ext in _IMAGE_EXTS:
                        slot[0:2] = [member.offset_data, member.size]
                    elif ext in TEXT_EXTENSIONS:
                        slot[2:4] = [member.offset_data, member.size]
        except (tarfile.TarError, OSError) as exc:
            raise DataFormatError(f"{shard}: not a readable tar shard ({exc})") from exc
        for n, (img_off, img_size, txt_off, txt_size) in enumerate(samples.values()):
            if img_off < 0 or txt_off < 0 or txt_size == 0:
                self.incomplete += 1
                continue
            for col, value in zip(columns, (s, n, img_off, img_size, txt_off, txt_size)):
                col.append(value)

    def __len__(self) -> int:
        return len(self.shard)

    def _read(self, i: int, offset: np.ndarray, size: np.ndarray) -> bytes:
        fh = self._files.get(self.shards[int(self.shard[i])])
        fh.seek(int(offset[i]))
        return fh.read(int(size[i]))

    def record(self, i: int) -> Record:
        where = f"{self.shards[int(self.shard[i])].name} sample {int(self.sample_no[i])}"
        caption = self._read(i, self.txt_off, self.txt_size).decode("utf-8", errors="replace").strip()
        return Record(where, caption, None)

    def image(self, i: int) -> Image.Image:
        try:
            return decode_image(self._read(i, self.img_off, self.img_size))
        except ImageDecodeError as exc:
            raise BadImage(f"{self.record(i).where}: {exc}") from exc


def open_pairs(path: str | Path, image_key: str = "image", caption_key: str = "caption") -> PairSource:
    """Open and index a JSONL, CSV/TSV file or WebDataset folder/.tar of image-caption pairs."""
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise DataFormatError(f"data {path} does not exist")
    suffix = p.suffix.lower()
    if p.is_dir() or suffix == ".tar":
        return WebDatasetSource(p)
    if suffix in (".jsonl", ".json", ".ndjson"):
        return JsonlSource(p, image_key, caption_key)
    if suffix in (".csv", ".tsv"):
        return CsvSource(p, image_key, caption_key)
    raise DataFormatError(f"unknown data format {p.name!r}: use .jsonl, .csv, .tsv, a .tar shard "
                          "or a folder of WebDataset .tar shards")

