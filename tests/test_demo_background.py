"""`cir demo` serves the base model's index at once and runs TAT in the background: the page's info
line shows the training step, then the adapter once its index is published and hot-swapped in."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from cir import index_store as store
from cir.models import toy_model_dir
from cir_cli import demo
from cir_cli.demo_background import last_step, write_status
from service.cli import load_settings
from service_fixtures import LiveServer

pytestmark = pytest.mark.skipif(not (toy_model_dir() / "config.json").is_file(), reason="no toy model")


@pytest.fixture
def quick_plain(monkeypatch):
    """The plain demo with a small world and a short TAT run (its real path otherwise)."""
    monkeypatch.setitem(demo.DEMOS, "plain", demo.DemoStyle(
        "", 64, ("--max-steps", "12", "--batch-size", "16", "--workers", "0"), 0.7, False))
    monkeypatch.setattr(demo, "DEMO_QUERIES", 4)


def _fake_serve(seen: dict, timeout_s: float = 240):
    """Stands in for `cir serve`: the real app with the demo's settings, watched until the adapter serves."""
    def serve(argv: list[str]) -> int:
        settings = load_settings(argv).model_copy(update={"port": 0, "reload_interval_s": 0.2})
        seen["settings"] = settings
        with LiveServer(settings) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            deadline = time.time() + timeout_s
            while time.time() < deadline:
                info = client.get("/info").json()
                seen.setdefault("lines", []).append((info.get("background"), info.get("adapter")))
                if info.get("adapter") and not info.get("background"):
                    seen["browse"] = client.get("/browse", params={"n": 5}).json()
                    return 0
                time.sleep(0.2)
        return 1
    return serve


def test_the_base_index_serves_first_and_tat_swaps_in(tmp_path, quick_plain, monkeypatch, capsys):
    seen: dict = {}
    monkeypatch.setattr(demo, "serve_main", _fake_serve(seen))
    assert demo.main(["--workdir", str(tmp_path), "--gallery-size", "40"]) == 0
    out = capsys.readouterr().out
    assert "indexing the gallery with the base model" in out and "in the background" in out
    backgrounds = [b for b, _ in seen["lines"] if b]
    assert backgrounds and backgrounds[0].startswith("TAT training")  # the info line follows the job
    assert seen["lines"][0][1] is None  # the base model served first: no adapter yet
    assert seen["lines"][-1][1].endswith("adapter")
    root = store.IndexRoot(tmp_path / "index")
    assert len(root.versions()) == 2  # base, then the adapter's version published into the same root
    assert store.load_version(tmp_path / "index").manifest["adapter"] == str((tmp_path / "adapter").resolve())
    assert not (tmp_path / demo.STATUS_FILE).exists()
    assert (tmp_path / "tat-data" / "captions.jsonl").is_file()
    assert not (tmp_path / "world" / "images" / "train").exists() or not any(
        (tmp_path / "world" / "images" / "train").iterdir())  # the page's world holds no training captions
    assert len(seen["browse"]["results"]) == 5


def test_a_second_start_reuses_the_adapter_and_serves_it(tmp_path, quick_plain, monkeypatch, capsys):
    seen: dict = {}
    monkeypatch.setattr(demo, "serve_main", _fake_serve(seen))
    assert demo.main(["--workdir", str(tmp_path), "--gallery-size", "40"]) == 0
    versions = store.IndexRoot(tmp_path / "index").versions()
    seen.clear()
    capsys.readouterr()
    assert demo.main(["--workdir", str(tmp_path), "--gallery-size", "40"]) == 0
    out = capsys.readouterr().out
    assert "TAT adapter: reusing" in out and "in the background" not in out
    assert seen["lines"][0][1].endswith("adapter") and seen["settings"].status_file is None
    assert store.IndexRoot(tmp_path / "index").versions() == versions  # nothing re-embedded


def test_status_helpers(tmp_path):
    assert last_step(tmp_path) is None
    (tmp_path / "train_log.jsonl").write_text(json.dumps({"step": 5}) + "\n" + json.dumps({"step": 10}) + "\n")
    assert last_step(tmp_path) == 10
    write_status(tmp_path / "s.json", "TAT training: step 10 of 150")
    assert json.loads((tmp_path / "s.json").read_text()) == {"message": "TAT training: step 10 of 150"}
