"""One filter condition (cir.filters) bound to its field's type, and evaluated on the field's column.

Values arrive converted to the column's type by cir.filters (dates as epoch seconds). An item
lacking the field never matches a comparison, `ne` and `nin` included; `exists` and the
filter language's `not` are the only ways to select items by a missing field. A tags field
exists for an item with at least one tag.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np

from cir.columns import Column
from cir.errors import InvalidFilterError
from cir.metadata import BOOLEAN, NUMBER, OBJECT, STRING, TAGS, TIME_TYPES, parse_datetime, parse_number

LIST_OPS = ("in", "nin", "any", "all")
RANGE_OPS = ("gt", "gte", "lt", "lte")
_COMPARABLE = ("eq", "ne", "in", "nin", *RANGE_OPS, "exists")
OPS_BY_TYPE = {STRING: ("eq", "ne", "in", "nin", "exists"), BOOLEAN: ("eq", "ne", "exists"),
               TAGS: ("eq", "any", "all", "nin", "exists"), OBJECT: ("exists",),
               NUMBER: _COMPARABLE, **{t: _COMPARABLE for t in TIME_TYPES}}


def _typed(field: str, ftype: str, op: str, value: Any) -> Any:
    """A filter value converted to its field's column type (InvalidFilterError if it does not fit)."""
    shown = json.dumps(value, ensure_ascii=False)
    if ftype in (STRING, TAGS):
        if not isinstance(value, str):
            raise InvalidFilterError(field, f"operator {op!r} needs a string for a {ftype} field, got {shown}")
        return value
    if ftype == BOOLEAN:
        if not isinstance(value, bool):
            raise InvalidFilterError(field, f"operator {op!r} needs true or false for a boolean field, got {shown}")
        return value
    if ftype == NUMBER:
        number = None if isinstance(value, str) else parse_number(value)
        if number is None:
            raise InvalidFilterError(field, f"operator {op!r} needs a number for a number field, got {shown}")
        return number
    parsed = parse_datetime(value)
    if parsed is None:
        raise InvalidFilterError(field, f"operator {op!r} needs an ISO 8601 date such as \"2024-01-31\" or "
                                        f"\"2024-01-31T12:00:00Z\" for a {ftype} field, got {shown}")
    return parsed[0]


def bind_condition(cond, fields: dict[str, dict]) -> tuple:
    """A condition checked against the field's type (InvalidFilterError naming it) with its values converted."""
    info = fields.get(cond.field)
    if info is None:
        names = ", ".join(repr(n) for n in list(fields)[:20]) or "none: rebuild the index from a manifest with metadata"
        raise InvalidFilterError(cond.field, f"the index has no field {cond.field!r} (fields: {names})")
    ftype = info.get("type")
    if ftype not in OPS_BY_TYPE or (ftype == OBJECT and cond.op != "exists"):
        raise InvalidFilterError(cond.field, f"the field holds {ftype} values, which cannot be filtered "
                                             "(only {\"exists\": true/false} applies)")
    if cond.op not in OPS_BY_TYPE[ftype]:
        raise InvalidFilterError(cond.field, f"operator {cond.op!r} does not apply to a {ftype} field "
                                             f"(use {', '.join(OPS_BY_TYPE[ftype])})")
    if cond.op == "exists":
        value = cond.value
    elif cond.op in LIST_OPS:
        value = tuple(_typed(cond.field, ftype, cond.op, v) for v in cond.value)
    else:
        value = _typed(cond.field, ftype, cond.op, cond.value)
    return replace(cond, value=value), ftype



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
