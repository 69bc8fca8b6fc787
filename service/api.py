"""HTTP routes: search, gallery images, health, info, metrics, admin reload and the web page."""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.convertors import Convertor, register_url_convertor

from cir.fusion import DEFAULT_NEGATIVE_WEIGHT
from cir.images import ImageDecodeError
from cir.runtimes import DEFAULT_RUNTIME
from cir.search import engine as eng
from cir.search import query as q
from cir.search.paging import MAX_WINDOW
from service import display, feedback, schemas
from service.auth import require_admin_key, require_read_key
from service.faults import SafeJSONResponse, public_manifest, public_path, public_text
from service.search_input import read_query, request_body_schema
from service.swap import IndexManager
from service.thumbs import thumb_size

STATIC_DIR = Path(__file__).parent / "static"
ERRORS = {code: {"model": schemas.ErrorBody} for code in (400, 401, 404, 413, 415, 422, 500, 503)}
READ_ERRORS = {code: {"model": schemas.ErrorBody} for code in (401, 503)}

router = APIRouter()
log = logging.getLogger(__name__)
READ = [Depends(require_read_key)]  # open unless CIR_READ_API_KEY is set (service.auth)


def manager_of(request: Request) -> IndexManager:
    """The app's default gallery's index manager (set by the lifespan)."""
    return request.app.state.manager


def ready_engine(request: Request, manager: IndexManager | None = None) -> eng.SearchEngine:
    """The engine of a gallery (default: the first), or 503 while no model and index are loaded."""
    manager = manager or manager_of(request)
    if not manager.ready:
        raise q.NotReadyError(manager.last_error or "the model and index are not loaded yet")
    return manager.engine


SEARCH_DESCRIPTION = f"""Send a multipart/form-data form (images as files) or an application/json object (images
as base64); any other content type is 415. Give at least one of `image`, `reference_id` or `text`;
everything else is optional. A field the route does not know is 422 naming it.

- `image` and `reference_id` (gallery ids) may each be repeated: up to {q.MAX_REFERENCES} references in
  all, merged by their weighted spherical mean; the query is the Slerp of that mean and the text.
  Each image is held to the upload and decompression limits, all of them together to the total
  request limit. The server never fetches a URL.
- `image_weights`: one weight per reference in the order images first, then reference ids (the form:
  one comma-separated field `2,1,1`; JSON: a list); >= 0, not all 0; default equal.
- `negative_text` (repeatable, up to {q.MAX_NEGATIVES}): what the result should not be. The query is moved away
  from it along their great circle by `negative_weight` (beta in [0, 1], default
  {DEFAULT_NEGATIVE_WEIGHT}) times their arc; several negatives are merged by their spherical mean
  first. It needs an image, a reference or a text to move.
- `filter`: metadata conditions, with `nin`, `exists`, `and`, `or` and `not` (docs/api.md).
- Paging: `offset` and `k` (offset + k <= {MAX_WINDOW}); `next_offset` in the answer is the next page's
  offset, null on the last. Pages of one index version are stable and never overlap.
- The query's own references (its reference_ids, and gallery items whose file equals an uploaded
  image) are left out of the results unless `keep_references` is true; `exclude_ids` leaves out more.

Bad input is 422 with a JSON body whose `error` and `detail` name the field."""


async def search_in(request: Request, manager: IndexManager, image_base: str = "/images") -> Response:
    """POST /search against one gallery's engine."""
    engine = ready_engine(request, manager)
    query = await read_query(request, request.app.state.settings)
    result = await engine.search(query)
    request.app.state.metrics.observe_search(result.timings_ms, result.text_truncated, manager.name)
    # result_dict has the SearchResponse shape (the tests check it against the schema): sent as it is,
    # without a second validation and serialisation of every hit
    body = q.result_dict(result, engine.encoder.text_max_length, image_base)
    display.set_image_urls(request.app.state.settings, body["results"], image_base)
    body["query_id"] = await feedback.record_search(request, query, result, manager.name)
    return SafeJSONResponse(body)  # a lone surrogate in stored metadata: escaped, still valid JSON


@router.post("/search", response_model=schemas.SearchResponse, responses=ERRORS, tags=["search"],
             dependencies=READ, openapi_extra={"requestBody": request_body_schema()},
             summary="Composed image retrieval: reference images (uploads or gallery ids) modified by a text",
             description=SEARCH_DESCRIPTION)
async def search(request: Request) -> Response:
    return await search_in(request, manager_of(request))


class _AnyPath(Convertor):
    """Like Starlette's `path`, but across newlines too: a gallery id may hold any character."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anypath", _AnyPath())


THUMB_SIZE = Query(None, ge=16, le=1024, description="thumbnail: longest side at least this many pixels "
                                                      "(rounded up to 64, 128, 256, 512 or 1024)")
IMAGE_RESPONSES = {200: {"content": {"image/*": {}}}, 401: {"model": schemas.ErrorBody},
                   404: {"model": schemas.ErrorBody},
                   410: {"model": schemas.ErrorBody, "description": "indexed, but the file is gone from disk"},
                   422: {"model": schemas.ErrorBody},
                   503: {"model": schemas.ErrorBody}}


async def image_in(request: Request, manager: IndexManager, item_id: str, size: int | None) -> Response:
    """A gallery image of one gallery (resolved through its items table only)."""
    state = ready_engine(request, manager).state
    item = await asyncio.to_thread(state.index.item, item_id)
    if not item:
        raise HTTPException(404, f"no gallery image with id {item_id!r} in index {state.version}")
    if not Path(item.get("path", "")).is_file():  # indexed, but its file is gone from the disk
        raise HTTPException(410, f"gallery image {item_id!r} is in index {state.version}, but its file is "
                                 "missing on disk: rebuild the index to drop it")
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
        log.warning("gallery image %r cannot be read: %s", item_id, exc)  # the path stays in the log
        raise HTTPException(404, f"gallery image {item_id!r} cannot be read: its file on disk is not a "
                                 "readable image") from exc
    return Response(thumb, media_type="image/jpeg", headers=headers)


@router.get("/images/{item_id:anypath}", tags=["gallery"], response_class=FileResponse, responses=IMAGE_RESPONSES,
            dependencies=READ, summary="A gallery image by id (resolved through the index's items table only)")
async def gallery_image(request: Request, item_id: str, size: int | None = THUMB_SIZE):
    return await image_in(request, manager_of(request), item_id, size)


@router.get("/healthz", response_model=schemas.Status, tags=["ops"], summary="Liveness: the process answers")
async def healthz(request: Request) -> schemas.Status:
    manager = manager_of(request)
    return schemas.Status(status="ok", index_version=manager.engine.state.version if manager.ready else None)


@router.get("/readyz", response_model=schemas.Status, tags=["ops"], responses={503: {"model": schemas.Status}},
            summary="Readiness: 200 only when the model and an index are loaded (for every gallery)")
async def readyz(request: Request):
    manager = manager_of(request)
    last_error = public_text(request.app.state.settings, manager.last_error)
    waiting = [name for name, m in request.app.state.galleries.items() if not m.ready]
    if manager.ready and waiting:
        body = schemas.Status(status="not_ready", index_version=manager.engine.state.version,
                              detail=f"galleries not loaded yet: {', '.join(waiting)}")
        return JSONResponse(body.model_dump(), status_code=503)
    if manager.ready:
        return schemas.Status(status="ready", index_version=manager.engine.state.version,
                              last_reload_error=last_error)
    body = schemas.Status(status="not_ready", detail=last_error or "model and index not loaded yet",
                          last_reload_error=last_error)
    return JSONResponse(body.model_dump(), status_code=503)


def info_of(request: Request, manager: IndexManager) -> schemas.Info:
    """GET /info of one gallery."""
    engine = ready_engine(request, manager)
    state, enc = engine.state, engine.encoder
    m = state.manifest
    settings = request.app.state.settings
    return schemas.Info(model=public_path(enc.name), adapter=public_path(enc.adapter),  # no server paths
                        fingerprint=enc.fingerprint, device=str(enc.device),
                        runtime=enc.info().get("runtime", DEFAULT_RUNTIME), dim=enc.dim, index_version=state.version,
                        count=state.count, factory=m.get("factory"),
                        metric=m.get("metric"), default_alpha=engine.alpha_for(state),
                        default_fusion=engine.default_fusion, max_k=q.MAX_K, text_max_tokens=enc.text_max_length,
                        fields=state.index.fields, manifest=public_manifest(m),
                        display_fields=display.display_fields(settings.display_fields, state.index.fields),
                        background=display.background_message(settings),
                        last_reload_error=public_text(settings, manager.last_error))


def facets_of(request: Request, manager: IndexManager) -> schemas.Facets:
    """GET /facets of one gallery."""
    state = ready_engine(request, manager).state
    return schemas.Facets(index_version=state.version, count=state.count, fields=state.index.fields)


@router.get("/info", response_model=schemas.Info, tags=["ops"], responses=READ_ERRORS, dependencies=READ,
            summary="The served model and index")
async def info(request: Request) -> schemas.Info:
    # a worker thread: a remote store (Milvus) counts over the network
    return await asyncio.to_thread(info_of, request, manager_of(request))


@router.get("/facets", response_model=schemas.Facets, tags=["search"], responses=READ_ERRORS, dependencies=READ,
            summary="The metadata fields a filter can use: types, facet values with counts, min and max")
async def facets(request: Request) -> schemas.Facets:
    # a worker thread: a remote store (Milvus) computes facets over the network
    return await asyncio.to_thread(facets_of, request, manager_of(request))


@router.get("/metrics", tags=["ops"], response_class=Response, summary="Prometheus metrics", dependencies=READ,
            responses={200: {"content": {"text/plain": {}}}, 401: {"model": schemas.ErrorBody}})
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics
    registry.ready.set(1 if manager_of(request).ready else 0)
    return Response(registry.render(), media_type=registry.content_type)


@router.post("/admin/reload", response_model=schemas.ReloadResponse, tags=["admin"],
             dependencies=[Depends(require_admin_key)],
             responses={401: {"model": schemas.ErrorBody}, 403: {"model": schemas.ErrorBody},
                        404: {"model": schemas.ErrorBody}, 409: {"model": schemas.ReloadResponse}},
             summary="Load ROOT/CURRENT now (even if it is the version already served); needs CIR_API_KEY")
async def admin_reload(request: Request,
                       collection: str | None = Query(None, max_length=64,
                                                      description="the gallery to reload (default: the first)")):
    manager = gallery_of(request, collection) if collection else manager_of(request)
    outcome = await manager.reload(force=True)
    error = public_text(request.app.state.settings, outcome.error)
    body = schemas.ReloadResponse(**{**vars(outcome), "error": error})
    if outcome.status in ("failed", "no_version"):
        return JSONResponse(body.model_dump(), status_code=409)
    return body


def gallery_of(request: Request, name: str) -> IndexManager:
    """A gallery's index manager by name, or 404 naming the galleries served."""
    galleries = request.app.state.galleries
    if name not in galleries:
        raise HTTPException(404, f"no collection named {name!r}; collections: {', '.join(galleries)}")
    return galleries[name]


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> FileResponse:
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")
