"""load_encoder on tiny random CLIP and SigLIP models saved to disk; adapters and fingerprints."""

import numpy as np
import pytest
import torch
from PIL import Image

from cir.encoder import load_encoder
from cir.models import AdapterMismatchError, ModelLoadError
from tiny_models import make_tiny_clip, save_tiny_adapter


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    sizes = [(40, 50), (32, 32), (64, 48)]
    return [Image.fromarray(rng.integers(0, 255, (*sizes[i % 3], 3), dtype=np.uint8)) for i in range(n)]


@pytest.fixture(params=["clip", "siglip"])
def model_dir(request, tiny_clip_dir, tiny_siglip_dir):
    return tiny_clip_dir if request.param == "clip" else tiny_siglip_dir


def test_embeddings_are_unit_float32(model_dir):
    enc = load_encoder(str(model_dir), device="cpu")
    img = enc.encode_images(_images(5))
    txt = enc.encode_texts(["a red circle", "make it two dogs", ""])
    assert img.dtype == np.float32 and img.shape == (5, enc.dim)
    assert txt.dtype == np.float32 and txt.shape == (3, enc.dim)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1, atol=1e-5)


def test_results_do_not_depend_on_batch_composition(model_dir):
    enc = load_encoder(str(model_dir), device="cpu")
    images = _images(64)
    batched = enc.encode_images(images, batch_size=64)
    for i in (0, 17, 63):
        np.testing.assert_allclose(enc.encode_images([images[i]])[0], batched[i], atol=1e-4)
    texts = ["a red circle", "the big blue square on the left", "two dogs"]
    together = enc.encode_texts(texts)
    for i, t in enumerate(texts):
        np.testing.assert_allclose(enc.encode_texts([t])[0], together[i], atol=1e-4)


def test_preprocess_in_workers_equals_encode_images(tiny_clip_dir):
    enc = load_encoder(str(tiny_clip_dir), device="cpu")
    images = _images(4)
    pixels = torch.stack([enc.preprocess(im) for im in images])
    np.testing.assert_allclose(enc.encode_pixels(pixels), enc.encode_images(images), atol=1e-5)


def test_truncation_is_reported(tiny_clip_dir):
    enc = load_encoder(str(tiny_clip_dir), device="cpu")
    assert enc.truncated(["red " * 40, "red"]) == [True, False]
    assert enc.encode_texts(["red " * 40]).shape == (1, enc.dim)


def test_adapter_changes_images_not_texts_and_fingerprint(tiny_clip_dir, tmp_path):
    base = load_encoder(str(tiny_clip_dir), device="cpu")
    adapter = save_tiny_adapter(tiny_clip_dir, tmp_path / "adapter", base.base_fingerprint)
    tuned = load_encoder(str(tiny_clip_dir), adapter=adapter, device="cpu")
    images, texts = _images(3), ["a red circle", "two dogs"]
    assert np.abs(tuned.encode_images(images) - base.encode_images(images)).max() > 1e-3
    np.testing.assert_array_equal(tuned.encode_texts(texts), base.encode_texts(texts))
    assert tuned.fingerprint != base.fingerprint and tuned.base_fingerprint == base.fingerprint
    again = load_encoder(str(tiny_clip_dir), adapter=adapter, device="cpu")
    assert again.fingerprint == tuned.fingerprint


def test_mismatched_adapter_is_refused(tiny_clip_dir, tmp_path):
    base = load_encoder(str(tiny_clip_dir), device="cpu")
    adapter = save_tiny_adapter(tiny_clip_dir, tmp_path / "adapter", base.base_fingerprint)
    other = make_tiny_clip(tmp_path / "other", seed=1)
    with pytest.raises(AdapterMismatchError, match="trained on base model"):
        load_encoder(str(other), adapter=adapter, device="cpu")


def test_bad_model_and_adapter_paths_give_clear_errors(tmp_path, tiny_clip_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_encoder(str(tmp_path / "empty"), device="cpu")
    with pytest.raises(ModelLoadError, match="not a LoRA adapter"):
        load_encoder(str(tiny_clip_dir), adapter=tmp_path / "empty", device="cpu")
    with pytest.raises(ValueError, match="dtype"):
        load_encoder(str(tiny_clip_dir), device="cpu", dtype="int8")
