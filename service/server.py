"""The HTTP server of `cir serve`: uvicorn with limits on what a client may hold open.

uvicorn has no header size limit with its httptools parser and no timeout for reading a
request's head, so a client could send megabytes of headers, or trickle them forever. The
protocol below counts the bytes of a request's head (answering 431 past `max_header_kb`) and
gives it `header_timeout_s` to arrive (then 408). The body's read timeout is per receive, in
`service.limits.BodyLimitMiddleware`; idle keep-alive connections close after `keep_alive_s`.
"""

from __future__ import annotations

import json
import logging

import uvicorn

from service.settings import Settings

try:  # uvicorn[standard] brings httptools; without it uvicorn's h11 parser enforces the size only
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - depends on the installation
    HttpToolsProtocol = None

log = logging.getLogger(__name__)

REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def _refusal(status: int, code: str, detail: str) -> bytes:
    body = json.dumps({"error": code, "detail": detail}).encode()
    head = (f"HTTP/1.1 {status} ".encode() + REASONS[status] + b"\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode())
    return head + body


if HttpToolsProtocol is not None:
    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with a size limit and a read timeout for each request's head."""

        max_head_bytes = 64 * 1024
        head_timeout_s = 10.0

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._head_bytes, self._reading_head, self._head_timer = 0, True, None
            self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._reading_head:
                self._head_bytes += len(data)
            super().data_received(data)
            if self._reading_head and self._head_bytes > self.max_head_bytes:
                self._refuse(431, "request_header_fields_too_large",
                             f"the request line and headers are over {self.max_head_bytes} bytes")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes, self._reading_head = 0, True
            self._arm()

        def on_headers_complete(self) -> None:
            self._reading_head = False
            self._disarm()
            super().on_headers_complete()

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self._reading_head:
                self._refuse(408, "request_timeout", f"the request headers took over {self.head_timeout_s:g} s")

        def _refuse(self, status: int, code: str, detail: str) -> None:
            self._reading_head = False
            self._disarm()
            if self.transport.is_closing():
                return
            # never interleave with a response still being sent on this connection
            if self.cycle is None or self.cycle.response_complete:
                self.transport.write(_refusal(status, code, detail))
            self.transport.close()


def http_protocol(settings: Settings):
    """The HTTP protocol class with the settings' head limits (h11 when httptools is not installed)."""
    if HttpToolsProtocol is None:
        log.warning("httptools is not installed: no timeout for reading request headers")
        return "h11"
    return type("CirHttpProtocol", (LimitedHttpToolsProtocol,),
                {"max_head_bytes": settings.max_header_kb * 1024, "head_timeout_s": settings.header_timeout_s})


def uvicorn_config(app, settings: Settings, **overrides) -> uvicorn.Config:
    """uvicorn's configuration for `app` under `settings`: address, logging and every connection limit."""
    options = dict(host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                   timeout_graceful_shutdown=10, http=http_protocol(settings),
                   h11_max_incomplete_event_size=settings.max_header_kb * 1024,
                   timeout_keep_alive=settings.keep_alive_s, limit_concurrency=settings.limit_concurrency)
    options.update(overrides)
    return uvicorn.Config(app, **options)
