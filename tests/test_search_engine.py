"""Micro-batching: the batcher's contract, and batched engine answers equal one-by-one answers."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from cir.encoder import load_encoder
from cir.index_store import load_version
from cir.search.batching import MicroBatcher, OverloadedError
from cir.search.engine import IndexState, Query, SearchEngine
from cir.filters import parse_filter
from cir.search.query import InvalidFilterError
from filter_fixtures import matches
from service_fixtures import world_index  # noqa: F401 - fixture


def _run(coro):
    return asyncio.run(coro)


async def _with_batcher(fn, body, **opts):
    pool = ThreadPoolExecutor(1)
    batcher = MicroBatcher(fn, pool, **opts)
    batcher.start()
    try:
        return await body(batcher)
    finally:
        await batcher.stop()
        pool.shutdown()


def test_results_map_back_and_batches_are_bounded():
    sizes = []

    def double(items):
        sizes.append(len(items))
        time.sleep(0.01)
        return [x * 2 for x in items]

    async def body(b):
        return await asyncio.gather(*(b.submit(i) for i in range(50)))

    out = _run(_with_batcher(double, body, max_batch=8, max_wait_s=0.02))
    assert out == [i * 2 for i in range(50)]
    assert max(sizes) == 8 and len(sizes) < 50 and sum(sizes) == 50


def test_a_failing_item_fails_alone():
    def fn(items):
        if any(x < 0 for x in items):
            raise ValueError("negative")
        return [x + 1 for x in items]

    async def body(b):
        return await asyncio.gather(*(b.submit(x) for x in (1, -1, 2, 3)), return_exceptions=True)

    out = _run(_with_batcher(fn, body, max_batch=4, max_wait_s=0.05))
    assert out[0] == 2 and out[2] == 3 and out[3] == 4
    assert isinstance(out[1], ValueError)


def test_full_queue_is_overloaded_and_cancelled_callers_are_skipped():
    gate = threading.Event()
    seen = []

    def slow(items):
        gate.wait(5)
        seen.extend(items)
        return items

    async def body(b):
        first = asyncio.ensure_future(b.submit(0))  # taken by the collector, blocks in slow()
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(b.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0.01)
        with pytest.raises(OverloadedError):
            await b.submit(3)
        queued[0].cancel()
        gate.set()
        return await first, await queued[1]

    assert _run(_with_batcher(slow, body, max_batch=4, max_wait_s=0.0, max_queue=2)) == (0, 2)
    assert 1 not in seen


def test_waits_only_for_announced_items():
    sizes = []

    def record(items):
        sizes.append(len(items))
        return items

    async def lone(b):  # nothing announced: a huge max_wait must not delay a lone item
        return await asyncio.wait_for(b.submit(1), timeout=5)

    assert _run(_with_batcher(record, lone, max_batch=8, max_wait_s=60)) == 1

    async def announced(b):  # an announced item still on its way joins the first one's batch
        late = b.expect()
        first = asyncio.ensure_future(b.submit("a"))
        await asyncio.sleep(0.05)
        second = await late.submit("b")
        return await first, second

    sizes.clear()
    assert _run(_with_batcher(record, announced, max_batch=8, max_wait_s=5)) == ("a", "b")
    assert sizes == [2]

    async def withdrawn(b):  # a withdrawn announcement stops the wait
        ticket = b.expect()
        first = asyncio.ensure_future(b.submit("a"))
        await asyncio.sleep(0.05)
        ticket.close()
        return await asyncio.wait_for(first, timeout=5)

    sizes.clear()
    assert _run(_with_batcher(record, withdrawn, max_batch=8, max_wait_s=0.5)) == "a"


def test_invalid_batcher_options():
    with pytest.raises(ValueError):
        MicroBatcher(lambda xs: xs, ThreadPoolExecutor(1), max_batch=0)


@pytest.fixture(scope="module")
def engine_parts(world_index):
    encoder = load_encoder(world_index["model"], device="cpu")
    index = load_version(world_index["root"])
    return encoder, IndexState.of(index)


def _queries(world_index) -> list[Query]:
    ids, paths = world_index["ids"], world_index["paths"]
    texts = ["make it blue", "turn it into a star", "small and striped", "move it to the top left"]
    out = []
    for i in range(24):
        kind = i % 4
        image = paths[ids[i]].read_bytes() if kind in (0, 1) else None
        out.append(Query(image_bytes=image, reference_id=ids[i] if kind == 2 else None,
                         text=None if kind == 1 else texts[i % len(texts)], k=5 + i % 3, alpha=0.2 + 0.03 * i,
                         fusion=("slerp", "linear")[i % 2]))
    return out


FILTERS = [None, '{"colour": "blue"}', None, '{"size": "small", "pattern": {"ne": "solid"}}',
           '{"shape": {"in": ["star", "cross"]}}', None]


def _filtered(queries: list[Query]) -> list[Query]:
    """The same queries, some with a filter: every micro-batch mixes filtered and unfiltered ones."""
    for i, q in enumerate(queries):
        q.filter = parse_filter(FILTERS[i % len(FILTERS)])
    return queries


@pytest.mark.parametrize("with_filters", [False, True])
def test_batched_engine_equals_one_by_one(engine_parts, world_index, with_filters):
    encoder, state = engine_parts
    sizes: dict[str, list[int]] = {}
    engine = SearchEngine(encoder, max_pixels=10**7, max_batch=8, batch_wait_s=0.05,
                          on_batch=lambda name, n: sizes.setdefault(name, []).append(n))
    engine.swap(state)
    queries = _filtered(_queries(world_index)) if with_filters else _queries(world_index)
    expected = [engine.search_sync(q) for q in queries]
    if with_filters:
        for q, r in zip(queries, expected):
            want = q.filter.to_dict() if q.filter else {}
            assert r.hits and all(matches(h.item["metadata"], want) for h in r.hits)

    async def concurrently():
        await engine.start()
        try:
            return await asyncio.gather(*(engine.search(q) for q in queries))
        finally:
            await engine.stop()

    got = _run(concurrently())
    assert max(sizes["image"]) > 1 and max(sizes["text"]) > 1 and max(sizes["search"]) > 1
    for a, b in zip(got, expected):
        assert [h.id for h in a.hits] == [h.id for h in b.hits]
        assert np.allclose([h.score for h in a.hits], [h.score for h in b.hits], atol=1e-5)
        assert (a.fusion, a.alpha, a.index_version) == (b.fusion, b.alpha, b.index_version)


def test_a_bad_filter_fails_before_encoding(engine_parts):
    encoder, state = engine_parts
    engine = SearchEngine(encoder, max_pixels=10**7)
    engine.swap(state)
    calls = []
    engine.encode_text_batch = lambda texts: calls.append(texts)  # must not be reached
    for raw in ('{"colour": {"gt": 1}}', '{"weight": 3}'):
        with pytest.raises(InvalidFilterError):
            engine.search_sync(Query(text="make it blue", filter=parse_filter(raw)))
    assert calls == []


def test_a_lone_query_is_answered_exactly_as_search_sync(engine_parts, world_index):
    """One query at a time takes the single-hop path: bit-identical to search_sync, batches of one reported."""
    encoder, state = engine_parts
    sizes: list[tuple[str, int]] = []
    engine = SearchEngine(encoder, max_pixels=10**7, on_batch=lambda name, n: sizes.append((name, n)))
    engine.swap(state)
    queries = _queries(world_index)[:4]  # upload + text, upload alone, reference + text, text alone
    expected = [engine.search_sync(q) for q in queries]

    async def one_at_a_time():
        await engine.start()
        try:
            return [await engine.search(q) for q in queries]
        finally:
            await engine.stop()

    for a, b in zip(_run(one_at_a_time()), expected):
        assert [(h.id, h.score) for h in a.hits] == [(h.id, h.score) for h in b.hits]
        assert (a.fusion, a.alpha, a.index_version) == (b.fusion, b.alpha, b.index_version)
    assert {n for _, n in sizes} == {1}
    assert [name for name, _ in sizes].count("search") == 4
    assert [name for name, _ in sizes].count("image") == 2 and [name for name, _ in sizes].count("text") == 3
