"""The overlay's growing slot graph against an exact scan, and searches while it grows."""

from __future__ import annotations

import threading

import numpy as np
from live_fixtures import unit

from cir.stores import overlay_graph
from cir.stores.overlay_graph import ReadWriteLock, SlotGraph, scan, slot_topk

DIM = 16


def test_graph_walk_matches_the_exact_scan_on_live_slots(monkeypatch):
    monkeypatch.setattr(overlay_graph, "SCAN_MAX", 0)  # always walk the graph
    rng = np.random.default_rng(0)
    vectors = unit(rng, 600, DIM)
    graph = SlotGraph(DIM, ef=400)  # a wide walk: the graph answers what the scan answers
    graph.extend(vectors[:500])
    for live_share in (1.0, 0.7, 0.2):
        live = rng.random(550) < live_share  # 500 in the graph, 50 only scanned
        for q in unit(rng, 10, DIM):
            got_s, got = slot_topk(vectors, graph, 500, live, q, 8)
            want_s, want = scan(vectors, live, q, 8)
            assert list(got) == list(want) and all(live[got])
            np.testing.assert_allclose(got_s, want_s, rtol=1e-5)


def test_slots_added_after_a_snapshot_are_never_returned(monkeypatch):
    monkeypatch.setattr(overlay_graph, "SCAN_MAX", 0)
    rng = np.random.default_rng(1)
    vectors = unit(rng, 400, DIM)
    graph = SlotGraph(DIM, ef=200)
    graph.extend(vectors[:100])
    live = np.ones(100, bool)  # a view's snapshot of 100 slots
    graph.extend(vectors[100:])  # later writes grow the graph
    for q in vectors[100:120]:  # each query is closest to a slot the snapshot does not hold
        _, slots = slot_topk(vectors, graph, 100, live, q, 5)
        assert len(slots) == 5 and slots.max() < 100


def test_searches_run_while_the_graph_grows(monkeypatch):
    monkeypatch.setattr(overlay_graph, "ADD_CHUNK", 16)
    rng = np.random.default_rng(2)
    vectors = unit(rng, 3000, DIM)
    graph = SlotGraph(DIM, ef=64)
    graph.extend(vectors[:200])
    errors: list[BaseException] = []

    def search() -> None:
        try:
            for q in vectors[:300]:
                _, slots = graph.search(q, 5, np.ones(200, bool), 200)
                assert len(slots) == 5 and slots.max() < 200
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=search) for _ in range(3)]
    for t in threads:
        t.start()
    graph.extend(vectors[200:])
    for t in threads:
        t.join()
    assert not errors and graph.ntotal == 3000


def test_a_waiting_writer_holds_back_new_readers():
    lock, order, release = ReadWriteLock(), [], threading.Event()

    def write() -> None:
        with lock.writing():
            order.append("w")
            release.wait(2)

    def read() -> None:
        with lock.reading():
            order.append("r")

    with lock.reading():
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        while not lock._writers_waiting:
            pass
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(0.2)
        assert order == []  # the new reader waits behind the writer, which waits for the first reader
    writer.join(0.2)
    assert order == ["w"]
    release.set()
    reader.join(2)
    writer.join(2)
    assert order == ["w", "r"]
