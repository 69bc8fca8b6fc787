"""POST /search as JSON, strict fields, 415, paging over HTTP, exclusion, and the typed client (cir.client)."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from cir.client import AsyncClient, CIRError, Client
from cir.search.paging import MAX_WINDOW
from service.search_input import FORM_FIELDS, JSON_FIELDS
from service_fixtures import client, live_server, world_index  # noqa: F401 - fixtures


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [h["id"] for h in response.json()["results"]]


def test_json_equals_multipart(client, world_index):
    ids, paths = world_index["ids"], world_index["paths"]
    image = paths[ids[3]].read_bytes()
    form = client.post("/search", data={"text": "make it blue", "k": "6", "alpha": "0.6", "reference_id": [ids[8]],
                                        "image_weights": "2,1", "filter": '{"not": {"colour": "red"}}'},
                       files={"image": ("q.png", image, "image/png")})
    as_json = client.post("/search", json={"text": "make it blue", "k": 6, "alpha": 0.6, "reference_id": [ids[8]],
                                           "image_weights": [2, 1], "filter": {"not": {"colour": "red"}},
                                           "image": [_b64(image)]})
    assert _ids(form) == _ids(as_json) and len(_ids(form)) == 6
    assert [h["score"] for h in form.json()["results"]] == [h["score"] for h in as_json.json()["results"]]
    data_url = client.post("/search", json={"image": ["data:image/png;base64," + _b64(image)], "k": 6})
    plain = client.post("/search", files={"image": ("q.png", image, "image/png")}, data={"k": "6"})
    assert _ids(data_url) == _ids(plain)


@pytest.mark.parametrize("kind, body, status, needle", [
    ("json", {"text": "red", "filters": {"colour": "red"}}, 422, "unknown field 'filters'"),
    ("json", {"text": "red", "page": 2}, 422, "unknown field 'page'"),
    ("form", {"text": "red", "filters": '{"colour": "red"}'}, 422, "unknown field 'filters'"),
    ("form", {"text": "red", "page": "2"}, 422, "unknown field 'page'"),
    ("json", {"image": ["not base64!"]}, 422, "is not base64"),
    ("json", {"image": ["https://example.com/a.png"]}, 422, "never fetches a URL"),
    ("json", {"text": "red", "filter": '{"colour": "red"}'}, 422, "valid dictionary"),
    ("json", {"text": "red", "k": MAX_WINDOW}, 422, "less than or equal to 1000"),
    ("json", {"text": "red", "k": 1000, "offset": MAX_WINDOW - 999}, 422, f"at most {MAX_WINDOW}"),
    ("form", {"text": "red", "k": "10", "offset": "-1"}, 422, "greater than or equal to 0"),
    ("json", {"text": "red", "filter": {"or": {"colour": "red"}}}, 422, '"or" takes a non-empty list'),
    ("json", [1, 2], 422, "JSON object"),
])
def test_strict_input(client, kind, body, status, needle):
    r = client.post("/search", json=body) if kind == "json" else client.post("/search", data=body)
    assert r.status_code == status, r.text
    detail = json.dumps(r.json()["detail"], ensure_ascii=False).replace('\\"', '"')
    assert needle in detail and r.json()["error"] in ("invalid_request", "invalid_filter", "invalid_paging")
    if "unknown field" in needle:
        accepted = JSON_FIELDS if kind == "json" else FORM_FIELDS
        assert all(name in r.json()["detail"][0]["msg"] for name in accepted)


def test_other_content_types_are_415(client):
    for headers, content in (({"content-type": "text/plain"}, b"text=red"), ({"content-type": "image/png"}, b"x"),
                             ({}, b"text=red")):
        r = client.post("/search", content=content, headers=headers)
        assert r.status_code == 415, r.text
        assert "multipart/form-data" in r.json()["detail"] and "application/json" in r.json()["detail"]
    assert client.post("/search", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422


def test_json_image_limits(client, live_server):
    limit = live_server.settings.max_upload_bytes
    r = client.post("/search", json={"image": [_b64(b"\x89PNG" + b"0" * limit)]})
    assert r.status_code == 413 and r.json()["error"] == "upload_too_large"
    r = client.post("/search", json={"image": ["AAAA"] * 5, "reference_id": ["x"] * 4})
    assert r.status_code == 422 and r.json()["error"] == "too_many_references"
    r = client.post("/search", json={"text": "red", "negative_text": ["a"] * 9})
    assert r.status_code == 422 and r.json()["error"] == "invalid_negative_text"


def test_paging_over_http(client, world_index):
    everything = _ids(client.post("/search", json={"text": "a red star", "k": 48}))
    pages, offset = [], 0
    while offset is not None:
        body = client.post("/search", data={"text": "a red star", "k": "10", "offset": str(offset)}).json()
        assert body["offset"] == offset and [h["rank"] for h in body["results"]][:1] in ([offset + 1], [])
        pages += [h["id"] for h in body["results"]]
        offset = body["next_offset"]
    assert pages == everything and len(everything) == len(world_index["ids"])
    filtered = {"filter": {"colour": {"nin": ["red"]}}, "text": "a red star"}
    first = client.post("/search", json={**filtered, "k": 5}).json()
    second = client.post("/search", json={**filtered, "k": 5, "offset": first["next_offset"]}).json()
    assert not {h["id"] for h in first["results"]} & {h["id"] for h in second["results"]}
    assert all(h["metadata"]["colour"] != "red" for h in first["results"] + second["results"])


def test_references_are_left_out_unless_kept(client, world_index):
    ids, paths = world_index["ids"], world_index["paths"]
    ref = ids[5]
    assert ref not in _ids(client.post("/search", json={"reference_id": [ref], "k": 5}))
    assert _ids(client.post("/search", json={"reference_id": [ref], "k": 5, "keep_references": True}))[0] == ref
    upload = {"image": ("q.png", paths[ref].read_bytes(), "image/png")}
    assert ref not in _ids(client.post("/search", files=upload, data={"k": "5"}))
    kept = _ids(client.post("/search", files=upload, data={"k": "5", "keep_references": "true"}))
    assert kept[0] == ref
    excluded = _ids(client.post("/search", files=upload, data={"k": "5", "keep_references": "true",
                                                                "exclude_ids": kept[:2]}))
    assert not set(kept[:2]) & set(excluded) and excluded[:3] == kept[2:5]


def test_typed_client_sync_and_async(live_server, world_index, tmp_path):
    ids, paths = world_index["ids"], world_index["paths"]
    with Client(live_server.url) as cir:
        page = cir.search(paths[ids[2]], text="make it blue", k=4, filter={"colour": {"exists": True}})
        assert len(page.results) == 4 and page.next_offset == 4 and page.offset == 0
        assert cir.image(page.results[0]) == paths[page.results[0].id].read_bytes()
        collected = [h.id for p in cir.pages(text="a shape", k=20) for h in p.results]
        assert len(collected) == len(set(collected)) == len(ids)
        assert "colour" in cir.facets()["fields"] and cir.info()["count"] == len(ids)
        assert [c["name"] for c in cir.collections()] == ["default"]
        with pytest.raises(CIRError) as exc:
            cir.search(text="red", filter={"colour": {"like": "r"}})
        assert exc.value.status == 422 and exc.value.code == "invalid_filter"

    async def run():
        async with AsyncClient(live_server.url) as cir:
            page = await cir.search(reference_id=ids[1], text="make it red", k=3)
            pages = [p async for p in cir.pages(text="a shape", k=30)]
            return page, pages

    page, pages = asyncio.run(run())
    assert len(page.results) == 3 and ids[1] not in [h.id for h in page.results]
    assert [len(p.results) for p in pages] == [30, len(ids) - 30] and pages[-1].next_offset is None


def test_openapi_describes_both_bodies(client):
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/search"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    form = schema["components"]["schemas"]["SearchForm"]["properties"]
    assert form["image"] == {**form["image"], "type": "array", "items": {"type": "string", "format": "binary"}}
    assert "contentMediaType" not in json.dumps(form) and "null" not in json.dumps(form)
    assert schema["paths"]["/collections/{name}/search"]["post"]["requestBody"]["content"] == body
