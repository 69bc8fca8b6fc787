"""The service's HTTP API against the real app (uvicorn, lifespan) on a shapes-world index."""

from __future__ import annotations

import asyncio
import io
import json
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from cir.encoder import load_encoder
from cir.fusion import fuse
from service.limits import BodyLimitMiddleware
from cir.images import decode_image
from test_images import exif_rotated_jpeg, png_header_only
from service_fixtures import API_KEY, client, live_server, world_index  # noqa: F401 - fixtures

ALL_IDS_K = 1000


@pytest.fixture(scope="module")
def encoder(world_index):
    return load_encoder(world_index["model"], device="cpu")


def _image(world_index, n=0) -> bytes:
    return world_index["paths"][world_index["ids"][n]].read_bytes()


def _search(client, files=None, **fields):
    data = {k: str(v) for k, v in fields.items()}
    return client.post("/search", data=data, files=files)


def _exact(world_index, query: np.ndarray, k: int):
    """Brute-force cosine ranking over the stored embeddings: the reference for the index path."""
    version_dir = world_index["root"] / "versions" / world_index["version"]
    emb = np.load(version_dir / "embeddings.npy")
    scores = emb @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return [world_index["ids"][i] for i in order], scores[order]


# --- health, info, metrics, page, docs -------------------------------------------------

def test_health_ready_info(client, world_index):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["index_version"] == world_index["version"]
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["index_version"] == world_index["version"]
    info = client.get("/info").json()
    assert info["index_version"] == world_index["version"]
    assert info["count"] == len(world_index["ids"])
    assert info["factory"] == "Flat" and info["dim"] > 0 and len(info["fingerprint"]) == 64
    assert info["default_alpha"] == pytest.approx(0.75)  # from the manifest (--alpha 0.75)
    assert info["model"] and info["default_fusion"] == "slerp"


def test_page_and_docs(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="alpha"' in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert '<link rel="icon" href="/static/favicon.svg"' in page.text
    for icon in ("/static/favicon.svg", "/favicon.ico"):
        r = client.get(icon)
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml") and b"<svg" in r.content
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/search", "/images/{item_id}", "/healthz", "/readyz", "/info", "/metrics", "/admin/reload"} <= set(paths)


@pytest.mark.parametrize("route", ["/docs", "/redoc"])
def test_api_docs_load_nothing_from_outside(client, route):
    """/docs and /redoc work offline: every script, style and icon they reference is served here."""
    page = client.get(route)
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']""", page.text)
    urls += re.findall(r"""(?:url|Url)\s*:\s*["']([^"']+)["']""", page.text)  # the schema and icon in the JS
    assert any(u.endswith(".js") for u in urls) and "/openapi.json" in urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        assert client.get(url).status_code == 200, url
    assert "fonts.googleapis" not in page.text


def test_metrics(client, world_index):
    _search(client, files={"image": ("q.png", _image(world_index))}, text="make it blue")
    text = client.get("/metrics").text
    for stage in ("decode", "encode_image", "encode_text", "fuse", "search", "total"):
        assert f'cir_search_stage_seconds_bucket{{le="0.01",stage="{stage}"}}' in text
    assert 'cir_http_requests_total{method="POST",route="/search",status="200"}' in text
    assert 'cir_batch_size_count{batcher="image"}' in text
    assert f'cir_index_items {float(len(world_index["ids"]))}' in text
    assert f'version="{world_index["version"]}"' in text


# --- searches ----------------------------------------------------------------------------

def test_composed_search_matches_exact_pipeline(client, world_index, encoder):
    """Upload + text over HTTP equals encoder + fuse + brute-force search done by hand."""
    image = _image(world_index, 3)
    # keep_references: the upload is a gallery file, which the exact pipeline ranks too
    r = _search(client, files={"image": ("q.png", image, "image/png")}, text="make it blue", k=5, alpha=0.6,
                keep_references="true")
    assert r.status_code == 200, r.text
    body = r.json()
    v = encoder.encode_images([Image.open(io.BytesIO(image))])[0]
    w = encoder.encode_texts(["make it blue"])[0]
    ids, scores = _exact(world_index, fuse("slerp", v[None], w[None], 0.6)[0], 5)
    assert [h["id"] for h in body["results"]] == ids
    assert np.allclose([h["score"] for h in body["results"]], scores, atol=1e-4)
    assert [h["rank"] for h in body["results"]] == [1, 2, 3, 4, 5]
    assert body["alpha"] == 0.6 and body["fusion"] == "slerp" and body["index_version"] == world_index["version"]
    assert set(body["timings_ms"]) == {"decode", "encode_image", "encode_text", "fuse", "search", "total"}
    hit = body["results"][0]
    assert set(hit["metadata"]) == {"shape", "colour", "size", "position", "pattern"}
    assert "path" not in hit and hit["image_url"].startswith("/images/")


def test_reference_id_uses_stored_embedding(client, world_index):
    ref = world_index["ids"][5]
    body = _search(client, reference_id=ref, k=3, keep_references="true").json()
    assert body["fusion"] == "image" and body["results"][0]["id"] == ref
    assert body["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert body["timings_ms"]["encode_image"] == 0.0  # no re-encode
    composed = _search(client, reference_id=ref, text="make it red", fusion="linear", alpha=0.5).json()
    assert composed["fusion"] == "linear" and len(composed["results"]) == 10


def test_text_only_and_image_only_queries(client, world_index, encoder):
    text = _search(client, text="a small green circle", k=4).json()
    ids, _ = _exact(world_index, encoder.encode_texts(["a small green circle"])[0], 4)
    assert text["fusion"] == "text" and [h["id"] for h in text["results"]] == ids
    image = _search(client, files={"image": ("q.png", _image(world_index, 7))}, keep_references="true").json()
    assert image["fusion"] == "image" and image["results"][0]["id"] == world_index["ids"][7]
    # the reported alpha is the text weight actually used, not the default the query never used
    assert (text["alpha"], image["alpha"]) == (1.0, 0.0)
    chosen = _search(client, reference_id=world_index["ids"][7], text="make it red", fusion="image").json()
    assert chosen["fusion"] == "image" and chosen["alpha"] == 0.0


def test_exif_rotated_upload_searches_like_its_upright_copy(client, world_index, encoder):
    """A phone photo (pixels stored turned, EXIF Orientation=6) is the same query as its upright copy."""
    upright = Image.open(io.BytesIO(_image(world_index, 9))).convert("RGB")
    plain = io.BytesIO()
    upright.save(plain, format="JPEG", quality=95)
    rotated = exif_rotated_jpeg(upright)
    v = encoder.encode_images([decode_image(rotated), decode_image(plain.getvalue())])
    assert float(v[0] @ v[1]) > 0.99
    hits = [[h["id"] for h in _search(client, files={"image": ("q.jpg", data, "image/jpeg")}, k=5).json()["results"]]
            for data in (rotated, plain.getvalue())]
    assert hits[0][0] == hits[1][0] == world_index["ids"][9]
    assert len(set(hits[0]) & set(hits[1])) >= 4


def test_bmp_upload_is_accepted_like_the_indexed_bmp(client, world_index):
    """The indexer indexes .bmp files, so a BMP upload is a valid query too."""
    buf = io.BytesIO()
    Image.open(io.BytesIO(_image(world_index, 4))).convert("RGB").save(buf, format="BMP")
    r = _search(client, files={"image": ("q.bmp", buf.getvalue(), "image/bmp")})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["id"] == world_index["ids"][4]


def test_fusion_k_min_score_and_default_alpha(client, world_index):
    files = {"image": ("q.png", _image(world_index, 2))}
    everything = _search(client, files=files, text="turn it into a star", k=ALL_IDS_K, keep_references="true").json()
    assert len(everything["results"]) == len(world_index["ids"]) and everything["alpha"] == pytest.approx(0.75)
    scores = [h["score"] for h in everything["results"]]
    assert scores == sorted(scores, reverse=True)
    cut = scores[len(scores) // 2]
    filtered = _search(client, files=files, text="turn it into a star", k=ALL_IDS_K, min_score=cut).json()
    assert filtered["results"] and all(h["score"] >= cut for h in filtered["results"])
    assert len(filtered["results"]) < len(scores)
    for fusion in ("slerp", "linear", "image", "text"):
        assert _search(client, files=files, text="red", fusion=fusion).json()["fusion"] == fusion


def test_long_text_is_truncated_and_said_so(client, encoder):
    text = " ".join(["make it blue and striped"] * 40)
    assert encoder.truncated([text]) == [True]
    body = _search(client, text=text).json()
    assert body["text_truncated"] is True and "truncated" in body["warnings"][0]
    assert _search(client, text="make it blue").json()["text_truncated"] is False


def test_gallery_images_and_thumbnails(client, world_index):
    item = world_index["ids"][0]
    full = client.get(f"/images/{item}")
    assert full.status_code == 200 and full.content == world_index["paths"][item].read_bytes()
    assert full.headers["content-type"] == "image/png"
    for size in (16, 64):  # rounded up to 64 px: the 32 px original needs no thumbnail
        small = client.get(f"/images/{item}", params={"size": size})
        assert small.status_code == 200 and small.content == full.content
    url = _search(client, reference_id=item, k=1).json()["results"][0]["image_url"]
    assert client.get(url).status_code == 200


@pytest.mark.parametrize("path", ["/images/no-such-id", "/images/..%2F..%2Fetc%2Fpasswd", "/images/%2Fetc%2Fpasswd"])
def test_image_ids_resolve_only_through_the_index(client, path):
    r = client.get(path)
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_thumbnail_size_out_of_range(client, world_index):
    assert client.get(f"/images/{world_index['ids'][0]}", params={"size": 5000}).status_code == 422


# --- bad input ---------------------------------------------------------------------------

def _truncated_png(world_index) -> bytes:
    img = Image.new("RGB", (64, 64), (200, 30, 30))
    for x in range(64):
        img.putpixel((x, x), (x * 4 % 256, 0, 255))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


def _bomb_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (2000, 1000)).save(buf, format="PNG")  # 2 Mpx > the test limit of 1 Mpx, a few KB
    return buf.getvalue()


@pytest.mark.parametrize("case,status,code", [
    ("nothing", 422, "empty_query"),
    ("blank_text", 422, "empty_query"),
    ("not_image", 415, "unsupported_image_type"),
    ("gif", 415, "unsupported_image_type"),
    ("truncated", 400, "bad_image"),
    ("bomb", 400, "image_too_large"),
    ("huge_bomb", 400, "image_too_large"),
    ("jpeg_magic_garbage", 400, "bad_image"),
    ("k0", 422, "invalid_request"),
    ("k_big", 422, "invalid_request"),
    ("alpha_big", 422, "invalid_request"),
    ("alpha_nan", 422, "invalid_request"),
    ("bad_fusion", 422, "invalid_request"),
    ("unknown_ref", 404, "unknown_reference"),
])
def test_bad_input(client, world_index, case, status, code):
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    requests = {
        "nothing": {},
        "blank_text": {"text": "   "},
        "not_image": {"files": {"image": ("q.png", b"this is not an image at all")}},
        "gif": {"files": {"image": ("q.gif", gif.getvalue())}},
        "truncated": {"files": {"image": ("q.png", _truncated_png(world_index))}},
        "bomb": {"files": {"image": ("q.png", _bomb_png())}},
        "huge_bomb": {"files": {"image": ("q.png", png_header_only(20000, 20000))}},
        "jpeg_magic_garbage": {"files": {"image": ("q.jpg", b"\xff\xd8\xff" + b"garbage" * 10)}},
        "k0": {"text": "red", "k": 0},
        "k_big": {"text": "red", "k": 1001},
        "alpha_big": {"text": "red", "alpha": 1.5},
        "alpha_nan": {"text": "red", "alpha": "nan"},
        "bad_fusion": {"text": "red", "fusion": "cubic"},
        "unknown_ref": {"reference_id": "no-such-item", "text": "red"},
    }
    r = _search(client, **requests[case])
    assert r.status_code == status, r.text
    assert r.json()["error"] == code and r.json()["detail"]
    assert " at 0x" not in r.text  # no Python object reprs in error details


def test_upload_over_limit_is_refused_early(client, live_server):
    big = b"\x89PNG\r\n\x1a\n" + bytes(400_000)  # over the test server's 0.25 MiB
    r = client.post("/search", files={"image": ("big.png", big)})
    assert r.status_code == 413 and r.json()["error"] == "upload_too_large"

    def chunked():  # no Content-Length: the cap is enforced while reading
        yield b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n\r\n"
        for _ in range(40):
            yield bytes(10_000)
        yield b"\r\n--b--\r\n"
    r = client.post("/search", content=chunked(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and r.json()["error"] == "upload_too_large"


def test_bad_requests_do_not_disturb_good_ones(client, world_index):
    good = {"files": {"image": ("q.png", _image(world_index, 1))}, "text": "make it green"}
    bad = {"files": {"image": ("q.png", b"garbage")}, "text": "make it green"}
    expected = _search(client, **good).json()["results"]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: _search(client, **(good if i % 2 else bad)), range(24)))
    for i, r in enumerate(answers):
        if i % 2:
            assert r.status_code == 200
            got = r.json()["results"]  # batched with others: equal up to float rounding
            assert [h["id"] for h in got] == [h["id"] for h in expected]
            assert np.allclose([h["score"] for h in got], [h["score"] for h in expected], atol=1e-5)
        else:
            assert r.status_code == 415


def test_admin_reload_needs_the_api_key(client, world_index):
    assert client.post("/admin/reload").status_code == 401
    wrong = client.post("/admin/reload", headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
    ok = client.post("/admin/reload", headers={"Authorization": f"Bearer {API_KEY}"})
    assert ok.status_code == 200 and ok.json()["version"] == world_index["version"]
    assert client.post("/admin/reload", headers={"X-API-Key": API_KEY}).json()["status"] == "swapped"


def test_error_bodies_are_json(client):
    r = client.get("/no/such/route")
    assert r.status_code == 404 and json.loads(r.text)["error"] == "not_found"


def test_body_limit_refuses_without_keeping_the_body():
    """A huge Content-Length is answered 413 without reading a byte; a modest one is drained, not kept."""
    async def app(scope, receive, send):  # never reached for oversized bodies
        raise AssertionError("the app must not run")

    async def call(headers, chunks):
        received, sent = [], []

        async def receive():
            received.append(1)
            body = chunks.pop(0) if chunks else b""
            return {"type": "http.request", "body": body, "more_body": bool(chunks)}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/search", "headers": headers}
        await BodyLimitMiddleware(app, max_bytes=1000, drain_bytes=10_000)(scope, receive, send)
        return len(received), sent[0]["status"], json.loads(sent[1]["body"])["error"]

    huge = [(b"content-length", str(10**12).encode())]
    assert asyncio.run(call(huge, [bytes(100)] * 5)) == (0, 413, "upload_too_large")
    expect = [(b"content-length", b"5000"), (b"expect", b"100-continue")]
    assert asyncio.run(call(expect, [bytes(1000)] * 5)) == (0, 413, "upload_too_large")
    modest = [(b"content-length", b"5000")]
    assert asyncio.run(call(modest, [bytes(1000)] * 5)) == (5, 413, "upload_too_large")
