"""Paging and exclusion in the engine (cir.search.paging): stable, non-overlapping pages on every plan.

Plans: exact (a filtered scan), selector (Flat with an ID selector), ANN (HNSW, unfiltered and
filtered), and the plain Flat search. Every page of a query is the slice of one fixed sequence,
whatever the page size, the micro-batch and the exclusions; on exact plans that sequence is the
brute-force ranking.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest

from cir.filters import parse_filter
from cir.search.engine import SearchEngine
from cir.search.paging import DEPTHS, MAX_WINDOW, Window, merge, page
from cir.search.query import IndexState, PagingError, check_page
from filter_fixtures import brute_force, random_metadata, write_metadata_version
from indexer.synthetic import synthetic_vectors

N = 1500


@pytest.fixture(scope="module")
def galleries(tmp_path_factory):
    vectors = synthetic_vectors(N, 32, seed=21)
    metadatas = random_metadata(N, seed=21)
    out = {}
    for factory in ("Flat", "HNSW32"):
        loaded = write_metadata_version(tmp_path_factory.mktemp(factory.lower()), vectors, metadatas, factory=factory)
        out[factory] = loaded
    return vectors, metadatas, out


def _engine() -> SearchEngine:
    # search_batch needs only the index states: no encoder work happens
    return SearchEngine(SimpleNamespace(preprocess=None), max_pixels=1)


PLANS = {  # name: (factory, filter, exact_max)
    "flat": ("Flat", None, None),
    "exact": ("Flat", {"in_stock": True}, 10**9),
    "selector": ("Flat", {"in_stock": True}, 0),
    "ann": ("HNSW32", None, None),
    "ann_filtered": ("HNSW32", {"in_stock": True}, 0),
}


@pytest.mark.parametrize("plan", list(PLANS))
def test_pages_are_slices_of_one_sequence(galleries, plan):
    vectors, metadatas, loaded = galleries
    factory, flt, exact_max = PLANS[plan]
    view = loaded[factory]
    if exact_max is not None:
        view.exact_max = exact_max
    state = IndexState.of(view)
    bound = parse_filter(flt).bind(view.fields) if flt else None
    engine = _engine()
    query = synthetic_vectors(3, 32, seed=5)[1]
    exclude = frozenset(f"item{i}" for i in range(0, N, 97))
    whole, end = engine.search_batch([(state, query, Window(0, 1000, None, exclude), bound)])[0]
    more, _ = engine.search_batch([(state, query, Window(1000, 1000, None, exclude), bound)])[0]
    sequence = [h.id for h in whole + more]
    assert end == (1000 if more else None) and len(whole) == (1000 if more else len(sequence))
    assert len(set(sequence)) == len(sequence) and not exclude & set(sequence)
    rng = random.Random(plan)
    for k in (9, 130):
        seen: list[str] = []
        offset = 0
        while offset is not None and offset < 1200:
            # other queries in the same micro-batch change nothing
            other = synthetic_vectors(1, 32, seed=rng.randint(0, 99))[0]
            jobs = [(state, other, Window(0, rng.randint(1, 300)), None),
                    (state, query, Window(offset, k, None, exclude), bound)]
            hits, offset_next = engine.search_batch(jobs)[1]
            assert [h.rank for h in hits] == list(range(offset + 1, offset + len(hits) + 1))
            assert [h.id for h in hits] == sequence[offset:offset + k], (plan, k, offset)
            seen += [h.id for h in hits]
            offset = offset_next
        assert len(seen) == len(set(seen))  # never overlapping
    if exact_max is not None or factory == "Flat":  # exact plans: the sequence is the exact ranking
        want = [i for i in brute_force(vectors, metadatas, flt or {}, query, N)[0] if i not in exclude]
        assert sequence == want[:len(sequence)]


def test_last_page_and_min_score(galleries):
    vectors, _, loaded = galleries
    state, engine = IndexState.of(loaded["Flat"]), _engine()
    query = synthetic_vectors(1, 32, seed=9)[0]
    few = parse_filter({"price": {"gt": 99.5}}).bind(loaded["Flat"].fields)
    matches = int(few.mask(loaded["Flat"].columns).sum())
    hits, nxt = engine.search_batch([(state, query, Window(0, matches), few)])[0]
    assert len(hits) == matches and nxt is None
    hits, nxt = engine.search_batch([(state, query, Window(0, max(1, matches - 1)), few)])[0]
    assert nxt == max(1, matches - 1)
    full, _ = engine.search_batch([(state, query, Window(0, 100), None)])[0]
    cut = full[30].score
    hits, nxt = engine.search_batch([(state, query, Window(20, 20, cut), None)])[0]
    assert [h.id for h in hits] == [h.id for h in full[20:31]] and nxt is None


def test_window_limits_and_levels():
    assert Window(0, 10).levels == 1 and Window(95, 10).levels == 2 and Window(MAX_WINDOW - 10, 10).levels == 3
    assert DEPTHS[-1] >= MAX_WINDOW + 1000
    check_page(MAX_WINDOW - 10, 10)
    for offset, k in ((MAX_WINDOW - 9, 10), (-1, 5), (0, 0), (0, 1001)):
        with pytest.raises(PagingError):
            check_page(offset, k)
    seq = merge([(np.array([3.0, 2.0]), ["a", "b"]), (np.array([3.5, 3.0, 2.0, 1.0]), ["c", "a", "b", "d"])])
    assert seq == [(3.0, "a"), (2.0, "b"), (3.5, "c"), (1.0, "d")]  # a deeper search's finds follow
    assert page(seq, Window(1, 2, None, frozenset({"b"}))) == ([(3.5, "c"), (1.0, "d")], None)
