"""What POST /search accepts: a multipart form or a JSON object, strictly checked, turned into a query.

Both carry the same fields (SearchForm and SearchJSON below are the OpenAPI contract). The
form sends images as files, `filter` as JSON text and `image_weights` as comma-separated
numbers; JSON sends images as base64 strings (a `data:` URL prefix is allowed), `filter` as an
object and `image_weights` as a list. A field the route does not know is a 422 naming it and
listing the accepted ones; any other content type is a 415. The server never fetches a URL.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Literal

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from cir.defaults import FUSIONS
from cir.filters import parse_filter
from cir.fusion import DEFAULT_NEGATIVE_WEIGHT
from cir.search import query as q
from cir.search.paging import MAX_EXCLUDE_IDS, MAX_WINDOW

JSON_TYPE, FORM_TYPE = "application/json", "multipart/form-data"
URLENCODED = "application/x-www-form-urlencoded"  # a form without files: accepted as today
MAX_ID_CHARS = 1024
LIST_FIELDS = ("image", "reference_id", "negative_text", "exclude_ids")


class SearchParams(BaseModel):
    """The fields a multipart form and a JSON body share (optional fields default to None, never null)."""

    model_config = ConfigDict(extra="forbid")
    # the counts of references and negatives are the engine's checks (their own error codes)
    reference_id: list[str] = Field(None, description=f"search from these gallery items (repeatable; up to "
                                                      f"{q.MAX_REFERENCES} references with the images)")
    text: str = Field(None, description="the modification text")
    k: int = Field(10, ge=1, le=q.MAX_K, description="results per page")
    offset: int = Field(0, ge=0, le=MAX_WINDOW - 1,
                        description=f"skip this many results (paging; offset + k <= {MAX_WINDOW})")
    alpha: float = Field(None, ge=0, le=1, allow_inf_nan=False,
                         description="text weight 0..1 (default: config, then the index manifest)")
    fusion: Literal[FUSIONS] = Field(None, description="slerp (default), linear, image or text")
    min_score: float = Field(None, ge=-1, le=1, allow_inf_nan=False, description="drop hits scoring below")
    negative_text: list[str] = Field(None, description=f"move the query away from this text (repeatable, up to "
                                                       f"{q.MAX_NEGATIVES})")
    negative_weight: float = Field(None, ge=0, le=1, allow_inf_nan=False,
                                   description=f"how far to move away from the negative text, 0..1 "
                                               f"(default {DEFAULT_NEGATIVE_WEIGHT})")
    exclude_ids: list[str] = Field(None, max_length=MAX_EXCLUDE_IDS,
                                   description=f"gallery ids never to return (up to {MAX_EXCLUDE_IDS})")
    keep_references: bool = Field(False, description="also return the query's own references (the reference_ids, "
                                                     "and gallery items whose file equals an uploaded image)")


FILTER_TEXT = 'metadata filter: {"colour": "blue", "price": {"gte": 10, "lt": 50}} (fields and values: GET /facets)'


class SearchForm(SearchParams):
    """POST /search as multipart/form-data."""

    image: list[bytes] = Field(None, description="reference image file(s) (JPEG, PNG, WebP, ...); repeatable")
    filter: str = Field(None, description=f"{FILTER_TEXT}, as JSON text")
    image_weights: str = Field(None, description="one weight per reference, comma-separated (images first)")


class SearchJSON(SearchParams):
    """POST /search as application/json."""

    image: list[str] = Field(None, description="reference image(s) as base64 (a data: URL prefix is allowed); "
                                         "never a URL: the server fetches nothing")
    filter: dict[str, Any] = Field(None, description=f"{FILTER_TEXT}, as an object")
    image_weights: list[float] = Field(None, max_length=q.MAX_REFERENCES,
                                       description="one weight per reference (images first)")


FORM_FIELDS = tuple(SearchForm.model_fields)
JSON_FIELDS = tuple(SearchJSON.model_fields)


def invalid(field: str, msg: str, kind: str = "value_error") -> RequestValidationError:
    """A 422 naming the field (the app's handler shapes the body)."""
    return RequestValidationError([{"loc": ("body", field), "msg": msg, "type": kind}])


def _check_known(keys, accepted: tuple[str, ...], how: str) -> None:
    unknown = [k for k in keys if k not in accepted]
    if unknown:
        raise RequestValidationError([{"loc": ("body", k), "type": "extra_forbidden",
                                       "msg": f"unknown field {k!r}; {how} accepts: {', '.join(accepted)}"}
                                      for k in unknown])


def _validated(model: type[BaseModel], data: dict) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                      for e in exc.errors(include_url=False, include_input=False)]) from None


def _texts(field: str, values: list[str] | None, limit: int) -> tuple[str, ...]:
    """Stripped, non-blank texts of a (repeatable) field, each at most `limit` characters."""
    texts = tuple(t for t in ((v or "").strip() for v in values or ()) if t)
    if any(len(t) > limit for t in texts):
        raise invalid(field, f"{field} is longer than {limit} characters")
    return texts


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the image is over the upload limit of {limit} bytes")


async def _read_upload(upload: UploadFile, limit: int) -> bytes:
    """Read an upload in chunks, stopping with 413 as soon as it passes the limit."""
    chunks, total = [], 0
    while chunk := await upload.read(1 << 16):
        total += len(chunk)
        if total > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _base64(values: list[str], limit: int, total_limit: int) -> tuple[bytes, ...]:
    """JSON images: base64 text -> bytes, each held to the upload limit and all of them to the total."""
    out, total = [], 0
    for i, text in enumerate(values):
        if text.startswith("data:"):
            head, _, text = text.partition(",")
            if not head.endswith(";base64"):
                raise invalid("image", f"image[{i}]: a data: URL must be base64 (data:image/png;base64,...)")
        if len(text) * 3 // 4 > limit + 3:
            raise _too_large(limit)
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise invalid("image", f"image[{i}] is not base64 text (images are sent as base64 in JSON; "
                                   "the server never fetches a URL)") from None
        if len(data) > limit:
            raise _too_large(limit)
        total += len(data)
        if total > total_limit:
            raise HTTPException(413, f"the images are over the total limit of {total_limit} bytes")
        if data:
            out.append(data)
    return tuple(out)


def _query(p: SearchParams, images: tuple[bytes, ...], weights, flt, max_text: int) -> q.Query:
    refs = tuple(r for r in p.reference_id or () if r)
    if any(len(r) > MAX_ID_CHARS for r in refs):
        raise invalid("reference_id", f"a reference_id is longer than {MAX_ID_CHARS} characters")
    if any(len(r) > MAX_ID_CHARS for r in p.exclude_ids or ()):
        raise invalid("exclude_ids", f"an id is longer than {MAX_ID_CHARS} characters")
    q.check_page(p.offset, p.k)
    return q.Query(images=images, reference_ids=refs, text=next(iter(_texts("text", [p.text], max_text)), None),
                   k=p.k, offset=p.offset, alpha=p.alpha, fusion=p.fusion, min_score=p.min_score,
                   image_weights=weights, negative_texts=_texts("negative_text", p.negative_text, max_text),
                   negative_weight=p.negative_weight, filter=flt, exclude_ids=tuple(p.exclude_ids or ()),
                   keep_references=p.keep_references)


async def _from_json(request: Request, settings) -> q.Query:
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError) as exc:
        raise invalid("body", f"not valid JSON: {exc}", "json_invalid") from None
    if not isinstance(body, dict):
        raise invalid("body", "the body is a JSON object of search fields", "model_attributes_type")
    _check_known(body, JSON_FIELDS, "a JSON search")
    p = _validated(SearchJSON, body)
    q.check_reference_count(len(p.image or ()) + len(p.reference_id or ()))
    images = _base64(p.image or [], settings.max_upload_bytes, settings.max_total_upload_bytes)
    weights = q.weights_of(p.image_weights) if p.image_weights is not None else None
    return _query(p, images, weights, parse_filter(p.filter), settings.max_text_chars)


def _form_fields(form) -> tuple[dict, list]:
    """The form's fields as a dict (lists for repeatable ones, the last value otherwise) and its files."""
    _check_known(form.keys(), FORM_FIELDS, "a multipart search")
    data: dict[str, Any] = {}
    for key in form.keys():
        values = [v for v in form.getlist(key) if not (isinstance(v, str) and v == "")]  # empty means not given
        if key == "image":
            if any(isinstance(v, str) for v in values):
                raise invalid("image", "image must be a file upload (multipart/form-data with a filename)")
            continue
        if key == "image_weights" and len(values) > 1:
            raise invalid("image_weights", "give image_weights once, as comma-separated numbers (e.g. 2,1,1)")
        if any(not isinstance(v, str) for v in values):
            raise invalid(key, f"{key} must be a text field, not a file")
        if values:
            data[key] = values if key in LIST_FIELDS else values[-1]
    return data, [v for v in form.getlist("image") if not isinstance(v, str)]


async def _from_form(request: Request, settings) -> q.Query:
    async with request.form(max_files=64, max_fields=4 * MAX_EXCLUDE_IDS) as form:
        data, uploads = _form_fields(form)
        p = _validated(SearchForm, data)
        q.check_reference_count(len(uploads) + len(p.reference_id or ()))  # before reading any upload
        datas = [await _read_upload(u, settings.max_upload_bytes) for u in uploads]
    weights = q.parse_weights(p.image_weights) if p.image_weights else None
    return _query(p, tuple(d for d in datas if d), weights, parse_filter(p.filter), settings.max_text_chars)


async def read_query(request: Request, settings) -> q.Query:
    """The query of a POST /search request: multipart form or JSON (415 for anything else)."""
    ctype = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if ctype == JSON_TYPE:
        return await _from_json(request, settings)
    if ctype in (FORM_TYPE, URLENCODED) or (not ctype and not await request.body()):
        return await _from_form(request, settings)  # no body at all: an empty form (422: nothing to search)
    raise HTTPException(415, f"send the search as {FORM_TYPE} or {JSON_TYPE} (got {ctype or 'no content type'})")


def request_body_schema() -> dict:
    """The OpenAPI requestBody of the search routes (the models are added to the components).

    `required` stays false: an empty body is answered (422, nothing to search), and a required body
    with two content types trips openapi-python-client <= 0.29 (its issue 1451: `Unset` not imported).
    """
    return {"required": False, "content": {
        FORM_TYPE: {"schema": {"$ref": "#/components/schemas/SearchForm"}},
        JSON_TYPE: {"schema": {"$ref": "#/components/schemas/SearchJSON"}}}}
