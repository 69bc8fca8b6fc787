"""Search feedback over HTTP: `POST /feedback`, and the hook `POST /search` calls to log its query.

Off unless `CIR_FEEDBACK_DIR` (`cir serve --feedback-dir DIR`) is set: then every search is logged
(cir/feedback.py says what is stored) and answers with a `query_id`, and a page or client reports
what the person did with a result as {query_id, item_id, kind: click | select | skip}.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from cir.feedback import FeedbackLog, new_query_id
from cir.search import query as q
from service.auth import require_read_key
from service.schemas import ErrorBody

router = APIRouter()
FEEDBACK_OFF = ("feedback is not collected by this server: start it with --feedback-dir DIR (or CIR_FEEDBACK_DIR) "
                "to turn it on")


class FeedbackRequest(BaseModel):
    """What a person did with one result of a logged search."""

    model_config = ConfigDict(extra="forbid")
    query_id: str = Field(min_length=1, max_length=64, description="the `query_id` that POST /search returned")
    item_id: str = Field(min_length=1, max_length=1024, description="the gallery id of the result")
    kind: Literal["click", "select", "skip"] = Field(description="click: opened it; select: chose it (e.g. bought "
                                                                 "or saved); skip: saw it and passed over it")


class FeedbackResponse(BaseModel):
    status: Literal["logged"]
    query_id: str
    item_id: str
    kind: str


def feedback_log(app: FastAPI) -> FeedbackLog | None:
    """The app's feedback log, opened on first use when CIR_FEEDBACK_DIR is set (None: feedback is off)."""
    if not hasattr(app.state, "feedback"):
        s = app.state.settings
        folder = getattr(s, "feedback_dir", None)
        app.state.feedback = None if folder is None else FeedbackLog(
            folder, keep_uploads=s.feedback_keep_uploads, max_mb=s.feedback_max_mb,
            max_age_days=s.feedback_max_age_days)
    return app.state.feedback


async def record_search(request: Request, query: q.Query, result: q.SearchResult,
                        gallery: str | None = None) -> str | None:
    """Log a finished search and return its query_id (None when feedback is off). POST /search calls this."""
    log = feedback_log(request.app)
    if log is None:
        return None
    query_id = new_query_id()
    await asyncio.to_thread(
        log.record_query, query_id, references=query.gallery_ids, uploads=query.uploads, text=query.text,
        alpha=result.alpha, fusion=result.fusion, filter=query.filter.to_dict() if query.filter else None,
        k=query.k, index_version=result.index_version, results=[h.id for h in result.hits], gallery=gallery)
    return query_id


@router.post("/feedback", response_model=FeedbackResponse, tags=["search"], dependencies=[Depends(require_read_key)],
             responses={code: {"model": ErrorBody} for code in (400, 401, 404, 422, 503)},
             summary="Report a click, select or skip on a result of a logged search (when feedback is on)")
async def feedback(request: Request, body: FeedbackRequest) -> FeedbackResponse:
    log = feedback_log(request.app)
    if log is None:
        raise HTTPException(404, FEEDBACK_OFF)
    if not log.knows(body.query_id):
        raise HTTPException(404, f"unknown or expired query_id {body.query_id!r}: send the query_id of a recent "
                                 "POST /search")
    galleries = getattr(request.app.state, "galleries", None) or {}
    manager = galleries.get(log.gallery_of(body.query_id)) or request.app.state.manager  # the query's gallery
    if not manager.ready:
        raise q.NotReadyError(manager.last_error or "the model and index are not loaded yet")
    item = await asyncio.to_thread(manager.engine.state.index.item, body.item_id)
    if item is None:
        raise HTTPException(404, f"no gallery item with id {body.item_id!r} in index {manager.engine.state.version}")
    await asyncio.to_thread(log.record_feedback, body.query_id, body.item_id, body.kind)
    return FeedbackResponse(status="logged", query_id=body.query_id, item_id=body.item_id, kind=body.kind)
