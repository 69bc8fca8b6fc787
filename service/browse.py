"""A first screen of gallery items before any query: GET /browse.

GET /browse returns hits in the same shape as POST /search (`score` is null: nothing was
ranked) from the store view's `browse(n, order, seed)`: a random sample (the same `seed`, the
same sample) or the newest items first.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from cir.search import query as q
from service import display, schemas
from service.api import ready_engine
from service.auth import require_read_key

log = logging.getLogger(__name__)
router = APIRouter()

MAX_BROWSE = 200


class BrowseHit(schemas.Hit):
    score: float | None = Field(None, description="null: browsed items are not ranked")


class BrowseResponse(BaseModel):
    results: list[BrowseHit]
    order: str = Field(description="random or newest")
    seed: int | None = Field(None, description="the random sample's seed (the same seed, the same items)")
    index_version: str
    count: int = Field(description="items in the index")


@router.get("/browse", response_model=BrowseResponse, tags=["search"], dependencies=[Depends(require_read_key)],
            responses={503: {"model": schemas.ErrorBody}},
            summary="Gallery items to show before any search: a random sample or the newest")
async def browse(request: Request, n: int = Query(24, ge=1, le=MAX_BROWSE, description="how many items"),
                 order: Literal["random", "newest"] = Query("random", description="random or newest first"),
                 seed: int | None = Query(None, ge=0, le=2**63 - 1,
                                          description="random order: the sample's seed (default: a new one)")):
    state = ready_engine(request).state
    if order == "random" and seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    index = state.index

    def load() -> list[dict]:
        ids = index.browse(n, order, seed if order == "random" else None)
        items = [(item_id, index.item(item_id)) for item_id in ids]
        hits = [q.hit_dict(q.Hit(item_id, None, rank, item)) for rank, (item_id, item) in enumerate(
            ((i, it) for i, it in items if it is not None), 1)]
        return display.set_image_urls(request.app.state.settings, hits)

    hits = await asyncio.to_thread(load)
    return BrowseResponse(results=hits, order=order, seed=seed if order == "random" else None,
                          index_version=state.version, count=state.count)
