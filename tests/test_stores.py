"""The store interface on the FAISS root: views satisfy GalleryView and agree with brute force."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cir.errors import ReadOnlyStoreError
from cir.filters import parse_filter
from cir.stores import Delete, FaissRootStore, GalleryView, open_store
from filter_fixtures import brute_force, random_metadata, write_metadata_version


@pytest.fixture()
def root(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((200, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    metadatas = random_metadata(200)
    write_metadata_version(tmp_path, vectors, metadatas)
    return tmp_path, vectors, metadatas


def test_faiss_root_view_is_a_gallery_view(root):
    path, vectors, metadatas = root
    store = open_store(path)
    assert isinstance(store, FaissRootStore)
    assert store.current_version() in store.versions()
    view = store.open()
    try:
        assert isinstance(view, GalleryView)
        assert view.count == 200 and set(view.fields) == set(view.manifest["fields"])
        q = vectors[3] + 0.1 * vectors[7]
        flt = {"price": {"lt": 60}, "in_stock": True}
        scores, ids = view.search_where(q, 5, parse_filter(json.dumps(flt)).bind(view.fields))
        want_ids, want_scores = brute_force(vectors, metadatas, flt, q, 5)
        assert ids == want_ids and len(ids) == 5
        np.testing.assert_allclose(scores, want_scores, atol=1e-5)
        assert view.browse(5, "newest") == [view.ids[r] for r in (199, 198, 197, 196, 195)]
        assert view.browse(5, seed=1) == view.browse(5, seed=1) and len(set(view.browse(50))) == 50
        sha = view.item(view.ids[4])["sha256"]
        assert view.ids[4] in view.ids_with_sha256(sha)
    finally:
        view.close()


def test_faiss_root_read_only_says_so(root):
    store = open_store(root[0])
    assert store.write([Delete("x")])[0].status == "not_found"  # the FAISS root takes writes (docs/live.md)
    store.read_only_reason = "another server takes the writes"
    with pytest.raises(ReadOnlyStoreError, match="another server"):
        store.write([Delete("x")])


def test_unpublished_root_says_how_to_build_one(tmp_path):
    reason = open_store(tmp_path).unpublished_reason()
    assert "cir index build" in reason and "no CURRENT" in reason
