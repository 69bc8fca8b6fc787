"""HTTP routes: search, gallery images, health, info, metrics, admin reload and the web page."""

from __future__ import annotations

import asyncio
import hmac
import mimetypes
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.convertors import Convertor, register_url_convertor

from cir.filters import parse_filter
from cir.fusion import DEFAULT_NEGATIVE_WEIGHT, FUSIONS
from cir.images import FORMATS_TEXT, ImageDecodeError
from cir.runtimes import DEFAULT_RUNTIME
from cir.search import engine as eng
from cir.search import query as q
from service import feedback, schemas
from service.swap import IndexManager
from service.thumbs import thumb_size

STATIC_DIR = Path(__file__).parent / "static"
ERRORS = {code: {"model": schemas.ErrorBody} for code in (400, 404, 413, 415, 422, 503)}

router = APIRouter()
_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the service's API key")
_bearer = HTTPBearer(auto_error=False, description="the service's API key as a bearer token")


def manager_of(request: Request) -> IndexManager:
    """The app's index manager (set by the lifespan)."""
    return request.app.state.manager


def ready_engine(request: Request) -> eng.SearchEngine:
    """The engine, or 503 while no model and index are loaded."""
    manager = manager_of(request)
    if not manager.ready:
        raise q.NotReadyError(manager.last_error or "the model and index are not loaded yet")
    return manager.engine


def require_api_key(request: Request, key: str | None = Depends(_key_header),
                    bearer: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    """401 unless the request carries the configured API key (compared in constant time)."""
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    given = key or (bearer.credentials if bearer else "")
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise HTTPException(401, "missing or wrong API key", headers={"WWW-Authenticate": "Bearer"})


def _invalid(field: str, msg: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", field), "msg": msg, "type": "value_error"}])


async def _read_upload(upload: UploadFile, limit: int) -> bytes:
    """Read an upload in chunks, stopping with 413 as soon as it passes the limit."""
    chunks, total = [], 0
    while chunk := await upload.read(1 << 16):
        total += len(chunk)
        if total > limit:
            raise HTTPException(413, f"the image is over the upload limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


SEARCH_DESCRIPTION = f"""Give at least one of `image`, `reference_id` or `text`; everything else is optional.

- `image` (files) and `reference_id` (gallery ids) may each be repeated: up to {q.MAX_REFERENCES} references in
  all, merged by their weighted spherical mean; the query is the Slerp of that mean and the text.
  Each image is held to the upload and decompression limits, all of them together to the total
  request limit.
- `image_weights`: one field of comma-separated numbers (`2,1,1`), one per reference in the order
  images first, then reference ids; >= 0, not all 0; default equal.
- `negative_text` (repeatable, up to {q.MAX_NEGATIVES}): what the result should not be. The query is moved away
  from it along their great circle by `negative_weight` (beta in [0, 1], default
  {DEFAULT_NEGATIVE_WEIGHT}) times their arc; several negatives are merged by their spherical mean
  first. It needs an image, a reference or a text to move.

Bad input is 422 with a JSON body whose `error` and `detail` name the field."""


def _weights(values: list[str] | None) -> tuple[float, ...] | None:
    """image_weights: one comma-separated field -> floats (422 naming the field otherwise)."""
    if not values:
        return None
    if len(values) > 1:
        raise _invalid("image_weights", "give image_weights once, as comma-separated numbers (e.g. 2,1,1)")
    return q.parse_weights(values[0])


def _texts(field: str, values: list[str] | None, limit: int) -> tuple[str, ...]:
    """Stripped, non-blank texts of a (repeatable) form field, each at most `limit` characters."""
    texts = tuple(t for t in ((v or "").strip() for v in values or ()) if t)
    if any(len(t) > limit for t in texts):
        raise _invalid(field, f"{field} is longer than {limit} characters")
    return texts


async def _read_uploads(uploads: list[UploadFile] | None, limit: int) -> tuple[bytes, ...]:
    """Every non-empty uploaded image, each held to the per-image limit."""
    datas = [await _read_upload(u, limit) for u in uploads or ()]
    return tuple(d for d in datas if d)


@router.post("/search", response_model=schemas.SearchResponse, responses=ERRORS, tags=["search"],
             summary="Composed image retrieval: reference images (uploads or gallery ids) modified by a text",
             description=SEARCH_DESCRIPTION)
async def search(
    # Optional fields are annotated without `| None` so the OpenAPI schema says "optional
    # string/number" rather than "string or null", which multipart clients cannot send.
    request: Request,
    image: list[UploadFile] = File(None, description=f"reference image(s): {FORMATS_TEXT}; repeatable"),
    reference_id: list[str] = Form(None, description="search from this gallery item (repeatable)"),
    text: str = Form(None, description="the modification text"),
    k: int = Form(10, ge=1, le=q.MAX_K, description="number of results"),
    alpha: float = Form(None, ge=0, le=1, allow_inf_nan=False,
                        description="text weight 0..1 (default: config, then the index manifest)"),
    fusion: Literal[FUSIONS] = Form(None, description="slerp (default), linear, image or text"),
    min_score: float = Form(None, ge=-1, le=1, allow_inf_nan=False, description="drop hits scoring below"),
    filter: str = Form(None, description='metadata filter, JSON: {"colour": "blue", "price": {"gte": 10, "lt": 50}} '
                                         "(fields and values: GET /facets)"),
    image_weights: list[str] = Form(None, description="one weight per reference, comma-separated (images first)"),
    negative_text: list[str] = Form(None, description="move the query away from this text (repeatable)"),
    negative_weight: float = Form(None, ge=0, le=1, allow_inf_nan=False,
                                  description=f"how far to move away from the negative text, 0..1 "
                                              f"(default {DEFAULT_NEGATIVE_WEIGHT})"),
) -> schemas.SearchResponse:
    settings = request.app.state.settings
    engine = ready_engine(request)
    refs = tuple(r for r in reference_id or () if r)
    if any(len(r) > 1024 for r in refs):
        raise _invalid("reference_id", "a reference_id is longer than 1024 characters")
    q.check_reference_count(len(image or ()) + len(refs))  # before reading any upload
    text = next(iter(_texts("text", [text], settings.max_text_chars)), None)
    query = q.Query(images=await _read_uploads(image, settings.max_upload_bytes), reference_ids=refs, text=text,
                    k=k, alpha=alpha, fusion=fusion, min_score=min_score, image_weights=_weights(image_weights),
                    negative_texts=_texts("negative_text", negative_text, settings.max_text_chars),
                    negative_weight=negative_weight, filter=parse_filter(filter))
    result = await engine.search(query)
    request.app.state.metrics.observe_search(result.timings_ms, result.text_truncated)
    query_id = await feedback.record_search(request, query, result)
    return schemas.SearchResponse(**q.result_dict(result, engine.encoder.text_max_length), query_id=query_id)


class _AnyPath(Convertor):
    """Like Starlette's `path`, but across newlines too: a gallery id may hold any character."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anypath", _AnyPath())


@router.get("/images/{item_id:anypath}", tags=["gallery"], response_class=FileResponse,
            responses={200: {"content": {"image/*": {}}}, 404: {"model": schemas.ErrorBody},
                       422: {"model": schemas.ErrorBody}, 503: {"model": schemas.ErrorBody}},
            summary="A gallery image by id (resolved through the index's items table only)")
async def gallery_image(request: Request, item_id: str,
                        size: int | None = Query(None, ge=16, le=1024,
                                                 description="thumbnail: longest side at least this many pixels "
                                                             "(rounded up to 64, 128, 256, 512 or 1024)")):
    state = ready_engine(request).state
    item = await asyncio.to_thread(state.index.item, item_id)
    if not item or not Path(item.get("path", "")).is_file():
        raise HTTPException(404, f"no gallery image with id {item_id!r} in index {state.version}")
    headers = {"Cache-Control": "public, max-age=300"}
    if item.get("sha256"):
        headers["ETag"] = f'"{item["sha256"]}"'
    if size is None or max(item.get("width") or 0, item.get("height") or 0) <= thumb_size(size):
        # already small enough: the original is the thumbnail
        media = mimetypes.guess_type(item["path"])[0] or "application/octet-stream"
        return FileResponse(item["path"], media_type=media, headers=headers)
    try:
        thumb = await asyncio.to_thread(request.app.state.thumbs.get, item, size)
    except ImageDecodeError as exc:
        raise HTTPException(404, f"gallery image {item_id!r} cannot be read: {exc}") from exc
    return Response(thumb, media_type="image/jpeg", headers=headers)


@router.get("/healthz", response_model=schemas.Status, tags=["ops"], summary="Liveness: the process answers")
async def healthz(request: Request) -> schemas.Status:
    manager = manager_of(request)
    return schemas.Status(status="ok", index_version=manager.engine.state.version if manager.ready else None)


@router.get("/readyz", response_model=schemas.Status, tags=["ops"], responses={503: {"model": schemas.Status}},
            summary="Readiness: 200 only when the model and an index are loaded")
async def readyz(request: Request):
    manager = manager_of(request)
    if manager.ready:
        return schemas.Status(status="ready", index_version=manager.engine.state.version,
                              last_reload_error=manager.last_error)
    body = schemas.Status(status="not_ready", detail=manager.last_error or "model and index not loaded yet",
                          last_reload_error=manager.last_error)
    return JSONResponse(body.model_dump(), status_code=503)


@router.get("/info", response_model=schemas.Info, tags=["ops"], responses={503: {"model": schemas.ErrorBody}},
            summary="The served model and index")
async def info(request: Request) -> schemas.Info:
    engine = ready_engine(request)
    state, enc = engine.state, engine.encoder
    m = state.manifest
    return schemas.Info(model=enc.name, adapter=enc.adapter, fingerprint=enc.fingerprint, device=str(enc.device),
                        runtime=enc.info().get("runtime", DEFAULT_RUNTIME), dim=enc.dim, index_version=state.version, count=state.count, factory=m.get("factory"),
                        metric=m.get("metric"), default_alpha=engine.alpha_for(state),
                        default_fusion=engine.default_fusion, max_k=q.MAX_K, text_max_tokens=enc.text_max_length,
                        fields=m.get("fields") or {}, manifest=m, last_reload_error=manager_of(request).last_error)


@router.get("/facets", response_model=schemas.Facets, tags=["search"], responses={503: {"model": schemas.ErrorBody}},
            summary="The metadata fields a filter can use: types, facet values with counts, min and max")
async def facets(request: Request) -> schemas.Facets:
    state = ready_engine(request).state
    return schemas.Facets(index_version=state.version, count=state.count, fields=state.manifest.get("fields") or {})


@router.get("/metrics", tags=["ops"], response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics
    registry.ready.set(1 if manager_of(request).ready else 0)
    return Response(registry.render(), media_type=registry.content_type)


@router.post("/admin/reload", response_model=schemas.ReloadResponse, tags=["admin"],
             dependencies=[Depends(require_api_key)],
             responses={401: {"model": schemas.ErrorBody}, 409: {"model": schemas.ReloadResponse}},
             summary="Load ROOT/CURRENT now (even if it is the version already served)")
async def admin_reload(request: Request):
    outcome = await manager_of(request).reload(force=True)
    body = schemas.ReloadResponse(**vars(outcome))
    if outcome.status in ("failed", "no_version"):
        return JSONResponse(body.model_dump(), status_code=409)
    return body


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> FileResponse:
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")
