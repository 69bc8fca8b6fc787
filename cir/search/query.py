"""What a query is and how it can fail: the engine's inputs, outputs and errors (no HTTP)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import numpy as np

from cir.errors import InvalidFilterError, QueryError  # noqa: F401 - InvalidFilterError: the engine's errors in one place
from cir.filters import Filter
from cir.fusion import DEFAULT_NEGATIVE_WEIGHT, check_weights
from cir.metadata import check_number
from cir.search.paging import MAX_EXCLUDE_IDS, MAX_WINDOW

MAX_K = 1000  # the most results one query may ask for (HTTP and `cir search`)
MAX_REFERENCES = 8  # reference images (uploads and gallery ids together) one query may merge
MAX_NEGATIVES = 8  # negative texts one query may give


class EmptyQueryError(QueryError):
    code = "empty_query"


class TooManyReferencesError(QueryError):
    code = "too_many_references"


class ImageWeightsError(QueryError):
    code = "invalid_image_weights"


class NegativeTextError(QueryError):
    code = "invalid_negative_text"


class NegativeWeightError(QueryError):
    code = "invalid_negative_weight"


class UnsupportedImageError(QueryError):
    code = "unsupported_image_type"


class BadImageError(QueryError):
    code = "bad_image"


class ImagePixelsError(BadImageError):
    code = "image_too_large"


class PagingError(QueryError):
    code = "invalid_paging"


class UnknownReferenceError(QueryError):
    code = "unknown_reference"


class NotReadyError(RuntimeError):
    """No index is loaded yet."""


@dataclass(frozen=True)
class IndexState:
    """One loaded index version, as every query of its lifetime sees it."""

    index: Any  # a cir.stores.GalleryView (for the FAISS root: cir.index_store.LoadedIndex)
    version: str
    manifest: dict
    loaded_at: float = field(default_factory=time.time)

    @classmethod
    def of(cls, index) -> IndexState:
        """The state of an open view (cir.stores.GalleryView) with its own version and manifest."""
        return cls(index=index, version=index.version, manifest=index.manifest)

    @property
    def count(self) -> int:
        return int(self.index.count)


@dataclass(frozen=True)
class Plan:
    """What one query will do: its index state, fusion and text weight, filter, and the inputs to encode."""

    state: IndexState
    fusion: str
    alpha: float
    bound: object  # the query's filter bound to this version (cir.filters), or None
    uploads: tuple[bytes, ...]  # images to decode and encode
    gallery_ids: tuple[str, ...]  # stored image embeddings to read
    text: str | None  # the modification text, when the fusion uses it
    negatives: tuple[str, ...]
    exclude: frozenset[str] = frozenset()  # ids left out of the results (exclude_ids, gallery references)

    @property
    def texts(self) -> tuple[str, ...]:
        """Every text to encode: the modification text first, then the negatives."""
        return ((self.text,) if self.text is not None else ()) + self.negatives


@dataclass
class Query:
    """A composed query: reference images (uploads and/or gallery ids) and/or a modification text,
    optionally pushed away from negative texts.

    `image_bytes` and `reference_id` are one upload and one gallery id; `images` and
    `reference_ids` add more. Several references are merged by their weighted spherical mean, in
    the order uploads first, then gallery ids (`image_weights` follows that order; default equal).
    Several negative texts are merged by their spherical mean and applied as one push of
    `negative_weight` (beta, default cir.fusion.DEFAULT_NEGATIVE_WEIGHT).
    """

    image_bytes: bytes | None = None
    reference_id: str | None = None
    text: str | None = None
    k: int = 10
    alpha: float | None = None
    fusion: str | None = None
    min_score: float | None = None
    filter: "Filter | None" = None  # cir.filters.parse_filter(...): only items that match are ranked
    images: tuple[bytes, ...] = ()
    reference_ids: tuple[str, ...] = ()
    image_weights: tuple[float, ...] | None = None
    negative_texts: tuple[str, ...] = ()
    negative_weight: float | None = None
    offset: int = 0  # the page: results offset+1 .. offset+k of the query's fixed sequence (cir.search.paging)
    exclude_ids: tuple[str, ...] = ()  # gallery ids never returned
    keep_references: bool = False  # False: the query's own references (and gallery copies of uploads) are left out

    @property
    def uploads(self) -> tuple[bytes, ...]:
        """Every uploaded reference image, in order."""
        return ((self.image_bytes,) if self.image_bytes is not None else ()) + tuple(self.images)

    @property
    def gallery_ids(self) -> tuple[str, ...]:
        """Every gallery reference id, in order (after the uploads)."""
        return ((self.reference_id,) if self.reference_id is not None else ()) + tuple(self.reference_ids)

    @property
    def beta(self) -> float:
        """The negative weight used."""
        return DEFAULT_NEGATIVE_WEIGHT if self.negative_weight is None else float(self.negative_weight)

    def check(self) -> None:
        """Raise the QueryError that names the first bad part (before anything is decoded or encoded)."""
        n = len(self.uploads) + len(self.gallery_ids)
        check_reference_count(n)
        if n == 0 and not self.text:
            if self.negative_texts:
                raise NegativeTextError("negative_text: a negative text needs a query to move (an image, a "
                                        "reference_id or a text)")
            raise EmptyQueryError("a query needs an image, a reference_id or a text")
        if self.image_weights is not None:
            if len(self.image_weights) != n:
                raise ImageWeightsError(f"image_weights: {len(self.image_weights)} weights for {n} references "
                                        "(uploaded images first, then reference_ids)")
            try:  # checked as the encoder uses them: float32
                weights = [check_number(w, "float32") for w in self.image_weights]
                check_weights(np.asarray(weights, dtype=np.float64), n)
            except ValueError as exc:
                raise ImageWeightsError(f"image_weights: {exc}") from None
        if len(self.negative_texts) > MAX_NEGATIVES or not all(t and t.strip() for t in self.negative_texts):
            raise NegativeTextError(f"negative_text: give 1 to {MAX_NEGATIVES} non-empty texts")
        if not (math.isfinite(self.beta) and 0.0 <= self.beta <= 1.0):
            raise NegativeWeightError(f"negative_weight must be in [0, 1], got {self.negative_weight}")
        check_page(self.offset, self.k, len(self.exclude_ids))


def parse_weights(text: str) -> tuple[float, ...]:
    """Image weights as HTTP and `cir search` take them: "2,1,0.5" -> (2.0, 1.0, 0.5)."""
    return weights_of(text.split(","))


def weights_of(values) -> tuple[float, ...]:
    """Image weights (numbers or number strings) checked on the one numeric path, in the encoder's float32."""
    weights = []
    for n, part in enumerate(values, 1):
        try:  # the one numeric parsing path (cir.metadata), in the encoder's precision
            weights.append(check_number(part, "float32"))
        except ValueError as exc:
            shown = str(part).strip() if len(str(part).strip()) <= 40 else str(part).strip()[:37] + "..."
            raise ImageWeightsError(f"image_weights: not comma-separated numbers: weight {n} ({shown!r}) {exc} "
                                    "(e.g. 2,1,1)") from None
    return tuple(weights)


def check_page(offset: int, k: int, excluded: int = 0) -> None:
    """PagingError unless 1 <= k <= MAX_K, offset >= 0, offset + k <= MAX_WINDOW and the exclusions fit."""
    if not 1 <= k <= MAX_K:
        raise PagingError(f"k must be 1 to {MAX_K}, got {k}")
    if offset < 0 or offset + k > MAX_WINDOW:
        raise PagingError(f"offset + k must be at most {MAX_WINDOW} (offset >= 0), got offset {offset} and k {k}")
    if excluded > MAX_EXCLUDE_IDS:
        raise PagingError(f"exclude_ids: {excluded} ids; a query excludes at most {MAX_EXCLUDE_IDS}")


def check_reference_count(n: int) -> None:
    """TooManyReferencesError when a query brings more than MAX_REFERENCES references."""
    if n > MAX_REFERENCES:
        raise TooManyReferencesError(f"image/reference_id: {n} references; a query merges at most {MAX_REFERENCES}")


@dataclass
class Hit:
    id: str
    score: float
    rank: int
    item: dict


def image_url(item_id: str, base: str = "/images") -> str:
    """The URL of a gallery image: every character of the id that needs it percent-encoded (/, ?, #, %, newlines)."""
    return f"{base}/{quote(item_id, safe='')}"


def hit_dict(hit: Hit, image_base: str = "/images") -> dict:
    """A hit as the HTTP API and `cir search --json` return it."""
    item = hit.item
    return {"id": hit.id, "score": hit.score, "rank": hit.rank, "image_url": image_url(hit.id, image_base),
            "width": item.get("width"), "height": item.get("height"), "metadata": item.get("metadata") or {}}


@dataclass
class SearchResult:
    hits: list[Hit]
    alpha: float
    fusion: str
    index_version: str
    text_truncated: bool
    timings_ms: dict[str, float]
    references: int = 0  # how many reference images were merged
    negative_weight: float | None = None  # the push used; None without negative texts
    vector: np.ndarray | None = field(default=None, repr=False)  # the composed query that was ranked
    warnings: list[str] = field(default_factory=list)  # e.g. a filter value no item has (cir.filter_hints)
    offset: int = 0  # where this page starts in the query's sequence
    next_offset: int | None = None  # the next page's offset; None on the last page


def result_dict(result: SearchResult, text_max_tokens: int, image_base: str = "/images") -> dict:
    """A search result as the HTTP API (`POST /search`) and `cir search --json` return it."""
    warnings = [f"text truncated to the text tower's {text_max_tokens} tokens"] if result.text_truncated else []
    warnings += result.warnings
    return {"results": [hit_dict(h, image_base) for h in result.hits], "alpha": result.alpha, "fusion": result.fusion,
            "index_version": result.index_version, "text_truncated": result.text_truncated,
            "references": result.references, "negative_weight": result.negative_weight,
            "warnings": warnings, "offset": result.offset, "next_offset": result.next_offset,
            "timings_ms": result.timings_ms}


# The text weight of the one-sided fusions (what `alpha` reports for them).
ONE_SIDED_ALPHA = {"image": 0.0, "text": 1.0}


def effective_fusion(q: Query, fusion: str) -> tuple[str, bool, bool]:
    """The fusion a query runs and whether it needs the image and the text (a one-sided query uses its side)."""
    if not q.text:
        return "image", True, False
    if not (q.uploads or q.gallery_ids):
        return "text", False, True
    return fusion, fusion != "text", fusion != "image"
