"""One bound filter condition evaluated on a version's column (cir.columns): the boolean row mask.

Values arrive converted to the column's type by cir.filters (dates as epoch seconds). An item
lacking the field never matches a comparison, `ne` and `nin` included; `exists` and the
filter language's `not` are the only ways to select items by a missing field. A tags field
exists for an item with at least one tag.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cir.columns import Column
from cir.metadata import BOOLEAN, STRING, TAGS


def _tag_rows(col: Column, codes: list[int], count: int) -> np.ndarray:
    mask = np.zeros(count, dtype=bool)
    mask[col.rows[np.isin(col.data, codes)]] = True
    return mask


def _tags_mask(col: Column, op: str, known: list[int], missing: bool, count: int) -> np.ndarray:
    if op == "all":
        if missing:  # a value no item has: no item has them all
            return np.zeros(count, dtype=bool)
        mask = np.ones(count, dtype=bool)
        for code in set(known):
            mask &= _tag_rows(col, [code], count)
        return mask
    hit = _tag_rows(col, known, count)
    return col.present(count) & ~hit if op == "nin" else hit


def _code_mask(col: Column, values: tuple, count: int, op: str) -> np.ndarray:
    codes = [col.code(v) for v in values]
    known = [c for c in codes if c is not None]  # a value no item has matches nothing
    if col.type == TAGS:
        return _tags_mask(col, op, known, len(known) < len(codes), count)
    hit = col.data == known[0] if len(known) == 1 else np.isin(col.data, known)
    return (col.data >= 0) & ~hit if op in ("ne", "nin") else hit


def condition_mask(col: Column, op: str, value: Any, count: int) -> np.ndarray:
    """Rows of `col` (a version of `count` rows) that meet `op value`."""
    if op == "exists":
        present = col.present(count)
        return present if value else ~present
    if col.type in (STRING, TAGS):
        return _code_mask(col, value if isinstance(value, tuple) else (value,), count, op)
    data = col.data
    if col.type == BOOLEAN:
        return (data >= 0) & (data != int(value)) if op == "ne" else data == int(value)
    # numbers and epoch seconds; NaN (absent) fails every comparison
    if op == "in":
        return np.isin(data, value)
    if op in ("ne", "nin"):
        return ~np.isnan(data) & ~np.isin(data, value if isinstance(value, tuple) else (value,))
    return {"eq": np.equal, "gt": np.greater, "gte": np.greater_equal, "lt": np.less,
            "lte": np.less_equal}[op](data, value)
