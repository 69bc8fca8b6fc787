"""Several galleries in one server: GET /collections and /collections/{name}/search, images, facets, info.

Each gallery is an index root with its own IndexManager (its own hot swap and engine); galleries
whose encoders are the same share one loaded model (service.galleries). The first gallery also
answers on the top-level routes (/search, /images, /facets, /info).
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse, Response

from service import schemas
from service.api import (ERRORS, IMAGE_RESPONSES, READ, READ_ERRORS, SEARCH_DESCRIPTION, THUMB_SIZE, facets_of,
                         gallery_of, image_in, info_of, search_in)
from service.search_input import request_body_schema

router = APIRouter(prefix="/collections", tags=["collections"])
NAME = Path(description="the gallery's name (GET /collections lists them)", max_length=64)
NOT_FOUND = {404: {"model": schemas.ErrorBody}}


@router.get("", response_model=schemas.Collections, dependencies=READ, responses=READ_ERRORS,
            summary="The galleries this server searches (the first also answers on /search)")
async def collections(request: Request) -> schemas.Collections:
    out = []
    for i, (name, manager) in enumerate(request.app.state.galleries.items()):
        state = manager.engine.state if manager.ready else None
        out.append(schemas.Collection(name=name, default=i == 0, ready=manager.ready,
                                      index_version=state.version if state else None,
                                      count=state.count if state else None,
                                      fingerprint=manager.engine.encoder.fingerprint if manager.ready else None))
    return schemas.Collections(collections=out)


@router.post("/{name}/search", response_model=schemas.SearchResponse, responses=ERRORS, dependencies=READ,
             openapi_extra={"requestBody": request_body_schema()}, description=SEARCH_DESCRIPTION,
             summary="POST /search against one gallery")
async def collection_search(request: Request, name: str = NAME) -> Response:
    return await search_in(request, gallery_of(request, name), f"/collections/{quote(name, safe='')}/images")


@router.get("/{name}/images/{item_id:anypath}", response_class=FileResponse, responses=IMAGE_RESPONSES,
            dependencies=READ, summary="GET /images of one gallery")
async def collection_image(request: Request, name: str = NAME, item_id: str = Path(),
                           size: int | None = THUMB_SIZE):
    return await image_in(request, gallery_of(request, name), item_id, size)


@router.get("/{name}/facets", response_model=schemas.Facets, responses={**READ_ERRORS, **NOT_FOUND},
            dependencies=READ, summary="GET /facets of one gallery")
async def collection_facets(request: Request, name: str = NAME) -> schemas.Facets:
    return facets_of(request, gallery_of(request, name))


@router.get("/{name}/info", response_model=schemas.Info, responses={**READ_ERRORS, **NOT_FOUND},
            dependencies=READ, summary="GET /info of one gallery")
async def collection_info(request: Request, name: str = NAME) -> schemas.Info:
    return info_of(request, gallery_of(request, name))
