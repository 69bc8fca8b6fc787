"""Response bodies of the HTTP API (they define the OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every error answer: a stable code and a human-readable detail."""

    error: str = Field(description="machine-readable error code, e.g. bad_image, unknown_reference")
    detail: str | list[Any] = Field(description="what went wrong (a list of field errors for invalid requests)")


class Hit(BaseModel):
    id: str = Field(description="gallery item id")
    score: float = Field(description="cosine similarity of the item to the composed query")
    rank: int = Field(description="1-based rank")
    image_url: str = Field(description="where to fetch the image (add ?size=N for a thumbnail)")
    width: int | None = None
    height: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict, description="metadata stored with the item")


class Timings(BaseModel):
    decode: float = Field(description="upload bytes to model-ready pixels (decode, resize, normalise)")
    encode_image: float = Field(description="image tower, including the wait for its micro-batch")
    encode_text: float = Field(description="text tower, including the wait for its micro-batch")
    fuse: float
    search: float = Field(description="index search and item lookup, including the micro-batch wait")
    total: float


class SearchResponse(BaseModel):
    results: list[Hit]
    alpha: float = Field(description="the text weight used: 0 when only the image counted (fusion image), "
                                     "1 when only the text did (fusion text)")
    fusion: str = Field(description="the fusion used: the requested one, or image/text for a one-sided query")
    index_version: str
    text_truncated: bool = Field(description="true when a text was longer than the text tower accepts")
    references: int = Field(0, description="how many reference images were merged (0 for a text-only query)")
    negative_weight: float | None = Field(None, description="the push away from the negative text(s); null "
                                                            "without one")
    warnings: list[str] = Field(default_factory=list)
    offset: int = Field(0, description="where this page starts: results[0] has rank offset + 1")
    next_offset: int | None = Field(None, description="the offset of the next page; null on the last page")
    timings_ms: Timings
    query_id: str | None = Field(None, description="send it with POST /feedback; null when the server collects "
                                                   "no feedback")


class FieldInfo(BaseModel):
    """One metadata field of the index (cir.metadata types)."""

    type: str = Field(description="string, number, boolean, date, datetime, tags, or object (not filterable)")
    count: int | None = Field(None, description="items that have the field")
    distinct: int | None = Field(None, description="string and tags fields: number of distinct values")
    values: dict[str, int] | None = Field(None, description="string and tags fields with at most 1000 distinct "
                                                            "values, and booleans: value -> item count")
    min: float | str | None = Field(None, description="numbers: smallest value; dates: earliest (ISO 8601)")
    max: float | str | None = Field(None, description="numbers: largest value; dates: latest (ISO 8601)")


class Facets(BaseModel):
    index_version: str
    count: int = Field(description="items in the index")
    fields: dict[str, FieldInfo] = Field(description="field name -> type and facets; empty when the index has no metadata")


class Info(BaseModel):
    model: str
    adapter: str | None
    fingerprint: str
    device: str
    runtime: str = Field("torch", description="encoder runtime: torch or onnx")
    dim: int
    index_version: str
    count: int
    factory: str | None
    metric: str | None
    default_alpha: float
    default_fusion: str
    max_k: int
    text_max_tokens: int
    fields: dict[str, FieldInfo] = Field(default_factory=dict, description="metadata fields (as GET /facets)")
    manifest: dict[str, Any]
    display_fields: list[str] = Field(default_factory=list, description="metadata fields the page shows under "
                                                                         "each hit (CIR_DISPLAY_FIELDS)")
    background: str | None = Field(None, description="a background job's status, e.g. the demo's TAT run "
                                                     "(CIR_STATUS_FILE); null when none")
    last_reload_error: str | None = Field(None, description="why the last reload failed (the served version stays)")


class Status(BaseModel):
    status: str
    index_version: str | None = None
    detail: str | None = None
    last_reload_error: str | None = Field(None, description="why the last reload failed (the served version stays)")


class ReloadResponse(BaseModel):
    status: str = Field(description="swapped, unchanged, failed or no_version")
    version: str | None = Field(description="the version served after the reload")
    previous: str | None
    error: str | None = None


class Collection(BaseModel):
    """One gallery served by this process."""

    name: str
    default: bool = Field(description="true for the gallery that also answers on /search, /images, /facets, /info")
    ready: bool
    index_version: str | None = None
    count: int | None = None
    fingerprint: str | None = Field(None, description="the encoder's fingerprint (galleries that share it share "
                                                      "one loaded model)")


class Collections(BaseModel):
    collections: list[Collection]
