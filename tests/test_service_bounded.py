"""Bounded state and private paths: metric labels come from the route table only, a request has an
overall deadline, and no response shows a server path (/info, /readyz, /images, errors)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from cir.index_store import IndexRoot
from indexer.cli import main as index_main
from service.limits import BodyLimitMiddleware
from service_fixtures import LiveServer, copy_root, server_settings, world_index  # noqa: F401


def _raw(server, request: bytes, pause_s: float = 0.0, trickle: bytes = b"") -> tuple[bytes, float]:
    """Send `request`, then `trickle` one byte per `pause_s`; everything answered until close, and when."""
    url = urlsplit(server.url)
    start = time.perf_counter()
    with socket.create_connection((url.hostname, url.port), timeout=20) as sock:
        sock.sendall(request)
        try:
            for byte in trickle:
                time.sleep(pause_s)
                sock.sendall(bytes([byte]))
        except OSError:  # the server gave up on us: what it said is below
            pass
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks), time.perf_counter() - start


@pytest.fixture(scope="module")
def server(world_index, tmp_path_factory):
    root = copy_root(world_index, tmp_path_factory.mktemp("bounded") / "index")
    settings = server_settings(root, request_timeout_s=1.5, body_timeout_s=1.0)
    with LiveServer(settings) as live:
        live.root = root
        yield live


def _series(metrics_text: str) -> list[str]:
    return [line for line in metrics_text.splitlines() if line.startswith("cir_http_requests_total{")]


def test_unknown_paths_and_methods_are_one_label(server):
    with httpx.Client(base_url=server.url) as c:
        c.get("/healthz")
        before = _series(c.get("/metrics").text)
        for i in range(60):  # 413 before routing, 404s, strange methods: never a new label value each
            _raw(server, f"POST /junk-{i}/x HTTP/1.1\r\nHost: t\r\nContent-Length: 999999999\r\n\r\n".encode())
            c.get(f"/nothing-{i}")
            c.request("PROPFIND", f"/other-{i}")
        after = _series(c.get("/metrics").text)
    new = sorted(set(after) - set(before), key=len)
    labels = {line.split("}")[0] for line in after}
    assert not any("junk" in label or "nothing-" in label or "other-" in label for label in labels)
    assert any('route="unmatched",status="413"' in label for label in labels)
    assert any('method="other"' in label for label in labels)
    assert len(new) <= 4, new


def test_a_413_on_a_known_route_keeps_its_route_label(server):
    _raw(server, b"POST /search HTTP/1.1\r\nHost: t\r\nContent-Length: 999999999\r\n\r\n")
    with httpx.Client(base_url=server.url) as c:
        assert 'route="/search",status="413"' in c.get("/metrics").text


def test_a_trickled_body_meets_the_overall_deadline(server):
    head = (b"POST /search HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 100\r\n\r\n")
    # each byte arrives well within body_timeout_s (1 s): only the overall deadline (1.5 s) stops it
    answer, waited = _raw(server, head, pause_s=0.4, trickle=b"text=" + b"x" * 96)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"deadline" in answer and waited < 10


def test_a_slow_answer_is_not_cut_once_it_has_started(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.post("/search", data={"text": "a red circle"}).status_code == 200


def _no_paths(text: str, *paths: Path) -> None:
    for path in paths:
        assert str(path) not in text and str(path.resolve()) not in text
    assert "/tmp/" not in text


def test_info_shows_no_server_path(server, world_index):
    with httpx.Client(base_url=server.url) as c:
        info = c.get("/info")
    assert info.status_code == 200
    assert "gallery" not in info.json()["manifest"]
    _no_paths(info.text, server.root, world_index["world"])


def test_readyz_and_reload_errors_show_no_server_path(server):
    current = server.root / "CURRENT"
    good = current.read_text()
    try:
        current.write_text("v999999-missing\n")
        with httpx.Client(base_url=server.url, headers={"X-API-Key": "test-key"}) as c:
            reload = c.post("/admin/reload")
            ready = c.get("/readyz")
            info = c.get("/info")
        assert reload.status_code == 409 and reload.json()["error"]
        assert ready.json()["last_reload_error"]
        for r in (reload, ready, info):
            _no_paths(r.text, server.root)
    finally:
        current.write_text(good)


@pytest.fixture(scope="module")
def big_images(world_index, tmp_path_factory):
    """An index of three 300x300 images whose files are then removed or broken."""
    base = tmp_path_factory.mktemp("big")
    rows = []
    for n, colour in enumerate(["red", "green", "blue"]):
        path = base / f"img{n}.png"
        Image.new("RGB", (300, 300), colour).save(path)
        rows.append({"path": str(path), "id": f"i{n}", "colour": colour})
    (base / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc = index_main(["build", "--gallery", str(base / "m.jsonl"), "--model", world_index["model"], "--out",
                     str(base / "index"), "--workers", "0", "--factory", "Flat", "--no-progress"])
    assert rc == 0 and IndexRoot(base / "index").current_version()
    (base / "img1.png").unlink()
    (base / "img2.png").write_bytes(b"not an image any more")
    with LiveServer(server_settings(base / "index")) as live:
        yield live, base


def test_a_missing_gallery_file_is_a_410_and_a_broken_one_names_no_path(big_images):
    live, base = big_images
    with httpx.Client(base_url=live.url) as c:
        assert c.get("/images/i0", params={"size": 64}).status_code == 200
        gone = c.get("/images/i1")
        broken = c.get("/images/i2", params={"size": 64})
        unknown = c.get("/images/nope")
    assert gone.status_code == 410 and "missing on disk" in gone.json()["detail"]
    assert unknown.status_code == 404 and "no gallery image" in unknown.json()["detail"]
    assert broken.status_code == 404 and broken.json()["error"] == "not_found"
    for r in (gone, broken):
        _no_paths(r.text, base)


def test_the_deadline_in_the_middleware_408_503_and_admin():
    """Body still arriving at the deadline: 408; work not answered by it: 503; /admin/* is not held to it."""
    async def slow_app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await asyncio.sleep(0.5)  # the work
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def call(path: str, trickle: bool) -> int:
        sent, chunks = [], [b"a"] * (20 if trickle else 1)

        async def receive():
            if trickle:
                await asyncio.sleep(0.05)  # each piece well within body_timeout_s
            body = chunks.pop(0) if chunks else b""
            return {"type": "http.request", "body": body, "more_body": bool(chunks)}

        async def send(message):
            sent.append(message)

        headers = [(b"content-length", str(20 if trickle else 1).encode())]
        scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
        await BodyLimitMiddleware(slow_app, max_bytes=1000, body_timeout_s=1, deadline_s=0.3)(scope, receive, send)
        return sent[0]["status"]

    assert asyncio.run(call("/search", trickle=True)) == 408
    assert asyncio.run(call("/search", trickle=False)) == 503
    assert asyncio.run(call("/admin/reload", trickle=False)) == 200
