"""What a query is and how it can fail: the engine's inputs, outputs and errors (no HTTP)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from cir.filters import Filter

MAX_K = 1000  # the most results one query may ask for (HTTP and `cir search`)


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


class InvalidFilterError(QueryError):
    """A filter that cannot be parsed or does not fit the index (cir.filters); names the field and why."""

    code = "invalid_filter"

    def __init__(self, field: str | None, reason: str):
        self.field, self.reason = field, reason
        super().__init__(f"filter: field {field!r}: {reason}" if field is not None else f"filter: {reason}")


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
    filter: "Filter | None" = None  # cir.filters.parse_filter(...): only items that match are ranked


@dataclass
class Hit:
    id: str
    score: float
    rank: int
    item: dict


def image_url(item_id: str) -> str:
    """The URL of a gallery image: every character of the id that needs it percent-encoded (/, ?, #, %, newlines)."""
    return f"/images/{quote(item_id, safe='')}"


def hit_dict(hit: Hit) -> dict:
    """A hit as the HTTP API and `cir search --json` return it."""
    item = hit.item
    return {"id": hit.id, "score": hit.score, "rank": hit.rank, "image_url": image_url(hit.id),
            "width": item.get("width"), "height": item.get("height"), "metadata": item.get("metadata") or {}}


@dataclass
class SearchResult:
    hits: list[Hit]
    alpha: float
    fusion: str
    index_version: str
    text_truncated: bool
    timings_ms: dict[str, float]


def result_dict(result: SearchResult, text_max_tokens: int) -> dict:
    """A search result as the HTTP API (`POST /search`) and `cir search --json` return it."""
    warnings = [f"text truncated to the text tower's {text_max_tokens} tokens"] if result.text_truncated else []
    return {"results": [hit_dict(h) for h in result.hits], "alpha": result.alpha, "fusion": result.fusion,
            "index_version": result.index_version, "text_truncated": result.text_truncated,
            "warnings": warnings, "timings_ms": result.timings_ms}
