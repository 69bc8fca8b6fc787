"""cir.index_store: versions, atomic publish, loading and search of a written version."""

from __future__ import annotations

import json
import os

import faiss
import numpy as np
import pytest

from cir import index_store as store
from cir.fusion import l2_normalize


def _write_version(root, version, vectors, factory="Flat", rerank=0):
    vdir = root / "versions" / version
    vdir.mkdir(parents=True)
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    faiss.write_index(index, str(vdir / store.INDEX_FILE))
    np.save(vdir / store.EMBEDDINGS_FILE, vectors)
    store.write_items(vdir / store.ITEMS_FILE, [
        {"id": f"item{i}", "path": f"/g/{i}.png", "width": i, "height": 2 * i, "sha256": f"h{i}",
         "metadata": {"n": i}} for i in range(len(vectors))])
    (vdir / store.MANIFEST).write_text(json.dumps({"dim": vectors.shape[1], "count": len(vectors), "metric": "ip",
                                                   "factory": factory, "rerank": rerank, "default_alpha": 0.8}))


@pytest.fixture()
def vectors():
    return l2_normalize(np.random.default_rng(0).standard_normal((300, 24)).astype(np.float32))


def test_versions_and_publish(tmp_path, vectors):
    root = store.IndexRoot(tmp_path)
    assert root.current_version() is None and root.versions() == []
    _write_version(tmp_path, "v1", vectors)
    _write_version(tmp_path, "v2", vectors[:10])
    (tmp_path / "versions" / ".tmp-v3").mkdir()
    (tmp_path / "versions" / "v4").mkdir()  # no manifest: incomplete
    assert root.versions() == ["v1", "v2"]
    root.publish("v2")
    assert root.current_version() == "v2"
    for bad in ("v4", ".tmp-v3", "nope"):
        with pytest.raises(store.IndexStoreError):
            root.publish(bad)
    assert root.current_version() == "v2"
    assert store.load_version(tmp_path).count == 10
    assert store.load_version(tmp_path, "v1").count == 300


def test_flat_search_equals_numpy(tmp_path, vectors):
    _write_version(tmp_path, "v1", vectors)
    store.IndexRoot(tmp_path).publish("v1")
    loaded = store.load_version(tmp_path)
    queries = l2_normalize(np.random.default_rng(1).standard_normal((5, 24)).astype(np.float32))
    scores, ids = loaded.search(queries, 7)
    brute = queries @ vectors.T
    for q in range(5):
        order = np.argsort(-brute[q])[:7]
        assert ids[q] == [f"item{i}" for i in order]
        np.testing.assert_allclose(scores[q], brute[q][order], atol=1e-5)
    assert loaded.item("item3") == {"row": 3, "id": "item3", "path": "/g/3.png", "width": 3, "height": 6,
                                    "sha256": "h3", "size": None, "mtime_ns": None, "metadata": {"n": 3}}
    assert loaded.item("nope") is None and loaded.embedding("nope") is None
    np.testing.assert_array_equal(loaded.embedding("item5"), vectors[5])
    _, few = loaded.search(queries[:1], 1000)  # k beyond the count: every item once
    assert sorted(few[0]) == sorted(f"item{i}" for i in range(300))
    with pytest.raises(ValueError):
        loaded.search(np.zeros((1, 5), np.float32), 3)


def test_ivf_loads_memory_mapped_and_pq_reranks(tmp_path, vectors):
    _write_version(tmp_path, "ivf", vectors, "IVF4,Flat")
    _write_version(tmp_path, "pq", vectors, "IVF4,PQ8x4fs", rerank=10)
    q = vectors[:4]
    for version in ("ivf", "pq"):
        loaded = store.load_version(tmp_path, version)
        scores, ids = loaded.search(q, 3)
        assert [row[0] for row in ids] == [f"item{i}" for i in range(4)]
    # Reranked scores are exact inner products.
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_missing_or_inconsistent_versions(tmp_path, vectors):
    with pytest.raises(store.IndexStoreError, match="no published version"):
        store.load_version(tmp_path)
    _write_version(tmp_path, "v1", vectors)
    manifest = tmp_path / "versions" / "v1" / store.MANIFEST
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "count": 5}))
    with pytest.raises(store.IndexStoreError, match="inconsistent"):
        store.load_version(tmp_path, "v1")
    with pytest.raises(store.IndexStoreError):
        store.load_version(tmp_path, "v9")


@pytest.mark.parametrize("content,problem", [
    ("dir", "not a regular file"),
    ("fifo", "not a regular file"),
    (b"\xff\xfe\x00\x81binary", "not a text file"),
    (b"../../etc\n", "does not name a version folder"),
    (b"v1\nv2\n", "does not name a version folder"),
    (b"v" * 5000, "does not name a version folder"),
])
def test_an_unreadable_current_is_a_clear_error(tmp_path, content, problem):
    current = tmp_path / store.CURRENT
    if content == "dir":
        current.mkdir()
    elif content == "fifo":
        os.mkfifo(current)  # reading it would block forever
    else:
        current.write_bytes(content)
    with pytest.raises(store.IndexStoreError, match=problem):
        store.IndexRoot(tmp_path).current_version()


def test_a_missing_or_empty_current_is_no_version(tmp_path):
    assert store.IndexRoot(tmp_path).current_version() is None
    (tmp_path / store.CURRENT).write_text("\n")
    assert store.IndexRoot(tmp_path).current_version() is None
    (tmp_path / store.CURRENT).write_text(" v000001-x \n")
    assert store.IndexRoot(tmp_path).current_version() == "v000001-x"
