"""indexer.factory: the auto choice, exactness of Flat and recall of the ANN structures."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from cir.index_store import rerank_search
from cir.index_factory import factory_kind, parse_factory
from indexer.config import BuildConfig
from indexer.factory import build_index, choose_factory, estimate_bytes, exact_topk, ivf_nlist, recall_at_k
from indexer.synthetic import synthetic_vectors


@pytest.fixture(scope="module")
def data():
    faiss.omp_set_num_threads(2)
    x = synthetic_vectors(50_000, dim=64, seed=0)
    q = synthetic_vectors(300, dim=64, seed=99)  # held out: fresh draws, not in the index
    return x, q, exact_topk(x, q, 10)


def test_auto_choice():
    assert choose_factory(1_000, 512, BuildConfig.flat_max) == "Flat"
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


def test_factory_strings_are_parsed_in_one_place():
    assert parse_factory("Flat").kind == "Flat" and parse_factory("HNSW32,Flat").hnsw_m == 32
    ivf = parse_factory("IVF4096,PQ64x4fs")
    assert (ivf.kind, ivf.nlist, ivf.pq_m, ivf.pq_bits, ivf.fast_scan, ivf.pq) == ("IVF", 4096, 64, 4, True, True)
    assert ivf.code_bytes(512) == 32 and parse_factory("IVF256,Flat").code_bytes(512) == 2048
    assert parse_factory("IVF16,PQ8").pq_bits == 8
    for bad in ("auto", "HNSW", "IVF,Flat", "IVF64,PQ", "PQ8", "Flat,IVF"):
        with pytest.raises(ValueError, match="unsupported FAISS factory"):
            parse_factory(bad)
    assert factory_kind("IVF64,Flat") == "IVF" and factory_kind("something else") is None
    assert estimate_bytes("IVF64,PQ16x4fs", 1000, 128) == 1000 * (8 + 8) + 64 * 128 * 4
    with pytest.raises(ValueError, match="use auto, Flat, HNSW<M>"):
        BuildConfig(gallery="g", model="toy", out="o", factory="IVF,PQ64")
