"""The ONNX Runtime encoder against torch fp32: both towers, adapters, the export cache, the runtime options."""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from cir import onnx_runtime
from cir.encoder import Encoder, load_encoder
from cir.fusion import fuse
from cir.index_store import load_version
from cir.models import toy_model_dir
from cir.onnx_runtime import META_FILE, OnnxEncoder, OnnxExportError, onnx_encoder
from cir.runtimes import check_runtime, load_runtime_encoder
from indexer.cli import main as index_main
from index_fixtures import config
from service_fixtures import IsolatedSettings, LiveServer, server_settings, world_index  # noqa: F401 - fixture
from tiny_models import save_tiny_adapter

TEXTS = ["make it blue", "a", "turn the dress into a red shirt with two dogs on the left", "two dogs", ""]


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (30 + 7 * i, 40 + 5 * (i % 3), 3), dtype=np.uint8))
            for i in range(n)]


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape and a.dtype == np.float32
    return float((a * b).sum(1).min())


def _assert_twins(torch_enc: Encoder, onnx_enc: Encoder) -> None:
    """Both towers within cosine 0.9999 of torch fp32, for one row and for batches of several sizes."""
    images = _images(7)
    for batch in (1, 4, 7):
        assert _min_cosine(onnx_enc.encode_images(images, batch_size=batch),
                           torch_enc.encode_images(images, batch_size=batch)) >= 0.9999
    for chunk in (TEXTS[:1], TEXTS[1:2], TEXTS):
        assert _min_cosine(onnx_enc.encode_texts(chunk), torch_enc.encode_texts(chunk)) >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(onnx_enc.encode_texts(TEXTS), axis=1), 1, atol=1e-5)


@pytest.fixture(params=["clip", "siglip", "siglip2_fixed", "blip", "toy"])
def model(request) -> str:
    if request.param == "toy":
        if not (toy_model_dir() / "config.json").is_file():
            pytest.skip("the built-in toy model is not installed")
        return "toy"
    return str(request.getfixturevalue(f"tiny_{request.param}_dir"))


def test_both_towers_match_torch(model, tmp_path):
    torch_enc = load_encoder(model, device="cpu")
    onnx_enc = load_runtime_encoder(model, runtime="onnx", onnx_cache=tmp_path)
    assert isinstance(onnx_enc, OnnxEncoder) and isinstance(onnx_enc, Encoder)
    assert onnx_enc.model is None  # no torch weights kept
    assert (onnx_enc.fingerprint, onnx_enc.dim) == (torch_enc.fingerprint, torch_enc.dim)
    assert onnx_enc.truncated(["red " * 40, "red"]) == torch_enc.truncated(["red " * 40, "red"])
    info = onnx_enc.info()
    assert info["runtime"] == "onnx" and info["fingerprint"] == torch_enc.fingerprint
    _assert_twins(torch_enc, onnx_enc)


def test_merged_adapter_is_exported(tiny_clip_dir, tmp_path):
    base = load_encoder(str(tiny_clip_dir), device="cpu")
    adapter = save_tiny_adapter(tiny_clip_dir, tmp_path / "adapter", base.base_fingerprint)
    tuned = load_encoder(str(tiny_clip_dir), adapter=adapter, device="cpu")
    onnx_tuned = load_runtime_encoder(str(tiny_clip_dir), adapter=adapter, runtime="onnx", onnx_cache=tmp_path / "c")
    assert onnx_tuned.fingerprint == tuned.fingerprint != base.fingerprint
    _assert_twins(tuned, onnx_tuned)
    # the adapter really is in the graph: the untuned image embeddings differ
    images = _images(3)
    assert _min_cosine(onnx_tuned.encode_images(images), base.encode_images(images)) < 0.999


@pytest.fixture()
def export_calls(monkeypatch) -> list:
    calls: list = []
    real = onnx_runtime._export

    def counting(encoder, folder):
        calls.append(folder)
        return real(encoder, folder)

    monkeypatch.setattr(onnx_runtime, "_export", counting)
    return calls


def test_cache_is_reused_and_bad_entries_rebuilt(tiny_clip_dir, tmp_path, export_calls):
    torch_enc = load_encoder(str(tiny_clip_dir), device="cpu")
    first = onnx_encoder(torch_enc, tmp_path)
    entry = tmp_path / torch_enc.fingerprint
    assert len(export_calls) == 1 and first.export_dir == str(entry)
    assert sorted(p.name for p in tmp_path.iterdir()) == [entry.name]  # no temporary folder left
    onnx_encoder(torch_enc, tmp_path)
    assert len(export_calls) == 1  # second load: no export

    meta = json.loads((entry / META_FILE).read_text())
    (entry / META_FILE).write_text(json.dumps({**meta, "fingerprint": "0" * 64}))  # another model's entry
    _assert_twins(torch_enc, onnx_encoder(torch_enc, tmp_path))
    assert len(export_calls) == 2 and json.loads((entry / META_FILE).read_text())["fingerprint"] == torch_enc.fingerprint

    image_file = entry / onnx_runtime.IMAGE_FILE
    image_file.write_bytes(image_file.read_bytes()[: image_file.stat().st_size // 2])  # a torn write
    _assert_twins(torch_enc, onnx_encoder(torch_enc, tmp_path))
    assert len(export_calls) == 3

    (entry / META_FILE).unlink()  # an export killed before it finished
    onnx_encoder(torch_enc, tmp_path)
    assert len(export_calls) == 4


def test_unexportable_inputs_and_bad_runtime_options_fail_clearly(tiny_clip_dir, tmp_path):
    enc = load_encoder(str(tiny_clip_dir), device="cpu")
    real = enc.preprocess.batch
    enc.preprocess.batch = lambda images: {"pixel_values": real(images), "spatial_shapes": None}  # NaFlex-like
    with pytest.raises(OnnxExportError, match="NaFlex"):
        onnx_encoder(enc, tmp_path)
    assert not list(tmp_path.iterdir())  # nothing half-written left in the cache
    with pytest.raises(ValueError, match="unknown runtime"):
        check_runtime("tensorrt")
    with pytest.raises(ValueError, match="runs on the CPU"):
        check_runtime("onnx", device="cuda")
    with pytest.raises(ValueError, match="float32"):
        check_runtime("onnx", dtype="bfloat16")
    with pytest.raises(ValueError, match="executor local"):
        config(tmp_path, tiny_clip_dir, tmp_path / "out", runtime="onnx", executor="ray")
    with pytest.raises(ValidationError, match="runs on the CPU"):
        IsolatedSettings(index=tmp_path, runtime="onnx", device="cuda")
    assert index_main(["build", "--gallery", str(tmp_path), "--model", str(tiny_clip_dir), "--out",
                       str(tmp_path / "o"), "--runtime", "onnx", "--dtype", "float16"]) == 2


def test_onnx_index_build_and_serve_end_to_end(world_index, tmp_path):
    """`cir index build --runtime onnx`, then `cir serve --runtime onnx` over HTTP; the torch index serves too."""
    cache, root = tmp_path / "onnx-cache", tmp_path / "index"
    rc = index_main(["build", "--gallery", str(world_index["world"] / "gallery_manifest.jsonl"), "--model",
                     world_index["model"], "--out", str(root), "--workers", "0", "--factory", "Flat", "--no-progress",
                     "--runtime", "onnx", "--onnx-cache", str(cache)])
    assert rc == 0
    onnx_index, torch_index = load_version(root), load_version(world_index["root"])
    assert onnx_index.manifest["runtime"] == "onnx"
    assert onnx_index.manifest["fingerprint"] == torch_index.manifest["fingerprint"]
    assert list(onnx_index.ids) == list(torch_index.ids)
    onnx_rows = np.load(root / "versions" / onnx_index.version / "embeddings.npy")
    torch_rows = np.load(world_index["root"] / "versions" / world_index["version"] / "embeddings.npy")
    assert _min_cosine(onnx_rows, torch_rows) >= 0.9999

    encoder = load_runtime_encoder(world_index["model"], runtime="onnx", onnx_cache=cache)  # cached: no export
    image = world_index["paths"][world_index["ids"][3]].read_bytes()
    query = fuse("slerp", encoder.encode_images([Image.open(io.BytesIO(image))]),
                 encoder.encode_texts(["make it blue"]), 0.6)[0]
    order = np.argsort(-(onnx_rows @ query), kind="stable")[:5]
    for served in (root, world_index["root"]):  # its own index, and the one torch built
        with LiveServer(server_settings(served, runtime="onnx", onnx_cache=cache)) as server, \
                httpx.Client(base_url=server.url, timeout=60) as client:
            info = client.get("/info").json()
            assert info["runtime"] == "onnx" and info["fingerprint"] == encoder.fingerprint
            r = client.post("/search", data={"text": "make it blue", "k": "5", "alpha": "0.6", "keep_references": "true"},
                            files={"image": ("q.png", image, "image/png")})
            assert r.status_code == 200, r.text
            hits = r.json()["results"]
            if served == root:
                assert [h["id"] for h in hits] == [onnx_index.ids[i] for i in order]
                np.testing.assert_allclose([h["score"] for h in hits], (onnx_rows @ query)[order], atol=1e-4)
            else:
                assert hits[0]["id"] == onnx_index.ids[order[0]]
