"""Request body cap: answer 413 before reading an oversized upload, or as soon as it passes the cap."""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# An unread request body makes the server's close reset the connection, and the client then
# loses the 413 it was sent. Bodies up to this size are read and thrown away (never kept)
# before answering; larger ones are cut off at once. Clients sending `Expect: 100-continue`
# are answered without sending their body at all.
DRAIN_BYTES = 16 * 1024 * 1024


class _BodyTooLarge(Exception):
    pass


async def _send_413(send: Send, limit: int) -> None:
    body = json.dumps({"error": "upload_too_large",
                       "detail": f"request body is over the limit of {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive, budget: int) -> None:
    """Read and discard the rest of a request body, up to `budget` bytes."""
    while budget >= 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class BodyLimitMiddleware:
    """Pure ASGI middleware: a Content-Length over the cap is refused without keeping the body;
    a body without one (chunked) is counted while read and cut off at the cap."""

    def __init__(self, app: ASGIApp, max_bytes: int, drain_bytes: int = DRAIN_BYTES) -> None:
        self.app, self.max_bytes, self.drain_bytes = app, max_bytes, drain_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            if headers.get("expect", "").lower() != "100-continue" and int(length) <= self.drain_bytes:
                await _drain(receive, self.drain_bytes)
            await _send_413(send, self.max_bytes)
            return
        await self._counted(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        total, exceeded, finished, started = 0, False, False, False

        async def counting_receive() -> Message:
            nonlocal total, exceeded, finished
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                finished = not message.get("more_body", False)
                if total > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the app's answer to the cut-off body is replaced by our 413
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            if not finished:
                await _drain(receive, self.drain_bytes - total)
            await _send_413(send, self.max_bytes)
