"""The write routes over HTTP on a real server: visible at once, durable, keyed, and bad input refused."""

from __future__ import annotations

import base64
import errno
import io
import json
import os
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from service_fixtures import API_KEY, LiveServer, copy_root, server_settings, world_index  # noqa: F401

from cir.stores import FaissRootStore
from cir.stores import changelog

AUTH = {"X-API-Key": API_KEY}


@pytest.fixture()
def root(world_index, tmp_path):  # noqa: F811
    return copy_root(world_index, tmp_path / "root")


@pytest.fixture()
def server(root):
    with LiveServer(server_settings(root, compact_pending=0, compact_age_s=0)) as srv:
        with httpx.Client(base_url=srv.url, timeout=60, headers=AUTH) as c:
            yield srv, c


def png(seed: int, size=(40, 32)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def put(c, item_id: str, data: bytes | None, metadata: dict | str | None = None, **kw):
    files = {"image": ("x.png", data, "image/png")} if data is not None else None
    form = {"metadata": metadata if isinstance(metadata, str) else json.dumps(metadata or {})}
    return c.put(f"/items/{item_id}", files=files, data=form, **kw)


def search_ids(c, **form) -> list[str]:
    r = c.post("/search", data={"keep_references": "true", **form})  # a hit may be its own reference here
    assert r.status_code == 200, r.text
    return [h["id"] for h in r.json()["results"]]


def test_upsert_patch_delete_are_visible_at_once(server, world_index):  # noqa: F811
    _, c = server
    data = world_index["paths"][world_index["ids"][0]].read_bytes()
    r = put(c, "new-1", data, {"colour": "mauve", "title": "a new thing"})
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["change"] == 1, r.text
    assert "new-1" in search_ids(c, reference_id="new-1", k=3, fusion="image")
    assert search_ids(c, reference_id="new-1", k=5, fusion="image", filter='{"colour": "mauve"}') == ["new-1"]
    assert c.get("/facets").json()["fields"]["colour"]["values"]["mauve"] == 1
    item = c.get("/items/new-1").json()
    assert item["metadata"] == {"colour": "mauve", "title": "a new thing"} and item["change"] == 1
    assert c.get(item["image_url"]).content == data
    assert c.patch("/items/new-1", json={"colour": "teal", "title": None}).json()["change"] == 2
    assert c.get("/items/new-1").json()["metadata"] == {"colour": "teal"}
    assert search_ids(c, reference_id="new-1", k=5, fusion="image", filter='{"colour": "teal"}') == ["new-1"]
    assert c.patch("/items/nobody", json={"a": 1}).status_code == 404
    old = world_index["ids"][1]
    assert c.delete(f"/items/{old}").json()["status"] == "ok"
    for path in (f"/items/{old}", f"/images/{old}", f"/images/{old}?size=64"):
        assert c.get(path).status_code == 404, path
    assert c.post("/search", data={"reference_id": old}).status_code == 404
    assert old not in search_ids(c, text="a shape", k=48)
    r = c.delete("/items/nobody")
    assert r.status_code == 200 and r.json()["status"] == "not_found"  # idempotent, as Qdrant and Milvus
    r = put(c, world_index["ids"][2], None, {"colour": "plum"})  # re-sent without an image: metadata replaced
    assert r.status_code == 200 and c.get(f"/items/{world_index['ids'][2]}").json()["metadata"] == {"colour": "plum"}


def test_keys(root):
    with LiveServer(server_settings(root, api_key=None)) as srv:
        r = httpx.put(f"{srv.url}/items/a", files={"image": ("x.png", png(0))})
        assert r.status_code == 403 and "CIR_API_KEY" in r.json()["detail"]
    with LiveServer(server_settings(root)) as srv:
        r = httpx.delete(f"{srv.url}/items/a", headers={"X-API-Key": "wrong"})
        assert r.status_code == 401 and r.json()["error"]
        assert httpx.delete(f"{srv.url}/items/a").status_code == 401


def test_bad_input_writes_nothing(server, root):
    _, c = server
    log = root / "live" / "changes.log"
    cases = [(put(c, "x", b"not an image at all"), 415), (put(c, "x", png(1, (900, 900))), 413),
             (put(c, "x" * 600, png(2)), 422), (put(c, "a%0Ab", png(2)), 422), (put(c, "x", png(2), "[1, 2]"), 422),
             (put(c, "x", png(2), "{not json"), 422), (put(c, "x", png(2), {"blob": "x" * 70_000}), 422),
             (c.patch("/items/x", json=[1]), 422),
             (put(c, "missing", None, {"a": 1}), 404)]
    for r, status in cases:
        assert r.headers["content-type"] == "application/json", r.text
        assert set(r.json()) >= {"error", "detail"} and r.status_code == status, r.text
    assert not log.exists() or log.stat().st_size == 0
    r = put(c, "typed", png(3), {"colour": 5})  # the index's colour field holds strings
    assert r.status_code == 422 and "colour" in r.json()["detail"]


def test_bulk_lone_surrogate_ids_are_invalid_not_a_500(server, root):
    """A JSON "\\ud800" id cannot be stored (or looked up) as UTF-8: each such operation is invalid."""
    _, c = server
    body = ('{"operations": [{"op": "patch", "id": "\\ud800", "metadata": {}}, {"op": "delete", "id": "a\\udfff"}, '
            '{"op": "upsert", "id": "\\ud800x", "metadata": {"k": 1}}]}')
    r = c.post("/items/bulk", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert [x["status"] for x in r.json()["results"]] == ["invalid"] * 3
    log = root / "live" / "changes.log"
    assert not log.exists() or log.stat().st_size == 0


def test_bulk_ten_thousand_operations(server, world_index):  # noqa: F811
    _, c = server
    ids = world_index["ids"]
    ops = [{"op": "patch", "id": ids[i % 40], "metadata": {"rank": i}} for i in range(10_000)]
    ops += [{"op": "delete", "id": ids[45]}, {"op": "patch", "id": "nobody", "metadata": {}}, {"op": "bogus"},
            {"op": "upsert", "id": "b64", "image": "!!!"}]
    ops.append({"op": "upsert", "id": "bulk-new", "image": base64.b64encode(png(4)).decode(), "metadata": {"k": 1}})
    r = c.post("/items/bulk", json={"operations": ops})
    assert r.status_code == 200, r.text
    body = r.json()
    statuses = [x["status"] for x in body["results"]]
    assert statuses[:10_001] == ["ok"] * 10_001 and statuses[10_001:] == ["not_found", "invalid", "invalid", "ok"]
    assert c.get(f"/items/{ids[39]}").json()["metadata"]["rank"] == 9_999
    assert c.get("/items/bulk-new").json()["metadata"] == {"k": 1}
    assert c.get(f"/items/{ids[45]}").status_code == 404


def test_bulk_upserts_are_embedded_together_each_with_its_status(server, root):
    """Images of one bulk are decoded and embedded in batches: each gets the embedding a single PUT gives,
    a bad one is refused alone, and a second upsert of an id in the same bulk wins."""
    _, c = server
    assert put(c, "single", png(7), {"k": 0}).status_code == 200
    corrupt = png(8)[:60]
    ops = [{"op": "upsert", "id": f"many{i}", "image": base64.b64encode(png(20 + i)).decode(), "metadata": {"k": i}}
           for i in range(40)]
    ops += [{"op": "upsert", "id": "same", "image": base64.b64encode(png(7)).decode(), "metadata": {"k": 1}},
            {"op": "upsert", "id": "text", "image": base64.b64encode(b"not an image at all").decode()},
            {"op": "upsert", "id": "torn", "image": base64.b64encode(corrupt).decode()},
            {"op": "upsert", "id": "single", "metadata": {"k": 2}},  # no image: its metadata is replaced
            {"op": "upsert", "id": "many3", "image": base64.b64encode(png(99)).decode(), "metadata": {"k": 1000}}]
    r = c.post("/items/bulk", json={"operations": ops})
    assert r.status_code == 200, r.text
    statuses = [x["status"] for x in r.json()["results"]]
    assert statuses == ["ok"] * 41 + ["invalid", "invalid", "ok", "ok"], [(x["id"], x["status"], x["error"]) for x in r.json()["results"] if x["status"] != "ok" or x["id"] == "single"]
    view = FaissRootStore(root).open()
    np.testing.assert_allclose(view.embedding("same"), view.embedding("single"), atol=1e-5)
    assert view.item("single")["metadata"] == {"k": 2} and view.item("many3")["metadata"] == {"k": 1000}
    assert view.item("text") is None and view.item("torn") is None
    assert len([i for i in view.ids if i.startswith("many")]) == 40


def test_full_disk_is_507_and_reads_go_on(server, monkeypatch, world_index):  # noqa: F811
    _, c = server

    def full(*_a, **_kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(changelog.os, "write", full)
    r = c.patch(f"/items/{world_index['ids'][0]}", json={"colour": "grey"})
    assert r.status_code == 507 and r.json()["error"] == "disk_full"
    assert put(c, "new-on-a-full-disk", png(9), {}).status_code == 507  # the image cannot be kept either
    monkeypatch.undo()
    assert c.get("/items/new-on-a-full-disk").status_code == 404
    assert len(search_ids(c, text="a red shape", k=5)) == 5
    assert c.get(f"/items/{world_index['ids'][0]}").json()["metadata"].get("colour") != "grey"
    assert c.patch(f"/items/{world_index['ids'][0]}", json={"colour": "grey"}).status_code == 200


def test_restart_second_server_and_compaction(server, root, world_index):  # noqa: F811
    srv, c = server
    assert put(c, "kept", png(5), {"colour": "ochre"}).status_code == 200
    with LiveServer(server_settings(root, compact_pending=0, compact_age_s=0)) as reader:
        with httpx.Client(base_url=reader.url, timeout=60, headers=AUTH) as r:
            assert r.get("/items/kept").json()["metadata"] == {"colour": "ochre"}
            refused = put(r, "other", png(6), {})
            assert refused.status_code == 409 and "pid" in refused.json()["detail"]
            assert c.patch("/items/kept", json={"colour": "umber"}).status_code == 200
            deadline = time.time() + 10  # the reader follows the writer's log within its reload interval
            while r.get("/items/kept").json()["metadata"]["colour"] != "umber" and time.time() < deadline:
                time.sleep(0.05)
            assert r.get("/items/kept").json()["metadata"]["colour"] == "umber"
            before = search_ids(c, text="a blue shape", k=10)
            out = c.post("/admin/compact").json()
            assert out["status"] == "compacted" and out["folded"] == 2, out
            assert c.get("/info").json()["index_version"] == out["version"]
            assert search_ids(c, text="a blue shape", k=10) == before
            deadline = time.time() + 10
            while r.get("/info").json()["index_version"] != out["version"] and time.time() < deadline:
                time.sleep(0.05)
            assert r.get("/items/kept").json()["metadata"] == {"colour": "umber"}
    view = FaissRootStore(root).open()
    assert view.version == out["version"] and view.item("kept")["metadata"] == {"colour": "umber"}
    assert os.path.getsize(root / "live" / "changes.log") < 200  # trimmed to a sequence mark


def test_compaction_starts_on_its_own_and_searches_never_fail(root, world_index):  # noqa: F811
    settings = server_settings(root, compact_pending=3, compact_age_s=0, compact_check_s=0.1)
    with LiveServer(settings) as srv, httpx.Client(base_url=srv.url, timeout=60, headers=AUTH) as c:
        first = c.get("/info").json()["index_version"]
        failures, stop = [], False

        def searching() -> None:
            with httpx.Client(base_url=srv.url, timeout=60) as s:
                while not stop:
                    r = s.post("/search", data={"text": "a red shape", "k": 5})
                    if r.status_code != 200 or len(r.json()["results"]) != 5:
                        failures.append(r.text)

        t = threading.Thread(target=searching)
        t.start()
        try:
            for i in range(3):
                assert c.patch(f"/items/{world_index['ids'][i]}", json={"colour": "slate"}).status_code == 200
            deadline = time.time() + 30
            while c.get("/info").json()["index_version"] == first and time.time() < deadline:
                time.sleep(0.05)
        finally:
            stop = True
            t.join()
        assert c.get("/info").json()["index_version"] != first and not failures
        assert search_ids(c, text="x", k=10, filter='{"colour": "slate"}') != []
        assert c.get(f"/items/{world_index['ids'][0]}").json()["metadata"]["colour"] == "slate"


def test_a_second_writer_is_refused_with_writes_on(server, root):
    with pytest.raises(RuntimeError):
        LiveServer(server_settings(root, writes="on")).__enter__()
    _, c = server
    assert put(c, "still-the-writer", png(8), {}).status_code == 200
