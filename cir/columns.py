"""Per-field column data of an index version: what filters are evaluated on (never SQL).

    VERSION/columns/columns.json   {"count": N, "fields": {name: {"type": t, "file": "f0003"}}}
    number, date, datetime  f0003.npy         float64 per row (dates as UTC epoch seconds), NaN = absent
    boolean                 f0003.npy         int8 per row: 1 true, 0 false, -1 absent
    string                  f0003.npy         int32 code per row into f0003.values.json, -1 absent
    tags                    f0003.rows.npy    int32, one entry per (item, tag) pair, sorted by row
                            f0003.npy         int32 code of that tag into f0003.values.json
    object                  f0003.npy         int8 per row: 1 present, 0 absent (never filtered)

File names are numbered, never made from field names; dictionaries (`values.json`) are the
sorted distinct values, so a code compares like its string. The indexer writes the folder into
the version before the manifest (cir.index_store), the reader memory-maps the arrays.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from pathlib import Path
import numpy as np

from cir.io import atomic_write_json
from cir.metadata import (BOOLEAN, MAX_FACET_VALUES, NUMBER, OBJECT, STRING, TAGS, TIME_TYPES, format_epoch,
                          typed_value)

COLUMNS_DIR = "columns"
COLUMNS_FILE = "columns.json"


@dataclass
class Column:
    """One field's typed values for every row of a version."""

    type: str
    data: np.ndarray  # per row (per pair for tags)
    rows: np.ndarray | None = None  # tags: the row of each pair
    dictionary: list[str] | None = None  # string and tags: sorted distinct values

    def present(self, count: int) -> np.ndarray:
        """Boolean mask of the rows that have this field."""
        if self.type in (NUMBER, *TIME_TYPES):
            return ~np.isnan(self.data)
        if self.type in (BOOLEAN, STRING):
            return self.data >= 0
        if self.type == OBJECT:
            return self.data > 0
        mask = np.zeros(count, dtype=bool)
        mask[self.rows] = True
        return mask

    def code(self, value: str) -> int | None:
        """The code of a string or tag value, or None when no item has it."""
        i = bisect.bisect_left(self.dictionary, value)
        return i if i < len(self.dictionary) and self.dictionary[i] == value else None


@dataclass
class Columns:
    """Every field's column for one version (`count` rows)."""

    count: int
    fields: dict[str, Column]


def _encode(values: list, dictionary: list[str]) -> np.ndarray:
    index = {v: i for i, v in enumerate(dictionary)}
    return np.fromiter((index[v] for v in values), dtype=np.int32, count=len(values))


def _build_column(ftype: str, name: str, metadatas: list[dict]) -> Column:
    raw = [(row, m[name]) for row, m in enumerate(metadatas) if m.get(name) is not None]
    n = len(metadatas)
    if ftype == OBJECT:
        data = np.zeros(n, dtype=np.int8)
        data[[r for r, _ in raw]] = 1
        return Column(ftype, data)
    typed = [(row, typed_value(ftype, v)) for row, v in raw]
    if ftype == TAGS:
        dictionary = sorted({t for _, tags in typed for t in tags})
        rows = np.fromiter((row for row, tags in typed for _ in tags), dtype=np.int32)
        codes = _encode([t for _, tags in typed for t in tags], dictionary)
        return Column(ftype, codes, rows=rows, dictionary=dictionary)
    if ftype == STRING:
        dictionary = sorted({v for _, v in typed})
        data = np.full(n, -1, dtype=np.int32)
        data[[r for r, _ in typed]] = _encode([v for _, v in typed], dictionary)
        return Column(ftype, data, dictionary=dictionary)
    if ftype == BOOLEAN:
        data = np.full(n, -1, dtype=np.int8)
    else:
        data = np.full(n, np.nan, dtype=np.float64)
    data[[r for r, _ in typed]] = [v for _, v in typed]
    return Column(ftype, data)


def merged_dictionary(a: Column, b: Column) -> tuple[list[str], np.ndarray, np.ndarray]:
    """One sorted dictionary for two string or tag columns, and each one's code map into it."""
    union = sorted(set(a.dictionary) | set(b.dictionary))
    maps = [np.searchsorted(union, c.dictionary).astype(np.int32) if c.dictionary else np.empty(0, np.int32)
            for c in (a, b)]
    return union, maps[0], maps[1]


def recode(codes: np.ndarray, code_map: np.ndarray) -> np.ndarray:
    """String codes through a code map (cir.columns.merged_dictionary); -1 (absent) stays -1."""
    out = np.full(len(codes), -1, np.int32)
    has = codes >= 0
    out[has] = code_map[codes[has]]
    return out


def build_columns(types: dict[str, str], metadatas: list[dict]) -> Columns:
    """Typed columns of `types`' fields over the items' metadata, row r = metadatas[r]."""
    return Columns(len(metadatas), {name: _build_column(t, name, metadatas) for name, t in types.items()})


def _facet_values(col: Column) -> dict:
    counts = np.bincount(col.data[col.data >= 0], minlength=len(col.dictionary))
    out: dict = {"distinct": len(col.dictionary)}
    if len(col.dictionary) <= MAX_FACET_VALUES:
        out["values"] = {v: int(c) for v, c in zip(col.dictionary, counts)}
    return out


def describe(columns: Columns) -> dict[str, dict]:
    """The manifest's `fields`: type, count of items with the field, facets or min/max."""
    out = {}
    for name, col in columns.fields.items():
        info: dict = {"type": col.type, "count": int(col.present(columns.count).sum())}
        if col.type in (STRING, TAGS):
            info.update(_facet_values(col))
        elif col.type == BOOLEAN:
            info["values"] = {"true": int((col.data == 1).sum()), "false": int((col.data == 0).sum())}
        elif info["count"]:
            lo, hi = float(np.nanmin(col.data)), float(np.nanmax(col.data))
            if col.type in TIME_TYPES:
                lo, hi = format_epoch(lo, col.type), format_epoch(hi, col.type)
            info.update(min=lo, max=hi)
        out[name] = info
    return out


def write_columns(folder: str | Path, columns: Columns) -> None:
    """Write the column folder (arrays and dictionaries first, columns.json last)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = {}
    for i, (name, col) in enumerate(columns.fields.items()):
        stem = f"f{i:04d}"
        index[name] = {"type": col.type, "file": stem}
        np.save(folder / f"{stem}.npy", col.data)
        if col.rows is not None:
            np.save(folder / f"{stem}.rows.npy", col.rows)
        if col.dictionary is not None:
            (folder / f"{stem}.values.json").write_text(json.dumps(col.dictionary, ensure_ascii=False),
                                                        encoding="utf-8")
    atomic_write_json(folder / COLUMNS_FILE, {"count": columns.count, "fields": index}, indent=None)


def _load_column(folder: Path, ftype: str, stem: str) -> Column:
    data = np.load(folder / f"{stem}.npy", mmap_mode="r")
    rows = np.load(folder / f"{stem}.rows.npy", mmap_mode="r") if ftype == TAGS else None
    dictionary = None
    if ftype in (STRING, TAGS):
        dictionary = json.loads((folder / f"{stem}.values.json").read_text(encoding="utf-8"))
    return Column(ftype, data, rows=rows, dictionary=dictionary)


def load_columns(folder: str | Path) -> Columns | None:
    """A version's columns (arrays memory-mapped), or None for a version written without them."""
    folder = Path(folder)
    if not (folder / COLUMNS_FILE).is_file():
        return None
    index = json.loads((folder / COLUMNS_FILE).read_text(encoding="utf-8"))
    fields = {name: _load_column(folder, f["type"], f["file"]) for name, f in index["fields"].items()}
    return Columns(int(index["count"]), fields)

