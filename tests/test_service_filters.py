"""Filters over HTTP: POST /search's `filter` field, GET /facets and /info, every error as a 422."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from cir.encoder import load_encoder
from filter_fixtures import matches
from service_fixtures import BRANDS, HOSTILE_FIELD, live_server, rich_index, rich_server, world_index  # noqa: F401

ALL = 1000


@pytest.fixture(scope="module")
def client(rich_server):
    with httpx.Client(base_url=rich_server.url, timeout=60) as c:
        yield c


def _search(client, flt, **fields):
    data = {"text": "a shape", "k": str(ALL), **{k: str(v) for k, v in fields.items()}}
    if flt is not None:
        data["filter"] = flt if isinstance(flt, str) else json.dumps(flt)
    return client.post("/search", data=data)


@pytest.fixture(scope="module")
def exact(rich_index):
    """The exact filtered ranking of the text query "a shape": brute force over the stored embeddings."""
    emb = np.load(rich_index["root"] / "versions" / rich_index["version"] / "embeddings.npy")
    scores = emb @ load_encoder(rich_index["model"], device="cpu").encode_texts(["a shape"])[0]

    def ranking(flt: dict) -> tuple[list[str], np.ndarray]:
        rows = [r for r, i in enumerate(rich_index["ids"]) if matches(rich_index["metadata"][i], flt)]
        order = sorted(rows, key=lambda r: (-scores[r], r))
        return [rich_index["ids"][r] for r in order], scores[order]

    return ranking


@pytest.mark.parametrize("flt", [
    {"colour": "blue"}, {"price": {"gte": 10, "lt": 50}}, {"added": {"gte": "2024-03-01", "lte": "2024-06-30"}},
    {"tags": {"any": ["sale", "eco"]}}, {"tags": {"all": ["sale", "new"]}}, {"tags": "new"}, {"in_stock": False},
    {"brand": {"in": BRANDS[1:3]}}, {"brand": "Robert'); DROP TABLE items;--"}, {HOSTILE_FIELD: "yes"},
    {"brand": {"ne": "acme"}, "price": {"gt": 20}, "in_stock": True},
])
def test_filtered_search_is_the_exact_filtered_ranking(client, exact, flt):
    response = _search(client, flt)
    assert response.status_code == 200, response.text
    hits = response.json()["results"]
    want_ids, want_scores = exact(flt)
    assert want_ids and [h["id"] for h in hits] == want_ids
    assert np.allclose([h["score"] for h in hits], want_scores, atol=1e-5)
    assert all(matches(h["metadata"], flt) for h in hits)


def test_filter_combines_with_reference_and_upload(client, rich_index):
    ref = rich_index["ids"][3]  # not in stock
    by_ref = _search(client, {"in_stock": True}, reference_id=ref, k=3).json()["results"]
    image = rich_index["paths"][ref].read_bytes()
    by_upload = client.post("/search", data={"text": "a shape", "k": "3", "filter": '{"in_stock": true}'},
                            files={"image": ("q.png", image, "image/png")}).json()["results"]
    assert len(by_ref) == len(by_upload) == 3
    assert all(h["metadata"]["in_stock"] for h in by_ref + by_upload)
    unfiltered = _search(client, None, reference_id=ref, k=3, keep_references="true").json()["results"]
    assert ref in {h["id"] for h in unfiltered} and rich_index["metadata"][ref]["in_stock"] is False
    assert ref not in {h["id"] for h in by_ref}


def test_a_filter_matching_nothing_is_an_empty_200(client):
    for flt in ({"colour": "magenta"}, {"price": {"gt": 10_000}}, {"tags": {"all": ["sale", "eco"]}}, "{}"):
        response = _search(client, flt)
        assert response.status_code == 200
        assert (response.json()["results"] == []) == (flt != "{}")


@pytest.mark.parametrize("flt, field, reason", [
    ('{"colour": "blue"', None, "not valid JSON"),
    ("[1, 2]", None, "JSON object"),
    ('{"price": NaN}', None, "NaN is not a finite number"),
    ('{"price": {"lt": 1e999}}', "price", "not a finite number"),
    ('{"colr": "blue"}', "colr", "the index has no field 'colr'"),
    ('{"colour": {"regex": ".*"}}', "colour", "unknown operator 'regex'"),
    ('{"price": "cheap"}', "price", "needs a number"),
    ('{"colour": {"gt": "blue"}}', "colour", "does not apply to a string field"),
    ('{"in_stock": "yes"}', "in_stock", "needs true or false"),
    ('{"added": {"gte": "last week"}}', "added", "needs an ISO 8601 date"),
    ('{"added": {"gte": "2024-02-30"}}', "added", "needs an ISO 8601 date"),
    ('{"tags": {"in": ["sale"]}}', "tags", "does not apply to a tags field"),
    ('{"spec": {"eq": 1}}', "spec", "cannot be filtered"),
    ('{"x\' OR 1=1; --": 1}', "x' OR 1=1; --", "the index has no field"),
    (json.dumps({"brand": "x" * 17000}), None, "over the limit of 16384"),
    (json.dumps({f"f{i}": 1 for i in range(65)}), None, "more than 64 conditions"),
])
def test_every_filter_error_is_a_422_naming_field_and_reason(client, flt, field, reason):
    response = _search(client, flt)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_filter" and reason in body["detail"]
    if field is not None:
        assert f"field {field!r}" in body["detail"]


def test_facets_and_info_fields(client, rich_index):
    facets = client.get("/facets").json()
    assert facets["index_version"] == rich_index["version"] and facets["count"] == len(rich_index["ids"])
    fields = facets["fields"]
    assert {n: f["type"] for n, f in fields.items()} == {
        "added": "date", "brand": "string", "colour": "string", "in_stock": "boolean", "price": "number",
        "spec": "object", "tags": "tags", HOSTILE_FIELD: "string"}
    prices = [m["price"] for m in rich_index["metadata"].values() if "price" in m]
    assert fields["price"]["min"] == min(prices) and fields["price"]["max"] == max(prices)
    assert fields["price"]["count"] == len(prices)
    assert fields["added"]["min"] == "2024-01-15" and fields["added"]["max"] == "2024-12-15"
    assert fields["brand"]["values"] == {b: sum(m["brand"] == b for m in rich_index["metadata"].values())
                                         for b in sorted(BRANDS)}
    assert fields["tags"]["values"]["sale"] == sum("sale" in m["tags"] for m in rich_index["metadata"].values())
    assert fields["in_stock"]["values"]["true"] + fields["in_stock"]["values"]["false"] == len(rich_index["ids"])
    assert client.get("/info").json()["fields"] == fields
    schema = client.get("/openapi.json").json()
    assert "filter" in schema["components"]["schemas"]["SearchForm"]["properties"]
    assert "/facets" in schema["paths"]


def test_world_index_facets_list_the_five_attributes(live_server):
    fields = httpx.get(live_server.url + "/facets").json()["fields"]
    assert set(fields) == {"shape", "colour", "size", "position", "pattern"}
    assert all(f["type"] == "string" and sum(f["values"].values()) == f["count"] for f in fields.values())
