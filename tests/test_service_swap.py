"""Index hot swap under load, refused versions, start-up without an index, and the CLI."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from cir.index_store import IndexRoot
from cir_cli.main import main as cir_main
from indexer.cli import main as index_main
from service.app import create_app
from service.cli import load_settings, main as serve_main
from service_fixtures import API_KEY, LiveServer, copy_root, publish_copy, server_settings, world_index  # noqa: F401


def _wait_for(predicate, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _version(client) -> str | None:
    r = client.get("/readyz")
    return r.json().get("index_version") if r.status_code == 200 else None


def test_hot_swap_under_concurrent_load_loses_no_request(world_index, tmp_path):
    """Publish a rebuilt index (fewer items) while clients search nonstop: every request succeeds."""
    root = copy_root(world_index, tmp_path / "root")
    subset = tmp_path / "subset.jsonl"
    rows = [json.loads(line) for line in (world_index["world"] / "gallery_manifest.jsonl").read_text().splitlines()]
    subset.write_text("".join(json.dumps(dict(r, path=str(world_index["world"] / r["path"]))) + "\n"
                              for r in rows[:40]))
    image = world_index["paths"][world_index["ids"][0]].read_bytes()
    stop = threading.Event()
    with LiveServer(server_settings(root, reload_interval_s=0.05)) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            def hammer(worker: int) -> list[tuple[int, str | None]]:
                seen = []
                while not stop.is_set():
                    if worker % 2:
                        r = client.post("/search", data={"text": "make it blue", "k": "100"})
                    else:
                        r = client.post("/search", data={"text": "red"}, files={"image": ("q.png", image)})
                    seen.append((r.status_code, r.json().get("index_version"), len(r.json().get("results", []))))
                return seen

            with ThreadPoolExecutor(6) as pool:
                futures = [pool.submit(hammer, i) for i in range(6)]
                time.sleep(0.5)
                rc = index_main(["build", "--gallery", str(subset), "--model", world_index["model"], "--out",
                                 str(root), "--workers", "0", "--factory", "Flat", "--no-progress"])
                assert rc == 0
                new_version = IndexRoot(root).current_version()
                assert new_version != world_index["version"]
                assert _wait_for(lambda: _version(client) == new_version)
                time.sleep(0.5)
                stop.set()
                results = [x for f in futures for x in f.result()]
            info = client.get("/info").json()
    assert info["index_version"] == new_version and info["count"] == 40
    assert results and all(status == 200 for status, _, _ in results), {s for s, _, _ in results}
    versions = {v for _, v, _ in results}
    assert versions == {world_index["version"], new_version}
    # each answer is consistent with the version it names: the new one has only 40 items
    assert all(n <= 40 for _, v, n in results if v == new_version)
    assert any(n > 40 for _, v, n in results if v == world_index["version"])


def _broken_copy(root, version, name, how):
    store = IndexRoot(root)
    vdir = store.version_dir(name)
    shutil.copytree(store.version_dir(version), vdir)
    manifest = json.loads((vdir / "manifest.json").read_text())
    if how == "corrupt":
        (vdir / "index.faiss").write_bytes(b"not a faiss index")
    else:
        manifest["fingerprint"] = "0" * 64
    manifest["version"] = name
    (vdir / "manifest.json").write_text(json.dumps(manifest))
    store.publish(name)


@pytest.mark.parametrize("how", ["corrupt", "fingerprint"])
def test_a_bad_version_is_refused_and_the_old_one_stays(world_index, tmp_path, how):
    root = copy_root(world_index, tmp_path / "root")
    old = world_index["version"]
    with LiveServer(server_settings(root, reload_interval_s=0.05)) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            _broken_copy(root, old, "v9-broken", how)
            assert _wait_for(lambda: 'cir_index_reloads_total{result="failed"} 1.0' in client.get("/metrics").text)
            assert _version(client) == old
            assert client.post("/search", data={"text": "red"}).status_code == 200
            forced = client.post("/admin/reload", headers={"X-API-Key": API_KEY})
            assert forced.status_code == 409 and forced.json()["version"] == old
            assert ("fingerprint" in forced.json()["error"]) == (how == "fingerprint")
            publish_copy(root, old, "v10-good")
            assert _wait_for(lambda: _version(client) == "v10-good")


def _failed_reloads(client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith('cir_index_reloads_total{result="failed"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("how", ["binary", "directory"])
def test_an_unreadable_current_is_a_failed_reload(world_index, tmp_path, how, caplog):
    """A binary or folder CURRENT: 409 JSON, counted, logged once (no traceback), shown, the old version serves."""
    root = copy_root(world_index, tmp_path / "root")
    old = world_index["version"]
    caplog.set_level(logging.INFO, logger="service.swap")
    with LiveServer(server_settings(root, reload_interval_s=0.05)) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            os.remove(root / "CURRENT")
            if how == "binary":
                (root / "CURRENT").write_bytes(b"\xff\xfe\x00\x81\x00garbage")
            else:
                (root / "CURRENT").mkdir()
            assert _wait_for(lambda: _failed_reloads(client) == 1)
            time.sleep(0.5)  # ten more watcher checks: the same error is neither counted nor logged again
            assert _failed_reloads(client) == 1
            forced = client.post("/admin/reload", headers={"X-API-Key": API_KEY})
            assert forced.status_code == 409, forced.text
            assert forced.json()["status"] == "failed" and forced.json()["version"] == old
            assert "CURRENT" in forced.json()["error"] and " at 0x" not in forced.json()["error"]
            assert _failed_reloads(client) == 2  # an explicit reload always counts
            ready = client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["index_version"] == old
            assert "CURRENT" in ready.json()["last_reload_error"]
            assert client.get("/info").json()["last_reload_error"] == ready.json()["last_reload_error"]
            r = client.post("/search", data={"text": "red"})
            assert r.status_code == 200 and r.json()["index_version"] == old
            shutil.rmtree(root / "CURRENT") if how == "directory" else os.remove(root / "CURRENT")
            IndexRoot(root).publish(old)  # repaired: the error is over
            assert _wait_for(lambda: client.get("/readyz").json()["last_reload_error"] is None)
    failures = [r for r in caplog.records if r.name == "service.swap" and r.levelno >= logging.ERROR]
    assert len(failures) == 2 and all(r.exc_info is None for r in failures)


def test_starts_unready_without_an_index_then_picks_one_up(world_index, tmp_path):
    root = copy_root(world_index, tmp_path / "root")
    os.remove(root / "CURRENT")
    with LiveServer(server_settings(root, reload_interval_s=0.05, wait_for_index=True)) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 503
            r = client.post("/search", data={"text": "red"})
            assert r.status_code == 503 and r.json()["error"] == "not_ready"
            assert client.get("/info").status_code == 503
            assert client.get(f"/images/{world_index['ids'][0]}").status_code == 503
            IndexRoot(root).publish(world_index["version"])
            assert _wait_for(lambda: _version(client) == world_index["version"])
            assert client.post("/search", data={"text": "red"}).status_code == 200


def test_no_index_root_fails_the_start_unless_waiting(world_index, tmp_path, capsys):
    """A folder that is no index root (or has nothing published) is an error at start, exit 2."""
    empty = tmp_path / "empty"
    empty.mkdir()
    unpublished = copy_root(world_index, tmp_path / "unpublished")
    os.remove(unpublished / "CURRENT")
    for root, what in ((empty, "no CURRENT and no versions/"), (unpublished, "versions but no CURRENT")):
        capsys.readouterr()
        assert serve_main(["--index", str(root), "--port", "0"]) == 2
        err = capsys.readouterr().err
        assert what in err and "--wait-for-index" in err and err.count("\n") == 1
        with pytest.raises(RuntimeError):  # the app itself refuses too (lifespan start-up fails)
            LiveServer(server_settings(root)).__enter__()
    assert load_settings(["--index", str(empty), "--wait-for-index"]).wait_for_index is True


def test_waits_for_an_index_root_that_appears_later(world_index, tmp_path, monkeypatch):
    """--wait-for-index (CIR_WAIT_FOR_INDEX): the index job may create and publish the root after the start."""
    later = tmp_path / "later"
    monkeypatch.setenv("CIR_WAIT_FOR_INDEX", "1")
    assert load_settings(["--index", str(later)]).wait_for_index is True
    with LiveServer(server_settings(later, reload_interval_s=0.05, wait_for_index=True)) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            r = client.get("/readyz")
            assert r.status_code == 503 and r.json()["status"] == "not_ready"
            # what the index job does: the version folder first, then CURRENT (the server may already have
            # made ROOT/live, its writer lock, and the session index has one of its own: not copied)
            shutil.copytree(world_index["root"], later, ignore=shutil.ignore_patterns("CURRENT", "live", ".lock"),
                            dirs_exist_ok=True)
            IndexRoot(later).publish(world_index["version"])
            assert _wait_for(lambda: _version(client) == world_index["version"])
            assert client.post("/search", data={"text": "red"}).status_code == 200


def test_a_broken_index_at_start_up_fails_the_start(world_index, tmp_path):
    root = copy_root(world_index, tmp_path / "root")
    _broken_copy(root, world_index["version"], "v9-broken", "corrupt")
    with pytest.raises(RuntimeError):
        LiveServer(server_settings(root)).__enter__()
    assert serve_main(["--index", str(root), "--port", "0", "--log-level", "critical"]) == 2  # one line, no traceback


@pytest.mark.parametrize("how", ["no_published_version", "broken_version", "no_index_setting"])
def test_a_failed_start_up_removes_its_thumbnail_folder(world_index, tmp_path, monkeypatch, how):
    """The lifespan's own temp thumbnail folder goes away when the start-up fails, not only at shutdown."""
    root = tmp_path / "root"
    if how == "no_published_version":
        root.mkdir()
    elif how == "broken_version":
        copy_root(world_index, root)
        _broken_copy(root, world_index["version"], "v9-broken", "corrupt")
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    app = create_app(server_settings(None if how == "no_index_setting" else root))

    async def start() -> None:
        async with app.router.lifespan_context(app):
            pass

    with pytest.raises((RuntimeError, ValueError)):
        asyncio.run(start())
    assert list(temp.iterdir()) == []


def test_a_clean_shutdown_removes_its_thumbnail_folder(world_index, tmp_path, monkeypatch):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with LiveServer(server_settings(world_index["root"], reload_interval_s=0)) as server:
        assert httpx.get(server.url + "/readyz", timeout=60).status_code == 200
        assert [p.name.startswith("cir-thumbs-") for p in temp.iterdir()] == [True]
    assert list(temp.iterdir()) == []


def test_cli_settings_env_and_flags(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CIR_INDEX", str(tmp_path))
    monkeypatch.setenv("CIR_PORT", "9001")
    monkeypatch.setenv("CIR_MAX_BATCH", "7")
    monkeypatch.setenv("CIR_API_KEY", "k")
    monkeypatch.setenv("CIR_CORS_ORIGINS", "http://a.example, http://b.example")
    s = load_settings(["--port", "9002", "--batch-wait-ms", "3"])
    assert (s.port, s.max_batch, s.batch_wait_ms, s.index) == (9002, 7, 3.0, tmp_path)
    assert s.api_key.get_secret_value() == "k" and s.cors_origin_list == ["http://a.example", "http://b.example"]
    assert (s.host, s.default_alpha) == ("127.0.0.1", None)
    assert serve_main(["--help"]) == 0
    assert "CIR_MAX_UPLOAD_MB" in capsys.readouterr().out
    assert cir_main(["serve", "--help"]) == 0 and "--reload-interval-s" in capsys.readouterr().out
    assert serve_main(["--index", str(tmp_path / "missing")]) == 2
    assert serve_main(["--index", str(tmp_path), "--max-batch", "0"]) == 2
    monkeypatch.delenv("CIR_INDEX")
    assert serve_main([]) == 2
    assert "no index root" in capsys.readouterr().err
