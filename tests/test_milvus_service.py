"""End to end on a real Milvus: `cir index build --store`, `cir search --store`, `cir serve --store`, rollback.

The same rich gallery is served from a FAISS root (rich_server) and from Milvus (FLAT): every
answer (ids, scores within 1e-5, facets, references, filters) must be the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from cir.stores import open_store
from cir_cli.search import main as search_main
from indexer.cli import main as index_main
from service_fixtures import (BRANDS, HOSTILE_FIELD, LiveServer, rich_index, rich_server,  # noqa: F401 - fixtures
                              server_settings, world_index)

FILTERS = [None, {"colour": "blue"}, {"price": {"gte": 10, "lt": 50}}, {"added": {"gte": "2024-03-01"}},
           {"tags": {"any": ["sale", "eco"]}}, {"tags": {"all": ["sale", "new"]}}, {"in_stock": False},
           {"brand": {"in": BRANDS[1:3]}}, {HOSTILE_FIELD: "yes"}, {"brand": {"ne": "acme"}, "price": {"gt": 20}}]


def _build(url: str, manifest: Path, model: str, work: Path, *extra: str) -> list[str]:
    """`cir index build` arguments into Milvus (FLAT: exact, comparable with the FAISS Flat root)."""
    return ["build", "--gallery", str(manifest), "--model", model, "--store", url, "--out", str(work),
            "--workers", "0", "--no-progress", "--alpha", "0.75", "--milvus-index", "FLAT", "--json", *extra]


@pytest.fixture(scope="module")
def milvus_rich(milvus_server, rich_index, tmp_path_factory):
    """The rich gallery built into Milvus with the indexer CLI: {'url', 'work', 'manifest'}."""
    url = milvus_server.url("rich")
    work = tmp_path_factory.mktemp("milvus_work")
    manifest = rich_index["root"].parent / "rich.jsonl"
    assert index_main(_build(url, manifest, rich_index["model"], work)) == 0
    return {"url": url, "work": work, "manifest": manifest}


@pytest.fixture(scope="module")
def servers(milvus_rich, rich_server):
    settings = server_settings(None, store=milvus_rich["url"], image_url_template="https://cdn.example/i/{id}")
    with LiveServer(settings) as milvus_live, httpx.Client(base_url=milvus_live.url, timeout=60) as m, \
            httpx.Client(base_url=rich_server.url, timeout=60) as f:
        yield m, f


def _post(client, **data):
    response = client.post("/search", data={k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()})
    assert response.status_code == 200, response.text
    return response.json()["results"]


@pytest.mark.parametrize("flt", FILTERS)
def test_served_results_equal_the_faiss_root(servers, rich_index, flt):
    m, f = servers
    extra = {} if flt is None else {"filter": flt}
    for query in ({"text": "a red shape"}, {"reference_id": rich_index["ids"][3], "text": "make it blue"}):
        got, want = _post(m, k="100", **query, **extra), _post(f, k="100", **query, **extra)
        assert [h["id"] for h in got] == [h["id"] for h in want]
        assert all(abs(a["score"] - b["score"]) <= 1e-5 for a, b in zip(got, want))
        assert [h["metadata"] for h in got] == [h["metadata"] for h in want]
        assert all(h["image_url"] == f"https://cdn.example/i/{h['id']}" for h in got)


def test_facets_info_images_and_readiness(servers, rich_index):
    m, f = servers
    got, want = m.get("/facets").json()["fields"], f.get("/facets").json()["fields"]
    # (a FAISS version also lists min/max 1.0 for an object field: its presence flags, not values)
    assert {n: i for n, i in got.items() if i["type"] != "object"} == \
        {n: i for n, i in want.items() if i["type"] != "object"}
    assert [(n, i["count"]) for n, i in got.items() if i["type"] == "object"] == [("spec", 16)]
    assert m.get("/facets").json()["count"] == len(rich_index["ids"])
    info = m.get("/info").json()
    assert info["fingerprint"] == f.get("/info").json()["fingerprint"] and info["factory"] == "milvus:FLAT"
    item = rich_index["ids"][0]
    assert m.get(f"/images/{item}").content == rich_index["paths"][item].read_bytes()
    assert m.get("/readyz").json()["status"] == "ready"


def test_cli_search_on_the_store_equals_the_root(milvus_rich, rich_index, capsys):
    query = ["--text", "a shape", "--k", "5", "--json", "--filter", json.dumps({"in_stock": True})]
    assert search_main(["--store", milvus_rich["url"], *query]) == 0
    got = json.loads(capsys.readouterr().out)
    assert search_main(["--index", str(rich_index["root"]), *query]) == 0
    want = json.loads(capsys.readouterr().out)
    assert [h["id"] for h in got["results"]] == [h["id"] for h in want["results"]]


def test_incremental_rebuild_full_rebuild_and_rollback(milvus_server, rich_index, tmp_path, capsys):
    url, work = milvus_server.url("inc"), tmp_path / "work"
    manifest = tmp_path / "g.jsonl"
    rows = [json.loads(line) for line in (rich_index["root"].parent / "rich.jsonl").read_text().splitlines()]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows[:10]))
    model = rich_index["model"]
    assert index_main(_build(url, manifest, model, work)) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["status"] == "full" and first["count"] == 10
    rows[1]["colour"] = "plaid"  # changed, removed and added items
    manifest.write_text("".join(json.dumps(r) + "\n" for r in [*rows[:2], *rows[3:12]]))
    assert index_main(_build(url, manifest, model, work)) == 0
    second = json.loads(capsys.readouterr().out)
    assert (second["status"], second["version"], second["upserted"], second["deleted"]) == \
        ("incremental", first["version"], 3, 1)
    store = open_store(url)
    view = store.open()
    assert view.count == 11 and view.item(rows[2]["id"]) is None
    assert view.item(rows[1]["id"])["metadata"]["colour"] == "plaid"
    assert index_main(_build(url, manifest, model, work)) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "unchanged"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows[:12]))
    assert index_main([*_build(url, manifest, model, work), "--full"]) == 0
    third = json.loads(capsys.readouterr().out)
    assert third["status"] == "full" and third["version"] != first["version"]
    assert store.current_version() == third["version"] and store.versions() == [first["version"], third["version"]]
    assert index_main(["publish", url, first["version"]]) == 0  # rollback: the alias switches back
    assert store.current_version() == first["version"] and store.open().count == 11
    assert index_main(["publish", url, "v999-nope"]) == 2
    store.close()
