"""Errors as clients see them: safe to render, free of server paths, and a JSON 500 for every bug.

Every error body goes through `public_detail` (cir.errors): a lone surrogate echoed from a
request becomes its escape, and the paths this server was configured with become labels
(`<index>`, `<adapter>`, ...), any other absolute path its last component. An exception no
handler expected becomes `{"error": "internal_error", "detail": "... (error id ...)"}` with
`Connection: close`, and is logged with the same id.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cir.errors import public_detail

log = logging.getLogger(__name__)

# settings attribute -> the label that replaces its path in public text
PATH_SETTINGS = {"index": "<index>", "adapter": "<adapter>", "model": "<model>", "thumb_cache": "<thumbs>",
                 "onnx_cache": "<onnx-cache>"}


def known_paths(settings) -> dict[str, str]:
    """The configured paths of `settings` (as given and resolved) -> their public labels."""
    known: dict[str, str] = {}
    for name, label in PATH_SETTINGS.items():
        value = getattr(settings, name, None)
        if value is None or (name == "model" and not Path(str(value)).exists()):
            continue  # a hub id is a name, not a path
        known[str(value)] = label
        try:
            known[str(Path(value).resolve())] = label
        except (OSError, RuntimeError):
            pass
    return known


def public_text(settings, text: str | None) -> str | None:
    """`text` as a public response may show it (None stays None)."""
    return None if text is None else public_detail(text, known_paths(settings))


def public_path(path: str | None) -> str | None:
    """A local model or adapter path as the last two components of its folder; a hub id as it is."""
    if not path or not (path.startswith(("/", ".", "~")) or Path(path).exists()):
        return path
    return "/".join(Path(path).expanduser().resolve().parts[-2:]).lstrip("/")


class SafeJSONResponse(JSONResponse):
    """JSON that always encodes: a lone surrogate (echoed input, stored metadata) is sent as its \\u escape."""

    def render(self, content) -> bytes:
        try:
            return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("utf-8")


def internal_error_body(error_id: str) -> bytes:
    """The JSON body of a 500: the id names the log line that holds the traceback."""
    return json.dumps({"error": "internal_error",
                       "detail": f"the server failed on this request (error id {error_id}; the server log "
                                 "has the details)"}).encode()


class InternalErrorMiddleware:
    """Outermost pure ASGI middleware: any exception becomes a logged JSON 500 with Connection: close."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:  # noqa: BLE001 - the one place every unexpected error ends
            error_id = uuid.uuid4().hex[:12]
            log.exception("internal error %s on %s %s", error_id, scope.get("method"), scope.get("path"))
            if started:  # the answer is half sent: closing the connection is all that is left
                return
            body = internal_error_body(error_id)
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})


# manifest keys that hold server paths: dropped (gallery) or shortened (model, adapter) in /info
PRIVATE_MANIFEST_KEYS = ("gallery",)


def public_manifest(manifest: dict) -> dict:
    """An index manifest without server paths: no gallery folder, model and adapter by public_path."""
    out = {k: v for k, v in manifest.items() if k not in PRIVATE_MANIFEST_KEYS}
    for key in ("model", "adapter"):
        if isinstance(out.get(key), str):
            out[key] = public_path(out[key])
    return public_detail(out)
