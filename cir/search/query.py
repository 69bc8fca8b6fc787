"""What a query is and how it can fail: the engine's inputs, outputs and errors (no HTTP)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


class QueryError(ValueError):
    """A query the engine cannot answer; `code` names the reason."""

    code = "bad_query"


class EmptyQueryError(QueryError):
    code = "empty_query"


class AmbiguousQueryError(QueryError):
    code = "ambiguous_query"


class UnsupportedImageError(QueryError):
    code = "unsupported_image_type"


class BadImageError(QueryError):
    code = "bad_image"


class ImagePixelsError(BadImageError):
    code = "image_too_large"


class UnknownReferenceError(QueryError):
    code = "unknown_reference"


class NotReadyError(RuntimeError):
    """No index is loaded yet."""


@dataclass(frozen=True)
class IndexState:
    """One loaded index version, as every query of its lifetime sees it."""

    index: Any  # cir.index_store.LoadedIndex
    version: str
    manifest: dict
    loaded_at: float = field(default_factory=time.time)

    @property
    def count(self) -> int:
        return int(self.index.count)


@dataclass
class Query:
    """A composed query: an uploaded image or a gallery reference, and/or a modification text."""

    image_bytes: bytes | None = None
    reference_id: str | None = None
    text: str | None = None
    k: int = 10
    alpha: float | None = None
    fusion: str | None = None
    min_score: float | None = None


@dataclass
class Hit:
    id: str
    score: float
    rank: int
    item: dict


@dataclass
class SearchResult:
    hits: list[Hit]
    alpha: float
    fusion: str
    index_version: str
    text_truncated: bool
    timings_ms: dict[str, float]
