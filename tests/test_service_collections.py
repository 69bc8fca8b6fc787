"""Several galleries in one server: one shared model, routes per gallery, and hot swaps of each under load."""

from __future__ import annotations

import threading
import time
from urllib.parse import quote

import httpx
import pytest

from service.cli import load_settings, main

from service_fixtures import (LiveServer, copy_root, publish_copy, rich_index, server_settings,  # noqa: F401
                              world_index)


@pytest.fixture(scope="module")
def two(world_index, rich_index, tmp_path_factory):
    base = tmp_path_factory.mktemp("two")
    shop, other = copy_root(world_index, base / "shop"), copy_root(rich_index, base / "rich")
    settings = server_settings(shop, index_name="shop", collections={"rich": other}, reload_interval_s=0.1)
    with LiveServer(settings) as server:
        yield server, shop, other


def test_galleries_share_one_model_and_answer_on_their_routes(two, world_index, rich_index):
    server, shop, other = two
    app = server.server.config.app
    galleries = app.state.galleries
    assert list(galleries) == ["shop", "rich"]
    assert galleries["shop"].engine.encoder is galleries["rich"].engine.encoder  # one loaded model
    with httpx.Client(base_url=server.url, timeout=60) as c:
        listed = c.get("/collections").json()["collections"]
        assert [(g["name"], g["default"], g["count"]) for g in listed] == [
            ("shop", True, len(world_index["ids"])), ("rich", False, len(rich_index["ids"]))]
        assert listed[0]["fingerprint"] == listed[1]["fingerprint"]
        top = c.post("/search", data={"text": "a red star", "k": "3"}).json()
        shop_hits = c.post("/collections/shop/search", data={"text": "a red star", "k": "3"}).json()
        assert [h["id"] for h in top["results"]] == [h["id"] for h in shop_hits["results"]]
        rich = c.post("/collections/rich/search", json={"text": "a red star", "k": 3,
                                                        "filter": {"in_stock": True}}).json()
        assert all(h["id"] in rich_index["ids"] and h["metadata"]["in_stock"] for h in rich["results"])
        url = rich["results"][0]["image_url"]
        assert url.startswith("/collections/rich/images/")
        assert c.get(url).content == rich_index["paths"][rich["results"][0]["id"]].read_bytes()
        assert c.get(f"/images/{quote(rich['results'][0]['id'])}").status_code == 404  # not in the first gallery
        assert "in_stock" in c.get("/collections/rich/facets").json()["fields"]
        assert "in_stock" not in c.get("/facets").json()["fields"]
        assert c.get("/collections/rich/info").json()["count"] == len(rich_index["ids"])
        missing = c.post("/collections/nope/search", data={"text": "x"})
        assert missing.status_code == 404 and "shop, rich" in missing.json()["detail"]
        metrics = c.get("/metrics").text
        assert 'cir_collection_items{collection="rich"} 16.0' in metrics
        assert 'cir_collection_searches_total{collection="rich"}' in metrics


def test_hot_swaps_of_each_gallery_under_concurrent_load(two, world_index, rich_index):
    server, shop, other = two
    roots = {"shop": (shop, world_index), "rich": (other, rich_index)}
    versions = {name: [info["version"]] for name, (_, info) in roots.items()}
    errors: list[str] = []
    stop = threading.Event()
    served: dict[str, set] = {"shop": set(), "rich": set()}

    def load(name: str) -> None:
        ids = set(roots[name][1]["ids"])
        with httpx.Client(base_url=server.url, timeout=60) as c:
            while not stop.is_set():
                r = c.post(f"/collections/{name}/search", json={"text": "a small blue circle", "k": 5})
                if r.status_code != 200 or not {h["id"] for h in r.json()["results"]} <= ids:
                    errors.append(f"{name}: {r.status_code} {r.text[:200]}")
                    return
                served[name].add(r.json()["index_version"])

    threads = [threading.Thread(target=load, args=(name,)) for name in roots for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for step in range(2):
            for name, (root, info) in roots.items():
                new = f"{info['version']}-swap{step}"
                publish_copy(root, versions[name][-1], new)
                versions[name].append(new)
                deadline = time.time() + 30
                app = server.server.config.app
                while app.state.galleries[name].engine.state.version != new:
                    assert time.time() < deadline, f"{name} did not swap to {new}"
                    time.sleep(0.05)
    finally:
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors[:3]
    for name in roots:
        assert served[name] <= set(versions[name]) and len(served[name]) >= 2, (name, served[name])
    with httpx.Client(base_url=server.url, timeout=60) as c:
        listed = {g["name"]: g["index_version"] for g in c.get("/collections").json()["collections"]}
    assert listed == {name: versions[name][-1] for name in roots}


def test_cli_index_name_root(tmp_path, capsys):
    settings = load_settings(["--index", f"shop={tmp_path}", "--index", f"outlet={tmp_path}/o"])
    assert (settings.index_name, str(settings.index)) == ("shop", str(tmp_path))
    assert {k: str(v) for k, v in settings.collections.items()} == {"outlet": f"{tmp_path}/o"}
    assert list(settings.galleries) == ["shop", "outlet"]
    assert load_settings(["--index", str(tmp_path)]).galleries == {"default": tmp_path}
    for argv, message in ((["--index", str(tmp_path), "--index", f"b={tmp_path}"], "as NAME=ROOT"),
                          (["--index", f"a={tmp_path}", "--index", f"a={tmp_path}"], "names must differ"),
                          (["--index", f"a={tmp_path}", "--index", f"b={tmp_path}/missing"], "gallery 'a': ")):
        assert main(argv) == 2
        assert message in capsys.readouterr().err
