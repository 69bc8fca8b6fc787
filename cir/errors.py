"""How errors are shown to users (HTTP details, logs, the indexer's report.json): one helper."""

from __future__ import annotations

import re

# `<_io.BytesIO object at 0x7f...>`: a heap address means nothing to a user and leaks memory layout.
_OBJECT_REPR = re.compile(r"\s*<([\w.]+)(?: object)? at 0x[0-9a-fA-F]+>")


def error_text(exc: BaseException, with_type: bool = True) -> str:
    """'ClassName: message' (or the message alone), with object reprs and heap addresses removed."""
    message = _OBJECT_REPR.sub("", str(exc)).strip() or "no details"
    return f"{type(exc).__name__}: {message}" if with_type else message


class StoreError(RuntimeError):
    """A gallery store is missing, unreachable, incomplete or inconsistent (cir.stores)."""


class ReadOnlyStoreError(StoreError):
    """The store (or this process's handle on it) does not take writes."""


# An absolute POSIX path of two or more segments (not part of a URL or of a longer word).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~>-])/(?:[^\s'\"/:,;()<>]+/)+[^\s'\",;:()<>]*")


def safe_text(text: str) -> str:
    """Text that encodes as UTF-8: a lone surrogate (from a JSON "\\ud800" escape) becomes its escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def redact_paths(text: str, known: dict[str, str] | None = None) -> str:
    """Text without server paths: each `known` path (as given or resolved) becomes its label, any
    other absolute path its last component."""
    for path, label in sorted((known or {}).items(), key=lambda kv: -len(kv[0])):
        if path and path.strip("./"):  # as a path only: "index" in "the index has" stays
            text = re.sub(rf"(?<![\w./~-]){re.escape(path.rstrip('/'))}(?=/|['\"]|$)", label, text)
    return _ABSOLUTE_PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1] or "/", text)


def public_detail(detail, known: dict[str, str] | None = None):
    """An error detail (text, or lists and dicts of them) safe to render and free of server paths."""
    if isinstance(detail, str):
        return redact_paths(safe_text(detail), known)
    if isinstance(detail, dict):
        return {public_detail(str(k), known): public_detail(v, known) for k, v in detail.items()}
    if isinstance(detail, (list, tuple)):
        return [public_detail(v, known) for v in detail]
    return detail


class QueryError(ValueError):
    """A query the search engine cannot answer; `code` names the reason (cir.search.query's errors subclass it)."""

    code = "bad_query"


class InvalidFilterError(QueryError):
    """A filter that cannot be parsed or does not fit the index (cir.filters); names the field and why."""

    code = "invalid_filter"

    def __init__(self, field: str | None, reason: str):
        self.field, self.reason = field, reason
        super().__init__(f"filter: field {field!r}: {reason}" if field is not None else f"filter: {reason}")


class OutputError(StoreError):
    """An index root cannot be written (unwritable, locked, inconsistent, full)."""
