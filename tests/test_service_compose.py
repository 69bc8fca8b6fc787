"""POST /search with several references, image weights and negative texts; the bad-input answers."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from cir.encoder import load_encoder
from cir.index_store import load_version
from cir.search.engine import IndexState, Query, SearchEngine
from service_fixtures import LiveServer, client, live_server, server_settings, world_index  # noqa: F401 - fixtures


@pytest.fixture(scope="module")
def engine(world_index):
    index = load_version(world_index["root"])
    eng = SearchEngine(load_encoder(world_index["model"], device="cpu"), max_pixels=10**7)
    eng.swap(IndexState.of(index))
    return eng


def _image(world_index, n: int) -> bytes:
    return world_index["paths"][world_index["ids"][n]].read_bytes()


def _post(client, images=(), **fields):
    files = [("image", (f"q{i}.png", data)) for i, data in enumerate(images)]
    data = {k: ([str(x) for x in v] if isinstance(v, (list, tuple)) else str(v)) for k, v in fields.items()}
    return client.post("/search", data=data, files=files or None)


def _same(response, result, atol=1e-5):
    body = response.json()
    assert [h["id"] for h in body["results"]] == [h.id for h in result.hits]
    np.testing.assert_allclose([h["score"] for h in body["results"]], [h.score for h in result.hits], atol=atol)


def test_several_images_and_reference_ids_with_weights(client, engine, world_index):
    ids, images = world_index["ids"], [_image(world_index, 3), _image(world_index, 4)]
    r = _post(client, images, reference_id=[ids[5], ids[6]], image_weights="2,1,1,0.5", text="make it blue", k=7)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["references"] == 4 and body["negative_weight"] is None
    _same(r, engine.search_sync(Query(images=tuple(images), reference_ids=(ids[5], ids[6]),
                                      image_weights=(2, 1, 1, 0.5), text="make it blue", k=7)))


def test_repeated_reference_ids_all_count(client, engine, world_index):
    """Before, the last reference_id silently won; now both are merged."""
    ids = world_index["ids"]
    both = _post(client, reference_id=[ids[1], ids[9]], text="add stripes", k=10)
    last = _post(client, reference_id=ids[9], text="add stripes", k=10)
    assert both.json()["references"] == 2 and last.json()["references"] == 1
    assert [h["score"] for h in both.json()["results"]] != [h["score"] for h in last.json()["results"]]
    _same(both, engine.search_sync(Query(reference_ids=(ids[1], ids[9]), text="add stripes", k=10)))
    # copies of one reference are that reference
    copies = _post(client, reference_id=[ids[9]] * 3, text="add stripes", k=10)
    assert [h["id"] for h in copies.json()["results"]] == [h["id"] for h in last.json()["results"]]


def test_negative_text_and_weight(client, engine, world_index):
    image = _image(world_index, 2)
    r = _post(client, [image], text="make it blue", negative_text="red", negative_weight=0.5, k=8)
    assert r.status_code == 200 and r.json()["negative_weight"] == 0.5
    _same(r, engine.search_sync(Query(image_bytes=image, text="make it blue", negative_texts=("red",),
                                      negative_weight=0.5, k=8)))
    default = _post(client, [image], text="make it blue", negative_text=["red", "striped"], k=8)
    assert default.json()["negative_weight"] == 0.3
    _same(default, engine.search_sync(Query(image_bytes=image, text="make it blue", negative_texts=("red", "striped"),
                                            k=8)))
    blank = _post(client, [image], text="make it blue", negative_text="  ", k=8)  # an empty form field: none
    assert blank.status_code == 200 and blank.json()["negative_weight"] is None


def _bomb_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (2000, 1000)).save(buf, format="PNG")  # 2 Mpx > the test limit of 1 Mpx
    return buf.getvalue()


@pytest.mark.parametrize("case, status, code, field", [
    ("nine_references", 422, "too_many_references", "reference_id"),
    ("weights_count", 422, "invalid_image_weights", "image_weights"),
    ("weights_negative", 422, "invalid_image_weights", "image_weights"),
    ("weights_zero", 422, "invalid_image_weights", "image_weights"),
    ("weights_not_numbers", 422, "invalid_image_weights", "image_weights"),
    ("weights_repeated", 422, "invalid_request", "image_weights"),
    ("negative_weight_big", 422, "invalid_request", "negative_weight"),
    ("negative_weight_nan", 422, "invalid_request", "negative_weight"),
    ("negative_alone", 422, "invalid_negative_text", "negative_text"),
    ("second_image_bomb", 400, "image_too_large", "pixels"),
    ("second_image_broken", 415, "unsupported_image_type", "image"),
    ("second_image_over_limit", 413, "upload_too_large", "limit"),
])
def test_bad_compositions(client, world_index, case, status, code, field):
    ids, good = world_index["ids"], _image(world_index, 0)
    requests = {
        "nine_references": dict(images=[good] * 4, reference_id=ids[:5], text="red"),
        "weights_count": dict(reference_id=ids[:2], image_weights="1,2,3", text="red"),
        "weights_negative": dict(reference_id=ids[:2], image_weights="1,-2"),
        "weights_zero": dict(reference_id=ids[:2], image_weights="0,0"),
        "weights_not_numbers": dict(reference_id=ids[:2], image_weights="1,heavy"),
        "weights_repeated": dict(reference_id=ids[:2], image_weights=["1", "2"]),
        "negative_weight_big": dict(text="red", negative_text="blue", negative_weight=1.5),
        "negative_weight_nan": dict(text="red", negative_text="blue", negative_weight="nan"),
        "negative_alone": dict(negative_text="blue"),
        "second_image_bomb": dict(images=[good, _bomb_png()], text="red"),
        "second_image_broken": dict(images=[good, b"not an image"], text="red"),
        "second_image_over_limit": dict(images=[good, b"\x89PNG\r\n\x1a\n" + bytes(300_000)], text="red"),
    }
    r = _post(client, **requests[case])
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code and field in str(body["detail"])


def test_the_total_limit_holds_for_all_images_together(world_index):
    with LiveServer(server_settings(world_index["root"], max_upload_mb=0.25, max_total_upload_mb=0.3)) as server:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            part = b"\x89PNG\r\n\x1a\n" + bytes(200_000)  # each under the per-image 0.25 MiB, both over 0.3
            r = _post(c, [part, part], text="red")
            assert r.status_code == 413 and r.json()["error"] == "upload_too_large"
            ok = _post(c, [_image(world_index, 0), _image(world_index, 1)], text="red")
            assert ok.status_code == 200 and ok.json()["references"] == 2


def test_openapi_documents_the_composition_fields(client):
    operation = client.get("/openapi.json").json()["paths"]["/search"]["post"]
    assert "at least one of `image`, `reference_id` or `text`" in operation["description"]
    ref = operation["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]
    props = client.get("/openapi.json").json()["components"]["schemas"][ref]["properties"]
    assert props["image"]["type"] == "array" and props["reference_id"]["type"] == "array"
    assert {"image_weights", "negative_text", "negative_weight"} <= set(props)
    assert "comma-separated" in props["image_weights"]["description"]
