"""Hostile requests that once answered 500, and their neighbours: every one is now a clear 4xx.

Reproductions from the fault tests of issue 24: a filter number too big for a float (an
integer literal of 400 digits, also inside `in`), a lone surrogate as a filter value on a
number, boolean or date field, and image weights that a float64 holds but the encoder's
float32 does not. An unexpected exception is a JSON 500 with `Connection: close` and an id
that the server log repeats.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from urllib.parse import urlsplit

import httpx
import pytest

from cir.search.paging import MAX_EXCLUDE_IDS

from service.app import create_app
from service_fixtures import (LiveServer, live_server, rich_index, rich_server, server_settings,  # noqa: F401
                              world_index)

HUGE = int("1" + "0" * 400)


@pytest.fixture(scope="module")
def client(rich_server):
    with httpx.Client(base_url=rich_server.url, timeout=60) as c:
        yield c


def _search(client, flt=None, **fields):
    data = {"text": "a shape", **{k: str(v) for k, v in fields.items()}}
    if flt is not None:
        data["filter"] = flt if isinstance(flt, str) else json.dumps(flt)
    return client.post("/search", data=data)


def _assert_error(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    r.content.decode("utf-8")  # strict: the body is valid UTF-8
    body = r.json()
    assert body["error"] == code
    return body


@pytest.mark.parametrize("flt", [
    {"price": HUGE}, {"price": -HUGE}, {"price": {"in": [1, HUGE]}}, {"price": {"gte": HUGE}},
    {"price": {"ne": HUGE}}, {"colour": HUGE}, {"added": {"lt": HUGE}}, {"in_stock": {"in": [HUGE]}},
    '{"price": 1e400}', '{"price": {"lt": -1e400}}',
])
def test_a_filter_number_beyond_float64_is_a_422(client, flt):
    body = _assert_error(_search(client, flt), 422, "invalid_filter")
    assert "too large for a float64" in body["detail"] or "not a finite number" in body["detail"]
    assert len(body["detail"]) < 300  # the 400 digits are not echoed back


def test_the_largest_float64_filter_numbers_still_work(client):
    r = _search(client, {"price": {"lt": 1.7e308, "gt": -1.7e308}}, k=1000)
    assert r.status_code == 200 and len(r.json()["results"]) > 0


@pytest.mark.parametrize("field", ["price", "in_stock", "added", "colour"])
@pytest.mark.parametrize("shape", ["eq", "in", "ne"])
def test_a_lone_surrogate_filter_value_is_a_readable_422(client, field, shape):
    value = {"eq": '"\\ud800"', "in": '{"in": ["\\ud800", "\\udfff"]}', "ne": '{"ne": "x\\udc00y"}'}[shape]
    r = _search(client, f'{{"{field}": {value}}}')
    if field == "colour":  # a string field takes any string: it matches nothing, and says so
        assert r.status_code == 200, r.text
        r.content.decode("utf-8")
        return
    body = _assert_error(r, 422, "invalid_filter")
    if shape == "eq":  # the value is named, escaped
        assert "\\ud800" in body["detail"]


def test_a_lone_surrogate_as_field_name_or_in_a_bad_json_is_a_422(client):
    _assert_error(_search(client, '{"\\ud800": 1}'), 422, "invalid_filter")
    _assert_error(_search(client, '{"\\ud800": 1'), 422, "invalid_filter")


def _two_refs(rich_index) -> list[str]:
    return rich_index["ids"][:2]


@pytest.mark.parametrize("weights,reason", [
    ("1e308,1e308", "too large for a float32"), ("3.5e38,1", "too large for a float32"),
    ("1e-46,1e-46", "too small for a float32"), ("1e400,1", "too large"), ("1,-1e999", "too large"),
    ("inf,1", "not a number"), ("nan,1", "not a number"), ("1,", "not a number"), ("0,0", "not all be 0"),
    ("1e" + "9" * 50 + ",1", "too large"),
])
def test_image_weights_beyond_float32_are_a_422(client, rich_index, weights, reason):
    r = client.post("/search", data={"reference_id": _two_refs(rich_index), "text": "a shape",
                                     "image_weights": weights})
    body = _assert_error(r, 422, "invalid_image_weights")
    assert reason in body["detail"]


@pytest.mark.parametrize("weights", ["3e38,3e38", "1e-45,1e-45", "3.4e38,3.4e38", "2,2"])
def test_extreme_but_equal_float32_weights_rank_like_equal_weights(client, rich_index, weights):
    def ranking(w: str) -> list[str]:
        r = client.post("/search", data={"reference_id": _two_refs(rich_index), "text": "a shape", "k": "16",
                                         "image_weights": w})
        assert r.status_code == 200, r.text
        return [h["id"] for h in r.json()["results"]]

    assert ranking(weights) == ranking("1,1")


def test_extreme_unequal_weights_rank_like_one_reference(client, rich_index):
    a, b = _two_refs(rich_index)
    r = client.post("/search", data={"reference_id": [a, b], "text": "a shape", "k": "16",
                                     "image_weights": "3e38,1e-40", "keep_references": "true"})
    one = client.post("/search", data={"reference_id": a, "text": "a shape", "k": "16",
                                     "keep_references": "true"})
    assert r.status_code == 200 and [h["id"] for h in r.json()["results"]] == [h["id"] for h in one.json()["results"]]


def test_invalid_utf8_form_fields_are_not_a_500(client):
    for field in ("text", "reference_id", "filter", "image_weights"):
        r = client.post("/search", files={field: (None, b"\xed\xa0\x80 \xff\xfe")})
        assert r.status_code < 500, (field, r.text)
        r.content.decode("utf-8")


# -- an unexpected exception: a JSON 500, Connection: close, an id in the body and the log --------

@pytest.fixture(scope="module")
def faulty(world_index):
    app = create_app(server_settings(world_index["root"]))

    @app.get("/boom")
    async def boom():
        raise RuntimeError("a bug at /srv/secret/path")

    with LiveServer(server_settings(world_index["root"]), app=app) as server:
        yield server


def _raw(server, request: bytes) -> bytes:
    url = urlsplit(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):  # the server closes the connection after the 500
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_bug_is_a_json_500_that_closes_the_connection_and_names_its_log_line(faulty, caplog):
    with caplog.at_level(logging.ERROR, logger="service.faults"):
        answer = _raw(faulty, b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500") and b"connection: close" in head.lower()
    assert b"application/json" in head and answer.count(b"HTTP/1.1") == 1  # the pipelined request is not served
    detail = json.loads(body)
    assert detail["error"] == "internal_error" and "/srv/secret" not in detail["detail"]
    error_id = re.search(r"error id ([0-9a-f]+)", detail["detail"]).group(1)
    assert any(error_id in rec.getMessage() and rec.exc_info for rec in caplog.records)
    with httpx.Client(base_url=faulty.url) as c:  # a new connection is served as usual
        assert c.get("/healthz").status_code == 200
        assert 'status="500"' in c.get("/metrics").text


def test_the_openapi_schema_says_image_weights_is_one_string(client):
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/search"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    ref = body["$ref"].rsplit("/", 1)[-1]
    assert schema["components"]["schemas"][ref]["properties"]["image_weights"]["type"] == "string"


@pytest.mark.parametrize("case", ["fields", "field_size"])
def test_the_form_parsers_limits_are_a_json_400(client, case):
    if case == "fields":
        # one field more than the form parser takes (exclude_ids may repeat up to MAX_EXCLUDE_IDS times)
        files = [("negative_text", (None, b"x")) for _ in range(4 * MAX_EXCLUDE_IDS + 1)] + [("text", (None, b"red"))]
    else:
        files = [("text", (None, b"x" * (1024 * 1024 + 10)))]
    body = _assert_error(client.post("/search", files=files), 400, "bad_request")
    assert "field" in body["detail"].lower() or "part" in body["detail"].lower()
