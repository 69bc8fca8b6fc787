"""Request body limits: 413 before reading an oversized upload or as soon as it passes the cap; 408
when a client stops sending its body (each receive waits at most `body_timeout_s`) or takes over
`deadline_s` to send all of it (a body trickled a byte at a time); 503 when the answer has not
started within `deadline_s` of the request (the deadline ends once the response starts)."""

from __future__ import annotations

import asyncio
import json

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# An unread request body makes the server's close reset the connection, and the client then
# loses the 413 it was sent. Bodies up to this size are read and thrown away (never kept)
# before answering; larger ones are cut off at once. Clients sending `Expect: 100-continue`
# are answered without sending their body at all.
DRAIN_BYTES = 16 * 1024 * 1024
UNTIMED_PREFIX = "/admin/"  # routes without the overall request deadline


class _BodyTooLarge(Exception):
    pass


class _BodyTimeout(Exception):
    pass


async def _send_error(send: Send, status: int, code: str, detail: str) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def _send_413(send: Send, limit: int) -> None:
    await _send_error(send, 413, "upload_too_large", f"request body is over the limit of {limit} bytes")


async def _receive_within(receive: Receive, timeout_s: float | None) -> Message:
    """The next message, or _BodyTimeout when the client sends nothing for `timeout_s` seconds."""
    try:
        async with asyncio.timeout(timeout_s):  # no extra task per receive, unlike wait_for
            return await receive()
    except TimeoutError:
        raise _BodyTimeout() from None


async def _drain(receive: Receive, budget: int, timeout_s: float | None = None) -> None:
    """Read and discard the rest of a request body, up to `budget` bytes (giving up on a stalled client)."""
    while budget >= 0:
        try:
            message = await _receive_within(receive, timeout_s)
        except _BodyTimeout:
            return
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class BodyLimitMiddleware:
    """Pure ASGI middleware: a Content-Length over the cap is refused without keeping the body;
    a body without one (chunked) is counted while read and cut off at the cap; the whole request
    (body and work) has `deadline_s` until its response starts."""

    def __init__(self, app: ASGIApp, max_bytes: int, drain_bytes: int = DRAIN_BYTES,
                 body_timeout_s: float | None = None, deadline_s: float | None = None,
                 json_max_bytes: int | None = None) -> None:
        self.app, self.max_bytes, self.drain_bytes = app, max_bytes, drain_bytes
        self.body_timeout_s, self.deadline_s = body_timeout_s, deadline_s
        self.json_max_bytes = json_max_bytes or max_bytes  # a JSON body's cap (base64 images are larger)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        bodiless = headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers
        state = {"started": False, "body_done": bodiless}
        # an admin's reload may load a model: keyed, trusted and slow, it is not held to the deadline
        deadline = asyncio.timeout(None if scope["path"].startswith(UNTIMED_PREFIX) else self.deadline_s)

        async def started_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                deadline.reschedule(None)  # a response under way is no longer held to the deadline
            await send(message)

        try:
            async with deadline:
                await self._limited(scope, receive, started_send, state)
        except TimeoutError:
            if not deadline.expired() or state["started"]:
                raise
            if state["body_done"]:
                await _send_error(send, 503, "deadline_exceeded",
                                  f"no answer within the request deadline of {self.deadline_s:g} s")
            else:
                await _send_error(send, 408, "request_timeout",
                                  f"the request body took over the deadline of {self.deadline_s:g} s to arrive")

    async def _limited(self, scope: Scope, receive: Receive, send: Send, state: dict) -> None:
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        is_json = headers.get("content-type", "").partition(";")[0].strip().lower() == "application/json"
        limit = self.json_max_bytes if is_json else self.max_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            if headers.get("expect", "").lower() != "100-continue" and int(length) <= self.drain_bytes:
                await _drain(receive, self.drain_bytes, self.body_timeout_s)
            await _send_413(send, limit)
            return
        await self._counted(scope, receive, send, state, limit)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, state: dict, limit: int) -> None:
        total, exceeded, timed_out, finished, started = 0, False, False, False, False

        async def counting_receive() -> Message:
            nonlocal total, exceeded, timed_out, finished
            if finished:  # after the body, receive waits for a disconnect: no time limit
                return await receive()
            try:
                message = await _receive_within(receive, self.body_timeout_s)
            except _BodyTimeout:
                timed_out = True
                raise
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                finished = not message.get("more_body", False)
                state["body_done"] = finished
                if total > limit:
                    exceeded = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded or timed_out:
                return  # the app's answer to the cut-off body is replaced by our 413 / 408
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not (exceeded or timed_out):
                raise
        if started:
            return
        if timed_out:
            await _send_error(send, 408, "request_timeout",
                              f"no request body data for {self.body_timeout_s:g} s: the upload stalled")
        elif exceeded:
            if not finished:
                await _drain(receive, self.drain_bytes - total, self.body_timeout_s)
            await _send_413(send, limit)
