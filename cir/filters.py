"""The filter language: one JSON object of field conditions, all ANDed, with and / or / not over sub-filters.

    {"colour": "blue"}                     equality (string, number, boolean, date fields)
    {"colour": {"in": ["blue", "red"]}}    one of the values
    {"colour": {"nin": ["red", "pink"]}}   none of the values (items lacking the field never match)
    {"colour": {"ne": "red"}}              not equal (items lacking the field never match)
    {"colour": {"exists": true}}           the item has the field ({"exists": false}: it lacks it)
    {"price": {"gte": 10, "lt": 50}}       ranges: gt, gte, lt, lte (numbers and dates)
    {"date": {"gte": "2024-01-01"}}        dates and date-times as ISO 8601 text (UTC if no offset)
    {"tags": {"any": ["sale", "new"]}}     tags fields: has any of / {"all": [...]} / {"nin": [...]}
                                           (has none of) / {"tags": "sale"}
    {"in_stock": true}
    {"or": [{"colour": "red"}, {"price": {"lt": 10}}]}   at least one sub-filter matches
    {"and": [{...}, {...}]}                              every sub-filter matches
    {"not": {"colour": "red"}}                           the sub-filter does not match (items
                                                         lacking `colour` match: the complement)

`and`, `or` and `not` are reserved words: they always mean the boolean operators (a metadata
field of that name cannot be filtered). They nest up to MAX_DEPTH levels deep; the whole filter
holds at most MAX_CONDITIONS field conditions.

Three steps: `parse_filter` checks the JSON's shape (size, count, operators, value kinds)
without an index; `Filter.bind(fields)` checks it against a version's typed fields (the
manifest's `fields`) and converts values (dates to epoch seconds); `BoundFilter.mask(columns)`
returns the boolean row mask on the version's column arrays (both per condition in
cir.filter_masks). Field names and values are only ever dictionary keys and array comparisons:
nothing reaches SQL. Every error is an InvalidFilterError (cir.errors) naming the field and the
reason. `{}` is no filter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from cir.columns import Columns
from cir.errors import InvalidFilterError
from cir.filter_masks import LIST_OPS, OPS_BY_TYPE, RANGE_OPS, bind_condition, condition_mask  # noqa: F401
from cir.metadata import check_number, parse_number

MAX_FILTER_BYTES = 16 * 1024
MAX_CONDITIONS = 64
MAX_DEPTH = 4  # and / or / not inside one another, at most this many levels
OPERATORS = ("eq", "ne", "in", "nin", *RANGE_OPS, "any", "all", "exists")
BOOLEAN_OPS = ("and", "or", "not")
EXAMPLE = '{"colour": "blue", "price": {"gte": 10, "lt": 50}}'


@dataclass(frozen=True)
class Condition:
    """One `field op value` test; list operators hold a tuple of values, `exists` a boolean."""

    field: str
    op: str
    value: Any


@dataclass(frozen=True)
class Boolean:
    """`and` / `or` over sub-filters, or `not` of one (parts holds exactly one)."""

    op: str
    parts: tuple["Node", ...]


Node = Union[Condition, Boolean]


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
        raise InvalidFilterError(field, f"unknown operator {op!r}; operators: {', '.join(OPERATORS)} "
                                        f"(and, or, not combine sub-filters)")
    if op == "exists":
        if not isinstance(value, bool):
            raise InvalidFilterError(field, f"operator 'exists' needs true or false, got {json.dumps(value)}")
        return Condition(field, op, value)
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
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidFilterError(None, f"not plain JSON: {type(exc).__name__}: {exc}") from None
        _check_size(len(text.encode("utf-8", "surrogatepass")))
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


class _Parser:
    """Turns the JSON object into a tree of Conditions and Booleans, counting conditions and depth."""

    def __init__(self) -> None:
        self.count = 0

    def obj(self, obj: Any, depth: int) -> Node:
        if not isinstance(obj, dict):
            where = "a filter" if depth == 0 else "each sub-filter of and / or / not"
            raise InvalidFilterError(None, f"{where} is a JSON object of field conditions, e.g. {EXAMPLE}")
        parts: list[Node] = []
        for key, spec in obj.items():
            if key in BOOLEAN_OPS:
                parts.append(self.boolean(key, spec, depth + 1))
            elif isinstance(spec, dict):
                if not spec:
                    raise InvalidFilterError(key, 'empty operator object; write e.g. {"eq": value}')
                parts += [self.condition(key, op, value) for op, value in spec.items()]
            else:
                parts.append(self.condition(key, "eq", spec))
        return parts[0] if len(parts) == 1 else Boolean("and", tuple(parts))

    def condition(self, field: str, op: Any, value: Any) -> Condition:
        self.count += 1
        if self.count > MAX_CONDITIONS:
            raise InvalidFilterError(None, f"more than {MAX_CONDITIONS} conditions")
        return _condition(field, op, value)

    def boolean(self, op: str, spec: Any, depth: int) -> Boolean:
        if depth > MAX_DEPTH:
            raise InvalidFilterError(None, f"and / or / not nest at most {MAX_DEPTH} levels deep")
        if op == "not":
            if not isinstance(spec, dict) or not spec:
                raise InvalidFilterError(None, f'"not" takes one non-empty sub-filter object, e.g. '
                                               f'{{"not": {{"colour": "red"}}}}, got {_kind(spec)}')
            return Boolean("not", (self.obj(spec, depth),))
        if not isinstance(spec, list) or not spec or not all(isinstance(s, dict) and s for s in spec):
            raise InvalidFilterError(None, f'"{op}" takes a non-empty list of non-empty sub-filter objects, e.g. '
                                           f'{{"{op}": [{{"colour": "red"}}, {{"price": {{"lt": 10}}}}]}}')
        return Boolean(op, tuple(self.obj(s, depth) for s in spec))


def parse_filter(raw: str | bytes | dict | None) -> "Filter | None":
    """A filter from JSON text or a dict; None for no filter (None, blank text or {})."""
    if raw is None or (isinstance(raw, (str, bytes)) and not raw.strip()):
        return None
    obj = _load(raw)
    if isinstance(obj, dict) and not obj:
        return None
    return Filter(_Parser().obj(obj, 0))


def _conditions(node: Node) -> list[Condition]:
    return [node] if isinstance(node, Condition) else [c for p in node.parts for c in _conditions(p)]


def _to_dict(node: Node) -> dict:
    if isinstance(node, Condition):
        return {node.field: {node.op: list(node.value) if isinstance(node.value, tuple) else node.value}}
    if node.op == "not":
        return {"not": _to_dict(node.parts[0])}
    parts = [_to_dict(p) for p in node.parts]
    if node.op == "and":  # one object when no key repeats: {"price": {"gte": 1, "lt": 2}, "or": [...]}
        merged: dict = {}
        for part in parts:
            for key, value in part.items():
                if key in merged and (key in BOOLEAN_OPS or set(merged[key]) & set(value)):
                    return {"and": parts}
                merged[key] = {**merged[key], **value} if key in merged else value
        return merged
    return {node.op: parts}


@dataclass(frozen=True)
class Filter:
    """A parsed filter: a tree of conditions under and / or / not. `bind` it to a version's fields to evaluate it."""

    root: Node

    @property
    def conditions(self) -> tuple[Condition, ...]:
        """Every field condition of the tree, in the order given."""
        return tuple(_conditions(self.root))

    def to_dict(self) -> dict:
        """The filter as a JSON-able dict (operators spelled out, one object per condition)."""
        return _to_dict(self.root)

    def bind(self, fields: dict[str, dict] | None) -> "BoundFilter":
        """Check every condition against a version's typed fields (manifest `fields`) and convert its values."""
        return BoundFilter(_bind(self.root, fields or {}))


BoundNode = Union[tuple[Condition, str], Boolean]


def _bind(node: Node, fields: dict[str, dict]) -> BoundNode:
    if isinstance(node, Condition):
        return bind_condition(node, fields)
    return Boolean(node.op, tuple(_bind(p, fields) for p in node.parts))


def _first_field(node: BoundNode) -> str:
    return node[0].field if isinstance(node, tuple) else _first_field(node.parts[0])


@dataclass(frozen=True)
class BoundFilter:
    """A filter checked against one version's fields; `mask` evaluates it on that version's columns."""

    root: BoundNode

    @property
    def conditions(self) -> tuple[tuple[Condition, str], ...]:
        """Every (condition, field type) of the tree, in the order given."""
        def walk(node: BoundNode) -> list:
            return [node] if isinstance(node, tuple) else [c for p in node.parts for c in walk(p)]
        return tuple(walk(self.root))

    def mask(self, columns: Columns | None) -> np.ndarray:
        """Boolean mask of the rows the filter matches."""
        if columns is None:
            raise InvalidFilterError(_first_field(self.root), "the index has no field columns: rebuild it")
        return np.asarray(self._eval(self.root, columns), dtype=bool)

    def _eval(self, node: BoundNode, columns: Columns) -> np.ndarray:
        if isinstance(node, tuple):
            cond, ftype = node
            col = columns.fields.get(cond.field)
            if col is None or col.type != ftype:
                raise InvalidFilterError(cond.field, f"the index has no {ftype} column for {cond.field!r}")
            return condition_mask(col, cond.op, cond.value, columns.count)
        parts = [self._eval(p, columns) for p in node.parts]
        if node.op == "not":
            return ~parts[0]
        return np.logical_and.reduce(parts) if node.op == "and" else np.logical_or.reduce(parts)
