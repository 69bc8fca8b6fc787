"""GET /browse (the page's first screen), the display fields and a background job's line in /info."""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
import pytest

from service.display import display_fields
from service_fixtures import LiveServer, rich_index, rich_server, server_settings, world_index  # noqa: F401


@pytest.fixture(scope="module")
def client(rich_server):
    with httpx.Client(base_url=rich_server.url, timeout=60) as c:
        yield c


def test_random_browse_is_a_sample_in_the_search_hit_shape(client, rich_index):
    r = client.get("/browse", params={"n": 6, "seed": 7})
    assert r.status_code == 200
    body = r.json()
    assert body["order"] == "random" and body["seed"] == 7 and body["count"] == len(rich_index["ids"])
    hits = body["results"]
    assert len(hits) == 6 and len({h["id"] for h in hits}) == 6
    search_hit = client.post("/search", data={"text": "a shape", "k": "1"}).json()["results"][0]
    assert set(hits[0]) == set(search_hit)  # the same shape as search results
    assert all(h["score"] is None and h["metadata"] == rich_index["metadata"][h["id"]] for h in hits)
    assert [h["rank"] for h in hits] == list(range(1, 7))
    again = client.get("/browse", params={"n": 6, "seed": 7}).json()["results"]
    assert [h["id"] for h in again] == [h["id"] for h in hits]  # the same seed, the same sample
    assert client.get("/images/" + hits[0]["id"]).status_code == 200


def test_newest_browse_is_the_last_indexed_first(client, rich_index):
    body = client.get("/browse", params={"n": 3, "order": "newest"}).json()
    assert [h["id"] for h in body["results"]] == rich_index["ids"][::-1][:3] and body["seed"] is None


def test_browse_more_than_the_gallery_gives_the_gallery(client, rich_index):
    body = client.get("/browse", params={"n": 200}).json()
    assert sorted(h["id"] for h in body["results"]) == sorted(rich_index["ids"])


@pytest.mark.parametrize("params", [{"n": 0}, {"n": 201}, {"order": "oldest"}, {"seed": -1}, {"n": "x"}])
def test_bad_browse_parameters_are_a_422(client, params):
    r = client.get("/browse", params=params)
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"


def test_display_fields_default_and_setting():
    fields = {"colour": {"type": "string"}, "spec": {"type": "object"}, "price": {"type": "number"},
              "title": {"type": "string"}, "size": {"type": "string"}}
    assert display_fields(None, fields) == ["title", "price"]
    assert display_fields(None, {k: v for k, v in fields.items() if k not in ("title", "price")}) == ["colour", "size"]
    assert display_fields(" brand , price,", fields) == ["brand", "price"]
    assert display_fields("", fields) == []


def test_info_reports_display_fields_and_a_background_job(rich_index, tmp_path):
    status = tmp_path / "status.json"
    settings = server_settings(rich_index["root"], display_fields="brand,price", status_file=status)
    with LiveServer(settings) as server, httpx.Client(base_url=server.url) as c:
        info = c.get("/info").json()
        assert info["display_fields"] == ["brand", "price"] and info["background"] is None
        status.write_text(json.dumps({"message": f"TAT training: step 5 of 150 ({tmp_path}/tat.log)"}))
        info = c.get("/info").json()
        assert info["background"].startswith("TAT training: step 5 of 150") and str(tmp_path) not in info["background"]
        status.write_text("not json")
        assert c.get("/info").json()["background"] is None


def test_an_image_url_template_names_every_answers_images(rich_index):  # noqa: F811
    """CIR_IMAGE_URL_TEMPLATE is the image URL of search hits, browsed items and GET /items alike."""
    settings = server_settings(rich_index["root"], image_url_template="https://cdn.example/i/{id}.jpg")
    with LiveServer(settings) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        browsed = c.get("/browse", params={"n": 5}).json()["results"]
        searched = c.post("/search", data={"text": "a thing", "k": 5}).json()["results"]
        item = c.get(f"/items/{browsed[0]['id']}").json()
        for hit in browsed + searched + [item]:
            assert hit["image_url"] == "https://cdn.example/i/" + quote(hit["id"], safe="") + ".jpg", hit
