"""Checks on live writes before they are logged: ids, metadata size and shape, and field types.

A written value must fit its field's type (the version's `fields`, or the type a live write gave a
new field first), read as cir.metadata reads a manifest: numbers (or numeric text in fields that
came from CSV), true/false, ISO 8601 dates or date-times, strings, lists of strings. A value of
another type is refused naming the field; nothing is logged. A new field takes the JSON type of
its first value (cir.metadata.infer_types).
"""

from __future__ import annotations

import json
import math
from typing import Any

from cir.metadata import (BOOLEAN, DATE, DATETIME, NUMBER, OBJECT, STRING, TAGS, MetadataError, infer_types,
                          parse_datetime, parse_number)

MAX_ID_CHARS = 512
MAX_METADATA_BYTES = 64 * 1024


class WriteRejected(ValueError):
    """An operation that cannot be applied: `status` is 'invalid' or 'not_found'; `field` names the culprit."""

    def __init__(self, message: str, status: str = "invalid", field: str | None = None):
        super().__init__(message)
        self.status, self.field = status, field


def check_id(item_id: Any) -> str:
    """The id itself, or WriteRejected: empty, too long, not text (a lone surrogate), or with control characters."""
    if not isinstance(item_id, str) or not item_id:
        raise WriteRejected("an item id must be a non-empty string", field="id")
    if len(item_id) > MAX_ID_CHARS:
        raise WriteRejected(f"an item id is at most {MAX_ID_CHARS} characters, got {len(item_id)}", field="id")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in item_id):
        raise WriteRejected("an item id must not contain control characters", field="id")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in item_id):  # from a JSON "\ud800": cannot be stored as UTF-8
        raise WriteRejected("an item id must be valid Unicode text (it holds a lone surrogate)", field="id")
    return item_id


def check_metadata(metadata: Any) -> dict:
    """The metadata dict, or WriteRejected: not an object, not plain JSON, or over MAX_METADATA_BYTES."""
    if not isinstance(metadata, dict):
        raise WriteRejected(f"metadata must be a JSON object, got {type(metadata).__name__}", field="metadata")
    try:
        size = len(json.dumps(metadata, allow_nan=False, ensure_ascii=False).encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise WriteRejected(f"metadata is not plain JSON: {exc}", field="metadata") from None
    if size > MAX_METADATA_BYTES:
        raise WriteRejected(f"metadata is {size} bytes, over the limit of {MAX_METADATA_BYTES}", field="metadata")
    return metadata


def merge_patch(old: dict, patch: dict) -> dict:
    """JSON merge patch of top-level fields: the fields given replace, a null removes."""
    out = dict(old)
    for name, value in patch.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def _fits(ftype: str, value: Any) -> bool:
    if ftype == NUMBER:
        return parse_number(value) is not None
    if ftype == BOOLEAN:
        return isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in ("true", "false"))
    if ftype in (DATE, DATETIME):
        parsed = parse_datetime(value)
        return parsed is not None and (ftype == DATETIME or not parsed[1])
    if ftype == STRING:
        return isinstance(value, str)
    if ftype == TAGS:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return ftype == OBJECT


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def check_types(metadata: dict, types: dict[str, str]) -> dict[str, str]:
    """New fields' types (name -> type); WriteRejected naming the field whose value does not fit its type."""
    new: dict[str, str] = {}
    for name, value in metadata.items():
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise WriteRejected(f"field {name!r}: {value} is not a finite number", field=name)
        ftype = types.get(name)
        if ftype is None:
            try:
                new.update(infer_types([(None, {name: value})]))
            except MetadataError as exc:
                raise WriteRejected(str(exc), field=name) from None
        elif not _fits(ftype, value):
            raise WriteRejected(f"field {name!r} holds {ftype} values; {_shown(value)} is not one", field=name)
    return new
