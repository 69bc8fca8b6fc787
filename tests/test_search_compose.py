"""The engine with several references, image weights and negative texts: exact, batched == one by one."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest

from cir.encoder import load_encoder
from cir.filters import parse_filter
from cir.fusion import fuse, negative, spherical_mean
from cir.index_store import load_version
from cir.search import query as q
from cir.search.engine import IndexState, Query, SearchEngine
from service_fixtures import world_index  # noqa: F401 - fixture


@pytest.fixture(scope="module")
def engine(world_index):
    encoder = load_encoder(world_index["model"], device="cpu")
    index = load_version(world_index["root"])
    eng = SearchEngine(encoder, max_pixels=10**7, max_batch=16, batch_wait_s=0.05)
    eng.swap(IndexState.of(index))
    return eng


def _image(world_index, i: int) -> bytes:
    return world_index["paths"][world_index["ids"][i]].read_bytes()


def _before(engine, fusion, image: bytes | None, ref_id: str | None, text: str | None, alpha: float) -> np.ndarray:
    """The query vector exactly as the engine composed it before several references and negatives existed."""
    if not text:  # the old planner: a one-sided query uses its side
        fusion = "image"
    elif image is None and ref_id is None:
        fusion = "text"
    v = w = None
    if ref_id is not None:
        v = engine.reference(engine.state, ref_id)
    elif image is not None:
        v = engine.encode_pixel_batch([engine.decode(image)])[0]
    if text:
        w = engine.encode_text_batch([text])[0][0]
    v = w if v is None else v
    w = v if w is None else w
    return fuse(fusion, v[None], w[None], alpha)[0]


def _run_batched(engine, queries):
    async def go():
        await engine.start()
        try:
            return await asyncio.gather(*(engine.search(x) for x in queries))
        finally:
            await engine.stop()

    # stop() shuts the worker pools; a fresh engine on the same encoder and index for each run
    fresh = SearchEngine(engine.encoder, max_pixels=10**7, max_batch=16, batch_wait_s=0.05,
                         on_batch=lambda name, n: sizes.setdefault(name, []).append(n))
    fresh.swap(engine.state)
    sizes: dict[str, list[int]] = {}
    engine = fresh
    return asyncio.run(go()), sizes


def test_one_reference_without_negatives_is_bit_for_bit_the_old_query(engine, world_index):
    ids = world_index["ids"]
    cases = [("slerp", _image(world_index, 1), None, "make it blue", 0.75),
             ("slerp", None, ids[2], "turn it into a star", 0.9),
             ("linear", _image(world_index, 3), None, "make it small", 0.4),
             ("slerp", _image(world_index, 4), None, None, 0.8),
             ("slerp", None, None, "a red circle", 0.8)]
    # keep_references: the old query ranked the reference itself (these uploads are gallery files) too
    queries = [Query(image_bytes=img, reference_id=ref, text=text, alpha=alpha, fusion=fusion, k=5,
                     keep_references=True) for fusion, img, ref, text, alpha in cases]
    batched, _ = _run_batched(engine, queries)
    for (fusion, img, ref, text, alpha), query, got in zip(cases, queries, batched):
        want = _before(engine, fusion, img, ref, text, alpha)
        sync = engine.search_sync(query)
        assert np.array_equal(sync.vector, want)
        scores, hit_ids = engine.state.index.search(want[None], 5)
        assert [h.id for h in sync.hits] == hit_ids[0] == [h.id for h in got.hits]
        assert [h.score for h in sync.hits] == [float(s) for s in scores[0]]
        # the batched path encodes in batches, whose floating-point sums may differ in the last bits
        np.testing.assert_allclose(got.vector, want, atol=1e-5)
        assert sync.references == (0 if img is None and ref is None else 1) and sync.negative_weight is None


def test_copies_of_one_reference_give_the_one_reference_query(engine, world_index):
    image, ref = _image(world_index, 5), world_index["ids"][5]
    one = engine.search_sync(Query(image_bytes=image, text="make it blue", k=8))
    for query in (Query(images=(image,) * 3, text="make it blue", k=8),
                  Query(reference_ids=(ref,) * 4, text="make it blue", k=8),
                  Query(image_bytes=image, reference_ids=(ref, ref), image_weights=(1, 2, 0.5), text="make it blue",
                        k=8)):
        many = engine.search_sync(query)
        assert [h.id for h in many.hits] == [h.id for h in one.hits]
        np.testing.assert_allclose([h.score for h in many.hits], [h.score for h in one.hits], atol=1e-5)
        np.testing.assert_allclose(many.vector, one.vector, atol=1e-5)


def test_several_references_weights_and_negatives_compose_as_cir_fusion_says(engine, world_index):
    ids = world_index["ids"]
    images = (_image(world_index, 6), _image(world_index, 7))
    query = Query(images=images, reference_ids=(ids[8],), image_weights=(2.0, 1.0, 0.5), text="make it striped",
                  negative_texts=("red", "circle"), negative_weight=0.4, alpha=0.7, k=6)
    got = engine.search_sync(query)
    refs = [engine.encode_pixel_batch([engine.decode(b)])[0] for b in images] + [engine.reference(engine.state, ids[8])]
    w = engine.encode_text_batch(["make it striped"])[0][0]
    negs = np.stack([engine.encode_text_batch([t])[0][0] for t in ("red", "circle")])
    mean = spherical_mean(np.stack(refs), np.array([2.0, 1.0, 0.5]))
    want = negative(fuse("slerp", mean[None], w[None], 0.7), spherical_mean(negs)[None], 0.4)[0]
    np.testing.assert_array_equal(got.vector, want)
    assert got.references == 3 and got.negative_weight == 0.4
    # the negative moves the query away from it, and the default push is DEFAULT_NEGATIVE_WEIGHT
    plain = engine.search_sync(replace(query, negative_texts=()))
    assert float(got.vector @ spherical_mean(negs)) < float(plain.vector @ spherical_mean(negs))
    assert engine.search_sync(replace(query, negative_weight=None)).negative_weight == 0.3


def test_batched_equals_one_by_one_with_mixed_queries_in_one_batch(engine, world_index):
    ids = world_index["ids"]
    queries = []
    for i in range(16):
        uploads = tuple(_image(world_index, (i + j) % 40) for j in range(i % 3))
        refs = tuple(ids[(i * 5 + j) % 40] for j in range((i // 3) % 3))
        if not uploads and not refs and i % 2:
            refs = (ids[i],)
        n = len(uploads) + len(refs)
        queries.append(Query(images=uploads, reference_ids=refs, text=("make it blue", None, "add stripes")[i % 3],
                             image_weights=tuple(1.0 + j for j in range(n)) if n > 1 and i % 4 == 0 else None,
                             negative_texts=("red",) * (i % 2) + ("small",) * (i % 5 == 0),
                             negative_weight=None if i % 3 else 0.6, k=4 + i % 3, alpha=0.5 + 0.02 * i,
                             filter=parse_filter('{"size": "small"}') if i % 4 == 1 else None))
    queries = [x for x in queries if x.uploads or x.gallery_ids or x.text]
    expected = [engine.search_sync(x) for x in queries]
    got, sizes = _run_batched(engine, queries)
    assert max(sizes["image"]) > 1 and max(sizes["text"]) > 1 and max(sizes["search"]) > 1
    for a, b in zip(got, expected):
        assert [h.id for h in a.hits] == [h.id for h in b.hits]
        np.testing.assert_allclose([h.score for h in a.hits], [h.score for h in b.hits], atol=1e-5)
        np.testing.assert_allclose(a.vector, b.vector, atol=1e-5)
        assert (a.references, a.negative_weight, a.alpha, a.fusion) == (b.references, b.negative_weight, b.alpha,
                                                                        b.fusion)


@pytest.mark.parametrize("query, error, field", [
    (Query(reference_ids=("a",) * 9, text="x"), q.TooManyReferencesError, "image/reference_id"),
    (Query(images=(b"1",) * 5, reference_ids=("a",) * 4), q.TooManyReferencesError, "image/reference_id"),
    (Query(reference_ids=("a", "b"), image_weights=(1.0,)), q.ImageWeightsError, "image_weights"),
    (Query(reference_ids=("a", "b"), image_weights=(1.0, -1.0)), q.ImageWeightsError, "image_weights"),
    (Query(reference_ids=("a", "b"), image_weights=(0.0, 0.0)), q.ImageWeightsError, "image_weights"),
    (Query(reference_ids=("a",), image_weights=(float("nan"),)), q.ImageWeightsError, "image_weights"),
    (Query(text="x", image_weights=(1.0,)), q.ImageWeightsError, "image_weights"),
    (Query(text="x", negative_texts=("y",), negative_weight=1.5), q.NegativeWeightError, "negative_weight"),
    (Query(text="x", negative_texts=("y",), negative_weight=float("nan")), q.NegativeWeightError, "negative_weight"),
    (Query(negative_texts=("red",)), q.NegativeTextError, "negative_text"),
    (Query(text="x", negative_texts=("",)), q.NegativeTextError, "negative_text"),
    (Query(text="x", negative_texts=("n",) * 9), q.NegativeTextError, "negative_text"),
    (Query(), q.EmptyQueryError, "query"),
])
def test_bad_compositions_fail_before_any_encoding(engine, monkeypatch, query, error, field):
    monkeypatch.setattr(engine, "encode_pixel_batch", lambda *_: pytest.fail("encoded an image"))
    monkeypatch.setattr(engine, "encode_text_batch", lambda *_: pytest.fail("encoded a text"))
    with pytest.raises(error, match=field):
        engine.search_sync(query)
    with pytest.raises(error, match=field):
        asyncio.run(engine.search(query))


def test_an_unknown_reference_among_several_is_named(engine, world_index):
    with pytest.raises(q.UnknownReferenceError, match="nope"):
        engine.search_sync(Query(reference_ids=(world_index["ids"][0], "nope"), text="make it blue"))
