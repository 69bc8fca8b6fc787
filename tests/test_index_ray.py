"""`--executor ray` on a local Ray instance gives the same shards and embeddings as the local executor."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from index_fixtures import make_gallery
from PIL import Image

from cir import index_store as store
from cir.encoder import load_encoder
from cir.pipeline import embed_image_files
from cir.pixels import map_pixels
from indexer.cli import main

pytest.importorskip("ray")
from indexer.ray_executor import Embedder, decode_batch  # noqa: E402 - needs ray


def test_ray_executor_matches_local(tmp_path, tiny_clip_dir, capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a local Ray instance, started and stopped by the job
    gallery = tmp_path / "g"
    make_gallery(gallery, 10)
    (gallery / "broken.png").write_bytes(b"\x89PNG broken")
    common = ["--gallery", str(gallery), "--model", str(tiny_clip_dir), "--device", "cpu", "--batch-size", "4",
              "--shard-size", "6", "--workers", "1", "--no-progress", "--json"]
    results = {}
    for executor in ("local", "ray"):
        assert main(["build", *common, "--out", str(tmp_path / executor), "--executor", executor]) == 0
        results[executor] = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert (results[executor]["count"], results[executor]["skipped"]) == (10, 1)
    local, ray_ = (store.load_version(tmp_path / name) for name in ("local", "ray"))
    assert local.ids == ray_.ids
    np.testing.assert_allclose(np.load(ray_._dir / store.EMBEDDINGS_FILE),
                               np.load(local._dir / store.EMBEDDINGS_FILE), atol=1e-5)
    for item_id in local.ids:
        a, b = local.item(item_id), ray_.item(item_id)
        assert (a["sha256"], a["width"], a["height"]) == (b["sha256"], b["width"], b["height"])
    skipped = json.loads((ray_._dir / store.REPORT_FILE).read_text())["skipped"]
    assert [s["id"] for s in skipped] == ["broken.png"]


def test_ray_stages_carry_naflex_pixels(tmp_path, tiny_siglip2_naflex_dir):
    """The decode and embed stages themselves (no cluster): NaFlex dicts travel as one column per tensor."""
    paths = make_gallery(tmp_path / "g", 5)
    (tmp_path / "g" / "broken.png").write_bytes(b"\x89PNG broken")
    paths.append(tmp_path / "g" / "broken.png")
    encoder = load_encoder(str(tiny_siglip2_naflex_dir), device="cpu")
    blank = map_pixels(torch.zeros_like, encoder.preprocess(Image.new("RGB", (8, 8))))
    batch = decode_batch({"path": np.array([str(p) for p in paths]), "position": np.arange(len(paths))},
                         encoder.preprocess, 10**7, 2**26, blank)
    assert {"pixels.pixel_values", "pixels.pixel_attention_mask", "pixels.spatial_shapes"} <= set(batch)
    out = Embedder(str(tiny_siglip2_naflex_dir), None, "cpu", "auto")(batch)
    assert not any(k.startswith("pixels") for k in out)
    assert list(out["error"] != "") == [False] * 5 + [True]
    expected = embed_image_files(encoder, paths[:5], workers=0, progress=False).embeddings
    np.testing.assert_allclose(out["embedding"][:5], expected, atol=1e-5)
