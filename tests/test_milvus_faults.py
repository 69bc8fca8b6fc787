"""Faults against the real Milvus server: encoder mismatch, Milvus down at start and mid-traffic, kill -9 in a build.

The outage test kills the session's Milvus process (kill -9) and starts it again on the same
data, twice; it runs its steps in one function so the server is up again when it ends.
"""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from cir import index_store as store
from cir.encoder import load_encoder
from cir.errors import StoreError, StoreUnavailableError
from cir.stores import open_store
from cir.stores import milvus_sync
from cir.stores.milvus_sync import sync_version
from milvus_fixtures import FLAT, faiss_version
from service.cli import main as serve_main
from service_fixtures import LiveServer, rich_index, server_settings, world_index  # noqa: F401 - fixtures


def test_encoder_mismatch_is_refused_at_start(milvus_server, tmp_path, capsys):
    faiss_view, _, _, _ = faiss_version(tmp_path, n=30)  # built "with" fingerprint test-fp, dim 16
    url = milvus_server.url("mismatch")
    target = open_store(url)
    sync_version(target, faiss_view, index=FLAT)
    assert serve_main(["--store", url, "--port", "0", "--model", "toy"]) == 2
    err = capsys.readouterr().err
    assert "cannot start" in err and "fingerprint test-fp" in err and "rebuild the index" in err
    version = target.current_version()
    target.set_manifest(version, dict(target.manifest(version), fingerprint=load_encoder("toy").fingerprint))
    assert serve_main(["--store", url, "--port", "0", "--model", "toy"]) == 2
    assert "has dim 16, the encoder" in capsys.readouterr().err
    target.close()


def _wait(check, timeout: float = 90.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("timed out waiting")


def test_outages_kill_during_build_down_at_start_down_mid_traffic(milvus_server, rich_index, tmp_path, monkeypatch):
    monkeypatch.setenv("CIR_MILVUS_TIMEOUT_S", "3")
    url = milvus_server.url("outage")
    target = open_store(url)
    first = store.load_version(rich_index["root"])
    sync_version(target, first, index=FLAT)
    published = target.current_version()

    # kill -9 of Milvus in the middle of filling a new version's collection
    faiss_view, _, _, _ = faiss_version(tmp_path / "other", n=300, version="v000002-other")
    monkeypatch.setattr(milvus_sync, "BATCH", 100)
    calls = {"insert": 0}
    real_call = target.call

    def dying_call(method, *args, **kwargs):
        if method == "insert":
            calls["insert"] += 1
            if calls["insert"] == 2:
                milvus_server.kill()
        return real_call(method, *args, **kwargs)

    monkeypatch.setattr(target, "call", dying_call)
    with pytest.raises(StoreUnavailableError):
        sync_version(target, faiss_view, index=FLAT, full=True)
    monkeypatch.setattr(target, "call", real_call)

    # Milvus down at start: the service starts unready, says why, and keeps retrying
    settings = server_settings(None, store=url, reload_interval_s=0.5)
    with LiveServer(settings) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "Milvus" in ready.json()["detail"]
        assert client.post("/search", data={"text": "a shape"}).json()["error"] == "not_ready"
        milvus_server.start()
        _wait(lambda: client.get("/readyz").status_code == 200)
        assert client.get("/readyz").json()["index_version"] == published  # never the partial collection
        assert client.post("/search", data={"text": "a shape"}).status_code == 200

        # Milvus down mid-traffic: a 503 JSON per request within the timeout, then recovery without a restart
        milvus_server.kill()
        t0 = time.time()
        down = client.post("/search", data={"text": "a shape"})
        assert down.status_code == 503 and down.json()["error"] == "store_unavailable"
        assert time.time() - t0 < 20
        assert client.get("/healthz").status_code == 200
        milvus_server.start()
        _wait(lambda: client.post("/search", data={"text": "a shape"}).status_code == 200)

    # the partial collection was never a version; the rerun fills it again and publishes it
    assert target.versions() == [published]
    with pytest.raises(StoreError):
        target.publish("v000002_other")
    assert sync_version(target, faiss_view, index=FLAT, full=True).mode == "full"
    assert target.current_version() == "v000002_other" and target.open().count == 300
    assert target.versions() == [published, "v000002_other"]
    q = np.asarray(faiss_view.vectors[5])
    assert target.open().search(q[None], 1)[1] == [["item5"]]
    target.close()
