"""Faults of a live gallery: kill -9 during a write burst, a torn or corrupt log tail, concurrent upserts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from live_fixtures import make_root, unit
from service_fixtures import API_KEY, LiveServer, copy_root, server_settings, world_index  # noqa: F401
from test_live_service import png

from cir.stores import FaissRootStore, Patch, Upsert
from cir.stores.changelog import Record, encode

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kill -9 and flock semantics of Linux")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_kill_9_during_a_write_burst_keeps_every_acknowledged_write(world_index, tmp_path):  # noqa: F811
    root = copy_root(world_index, tmp_path / "root")
    port = _free_port()
    env = {**os.environ, "CIR_API_KEY": API_KEY, "CIR_COMPACT_PENDING": "0", "CIR_COMPACT_AGE_S": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "service", "--index", str(root), "--port", str(port),
                             "--device", "cpu"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url, acked, sent, lock = f"http://127.0.0.1:{port}", {}, {}, threading.Lock()
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        image = png(7)

        def writer(w: int) -> None:
            with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=10) as c:
                for i in range(10_000):
                    item, meta = f"w{w}-{i}", {"writer": w, "n": i}
                    with lock:
                        sent[item] = meta
                    try:
                        if i % 2:
                            r = c.patch(f"/items/{world_index['ids'][w]}", json={"n": i})
                            item, meta = world_index["ids"][w], None
                        else:
                            r = c.put(f"/items/{item}", files={"image": ("x.png", image)},
                                      data={"metadata": json.dumps(meta)})
                    except httpx.HTTPError:
                        return  # the server is gone
                    if r.status_code == 200:
                        with lock:
                            acked[item] = (r.json()["change"], meta if meta is not None else {"n": i})

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(writer, w) for w in range(4)]
            while len(acked) < 40 and proc.poll() is None:
                time.sleep(0.01)
            os.kill(proc.pid, signal.SIGKILL)
            for f in futures:
                f.result()
    finally:
        proc.kill()
        proc.wait()
    view = FaissRootStore(root).open()
    assert len(acked) >= 40
    for item, (change, meta) in acked.items():
        got = view.item(item)
        assert got is not None, item
        if item.startswith("w"):
            assert got["metadata"] == meta and got["change"] >= change
        else:  # patched base items: the acknowledged patch or a later one
            assert got["metadata"]["n"] >= meta["n"]
    new = {i for i in view.ids if i.startswith("w")}
    assert new <= set(sent) and all(view.item(i)["metadata"] == sent[i] for i in new)  # nothing else, nothing half
    assert view.count == 48 + len(new)


def _ops(rng, n: int, dim: int = 16) -> list:
    return [Upsert(f"n{i}", v, v, {"colour": "red", "i": i}) for i, v in enumerate(unit(rng, n, dim))]


@pytest.mark.parametrize("damage", ["torn", "corrupt", "garbage", "half_batch"])
def test_a_torn_or_corrupt_tail_is_dropped_and_cut_off(tmp_path, caplog, damage):
    base = make_root(tmp_path / "root", n=20)
    rng = np.random.default_rng(0)
    store = FaissRootStore(base["root"])
    assert all(r.status == "ok" for r in store.write(_ops(rng, 5)))
    store.close()
    log = base["root"] / "live" / "changes.log"
    good = log.stat().st_size
    vec = unit(rng, 1, 16)[0]
    record = encode(Record(6, {"op": "upsert", "id": "half", "base": "v000001-base", "dim": 16, "metadata": {}},
                           vec, vec))
    with open(log, "ab") as fh:  # what a crash in the middle of an append leaves
        fh.write({"torn": record[: len(record) // 2], "garbage": b"\x00" * 7, "half_batch": record,  # no "last"
                  "corrupt": record[:-3] + bytes(b ^ 0xFF for b in record[-3:])}[damage])
    reopened = FaissRootStore(base["root"])
    view = reopened.open()
    assert view.count == 25 and view.item("half") is None and view.item("n4") is not None
    assert "ignored" in caplog.text
    assert reopened.write([Patch("n0", {"colour": "blue"})])[0].change == 6  # the tail is cut off first
    assert log.stat().st_size > good
    reopened.close()
    again = FaissRootStore(base["root"]).open()
    assert again.count == 25 and again.item("n0")["metadata"]["colour"] == "blue" and again.item("half") is None


def test_concurrent_upserts_of_one_id_last_acknowledged_wins(tmp_path):
    base = make_root(tmp_path / "root", n=10)
    store = FaissRootStore(base["root"])
    vecs = unit(np.random.default_rng(1), 40, 16)

    def upsert(i: int):
        return i, store.write([Upsert("same", vecs[i], vecs[i], {"i": i})])[0].change

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(upsert, range(40)))
    last = max(results, key=lambda r: r[1])[0]
    for s in (store, FaissRootStore(base["root"])):  # also after a restart
        view = s.open()
        assert view.item("same")["metadata"] == {"i": last} and view.count == 11
        np.testing.assert_allclose(view.embedding("same"), vecs[last])


def test_concurrent_http_upserts_of_one_id(world_index, tmp_path):  # noqa: F811
    root = copy_root(world_index, tmp_path / "root")
    with LiveServer(server_settings(root)) as srv:
        def put(i: int):
            r = httpx.put(f"{srv.url}/items/same", headers={"X-API-Key": API_KEY},
                          files={"image": ("x.png", png(i))}, data={"metadata": json.dumps({"i": i})}, timeout=60)
            assert r.status_code == 200, r.text
            return i, r.json()["change"]

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(put, range(16)))
        last = max(results, key=lambda r: r[1])[0]
        got = httpx.get(f"{srv.url}/items/same").json()
        assert got["metadata"] == {"i": last} and got["change"] == max(c for _, c in results)
