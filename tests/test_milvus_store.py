"""The Milvus store against the FAISS Flat store on the same vectors, on a real Milvus server."""

from __future__ import annotations

import random

import numpy as np
import pytest

from cir.filters import parse_filter
from cir.fusion import l2_normalize
from cir.stores import Delete, Patch, Upsert, open_store
from cir.stores.milvus_sync import sync_version
from filter_fixtures import brute_force, random_filter, random_tree
from milvus_fixtures import DIM, FLAT, faiss_version

N = 400


@pytest.fixture(scope="module")
def pair(milvus_server, tmp_path_factory):
    """(FAISS view, Milvus view, ranked vectors, metadata) of one gallery."""
    faiss_view, _, ranked, metas = faiss_version(tmp_path_factory.mktemp("root"))
    milvus = open_store(milvus_server.url())
    result = sync_version(milvus, faiss_view, index=FLAT)
    assert result.mode == "full" and result.count == N
    view = milvus.open()
    yield faiss_view, view, ranked, metas
    milvus.close()


def _queries(n: int, seed: int) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32))


def test_unfiltered_top_k_equals_faiss_flat(pair):
    faiss_view, view, _, _ = pair
    q = _queries(12, 1)
    f_scores, f_ids = faiss_view.search(q, 10)
    m_scores, m_ids = view.search(q, 10)
    assert m_ids == f_ids
    np.testing.assert_allclose(m_scores, f_scores, atol=1e-5)


def test_random_filters_equal_faiss_and_brute_force(pair):
    faiss_view, view, ranked, metas = pair
    rng = random.Random(7)
    queries = _queries(60, 2)
    nonempty = 0
    for q in queries:
        flt = random_filter(rng)
        bound = parse_filter(flt).bind(view.fields)
        m_scores, m_ids = view.search_where(q, 10, bound)
        f_scores, f_ids = faiss_view.search_where(q, 10, parse_filter(flt).bind(faiss_view.fields))
        b_ids, _ = brute_force(ranked, metas, flt, q, 10)
        assert m_ids == f_ids == b_ids, flt
        np.testing.assert_allclose(m_scores, f_scores, atol=1e-5)
        nonempty += bool(m_ids)
    assert nonempty > 20  # the filters are not all empty


def test_or_not_nin_exists_trees_equal_faiss_and_brute_force(pair):
    """The filter language's and / or / not trees, nin and exists, translated to Milvus expressions."""
    faiss_view, view, ranked, metas = pair
    rng = random.Random(11)
    nonempty = 0
    for q in _queries(40, 3):
        flt = random_tree(rng)
        m_scores, m_ids = view.search_where(q, 10, parse_filter(flt).bind(view.fields))
        f_scores, f_ids = faiss_view.search_where(q, 10, parse_filter(flt).bind(faiss_view.fields))
        b_ids, _ = brute_force(ranked, metas, flt, q, 10)
        assert m_ids == f_ids == b_ids, flt
        np.testing.assert_allclose(m_scores, f_scores, atol=1e-5)
        nonempty += bool(m_ids)
    assert nonempty > 10


def test_records_embeddings_and_facets_match(pair):
    faiss_view, view, _, _ = pair
    assert view.count == faiss_view.count == N
    assert view.fields == faiss_view.fields
    for item_id in ("item0", "item7", "item399"):
        assert view.item(item_id) == {k: v for k, v in faiss_view.item(item_id).items() if k != "row"}
        np.testing.assert_array_equal(view.embedding(item_id), faiss_view.embedding(item_id))
    assert view.item("nope") is None and view.embedding("nope") is None
    assert sorted(view.ids_with_sha256("h3")) == sorted(faiss_view.ids_with_sha256("h3"))
    assert view.ids_with_sha256('"; --') == []
    for key in ("fingerprint", "dim", "model", "adapter", "default_alpha", "factory", "fields", "version", "count"):
        assert key in view.manifest


def test_browse(pair):
    _, view, _, _ = pair
    assert view.browse(5, "newest") == [f"item{i}" for i in range(N - 1, N - 6, -1)]
    first = view.browse(8, "random", seed=3)
    assert len(set(first)) == 8 and first == view.browse(8, "random", seed=3)
    with pytest.raises(ValueError):
        view.browse(3, "oldest")


def test_composed_items_search_ranked_and_return_image_embeddings(milvus_server, tmp_path):
    faiss_view, emb, ranked, _ = faiss_version(tmp_path, seed=5, n=120, composed=True)
    milvus = open_store(milvus_server.url())
    sync_version(milvus, faiss_view, index=FLAT)
    view = milvus.open()
    q = _queries(6, 9)
    f_scores, f_ids = faiss_view.search(q, 7)
    m_scores, m_ids = view.search(q, 7)
    assert m_ids == f_ids
    np.testing.assert_allclose(m_scores, f_scores, atol=1e-5)
    np.testing.assert_array_equal(view.embedding("item4"), emb[4])
    assert not np.allclose(emb[4], ranked[4])
    milvus.close()


def test_writes_upsert_patch_delete_are_read_back_at_once(milvus_server, tmp_path):
    faiss_view, _, _, _ = faiss_version(tmp_path, seed=3, n=50)
    milvus = open_store(milvus_server.url())
    sync_version(milvus, faiss_view, index=FLAT)
    view = milvus.open()
    v = _queries(1, 11)[0]
    price_key = "price"
    results = milvus.write([Upsert("new'1", v, v, {"price": 12.5, "tags": ["sale"], "extra": {"a": 1}}, path="/x.png",
                                   width=3, height=4, sha256="abc", size=9),
                            Patch("item1", {"price": 99.0, "in_stock": None}),
                            Delete("item2"), Delete("missing"), Patch("missing", {"a": 1}),
                            Upsert("bad", v[:3], v[:3], {}),
                            Patch("item3", {"price": "not a number"})])
    assert [r.status for r in results] == ["ok", "ok", "ok", "not_found", "not_found", "invalid", "invalid"]
    scores, ids = view.search(v[None], 1)
    assert ids[0] == ["new'1"] and scores[0][0] == pytest.approx(1.0, abs=1e-5)
    assert view.item("new'1")["metadata"] == {"price": 12.5, "tags": ["sale"], "extra": {"a": 1}}
    assert view.item("item1")["metadata"].get(price_key) == 99.0 and "in_stock" not in view.item("item1")["metadata"]
    assert view.item("item2") is None and view.embedding("item2") is None
    bound = parse_filter({"price": {"gte": 99}}).bind(view.fields)
    assert "item1" in view.search_where(v, 50, bound)[1]
    bound = parse_filter({"tags": "sale", "price": 12.5}).bind(view.fields)
    assert view.search_where(v, 5, bound)[1][0] == "new'1"
    assert view.count == 50  # one added, one deleted
    milvus.close()
