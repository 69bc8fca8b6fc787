"""Our filter language (cir.filters) as Milvus boolean expressions, values escaped, never pasted in.

A gallery field never reaches Milvus by its own name: every typed field is stored under a
generated name (`f0000`, `f0001`, ...; `h0000` is its "present" flag, since Milvus 2.3 has no
NULL) and the collection's manifest keeps the mapping. Field names in an expression therefore
come only from that mapping, and values only from `literal`, which writes a string as a
double-quoted literal with every quote, backslash and control character escaped (the Go
`strconv.Unquote` rules the Milvus parser follows) and a number as a finite decimal.

One condition becomes one parenthesised clause (`CLAUSES` maps an operator to its writer); the
filter's and / or / not tree becomes the same tree of Milvus `and`, `or` and `not`. A missing
field matches no comparison, `ne` and `nin` included, exactly as the FAISS root's column masks.
"""

from __future__ import annotations

import json
import math
from typing import Any
from collections.abc import Callable

from cir.metadata import BOOLEAN, NUMBER, OBJECT, STRING, TAGS, TIME_TYPES
from cir.search.query import InvalidFilterError

COMPARE = {"eq": "==", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def literal(value: Any) -> str:
    """A Python value as a Milvus expression literal: string, bool, finite number, or a list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # JSON's escapes (\" \\ \n \uXXXX) are a subset of what Milvus's parser unquotes; a lone
        # surrogate cannot be stored anyway, so it is refused rather than escaped.
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidFilterError(None, "a filter value is not valid Unicode text") from None
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (int, float)):
        number = float(value)
        if not math.isfinite(number):
            raise InvalidFilterError(None, f"{value} is not a finite number")
        return repr(number)  # shortest round-trip decimal: 0.1, 1e-05, 1e+20
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    raise InvalidFilterError(None, f"a filter value of type {type(value).__name__} cannot be sent to Milvus")


def _present(column: str, flag: str | None, body: str) -> str:
    # Milvus stores a default in an absent field: the presence flag keeps "absent never matches".
    return f"({flag} == true and {body})" if flag else f"({body})"


def _compare(column: str, flag: str | None, op: str, value: Any, ftype: str) -> str:
    return _present(column, flag, f"{column} {COMPARE[op]} {literal(value)}")


def _one_of(column: str, flag: str | None, op: str, value: Any, ftype: str) -> str:
    return _present(column, flag, f"{column} in {literal(list(value))}")


def _tags(column: str, flag: str | None, op: str, value: Any, ftype: str) -> str:
    if op == "eq":
        return f"(array_contains({column}, {literal(value)}))"
    function = {"any": "array_contains_any", "all": "array_contains_all"}[op]
    return f"({function}({column}, {literal(list(value))}))"


def _not_one_of(column: str, flag: str | None, op: str, value: Any, ftype: str) -> str:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    return _present(column, flag, f"{column} not in {literal(values)}")


def _tags_none_of(column: str, flag: str | None, op: str, value: Any, ftype: str) -> str:
    # like the column masks: an item without tags has no tags field, and nin never matches a missing field
    return _present(column, flag, f"not array_contains_any({column}, {literal(list(value))})")


def _exists(column: str, flag: str | None, op: str, value: Any, ftype: str) -> str:
    if not flag:
        raise InvalidFilterError(None, "this collection was built without presence flags: rebuild it")
    return f"({flag} == {literal(bool(value))})"  # a tags field is present with at least one tag


Writer = Callable[[str, str | None, str, Any, str], str]
CLAUSES: dict[str, Writer] = {**{op: _compare for op in COMPARE}, "in": _one_of, "nin": _not_one_of,
                              "exists": _exists}
TAG_CLAUSES: dict[str, Writer] = {"eq": _tags, "any": _tags, "all": _tags, "nin": _tags_none_of, "exists": _exists}
OBJECT_CLAUSES: dict[str, Writer] = {"exists": _exists}


def _clause(node: tuple, columns: dict[str, dict]) -> str:
    cond, ftype = node
    info = columns.get(cond.field)
    if info is None or info.get("type") != ftype:
        raise InvalidFilterError(cond.field, f"the collection has no {ftype} field for {cond.field!r}")
    writers = TAG_CLAUSES if ftype == TAGS else OBJECT_CLAUSES if ftype == OBJECT else CLAUSES
    if ftype not in (STRING, NUMBER, BOOLEAN, TAGS, OBJECT, *TIME_TYPES) or cond.op not in writers:
        raise InvalidFilterError(cond.field, f"operator {cond.op!r} on a {ftype} field has no Milvus form")
    return writers[cond.op](info["field"], info.get("flag"), cond.op, cond.value, ftype)


def _node(node, columns: dict[str, dict]) -> str:
    if isinstance(node, tuple):  # (Condition, field type): a leaf
        return _clause(node, columns)
    parts = [_node(p, columns) for p in node.parts]
    if node.op == "not":
        return f"(not {parts[0]})"
    return parts[0] if len(parts) == 1 else "(" + f" {node.op} ".join(parts) + ")"


def to_expression(bound, columns: dict[str, dict]) -> str:
    """The Milvus expression of a BoundFilter (its and / or / not tree); `columns` maps a field to
    {"field", "flag", "type"}."""
    root = bound.root
    if not isinstance(root, tuple) and root.op == "and":  # the top level needs no parentheses
        return " and ".join(_node(p, columns) for p in root.parts)
    return _node(root, columns)
