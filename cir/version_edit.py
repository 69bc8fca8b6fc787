"""A version made from another by editing rows in place and appending rows: its items table and
its columns, without reading or re-encoding the rows that did not change (what compaction writes).

A compaction of 1% changes on 1M items used to decode and re-encode every row of items.sqlite
and rebuild every column from the metadata (about 30 s of its 38 s, perf/live.py at 1M); now it
copies the table and edits the changed rows with SQL, and edits the column arrays.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cir.columns import Column, Columns, build_columns, merged_dictionary, recode
from cir.metadata import BOOLEAN, NUMBER, OBJECT, STRING, TAGS, TIME_TYPES

_FIELDS = ("id", "path", "width", "height", "sha256", "size", "mtime_ns")


def empty_column(ftype: str, count: int) -> Column:
    """A column in which no row has the field."""
    if ftype in (NUMBER, *TIME_TYPES):
        return Column(ftype, np.full(count, np.nan))
    if ftype in (BOOLEAN, OBJECT):
        return Column(ftype, np.full(count, -1 if ftype == BOOLEAN else 0, np.int8))
    if ftype == TAGS:
        return Column(ftype, np.empty(0, np.int32), rows=np.empty(0, np.int32), dictionary=[])
    return Column(ftype, np.full(count, -1, np.int32), dictionary=[])


@dataclass
class ItemsEdit:
    """An items table made from `base` (an items.sqlite): rows whose metadata is replaced, rows replaced
    whole (deleted rows kept as tombstones), and rows appended; `ids` is every row's id afterwards."""

    base: Path
    ids: list[str]
    metadata: dict[int, dict] = field(default_factory=dict)
    replaced: dict[int, dict] = field(default_factory=dict)
    appended: list[dict] = field(default_factory=list)

    def write(self, path: str | Path) -> int:
        """Write the edited table to `path` (a copy of the base, edited in one transaction); its row count."""
        shutil.copyfile(self.base, path)
        con = sqlite3.connect(str(path))
        try:
            with con:
                con.executemany("UPDATE items SET metadata=? WHERE row=?",
                                ((json.dumps(m, sort_keys=True), r) for r, m in self.metadata.items()))
                con.executemany(f"UPDATE items SET {', '.join(f + '=?' for f in _FIELDS)}, metadata=? WHERE row=?",
                                ((*(it.get(f) for f in _FIELDS), json.dumps(it.get("metadata") or {}, sort_keys=True),
                                  r) for r, it in self.replaced.items()))
                start = len(self.ids) - len(self.appended)
                con.executemany("INSERT INTO items VALUES (?,?,?,?,?,?,?,?,?)",
                                ((start + i, *(it.get(f) for f in _FIELDS),
                                  json.dumps(it.get("metadata") or {}, sort_keys=True))
                                 for i, it in enumerate(self.appended)))
            (count,) = con.execute("SELECT count(*) FROM items").fetchone()
        finally:
            con.close()
        return int(count)


def edit_columns(base: Columns, types: dict[str, str], rows: np.ndarray, metadatas: list[dict],
                 appended: int) -> Columns:
    """`base` with row rows[i] set to metadatas[i] and the last `appended` metadatas added as new rows."""
    rows = np.asarray(rows, np.int64)
    over = build_columns(types, metadatas)
    target = np.concatenate([rows, base.count + np.arange(appended, dtype=np.int64)])
    count = base.count + appended
    out = {}
    for name, ftype in types.items():
        old = base.fields.get(name) or empty_column(ftype, base.count)
        out[name] = _edit(ftype, old, over.fields[name], rows, target, count)
    return Columns(count, out)


def _edit(ftype: str, old: Column, new: Column, rows: np.ndarray, target: np.ndarray, count: int) -> Column:
    """Column `old` with its `rows` replaced and rows appended: new's row i goes to target[i]."""
    if ftype == TAGS:
        union, old_map, new_map = merged_dictionary(old, new)
        keep = ~np.isin(old.rows, rows)
        pair_rows = np.concatenate([np.asarray(old.rows)[keep], target[new.rows]])
        codes = np.concatenate([old_map[np.asarray(old.data)[keep]], new_map[new.data]])
        order = np.argsort(pair_rows, kind="stable")  # the file keeps pairs sorted by row
        codes, union = _used(codes[order], union)
        return Column(ftype, codes, rows=pair_rows[order].astype(np.int32), dictionary=union)
    base_data, new_data, dictionary = np.asarray(old.data), np.asarray(new.data), None
    if ftype == STRING:
        dictionary, old_map, new_map = merged_dictionary(old, new)
        base_data, new_data = recode(base_data, old_map), recode(new_data, new_map)
    data = np.empty(count, base_data.dtype)
    data[: len(base_data)] = base_data
    data[target] = new_data
    if dictionary is not None:
        data, dictionary = _used(data, dictionary)
    return Column(ftype, data, dictionary=dictionary)


def _used(codes: np.ndarray, dictionary: list[str]) -> tuple[np.ndarray, list[str]]:
    """Codes and dictionary without the values no row has any more (a fresh build never lists them)."""
    used = np.zeros(len(dictionary), bool)
    used[codes[codes >= 0]] = True
    if used.all():
        return codes.astype(np.int32), dictionary
    new_code = np.cumsum(used).astype(np.int32) - 1
    out = np.where(codes >= 0, new_code[np.maximum(codes, 0)], -1).astype(np.int32)
    return out, [v for v, u in zip(dictionary, used) if u]
