"""Gallery images over HTTP: ids with any character resolve, thumbnails come in a few sizes, LRU-bounded."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from indexer.cli import main as index_main
from service.thumbs import THUMB_SIZES, ThumbnailCache, thumb_size
from service_fixtures import LiveServer, server_settings, world_index  # noqa: F401 - fixture

# ids a real gallery can have (a manifest gives them verbatim); every one must round-trip through image_url
ODD_IDS = ["line\nbreak", "what?x=1&y=2", "hash#frag", "100% sure", "dir/sub/leaf.png", "ünï cödé ☃.jpg",
           " padded ", "back\\slash", "tab\there", "a/../b"]
THUMB_FILES_CAP = 4


def _picture(seed: int, size=(300, 200)) -> Image.Image:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 255, (size[1] // 20, size[0] // 20, 3), dtype=np.uint8)
    return Image.fromarray(np.kron(blocks, np.ones((20, 20, 1), dtype=np.uint8)))


@pytest.fixture(scope="module")
def gallery_server(world_index, tmp_path_factory):
    base = tmp_path_factory.mktemp("odd_gallery")
    rows = []
    for n, item_id in enumerate(ODD_IDS):
        path = base / "images" / f"{n}.{'png' if n % 2 else 'jpg'}"
        path.parent.mkdir(exist_ok=True)
        _picture(n).save(path)
        rows.append({"path": str(path), "id": item_id})
    manifest = base / "gallery.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert index_main(["build", "--gallery", str(manifest), "--model", world_index["model"], "--out",
                       str(base / "index"), "--workers", "0", "--factory", "Flat", "--no-progress"]) == 0
    thumbs = base / "thumbs"
    settings = server_settings(base / "index", thumb_cache=thumbs, thumb_cache_files=THUMB_FILES_CAP)
    with LiveServer(settings) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            yield client, {r["id"]: Path(r["path"]) for r in rows}, thumbs


@pytest.mark.parametrize("item_id", ODD_IDS)
def test_image_url_of_any_id_resolves(gallery_server, item_id):
    client, paths, _ = gallery_server
    r = client.post("/search", data={"reference_id": item_id, "k": str(len(ODD_IDS)), "keep_references": "true"})
    assert r.status_code == 200, r.text
    hit = next(h for h in r.json()["results"] if h["id"] == item_id)
    assert "\n" not in hit["image_url"] and "?" not in hit["image_url"] and "#" not in hit["image_url"]
    image = client.get(hit["image_url"])
    assert image.status_code == 200, (item_id, hit["image_url"], image.text)
    assert image.content == paths[item_id].read_bytes()


def test_thumbnails_come_in_a_few_sizes(gallery_server):
    client, paths, thumbs = gallery_server
    url = client.post("/search", data={"reference_id": ODD_IDS[0], "k": "1", "keep_references": "true"}
                      ).json()["results"][0]["image_url"]
    answers = [client.get(url, params={"size": s}) for s in (65, 100, 128)]
    assert all(a.status_code == 200 and a.headers["content-type"] == "image/jpeg" for a in answers)
    assert answers[0].content == answers[1].content == answers[2].content  # one 128 px thumbnail serves all three
    assert max(Image.open(io.BytesIO(answers[0].content)).size) == 128
    assert len(list(thumbs.glob("*/*-128.jpg"))) == 1
    big = client.get(url, params={"size": 300})  # rounds up to 512: the 300 px original is small enough
    assert big.content == paths[ODD_IDS[0]].read_bytes()


def test_thumbnail_cache_stays_under_its_file_cap(gallery_server):
    client, _, thumbs = gallery_server
    for item_id in ODD_IDS:
        for size in (64, 128, 256):
            hits = client.post("/search", data={"reference_id": item_id, "k": "1", "keep_references": "true"}
                               ).json()["results"]
            assert client.get(hits[0]["image_url"], params={"size": size}).status_code == 200
    assert len(list(thumbs.glob("*/*.jpg"))) <= THUMB_FILES_CAP


def test_thumb_size_rounds_up():
    assert [thumb_size(s) for s in (16, 64, 65, 200, 256, 257, 1000, 1024)] == [64, 64, 128, 256, 256, 512, 1024, 1024]
    assert THUMB_SIZES == tuple(sorted(THUMB_SIZES))


def test_thumbnail_cache_is_lru_by_files_and_bytes(tmp_path):
    items = []
    for n in range(6):
        path = tmp_path / f"{n}.png"
        _picture(n, (400, 400)).save(path)
        items.append({"path": str(path), "sha256": f"{n:064x}"})
    cache = ThumbnailCache(tmp_path / "c", max_pixels=10**7, max_files=3)
    for item in items[:3]:
        cache.get(item, 100)
    cache.get(items[0], 100)  # used again: now the most recent
    cache.get(items[3], 100)  # evicts the least recently used, items[1]
    kept = {p.name.split("-")[0] for p in (tmp_path / "c").glob("*/*.jpg")}
    assert kept == {items[i]["sha256"] for i in (0, 2, 3)}
    one = len(cache.get(items[4], 100))
    by_bytes = ThumbnailCache(tmp_path / "c", max_pixels=10**7, max_bytes=int(one * 2.5))  # reopened: counts what is there
    assert len(list((tmp_path / "c").glob("*/*.jpg"))) == 2
    by_bytes.get(items[5], 100)
    assert len(list((tmp_path / "c").glob("*/*.jpg"))) == 2
