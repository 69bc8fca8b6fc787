"""Connection limits of the real server (uvicorn as `cir serve` configures it), from raw sockets.

A stalled upload is cut off with 408, trickled headers get 408, an 8 MB header is refused with
431, an idle keep-alive connection is closed, and ordinary requests are untouched.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from service.limits import BodyLimitMiddleware
from service_fixtures import LiveServer, server_settings, world_index  # noqa: F401 - fixture

TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def limited(world_index):
    settings = server_settings(world_index["root"], max_header_kb=16, header_timeout_s=TIMEOUT_S,
                               body_timeout_s=TIMEOUT_S, keep_alive_s=TIMEOUT_S)
    with LiveServer(settings) as server:
        yield server


def _connect(server) -> socket.socket:
    url = urlsplit(server.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=10)
    return sock


def _read_all(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    start, chunks = time.perf_counter(), []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks), time.perf_counter() - start


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_a_stalled_upload_is_cut_off_with_408(limited):
    with _connect(limited) as sock:
        sock.sendall(b"POST /search HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nred")
        answer, waited = _read_all(sock)  # ... and never the rest
    assert _status(answer) == 408 and waited < TIMEOUT_S + 5
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "request_timeout"


def test_trickled_headers_get_408(limited):
    with _connect(limited) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        for _ in range(3):  # a byte now and then does not keep it alive
            # all sent well before the deadline: a byte sent after the server closed would make
            # the kernel reset the connection and drop the 408 before it is read
            time.sleep(TIMEOUT_S / 5)
            sock.sendall(b"X")
        answer, _ = _read_all(sock)
    assert _status(answer) == 408


def test_a_connection_that_sends_nothing_is_closed(limited):
    with _connect(limited) as sock:
        start = time.perf_counter()
        answer, _ = _read_all(sock)
    assert time.perf_counter() - start < TIMEOUT_S + 5
    assert answer == b"" or _status(answer) == 408


def test_an_8_mb_header_is_refused(limited):
    with _connect(limited) as sock:
        sent = 0
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ")
            while sent < 8 << 20:
                sock.sendall(b"a" * 65536)
                sent += 65536
            sock.sendall(b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server hung up mid-header: refused
        try:
            answer, _ = _read_all(sock)
        except ConnectionResetError:
            answer = b""
    assert sent < 8 << 20  # cut off long before the end
    assert answer == b"" or _status(answer) == 431


def test_ordinary_requests_and_idle_keep_alive(limited):
    with httpx.Client(base_url=limited.url, timeout=30) as client:
        r = client.post("/search", data={"text": "red"}, headers={"X-Padding": "p" * 8000})
        assert r.status_code == 200
    with _connect(limited) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        answer, waited = _read_all(sock)  # answered, then closed once idle for keep_alive_s
    assert _status(answer) == 200 and waited < 3  # keep_alive_s, not uvicorn's default 5 s


def test_body_timeout_in_the_middleware():
    """Each receive of the body waits at most body_timeout_s; the app's own answer is replaced by 408."""
    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def call(stall: bool):
        sent, chunks = [], [b"a" * 10, b"b" * 10]

        async def receive():
            if stall and not chunks:
                await asyncio.sleep(60)
            body = chunks.pop(0) if chunks else b""
            return {"type": "http.request", "body": body, "more_body": bool(chunks) or stall}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/search", "headers": [(b"content-length", b"100")]}
        await BodyLimitMiddleware(app, max_bytes=1000, body_timeout_s=0.1)(scope, receive, send)
        return sent[0]["status"]

    assert asyncio.run(call(stall=False)) == 200
    assert asyncio.run(asyncio.wait_for(call(stall=True), 5)) == 408
