"""Composed gallery items (`--item-text FIELD --item-alpha B`): what is stored, what is ranked, rebuilds."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
from index_fixtures import config, make_gallery

from cir import index_store as store
from cir.encoder import load_encoder
from cir.fusion import fuse, l2_normalize
from indexer import build as build_mod
from indexer.build import build
from indexer.cli import main

TITLES = ["a red circle", "a small blue square", "striped", "a star at the top", "a red circle", "plain",
          "a big green cross"]


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir):
    return load_encoder(str(tiny_clip_dir), device="cpu")


@pytest.fixture()
def image_encodes(monkeypatch):
    """Paths the embedding stage decodes and encodes (the image tower's work)."""
    seen: list[str] = []
    real = build_mod.iter_embedded_batches

    def wrapper(encoder, paths, batches, **kw):
        seen.extend(paths[i] for b in batches for i in b)
        return real(encoder, paths, batches, **kw)

    monkeypatch.setattr(build_mod, "iter_embedded_batches", wrapper)
    return seen


@pytest.fixture()
def titled(tmp_path):
    """A manifest of 10 images: 7 with a title (one repeated), 2 without, 1 with a blank title.

    (A number there would be a build error: every value of a manifest field has one type.)
    """
    paths = make_gallery(tmp_path / "imgs", 10)
    rows = [{"path": str(p), "id": f"item{i}"} for i, p in enumerate(paths)]
    for row, title in zip(rows, TITLES):
        row["title"] = title
        row["caption"] = title.upper()
    rows[7]["title"] = "   "
    manifest = tmp_path / "gallery.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def _expected(encoder, images, texts, alpha):
    out = images.copy()
    for i, text in enumerate(texts):
        if text is not None:
            out[i] = fuse("slerp", images[i][None], encoder.encode_texts([text]), alpha)[0]
    return out


def test_composed_items_are_ranked_and_images_stay_stored(tmp_path, titled, tiny_clip_dir, encoder):
    build(config(titled, tiny_clip_dir, tmp_path / "plain"), encoder=encoder)
    build(config(titled, tiny_clip_dir, tmp_path / "root", item_text="title", item_alpha=0.4), encoder=encoder)
    plain, loaded = store.load_version(tmp_path / "plain"), store.load_version(tmp_path / "root")
    images = np.load(plain._dir / store.EMBEDDINGS_FILE)
    assert np.array_equal(np.load(loaded._dir / store.EMBEDDINGS_FILE), images)
    m = loaded.manifest
    assert m["index_vectors"] == store.INDEX_VECTORS_FILE
    assert m["item_text"] == {"field": "title", "alpha": 0.4, "composed": 7, "without_text": 3, "truncated_texts": 0}
    ranked = np.load(loaded._dir / store.INDEX_VECTORS_FILE)
    np.testing.assert_allclose(ranked, _expected(encoder, images, TITLES + [None] * 3, 0.4), atol=1e-6)
    assert np.array_equal(ranked[7:], images[7:])  # no text (or not a text): the image embedding itself
    assert not np.allclose(ranked[:7], images[:7], atol=1e-3)
    # reference_id queries read the image embedding; search ranks the composed vectors exactly
    assert np.array_equal(loaded.embedding("item2"), images[2])
    queries = l2_normalize(np.random.default_rng(0).standard_normal((4, encoder.dim)).astype(np.float32))
    scores, ids = loaded.search(queries, 5)
    brute = queries @ ranked.T
    assert ids == [[f"item{j}" for j in np.argsort(-row, kind="stable")[:5]] for row in brute]
    np.testing.assert_allclose(scores, np.sort(brute, axis=1)[:, ::-1][:, :5], atol=1e-5)


def test_filtered_search_ranks_the_composed_vectors(tmp_path, titled, tiny_clip_dir, encoder):
    """The filtered plans (exact scan over matching rows, FAISS with a selector) score what the index holds."""
    build(config(titled, tiny_clip_dir, tmp_path / "root", item_text="title", item_alpha=0.5), encoder=encoder)
    loaded = store.load_version(tmp_path / "root")
    ranked = np.load(loaded._dir / store.INDEX_VECTORS_FILE)
    query = l2_normalize(np.random.default_rng(2).standard_normal(encoder.dim).astype(np.float32))
    mask = np.zeros(10, dtype=bool)
    mask[[0, 2, 3, 8]] = True
    for exact_max in (10, 0):  # the exact scan, then the index with an ID selector
        loaded.exact_max = exact_max
        scores, ids = loaded.search_filtered(query, 3, mask)
        order = sorted(np.flatnonzero(mask), key=lambda r: -float(ranked[r] @ query))[:3]
        assert ids == [f"item{r}" for r in order]
        np.testing.assert_allclose(scores, [ranked[r] @ query for r in order], atol=1e-5)


def test_weight_zero_is_the_image_index_bit_for_bit(tmp_path, titled, tiny_clip_dir, encoder):
    build(config(titled, tiny_clip_dir, tmp_path / "plain"), encoder=encoder)
    build(config(titled, tiny_clip_dir, tmp_path / "zero", item_text="title", item_alpha=0.0), encoder=encoder)
    plain, zero = store.load_version(tmp_path / "plain"), store.load_version(tmp_path / "zero")
    for name in (store.EMBEDDINGS_FILE, store.INDEX_FILE):
        assert (plain._dir / name).read_bytes() == (zero._dir / name).read_bytes()
    assert not (zero._dir / store.INDEX_VECTORS_FILE).exists()
    assert zero.manifest["index_vectors"] == store.EMBEDDINGS_FILE == plain.manifest["index_vectors"]
    assert zero.manifest["item_text"]["composed"] == 0 and plain.manifest["item_text"] is None


def test_new_field_or_weight_recomposes_without_image_encodes(tmp_path, titled, tiny_clip_dir, encoder,
                                                              image_encodes):
    root = tmp_path / "root"
    build(config(titled, tiny_clip_dir, root, item_text="title", item_alpha=0.3), encoder=encoder)
    assert len(image_encodes) == 10
    images = np.load(store.load_version(root)._dir / store.EMBEDDINGS_FILE)
    image_encodes.clear()
    tower = []
    real_pixels = encoder.encode_pixels
    encoder.encode_pixels = lambda pixels: tower.append(len(pixels)) or real_pixels(pixels)
    try:
        for field, alpha, texts in (("title", 0.6, TITLES + [None] * 3),
                                    ("caption", 0.6, [t.upper() for t in TITLES] + [None] * 3)):
            result = build(config(titled, tiny_clip_dir, root, item_text=field, item_alpha=alpha), encoder=encoder)
            loaded = store.load_version(root)
            assert (result.embedded, result.reused) == (0, 10) and image_encodes == [] and tower == []
            assert loaded.manifest["item_text"]["field"] == field and loaded.manifest["item_text"]["alpha"] == alpha
            assert np.array_equal(np.load(loaded._dir / store.EMBEDDINGS_FILE), images)
            np.testing.assert_allclose(np.load(loaded._dir / store.INDEX_VECTORS_FILE),
                                       _expected(encoder, images, texts, alpha), atol=1e-6)
        build(config(titled, tiny_clip_dir, root), encoder=encoder)  # and back to the image index
        loaded = store.load_version(root)
        assert loaded.manifest["index_vectors"] == store.EMBEDDINGS_FILE and tower == []
        assert np.array_equal(loaded.vectors, images)
    finally:
        encoder.encode_pixels = real_pixels


def test_a_field_no_item_has_gives_the_image_index(tmp_path, titled, tiny_clip_dir, encoder, caplog):
    build(config(titled, tiny_clip_dir, tmp_path / "root", item_text="nope", item_alpha=0.5), encoder=encoder)
    loaded = store.load_version(tmp_path / "root")
    assert loaded.manifest["index_vectors"] == store.EMBEDDINGS_FILE
    assert loaded.manifest["item_text"]["without_text"] == 10
    assert "no gallery item has a 'nope' text" in caplog.text


def test_pq_rerank_scores_the_composed_vectors(tmp_path):
    """Exact re-scoring reads the ranked vectors, not the image embeddings."""
    rng = np.random.default_rng(1)
    images = l2_normalize(rng.standard_normal((300, 24)).astype(np.float32))
    ranked = l2_normalize(images + rng.standard_normal((300, 24)).astype(np.float32))
    vdir = tmp_path / "versions" / "v1"
    vdir.mkdir(parents=True)
    index = faiss.index_factory(24, "IVF4,PQ8x4fs", faiss.METRIC_INNER_PRODUCT)
    index.train(ranked)
    index.add(ranked)
    faiss.write_index(index, str(vdir / store.INDEX_FILE))
    np.save(vdir / store.EMBEDDINGS_FILE, images)
    np.save(vdir / store.INDEX_VECTORS_FILE, ranked)
    store.write_items(vdir / store.ITEMS_FILE, [{"id": f"i{i}", "path": "", "width": 1, "height": 1, "sha256": ""}
                                                for i in range(300)])
    manifest = {"dim": 24, "count": 300, "factory": "IVF4,PQ8x4fs", "rerank": 10, "index_vectors": "index_vectors.npy"}
    (vdir / store.MANIFEST).write_text(json.dumps(manifest))
    loaded = store.load_version(tmp_path, "v1")
    scores, ids = loaded.search(ranked[:5], 1)
    assert [row[0] for row in ids] == [f"i{i}" for i in range(5)]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert np.array_equal(loaded.embedding("i3"), images[3])
    (vdir / store.MANIFEST).write_text(json.dumps({**manifest, "index_vectors": "../../secrets.npy"}))
    with pytest.raises(store.IndexStoreError, match="unknown index_vectors"):
        store.load_version(tmp_path, "v1")


@pytest.mark.parametrize("argv, message", [
    (["--item-alpha", "0.5"], "--item-alpha needs --item-text"),
    (["--item-text", "title", "--item-alpha", "1.5"], "--item-alpha must be in [0, 1]"),
    (["--item-text", " "], "--item-text must name a manifest field"),
])
def test_bad_item_options_are_usage_errors(tmp_path, titled, tiny_clip_dir, capsys, argv, message):
    rc = main(["build", "--gallery", str(titled), "--model", str(tiny_clip_dir), "--out", str(tmp_path / "r"),
               "--workers", "0", "--no-progress", *argv])
    assert rc == 2 and message in capsys.readouterr().err
