"""A hot swap closes the old index version (its sqlite connection) once the last query on it ends."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest
from service_fixtures import copy_root, publish_copy, server_settings, world_index  # noqa: F401

from cir.search.engine import SearchEngine
from cir.search.query import Query
from cir.stores import faiss_root
from service import swap


def _is_open(index) -> bool:
    try:
        getattr(index, "base", index)._con.execute("SELECT 1")  # a live view's files are its base version's
    except sqlite3.ProgrammingError:  # "Cannot operate on a closed database"
        return False
    return True


async def _until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return predicate()


def test_the_old_index_closes_after_its_in_flight_query_succeeds(world_index, tmp_path, monkeypatch):
    monkeypatch.setattr(swap, "RETIRE_GRACE_S", 0.0)
    root = copy_root(world_index, tmp_path / "root")
    manager = swap.IndexManager(server_settings(root, reload_interval_s=0),
                                lambda encoder: SearchEngine(encoder, max_pixels=10**7))

    async def scenario():
        await manager.start()
        engine, old = manager.engine, manager.engine.state
        entered, gate = threading.Event(), threading.Event()
        real_search = old.index.search

        def held_search(*args, **kw):  # the query reaches the old index, then waits there
            entered.set()
            gate.wait(30)
            return real_search(*args, **kw)

        old.index.search = held_search
        query = asyncio.ensure_future(engine.search(Query(reference_id=world_index["ids"][0], text="red", k=3)))
        assert await _until(entered.is_set)
        publish_copy(root, world_index["version"], "v999-copy")
        assert (await manager.reload()).status == "swapped" and engine.state.version == "v999-copy"
        await asyncio.sleep(0.3)
        assert engine.in_flight(old) == 1 and _is_open(old.index)  # held by the query in flight
        gate.set()
        result = await query
        assert result.index_version == world_index["version"] and len(result.hits) == 3
        assert all(hit.item for hit in result.hits)  # item records were read from the old sqlite
        assert await _until(lambda: not _is_open(old.index)), "the old version was never closed"
        fresh = await engine.search(Query(reference_id=world_index["ids"][0], text="red", k=3))
        assert fresh.index_version == "v999-copy" and len(fresh.hits) == 3
        new = engine.state
        await manager.stop()
        assert not _is_open(new.index)  # stopping closes the current version too

    asyncio.run(scenario())


def test_a_refused_version_does_not_stay_open(world_index, tmp_path, monkeypatch):
    root = copy_root(world_index, tmp_path / "root")
    opened = []
    real_load = faiss_root.load_version

    def recording_load(*args, **kw):
        opened.append(real_load(*args, **kw))
        return opened[-1]

    monkeypatch.setattr(faiss_root, "load_version", recording_load)
    manager = swap.IndexManager(server_settings(root, reload_interval_s=0, model="no/such-model"),
                                lambda encoder: SearchEngine(encoder, max_pixels=10**7))
    with pytest.raises(swap.IndexLoadError):
        asyncio.run(manager.start())
    assert opened and not _is_open(opened[0])
