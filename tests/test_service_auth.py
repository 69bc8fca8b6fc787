"""Every route with and without each key: admin key (rotation list), read key, none; the start-up log line."""

from __future__ import annotations

import logging
from urllib.parse import quote

import httpx
import pytest

from cir.client import CIRError, Client

from service_fixtures import LiveServer, server_settings, world_index  # noqa: F401 - fixtures

ADMIN_OLD, ADMIN_NEW, READ = "admin-old", "admin-new", "read-key"


def _reads(world_index) -> list[tuple[str, str, dict]]:
    item = quote(world_index["ids"][0], safe="")
    return [("POST", "/search", {"data": {"text": "a red star"}}),
            ("POST", "/search", {"json": {"text": "a red star"}}),
            ("GET", f"/images/{item}", {}), ("GET", "/facets", {}), ("GET", "/info", {}), ("GET", "/metrics", {}),
            ("GET", "/collections", {}), ("POST", "/collections/default/search", {"json": {"text": "x"}}),
            ("GET", f"/collections/default/images/{item}", {}), ("GET", "/collections/default/facets", {}),
            ("GET", "/collections/default/info", {})]


OPEN = [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/"), ("GET", "/openapi.json")]


def _call(c: httpx.Client, method: str, path: str, key: str | None, bearer: bool = False, **kw) -> httpx.Response:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"} if bearer else {"X-API-Key": key}
    return c.request(method, path, headers=headers, **kw)


@pytest.fixture(scope="module")
def keyed(world_index):
    settings = server_settings(world_index["root"], api_key=f"{ADMIN_OLD}, {ADMIN_NEW}", read_api_key=READ)
    with LiveServer(settings) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def keyless(world_index):
    with LiveServer(server_settings(world_index["root"], api_key=None)) as server, \
            httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def test_reads_need_the_read_or_an_admin_key(keyed, world_index):
    for method, path, kw in _reads(world_index):
        for key, bearer, status in ((None, False, 401), ("wrong", False, 401), (READ, False, 200), (READ, True, 200),
                                    (ADMIN_OLD, False, 200), (ADMIN_NEW, True, 200), (READ[:-1], False, 401)):
            r = _call(keyed, method, path, key, bearer, **kw)
            assert r.status_code == status, (method, path, key, r.text[:200])
            if status == 401:
                assert r.json()["error"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
    for method, path in OPEN:
        assert _call(keyed, method, path, None).status_code == 200, path
    with Client(str(keyed.base_url), api_key=READ) as cir, Client(str(keyed.base_url)) as anonymous:
        hit = cir.search(text="a red star", k=1).results[0]
        assert cir.image(hit) == world_index["paths"][hit.id].read_bytes()
        with pytest.raises(CIRError) as exc:
            anonymous.search(text="a red star")
        assert exc.value.status == 401


def test_admin_routes_need_an_admin_key_of_the_list(keyed):
    for key, status in ((None, 401), (READ, 401), ("wrong", 401), (ADMIN_OLD, 200), (ADMIN_NEW, 200)):
        r = _call(keyed, "POST", "/admin/reload", key)
        assert r.status_code == status, (key, r.text)
    assert _call(keyed, "POST", "/admin/reload?collection=default", ADMIN_NEW).json()["status"] == "swapped"
    assert _call(keyed, "POST", "/admin/reload?collection=nope", ADMIN_NEW).status_code == 404


def test_without_keys_reads_are_open_and_admin_is_off(keyless, world_index):
    for method, path, kw in _reads(world_index):
        assert _call(keyless, method, path, None, **kw).status_code == 200, path
    r = _call(keyless, "POST", "/admin/reload", None)
    assert r.status_code == 403 and "CIR_API_KEY" in r.json()["detail"]
    assert _call(keyless, "POST", "/admin/reload", "anything").status_code == 403


def test_no_response_shows_a_server_path(keyless, world_index):
    root = str(world_index["root"])
    for path in ("/info", "/collections/default/info", "/facets", "/collections", "/readyz"):
        body = keyless.get(path).text
        assert root not in body and str(world_index["world"]) not in body, path


def test_start_up_logs_which_routes_are_open(world_index, caplog):
    caplog.set_level(logging.INFO, logger="service.app")
    with LiveServer(server_settings(world_index["root"], api_key=None, read_api_key=READ)):
        pass
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("access:")]
    assert lines == ["access: search, images, facets, info and metrics need CIR_READ_API_KEY; admin and write "
                     "routes off (403): set CIR_API_KEY to turn them on"]
