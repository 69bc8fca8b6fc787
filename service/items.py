"""Write routes of a live gallery: PUT/PATCH/DELETE/GET /items/{id} and POST /items/bulk.

Each write is embedded here (an image upload, with the engine: cir.search.ingest), handed to the
store (`store.write`: logged and fsync'ed before it returns) and served at once (the manager swaps
the store's new view in) before the answer goes out: a 2xx write is durable and searchable.
Errors are JSON {"error", "detail"}; writes need the admin key (service.auth).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import hashlib
import json
import logging

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile

from cir.errors import ReadOnlyStoreError, StoreError, error_text
from cir.images import FORMATS_TEXT, sniff_image_type
from cir.search import query as q
from cir.search.ingest import image_size
from cir.stores import Delete, Patch, Upsert, WriteResult
from cir.stores.livemeta import WriteRejected, check_id, check_metadata
from service import display, schemas
from service.auth import require_admin_key, require_read_key
from service.faults import SafeJSONResponse

log = logging.getLogger(__name__)
router = APIRouter(tags=["items"])
WRITE = [Depends(require_admin_key)]
ERRORS = {code: {"model": schemas.ErrorBody} for code in (400, 401, 403, 404, 409, 413, 415, 422, 503, 507)}
SUFFIX = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "bmp": ".bmp"}
BULK_OPS = ("upsert", "patch", "delete")


class ItemError(Exception):
    """A write that is refused: HTTP status, error code and detail."""

    def __init__(self, status: int, code: str, detail: str):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


async def _item_error(request: Request, exc: ItemError) -> SafeJSONResponse:
    return SafeJSONResponse({"error": exc.code, "detail": exc.detail}, status_code=exc.status)


def install(app) -> None:
    """Add the item routes and their error handler to the app."""
    app.include_router(router)
    app.add_exception_handler(ItemError, _item_error)


def _engine(request: Request):
    manager = request.app.state.manager
    if not manager.ready:
        raise q.NotReadyError(manager.last_error or "the model and index are not loaded yet")
    return manager, manager.engine


def _checked_id(item_id: str) -> str:
    try:
        return check_id(item_id)
    except WriteRejected as exc:
        raise ItemError(422, "invalid_id", str(exc)) from None


def _metadata(raw) -> dict:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise WriteRejected(f"metadata is not valid JSON: {exc}", field="metadata") from None
    return check_metadata(raw)


async def _upsert(request: Request, item_id: str, data: bytes | None, metadata: dict) -> Upsert:
    """Embed (or reuse, without an image) and keep the image: the Upsert to write."""
    _, engine = _engine(request)
    state = engine.state
    if data is None:
        current = await asyncio.to_thread(state.index.item, item_id)
        if current is None:
            raise WriteRejected(f"no item with id {item_id!r}: a new item needs an image", status="not_found")
        embedding = await asyncio.to_thread(state.index.embedding, item_id)
        vector = await engine.ranked_vector(embedding, metadata, state.manifest)
        fields = {k: current.get(k) for k in ("path", "width", "height", "sha256", "size")}
        return Upsert(item_id, embedding, vector, metadata, **fields)
    kind = _image_kind(data)
    embedding = await engine.embed_upload(data)
    return (await _kept(request, [(item_id, metadata, data, kind)], [embedding]))[0]


def _image_kind(data: bytes) -> str:
    kind = sniff_image_type(data)
    if kind is None:
        raise ItemError(415, "unsupported_image", f"the upload is not a {FORMATS_TEXT} image; nothing was written")
    return kind


async def _kept(request: Request, entries: list[tuple], embeddings: list) -> list[Upsert]:
    """Upserts of embedded images (id, metadata, bytes, kind): ranked vectors, images kept in one go."""
    manager, engine = _engine(request)
    manifest = engine.state.manifest
    vectors = await asyncio.gather(*(engine.ranked_vector(e, m, manifest) for (_, m, _, _), e in zip(entries, embeddings)))
    try:
        paths = await asyncio.to_thread(manager.store.keep_images, [(d, SUFFIX[k]) for _, _, d, k in entries])
    except OSError as exc:
        raise _disk_error(exc) from None
    out = []
    for (item_id, metadata, data, _), embedding, vector, path in zip(entries, embeddings, vectors, paths):
        width, height = image_size(data)
        out.append(Upsert(item_id, embedding, vector, metadata, path=path, width=width, height=height,
                          sha256=hashlib.sha256(data).hexdigest(), size=len(data)))
    return out


def _disk_error(exc: OSError) -> ItemError:
    """507 for a full disk, 503 for another failed write; reads are untouched either way."""
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    log.error("write not done: %s", error_text(exc))
    return ItemError(507 if full else 503, "disk_full" if full else "write_failed",
                     f"{'the disk is full' if full else 'the write failed'}: nothing was written; searches keep working")


async def _write(request: Request, ops: list) -> list[WriteResult]:
    """Log the operations (durably) and serve the result before answering."""
    manager, _ = _engine(request)
    try:
        results = await asyncio.to_thread(manager.store.write, ops)
    except ReadOnlyStoreError as exc:
        raise ItemError(409, "read_only", str(exc)) from None
    except OSError as exc:
        raise _disk_error(exc) from None
    except StoreError as exc:
        raise ItemError(503, "store_error", error_text(exc, with_type=False)) from None
    if any(r.status == "ok" for r in results):
        await manager.refresh_live()
    return results


def _result(r: WriteResult, version: str) -> dict:
    return {"id": r.id, "op": r.op, "status": r.status, "change": r.change, "error": r.error, "version": version}


def _single(results: list[WriteResult], request: Request) -> dict:
    r = results[0]
    if r.status == "invalid":
        raise ItemError(422, "invalid_item", r.error)
    if r.status == "not_found" and r.op != "delete":
        raise ItemError(404, "not_found", r.error)
    return _result(r, request.app.state.manager.engine.state.version)


@router.put("/items/{item_id:anypath}", dependencies=WRITE, responses=ERRORS,
            summary="Insert or replace an item: an image (embedded now) and its metadata; searchable on return")
async def put_item(request: Request, item_id: str,
                   image: UploadFile = File(None, description=f"the item's image ({FORMATS_TEXT}); optional "
                                                              "for an existing item (its metadata is replaced)"),
                   metadata: str = Form(None, description='the item\'s metadata, a JSON object: {"title": "..."}')):
    item_id = _checked_id(item_id)
    limit = request.app.state.settings.max_upload_bytes
    data = None
    if image is not None:
        data = await image.read(limit + 1)
        if len(data) > limit:
            raise ItemError(413, "upload_too_large", f"the image is over the upload limit of {limit} bytes; "
                                                     "nothing was written")
    try:
        op = await _upsert(request, item_id, data or None, _metadata(metadata or ""))
    except WriteRejected as exc:
        raise ItemError(404 if exc.status == "not_found" else 422, exc.status if exc.status == "not_found"
                        else "invalid_item", str(exc)) from None
    return _single(await _write(request, [op]), request)


@router.patch("/items/{item_id:anypath}", dependencies=WRITE, responses=ERRORS,
              summary="Merge metadata into an item (JSON merge: given fields replace, null removes); nothing re-embedded")
async def patch_item(request: Request, item_id: str):
    item_id = _checked_id(item_id)
    try:
        patch = _metadata(await request.json())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ItemError(422, "invalid_item", f"the body must be a JSON object of fields: {exc}") from None
    except WriteRejected as exc:
        raise ItemError(422, "invalid_item", str(exc)) from None
    return _single(await _write(request, [Patch(item_id, patch)]), request)


@router.delete("/items/{item_id:anypath}", dependencies=WRITE, responses=ERRORS,
               summary="Remove an item from results, /images and reference_id at once (a missing id: 200, not_found)")
async def delete_item(request: Request, item_id: str):
    return _single(await _write(request, [Delete(_checked_id(item_id))]), request)


@router.get("/items/{item_id:anypath}", dependencies=[Depends(require_read_key)], responses=ERRORS,
            summary="An item's metadata, image URL and the change (sequence number) that last wrote it")
async def get_item(request: Request, item_id: str):
    _, engine = _engine(request)
    state = engine.state
    item = await asyncio.to_thread(state.index.item, item_id)
    if item is None:
        raise ItemError(404, "not_found", f"no item with id {item_id!r} in index {state.version}")
    return {"id": item_id, "version": state.version, "metadata": item.get("metadata") or {},
            "image_url": display.image_url(request.app.state.settings, item_id), "width": item.get("width"),
            "height": item.get("height"), "sha256": item.get("sha256"), "change": item.get("change")}


def _simple_op(raw) -> object | None:
    """A bulk patch or delete (WriteRejected when malformed), or None for an upsert."""
    if not isinstance(raw, dict) or raw.get("op") not in BULK_OPS:
        raise WriteRejected(f"each operation is an object with an op of {', '.join(BULK_OPS)}")
    item_id = check_id(raw.get("id"))
    if raw["op"] == "delete":
        return Delete(item_id)
    if raw["op"] == "patch":
        return Patch(item_id, _metadata(raw.get("metadata", {})))
    return None


def _bulk_upsert_fields(request: Request, raw: dict) -> tuple[str, dict, bytes | None]:
    """(id, metadata, image bytes or None) of a bulk upsert, or a WriteRejected."""
    item_id = check_id(raw.get("id"))
    metadata = _metadata(raw.get("metadata", {}))
    if raw.get("image") is None:
        return item_id, metadata, None
    try:
        data = base64.b64decode(raw["image"], validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise WriteRejected("image must be the image file's bytes in base64", field="image") from None
    if len(data) > request.app.state.settings.max_upload_bytes:
        raise WriteRejected("the image is over the upload limit", field="image")
    return item_id, metadata, data


async def _bulk_upserts(request: Request, raws: list[dict]) -> list[object]:
    """The bulk's upserts: an Upsert or a WriteRejected each; the images decoded and embedded together."""
    out: list = [None] * len(raws)
    images = []  # (position, (id, metadata, bytes, kind))
    for i, raw in enumerate(raws):
        try:
            item_id, metadata, data = _bulk_upsert_fields(request, raw)
            if data is None:
                out[i] = await _upsert(request, item_id, None, metadata)  # a metadata replacement
            else:
                images.append((i, (item_id, metadata, data, _image_kind(data))))
        except WriteRejected as exc:
            out[i] = exc
        except ItemError as exc:
            out[i] = WriteRejected(exc.detail, field="image")
    embedded = await _engine(request)[1].embed_uploads([entry[2] for _, entry in images])
    good = [(i, entry, e) for (i, entry), e in zip(images, embedded) if not isinstance(e, q.QueryError)]
    for (i, _), e in zip(images, embedded):
        if isinstance(e, q.QueryError):
            out[i] = WriteRejected(str(e), field="image")
    if good:
        kept = await _kept(request, [entry for _, entry, _ in good], [e for _, _, e in good])
        for (i, _, _), upsert in zip(good, kept):
            out[i] = upsert
    return out


@router.post("/items/bulk", dependencies=WRITE, responses=ERRORS,
             summary="Many upserts (images in base64), patches and deletes in one request, each with its status")
async def bulk(request: Request):
    settings = request.app.state.settings
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ItemError(422, "invalid_request", f"the body must be JSON: {exc}") from None
    ops = body.get("operations") if isinstance(body, dict) else None
    if not isinstance(ops, list) or not ops:
        raise ItemError(422, "invalid_request", 'the body is {"operations": [{"op": "patch", "id": ..., '
                                                '"metadata": {...}}, ...]} with at least one operation')
    if len(ops) > settings.max_bulk_ops:
        raise ItemError(413, "too_many_operations", f"{len(ops)} operations; at most {settings.max_bulk_ops} per request")
    # patches and deletes are parsed in one pass; the upserts' images are embedded together, in batches
    parsed: list = [None] * len(ops)
    upserts = []
    for i, raw in enumerate(ops):
        try:
            parsed[i] = _simple_op(raw)
        except WriteRejected as exc:
            parsed[i] = exc
        if parsed[i] is None:
            upserts.append(i)
    for i, p in zip(upserts, await _bulk_upserts(request, [ops[i] for i in upserts])):
        parsed[i] = p
    good = [p for p in parsed if not isinstance(p, WriteRejected)]
    written = iter(await _write(request, good) if good else [])
    version = request.app.state.manager.engine.state.version
    results = []
    for raw, p in zip(ops, parsed):
        if isinstance(p, WriteRejected):
            op = raw.get("op") if isinstance(raw, dict) else None
            item = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
            results.append({"id": item, "op": op, "status": p.status, "change": None, "error": str(p), "version": version})
        else:
            results.append(_result(next(written), version))
    failed = sum(r["status"] != "ok" for r in results)
    # plain JSON already: skip FastAPI's per-field encoder (the answer to 10,000 operations)
    return SafeJSONResponse({"results": results, "ok": len(results) - failed, "failed": failed})
