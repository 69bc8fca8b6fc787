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


class StoreUnavailableError(StoreError):
    """The store's server cannot be reached or timed out: transient, retried (HTTP 503)."""
