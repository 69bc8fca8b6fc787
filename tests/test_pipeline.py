"""cir.pipeline: overlapped batched embedding equals one-by-one encoding; bad files are reported."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cir.encoder import load_encoder
from cir.pipeline import embed_image_files, make_batches


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir):
    return load_encoder(str(tiny_clip_dir), device="cpu")


def _images(folder, n, seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        size = (int(rng.integers(20, 60)), int(rng.integers(20, 60)))
        arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        path = folder / f"img{i:02d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("workers", [0, 2])
def test_batched_equals_one_by_one(encoder, tmp_path, workers):
    paths = _images(tmp_path, 7)
    result = embed_image_files(encoder, paths, batch_size=3, workers=workers, progress=False)
    assert result.ok == list(range(7)) and result.failed == []
    assert result.embeddings.shape == (7, encoder.dim) and result.embeddings.dtype == np.float32
    for path, row in zip(paths, result.embeddings):
        with Image.open(path) as im:
            single = encoder.encode_images([im.convert("RGB")])[0]
        np.testing.assert_allclose(row, single, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-5)


def test_bad_files_are_reported_not_fatal(encoder, tmp_path):
    paths = _images(tmp_path, 4)
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    data = paths[1].read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    inputs = [paths[0], tmp_path / "junk.jpg", paths[2], tmp_path / "missing.png", tmp_path / "cut.jpg", paths[3]]
    result = embed_image_files(encoder, inputs, batch_size=2, workers=1, progress=False)
    assert result.ok == [0, 2, 5]
    assert [p for p, _ in result.failed] == [str(inputs[1]), str(inputs[3]), str(inputs[4])]
    assert all(reason for _, reason in result.failed)
    assert result.embeddings.shape == (3, encoder.dim)


def test_empty_and_all_bad(encoder, tmp_path):
    assert embed_image_files(encoder, [], progress=False).embeddings.shape == (0, encoder.dim)
    (tmp_path / "a.png").write_bytes(b"xx")
    result = embed_image_files(encoder, [tmp_path / "a.png"], workers=0, progress=False)
    assert result.ok == [] and len(result.failed) == 1


def test_make_batches_respects_boundaries():
    assert make_batches(7, 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert make_batches(7, 3, boundaries=[4]) == [[0, 1, 2], [3], [4, 5, 6]]
    assert make_batches(0, 3) == []
    with pytest.raises(ValueError):
        make_batches(3, 0)


@pytest.mark.gpu
def test_cuda_matches_cpu(tiny_clip_dir, tmp_path):
    paths = _images(tmp_path, 9)
    cpu = load_encoder(str(tiny_clip_dir), device="cpu")
    reference = embed_image_files(cpu, paths, batch_size=4, workers=2, progress=False).embeddings
    fp32 = load_encoder(str(tiny_clip_dir), device="cuda", dtype="float32")
    got = embed_image_files(fp32, paths, batch_size=4, workers=2, progress=False).embeddings
    np.testing.assert_allclose(got, reference, atol=5e-3)  # cuDNN may use TF32 for the patch convolution
    bf16 = load_encoder(str(tiny_clip_dir), device="cuda")
    assert bf16.autocast_dtype is not None
    got = embed_image_files(bf16, paths, batch_size=4, workers=2, progress=False).embeddings
    assert got.dtype == np.float32 and (np.sum(got * reference, axis=1) > 0.99).all()
