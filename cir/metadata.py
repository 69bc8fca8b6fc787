"""Typed gallery metadata: every manifest field gets one type at index time.

Types: `string`, `number`, `boolean`, `date` (ISO 8601 `YYYY-MM-DD`), `datetime` (ISO 8601
with a time; a field mixing dates and date-times is `datetime`, a date meaning midnight UTC),
`tags` (a list of strings) and `object` (anything else: stored and returned, never filtered).

JSONL values are typed by their JSON type; a string field whose every value is an ISO 8601
date (or date-time) is a date (datetime) field. CSV cells are all text, so a CSV column is a
boolean (`true`/`false`), number or date only when every non-empty cell parses as one, else a
string. In JSONL a field whose values have different types is an error naming the field and
the lines. The stored item metadata stays exactly as given; the typed values live in the
version's columns (cir.columns).
"""

from __future__ import annotations

import math
import re
import struct
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

STRING, NUMBER, BOOLEAN, DATE, DATETIME, TAGS, OBJECT = (
    "string", "number", "boolean", "date", "datetime", "tags", "object")
FIELD_TYPES = (STRING, NUMBER, BOOLEAN, DATE, DATETIME, TAGS, OBJECT)
TIME_TYPES = (DATE, DATETIME)
# Facet values and counts are listed in the manifest for string and tags fields up to this many.
MAX_FACET_VALUES = 1000

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)?")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_BOOLEANS = {"true": True, "false": False}


class MetadataError(ValueError):
    """A manifest field whose values cannot be given one type; names the field and the line."""

    def __init__(self, field: str, line: int | None, reason: str):
        self.field, self.line, self.reason = field, line, reason
        where = f"line {line}: " if line is not None else ""
        super().__init__(f"{where}field {field!r}: {reason}")


def parse_datetime(text: Any) -> tuple[float, bool] | None:
    """(UTC epoch seconds, has a time of day) of an ISO 8601 date or date-time string, else None.

    A date-time without an offset is read as UTC.
    """
    if not isinstance(text, str):
        return None
    has_time = _DATETIME.fullmatch(text) is not None
    if not has_time and _DATE.fullmatch(text) is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:  # e.g. month 13
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp(), has_time


def format_epoch(seconds: float, ftype: str) -> str:
    """An epoch value back as ISO 8601 text: a date for date fields, a UTC date-time otherwise."""
    value = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return value.date().isoformat() if ftype == DATE else value.isoformat().replace("+00:00", "Z")


# What a number must fit: float64 for metadata columns and filters, float32 for values the
# encoder's tensors use (image weights). The largest finite value of each.
FLOAT_MAX = {"float64": sys.float_info.max, "float32": 3.4028234663852886e38}


def check_number(value: Any, precision: str = "float64") -> float:
    """A JSON number (not a boolean) or a plain decimal string as a float `precision` can hold.

    Raises ValueError saying why otherwise: not a number, infinite or NaN, too large (an
    integer literal of 400 digits included), or a non-zero value so small it would round to 0.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("is not a number")
    text = value.strip() if isinstance(value, str) else None
    if text is not None and _NUMBER.fullmatch(text) is None:
        raise ValueError("is not a number")
    try:
        number = float(text if text is not None else value)
    except OverflowError:  # an int beyond float64
        raise ValueError(f"is too large for a {precision}") from None
    if not math.isfinite(number):
        raise ValueError(f"is too large for a {precision}" if text is not None and "inf" not in text.lower()
                         else "is not a finite number")
    if abs(number) > FLOAT_MAX[precision]:
        raise ValueError(f"is too large for a {precision}")
    if _rounds_to_zero(number, value, precision):
        raise ValueError(f"is too small for a {precision} (it would round to 0)")
    return number


def _rounds_to_zero(number: float, value: Any, precision: str) -> bool:
    if precision == "float32" and number != 0.0:
        return struct.unpack("f", struct.pack("f", number))[0] == 0.0
    # float64: a decimal string with a non-zero digit that parsed as 0 (e.g. "1e-400")
    return number == 0.0 and isinstance(value, str) and any(c in "123456789" for c in value.split("e")[0].split("E")[0])


def parse_number(value: Any, precision: str = "float64") -> float | None:
    """check_number's float, or None where it would raise."""
    try:
        return check_number(value, precision)
    except ValueError:
        return None


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, (int, float)):
        return NUMBER
    if isinstance(value, str):
        return STRING
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return TAGS
    return OBJECT


_ARTICLE = {t: ("an " if t[0] in "aeiou" else "a ") + t for t in (STRING, NUMBER, BOOLEAN, TAGS, OBJECT)}
_ARTICLE[TAGS] = "a list of strings"


@dataclass
class _Seen:
    """What one field's values looked like so far."""

    kind: str
    line: int | None
    dates: bool = True  # every string value is an ISO 8601 date or date-time
    times: bool = False  # some value has a time of day
    numbers: bool = True  # CSV: every cell is a number
    booleans: bool = True  # CSV: every cell is true/false

    def text(self, value: str) -> None:
        parsed = parse_datetime(value)
        self.dates = self.dates and parsed is not None
        self.times = self.times or bool(parsed and parsed[1])
        self.numbers = self.numbers and parse_number(value) is not None
        self.booleans = self.booleans and value.strip().lower() in _BOOLEANS


def _observe(seen: dict[str, _Seen], name: str, value: Any, line: int | None, csv: bool) -> None:
    kind = STRING if csv else _json_kind(value)
    if kind == NUMBER and parse_number(value) is None:
        raise MetadataError(name, line, f"{value!r} is not a finite number")
    old = seen.get(name)
    if old is None:
        old = seen[name] = _Seen(kind, line, numbers=csv, booleans=csv)
    elif old.kind != kind:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        first = f"line {old.line}" if old.line is not None else "an earlier item"
        raise MetadataError(name, line, f"the value {shown} is {_ARTICLE[kind]}, but {first} has "
                                        f"{_ARTICLE[old.kind]}; every value of a field must have one type")
    if kind == STRING:
        old.text(value)


def _final_type(s: _Seen) -> str:
    if s.kind != STRING:
        return s.kind
    if s.booleans:
        return BOOLEAN
    if s.numbers:
        return NUMBER
    if s.dates:
        return DATETIME if s.times else DATE
    return STRING


def infer_types(rows: Iterable[tuple[int | None, dict]], csv: bool = False) -> dict[str, str]:
    """Field name -> type over (line, metadata) rows; raises MetadataError on a type conflict.

    `csv=True` reads every value as text (a CSV manifest). A missing or null value is absent.
    """
    seen: dict[str, _Seen] = {}
    for line, metadata in rows:
        for name, value in metadata.items():
            if value is not None:
                _observe(seen, str(name), value, line, csv)
    return {name: _final_type(s) for name, s in sorted(seen.items())}


def typed_value(ftype: str, value: Any) -> Any:
    """A metadata value as its field's column value: float (numbers, epoch seconds), bool, str or tags."""
    if ftype == NUMBER:
        return parse_number(value)
    if ftype == BOOLEAN:
        return value if isinstance(value, bool) else _BOOLEANS[value.strip().lower()]
    if ftype in TIME_TYPES:
        return parse_datetime(value)[0]
    if ftype == TAGS:
        return sorted(set(value))
    return value
