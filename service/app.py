"""The FastAPI app factory: heavy state (encoder, index) is built in the lifespan, never at import."""

from __future__ import annotations

import logging
import shutil
import tempfile
from contextlib import asynccontextmanager
from http import HTTPStatus

import torch
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

import cir
from cir.errors import StoreError, StoreUnavailableError, public_detail
from cir.images import DEFAULT_MAX_PIXELS, DecodeBudget
from cir.search import engine as eng
from cir.search import query as q
from cir.search.batching import OverloadedError
from service import api, browse, collections, compaction, feedback, items
from service.auth import access_summary
from service.faults import InternalErrorMiddleware, known_paths
from service.galleries import make_managers
from service.limits import BodyLimitMiddleware
from service.metrics import Metrics, MetricsMiddleware
from service.openapi import install_openapi
from service.settings import Settings
from service.thumbs import ThumbnailCache

log = logging.getLogger(__name__)

# Room for the other form fields and multipart framing on top of the images themselves.
FORM_OVERHEAD_BYTES = 64 * 1024
QUERY_ERROR_STATUS = {
    q.EmptyQueryError: 422,
    q.InvalidFilterError: 422,
    q.TooManyReferencesError: 422,
    q.PagingError: 422,
    q.ImageWeightsError: 422,
    q.NegativeTextError: 422,
    q.NegativeWeightError: 422,
    q.UnsupportedImageError: 415,
    q.BadImageError: 400,
    q.UnknownReferenceError: 404,
}

DESCRIPTION = """Zero-shot composed image retrieval (arXiv 2405.00571): a reference image (an upload
or a gallery item) plus a modification text, fused by Slerp (`alpha` = text weight), searched
against a versioned FAISS gallery index that is hot-swapped when a new version is published."""


def _error(request: Request, status: int, code: str, detail, headers: dict | None = None) -> JSONResponse:
    # the one place errors are rendered: echoed lone surrogates escaped, server paths removed
    detail = public_detail(detail, known_paths(request.app.state.settings))
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(q.QueryError)
    async def query_error(request: Request, exc: q.QueryError):
        status = next((s for cls, s in QUERY_ERROR_STATUS.items() if isinstance(exc, cls)), 400)
        return _error(request, status, exc.code, str(exc))

    @app.exception_handler(q.NotReadyError)
    async def not_ready(request: Request, exc: q.NotReadyError):
        return _error(request, 503, "not_ready", str(exc), {"Retry-After": "5"})

    @app.exception_handler(StoreError)
    async def store_failed(request: Request, exc: StoreError):
        # The gallery's server (Milvus) is down or failed this read: retry later, on any replica.
        code = "store_unavailable" if isinstance(exc, StoreUnavailableError) else "store_error"
        log.warning("%s: %s", code, exc)
        return _error(request, 503, code, str(exc), {"Retry-After": "5"})

    @app.exception_handler(OverloadedError)
    async def overloaded(request: Request, exc: OverloadedError):
        return _error(request, 503, "overloaded", str(exc), {"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return _error(request, 422, "invalid_request", jsonable_encoder(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        code = "upload_too_large" if exc.status_code == 413 else code  # as the body limit says it
        return _error(request, exc.status_code, code, exc.detail, getattr(exc, "headers", None))


def _lifespan(settings: Settings, metrics: Metrics):
    # one budget for every decode of the process: uploads and thumbnails
    budget = DecodeBudget(int(settings.decode_memory_mb * 2**20))

    def make_engine(encoder) -> eng.SearchEngine:
        return eng.SearchEngine(encoder, max_pixels=settings.max_pixels, max_batch=settings.max_batch,
                                batch_wait_s=settings.batch_wait_ms / 1000.0, max_queue=settings.max_queue,
                                decode_workers=settings.decode_workers, decode_budget=budget,
                                default_alpha=settings.default_alpha,
                                default_fusion=settings.default_fusion, on_batch=metrics.observe_batch)

    first = next(iter(settings.galleries), None)

    def swapped(name: str, state: q.IndexState) -> None:
        fingerprint = str(state.manifest.get("fingerprint", ""))
        if name == first:  # the unlabelled metrics describe the first gallery
            metrics.index_swapped(state.version, fingerprint, state.count)
        metrics.collection_swapped(name, state.version, fingerprint, state.count)

    def failed(name: str, version: str, error: str) -> None:
        if name == first:
            metrics.index_failed()
        metrics.collection_failed(name)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        own_thumbs = settings.thumb_cache is None
        thumb_dir = tempfile.mkdtemp(prefix="cir-thumbs-") if own_thumbs else settings.thumb_cache
        managers: dict = {}
        log.info(access_summary(settings))
        try:  # a start-up that fails after the folder exists removes it too
            # gallery images passed the indexer's checks: hold them to Pillow's limit, not the upload limit
            app.state.thumbs = ThumbnailCache(thumb_dir, max(settings.max_pixels, DEFAULT_MAX_PIXELS),
                                              max_bytes=int(settings.thumb_cache_mb * 2**20),
                                              max_files=settings.thumb_cache_files, budget=budget)
            managers = make_managers(settings, make_engine, swapped, failed)
            app.state.galleries = managers
            app.state.manager = next(iter(managers.values()))  # the first: today's top-level routes
            for manager in managers.values():
                await manager.start()
            # live writes and compaction: the first gallery's (the /items routes)
            await compaction.start(app, app.state.manager, settings)
            yield
        finally:
            await compaction.stop(app)
            for manager in managers.values():
                await manager.stop()
            if own_thumbs:
                shutil.rmtree(thumb_dir, ignore_errors=True)

    return lifespan


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the encoder and index load when its lifespan starts."""
    settings = settings or Settings()
    metrics = Metrics()
    # FastAPIOffline: /docs and /redoc load their JS and CSS from the package, not from a CDN.
    app = FastAPIOffline(title="CIR: composed image retrieval", version=cir.__version__, description=DESCRIPTION,
                         lifespan=_lifespan(settings, metrics), favicon_url="/favicon.ico",
                         swagger_ui_parameters={"validatorUrl": None})  # no call to the online validator
    app.state.settings = settings
    app.state.metrics = metrics
    app.include_router(api.router)
    app.include_router(browse.router)
    app.include_router(collections.router)
    items.install(app)
    app.include_router(compaction.router)
    app.include_router(feedback.router)
    install_openapi(app)
    app.mount("/static", StaticFiles(directory=api.STATIC_DIR), name="static")
    _install_error_handlers(app)
    # add_middleware wraps: the last added runs first (metrics see every answer, 413s included).
    # JSON carries images as base64: 4 bytes of text per 3 of image (search_input holds the decoded total)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_total_upload_bytes + FORM_OVERHEAD_BYTES,
                       json_max_bytes=-(-settings.max_total_upload_bytes * 4 // 3) + FORM_OVERHEAD_BYTES,
                       body_timeout_s=settings.body_timeout_s, deadline_s=settings.request_timeout_s)
    if settings.cors_origin_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list,
                           allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"], allow_headers=["*"])
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=app.router.routes)
    app.add_middleware(InternalErrorMiddleware)  # outermost: a bug anywhere is a JSON 500 (metrics count it)
    return app
