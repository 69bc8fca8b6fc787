"""indexer.factory: the auto choice, exactness of Flat and recall of the ANN structures."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from cir.index_store import rerank_search
from indexer.factory import build_index, choose_factory, estimate_bytes, exact_topk, ivf_nlist, recall_at_k
from indexer.synthetic import synthetic_vectors


@pytest.fixture(scope="module")
def data():
    faiss.omp_set_num_threads(2)
    x = synthetic_vectors(50_000, dim=64, seed=0)
    q = synthetic_vectors(300, dim=64, seed=99)  # held out: fresh draws, not in the index
    return x, q, exact_topk(x, q, 10)


def test_auto_choice():
    assert choose_factory(1_000, 512) == "Flat"
    assert choose_factory(60_000, 512, flat_max=50_000, max_memory_gb=10) == "HNSW32"
    short = choose_factory(1_000_000, 512, flat_max=50_000, max_memory_gb=0.5)
    assert short.startswith("IVF") and "PQ" in short
    assert estimate_bytes(short, 1_000_000, 512) < estimate_bytes("HNSW32", 1_000_000, 512) / 10
    assert ivf_nlist(1_000_000) == 4096 and ivf_nlist(100) == 16


def test_flat_equals_numpy_bruteforce(data):
    x, q, _ = data
    built = build_index(x[:5000], "Flat")
    scores, rows = built.index.search(q, 10)
    brute = q @ x[:5000].T
    expected = np.argsort(-brute, axis=1)[:, :10]
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(brute, expected, 1), atol=1e-5)
    assert built.recall_at_10 == 1.0


@pytest.mark.parametrize("factory", ["HNSW32", "IVF256,Flat", "IVF256,PQ32x4fs"])
def test_ann_recall_at_10(data, factory):
    x, q, truth = data
    built = build_index(x, factory, recall_target=0.95)
    assert built.recall_at_10 >= 0.95  # measured at build time on composed-style queries
    found = rerank_search(built.index, x, q, 10, built.rerank)[1]
    assert recall_at_k(found, truth) >= 0.95  # and on fresh held-out queries


def test_ivf_needs_enough_vectors():
    with pytest.raises(ValueError, match="at least"):
        build_index(synthetic_vectors(100, dim=16), "IVF256,Flat")


@pytest.mark.gpu
@pytest.mark.skipif(not hasattr(faiss, "StandardGpuResources"), reason="needs faiss-gpu")
def test_gpu_build_matches_cpu(data):
    x, q, truth = data
    cpu = build_index(x, "IVF256,Flat", use_gpu=False)
    gpu = build_index(x, "IVF256,Flat", use_gpu=True)
    assert gpu.on_gpu and gpu.recall_at_10 >= 0.95
    assert recall_at_k(gpu.index.search(q, 10)[1], truth) >= recall_at_k(cpu.index.search(q, 10)[1], truth) - 0.02
