"""The filter language: one JSON object of field conditions, all ANDed, evaluated on columns.

    {"colour": "blue"}                     equality (string, number, boolean, date fields)
    {"colour": {"in": ["blue", "red"]}}    one of the values
    {"colour": {"ne": "red"}}              not equal (items lacking the field never match)
    {"price": {"gte": 10, "lt": 50}}       ranges: gt, gte, lt, lte (numbers and dates)
    {"date": {"gte": "2024-01-01"}}        dates and date-times as ISO 8601 text (UTC if no offset)
    {"tags": {"any": ["sale", "new"]}}     tags fields: has any of / {"all": [...]} / {"tags": "sale"}
    {"in_stock": true}

Three steps: `parse_filter` checks the JSON's shape (size, count, operators, value kinds)
without an index; `Filter.bind(fields)` checks it against a version's typed fields (the
manifest's `fields`) and converts values (dates to epoch seconds); `BoundFilter.mask(columns)`
returns the boolean row mask on the version's column arrays. Field names and values are only
ever dictionary keys and array comparisons: nothing reaches SQL. Every error is an
InvalidFilterError naming the field and the reason. `{}` is no filter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from cir.columns import Column, Columns
from cir.metadata import (BOOLEAN, NUMBER, OBJECT, STRING, TAGS, TIME_TYPES, check_number, parse_datetime,
                          parse_number)
from cir.search.query import InvalidFilterError

MAX_FILTER_BYTES = 16 * 1024
MAX_CONDITIONS = 64
RANGE_OPS = ("gt", "gte", "lt", "lte")
LIST_OPS = ("in", "any", "all")
OPERATORS = ("eq", "ne", "in", *RANGE_OPS, "any", "all")
OPS_BY_TYPE = {STRING: ("eq", "ne", "in"), BOOLEAN: ("eq", "ne"), TAGS: ("eq", "any", "all"),
               NUMBER: ("eq", "ne", "in", *RANGE_OPS), **{t: ("eq", "ne", "in", *RANGE_OPS) for t in TIME_TYPES}}
EXAMPLE = '{"colour": "blue", "price": {"gte": 10, "lt": 50}}'


@dataclass(frozen=True)
class Condition:
    """One `field op value` test; list operators hold a tuple of values."""

    field: str
    op: str
    value: Any


def _kind(value: Any) -> str:
    return {type(None): "null", dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def _shown_number(value: int | float) -> str:
    text = str(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} digits)"


def _scalar(field: str, op: str, value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:  # the one numeric parsing path: what a float64 cannot hold is refused here
            check_number(value)
        except ValueError as exc:
            raise InvalidFilterError(field, f"operator {op!r}: {_shown_number(value)} {exc}") from None
    if value is None or isinstance(value, (dict, list)):
        raise InvalidFilterError(field, f"operator {op!r} needs a string, number or boolean, got {_kind(value)}")
    return value


def _condition(field: str, op: Any, value: Any) -> Condition:
    if op not in OPERATORS:
        raise InvalidFilterError(field, f"unknown operator {op!r}; operators: {', '.join(OPERATORS)}")
    if op in LIST_OPS:
        if not isinstance(value, list) or not value:
            raise InvalidFilterError(field, f"operator {op!r} needs a non-empty list of values")
        return Condition(field, op, tuple(_scalar(field, op, v) for v in value))
    value = _scalar(field, op, value)
    if op in RANGE_OPS and isinstance(value, bool):
        raise InvalidFilterError(field, f"operator {op!r} needs a number or a date, got {json.dumps(value)}")
    return Condition(field, op, value)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a finite number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"{key!r} is given twice")
        out[key] = value
    return out


def _check_size(size: int) -> None:
    if size > MAX_FILTER_BYTES:
        raise InvalidFilterError(None, f"{size} bytes is over the limit of {MAX_FILTER_BYTES}")


def _load(raw: str | bytes | dict) -> Any:
    if isinstance(raw, dict):
        try:
            text = json.dumps(raw, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidFilterError(None, f"not plain JSON: {exc}") from None
        _check_size(len(text.encode()))
        return raw
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise InvalidFilterError(None, "not UTF-8 text") from None
    _check_size(len(text.encode("utf-8", "surrogatepass")))
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise InvalidFilterError(None, "nested too deeply") from None
    except ValueError as exc:
        raise InvalidFilterError(None, f"not valid JSON: {exc}") from None


def parse_filter(raw: str | bytes | dict | None) -> "Filter | None":
    """A filter from JSON text or a dict; None for no filter (None, blank text or {})."""
    if raw is None or (isinstance(raw, (str, bytes)) and not raw.strip()):
        return None
    obj = _load(raw)
    if not isinstance(obj, dict):
        raise InvalidFilterError(None, f"a filter is a JSON object of field conditions, e.g. {EXAMPLE}")
    conditions = []
    for field, spec in obj.items():
        if isinstance(spec, dict):
            if not spec:
                raise InvalidFilterError(field, 'empty operator object; write e.g. {"eq": value}')
            conditions += [_condition(field, op, value) for op, value in spec.items()]
        else:
            conditions.append(_condition(field, "eq", spec))
        if len(conditions) > MAX_CONDITIONS:
            raise InvalidFilterError(None, f"more than {MAX_CONDITIONS} conditions")
    return Filter(tuple(conditions)) if conditions else None


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


def _bind_condition(cond: Condition, fields: dict[str, dict]) -> tuple[Condition, str]:
    info = fields.get(cond.field)
    if info is None:
        names = ", ".join(repr(n) for n in list(fields)[:20]) or "none: rebuild the index from a manifest with metadata"
        raise InvalidFilterError(cond.field, f"the index has no field {cond.field!r} (fields: {names})")
    ftype = info.get("type")
    if ftype == OBJECT or ftype not in OPS_BY_TYPE:
        raise InvalidFilterError(cond.field, f"the field holds {ftype} values, which cannot be filtered")
    if cond.op not in OPS_BY_TYPE[ftype]:
        raise InvalidFilterError(cond.field, f"operator {cond.op!r} does not apply to a {ftype} field "
                                             f"(use {', '.join(OPS_BY_TYPE[ftype])})")
    if cond.op in LIST_OPS:
        value = tuple(_typed(cond.field, ftype, cond.op, v) for v in cond.value)
    else:
        value = _typed(cond.field, ftype, cond.op, cond.value)
    return Condition(cond.field, cond.op, value), ftype


@dataclass(frozen=True)
class Filter:
    """A parsed filter: conditions ANDed. `bind` it to an index version's fields to evaluate it."""

    conditions: tuple[Condition, ...]

    def to_dict(self) -> dict:
        """The filter as a JSON-able dict (operators spelled out)."""
        out: dict = {}
        for c in self.conditions:
            out.setdefault(c.field, {})[c.op] = list(c.value) if isinstance(c.value, tuple) else c.value
        return out

    def bind(self, fields: dict[str, dict] | None) -> "BoundFilter":
        """Check every condition against a version's typed fields (manifest `fields`) and convert its values."""
        return BoundFilter(tuple(_bind_condition(c, fields or {}) for c in self.conditions))


def _tag_rows(col: Column, codes: list[int], count: int) -> np.ndarray:
    mask = np.zeros(count, dtype=bool)
    mask[col.rows[np.isin(col.data, codes)]] = True
    return mask


def _code_mask(col: Column, values: tuple, count: int, op: str) -> np.ndarray:
    codes = [col.code(v) for v in values]
    known = [c for c in codes if c is not None]  # a value no item has matches nothing
    if col.type == TAGS and op == "all":
        if len(known) < len(codes):
            return np.zeros(count, dtype=bool)
        mask = np.ones(count, dtype=bool)
        for code in set(known):
            mask &= _tag_rows(col, [code], count)
        return mask
    if col.type == TAGS:
        return _tag_rows(col, known, count)
    hit = col.data == known[0] if len(known) == 1 else np.isin(col.data, known)
    return (col.data >= 0) & ~hit if op == "ne" else hit


def _mask(col: Column, ftype: str, op: str, value: Any, count: int) -> np.ndarray:
    if ftype in (STRING, TAGS):
        return _code_mask(col, value if isinstance(value, tuple) else (value,), count, op)
    data = col.data
    if ftype == BOOLEAN:
        return (data >= 0) & (data != int(value)) if op == "ne" else data == int(value)
    # numbers and epoch seconds; NaN (absent) fails every comparison
    if op == "in":
        return np.isin(data, value)
    if op == "ne":
        return ~np.isnan(data) & (data != value)
    return {"eq": np.equal, "gt": np.greater, "gte": np.greater_equal, "lt": np.less,
            "lte": np.less_equal}[op](data, value)


@dataclass(frozen=True)
class BoundFilter:
    """A filter checked against one version's fields; `mask` evaluates it on that version's columns."""

    conditions: tuple[tuple[Condition, str], ...]

    def mask(self, columns: Columns | None) -> np.ndarray:
        """Boolean mask of the rows that meet every condition."""
        if columns is None:
            raise InvalidFilterError(self.conditions[0][0].field, "the index has no field columns: rebuild it")
        mask = None
        for cond, ftype in self.conditions:
            col = columns.fields.get(cond.field)
            if col is None or col.type != ftype:
                raise InvalidFilterError(cond.field, f"the index has no {ftype} column for {cond.field!r}")
            part = _mask(col, ftype, cond.op, cond.value, columns.count)
            mask = part if mask is None else mask & part
        return np.asarray(mask, dtype=bool)
