"""`cir demo`: the gallery manifest indexed with its fields; the textured style beside the plain demo (its own
world, TAT run and index); restarts reuse every step and mint no index version; Ctrl-C is one line."""

from __future__ import annotations

import json
import signal
import threading

import pytest
from cli_process import start_cli

from cir import index_store as store
from cir.index_store import load_version
from cir.models import toy_model_dir
from cir.toyworld import generate_world
from cir_cli import demo


@pytest.fixture
def small_demos(monkeypatch):
    """The demo's real path with a tiny world and a 2-step TAT run."""
    monkeypatch.setitem(demo.DEMOS, "textured", demo.DemoStyle(
        "textured", 40, ("--max-steps", "2", "--batch-size", "8", "--workers", "0", "--no-progress"), 0.7, True))
    monkeypatch.setitem(demo.DEMOS, "plain", demo.DemoStyle("", 40, (), 0.7, False))
    monkeypatch.setattr(demo, "DEMO_QUERIES", 8)


def test_textured_demo_builds_world_adapter_and_index(tmp_path, small_demos, capsys):
    args = ["--workdir", str(tmp_path), "--gallery-size", "40", "--no-serve"]
    assert demo.main([*args, "--style", "textured"]) == 0
    out = capsys.readouterr().out
    root = tmp_path / "textured"
    assert json.loads((root / "world" / "world.json").read_text())["style"] == "textured"
    assert (root / "adapter" / "adapter_config.json").is_file()
    report = json.loads((root / "adapter" / "report.json").read_text())
    assert "cir" in report["before"] and "cir" in report["after"]  # the before/after on the world's queries
    manifests = list((root / "index").rglob("manifest.json"))
    assert manifests and json.loads(manifests[0].read_text())["adapter"] == str((root / "adapter").resolve())
    assert "--style textured" in out and f"serve --index {root / 'index'}" in out
    assert not (tmp_path / "world").exists()  # the plain demo's files stay where they were


def test_plain_and_textured_demos_do_not_mix(tmp_path, small_demos, capsys):
    args = ["--workdir", str(tmp_path), "--gallery-size", "40", "--no-serve", "--no-tat"]
    assert demo.main(args) == 0
    assert "style" not in json.loads((tmp_path / "world" / "world.json").read_text())
    (tmp_path / "textured").mkdir()
    (tmp_path / "world").rename(tmp_path / "textured" / "world")  # a plain world where the textured one goes
    assert demo.main([*args, "--style", "textured"]) == 2
    assert "holds a plain world, not textured" in capsys.readouterr().err


def test_a_restarted_demo_reuses_everything_and_publishes_nothing(tmp_path, small_demos, capsys):
    argv = ["--workdir", str(tmp_path / "demo"), "--no-tat", "--no-serve", "--gallery-size", "24"]
    assert demo.main(argv) == 0
    root = store.IndexRoot(tmp_path / "demo" / "index")
    first = root.versions()
    assert len(first) == 1
    capsys.readouterr()
    assert demo.main(argv) == 0
    out = capsys.readouterr().out
    assert "reusing" in out and "unchanged" in out
    assert root.versions() == first and root.current_version() == first[0]


def test_ctrl_c_in_the_demo_is_one_line(tmp_path):
    proc = start_cli(["cir_cli.main", "demo", "--workdir", str(tmp_path / "demo"), "--no-tat", "--no-serve",
                      "--gallery-size", "3000"], start_new_session=True)
    started = threading.Event()
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("==> shapes world: generating"):
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(120), "".join(lines)
    proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    assert proc.wait(60) == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1].startswith("cir demo: interrupted; run it again to continue")
    assert not list((tmp_path / "demo").glob(".world.tmp-*"))  # the half-written world is removed
@pytest.mark.skipif(not (toy_model_dir() / "config.json").is_file(), reason="the toy model is not installed")
def test_demo_indexes_the_manifest_with_the_five_fields(tmp_path, capsys):
    # A small world where the demo keeps it (the demo reuses it; its own has 4,000 training captions).
    generate_world(tmp_path / "world", seed=1, gallery_size=60, n_queries=4, n_captions=0)
    assert demo.main(["--workdir", str(tmp_path), "--no-tat", "--no-serve"]) == 0
    out = capsys.readouterr().out
    assert "shapes world: reusing" in out
    assert "--gallery " + str(tmp_path / "world" / "circo" / "gallery_manifest.jsonl") in out
    index = load_version(tmp_path / "index")
    fields = index.manifest["fields"]
    assert set(fields) == {"shape", "colour", "size", "position", "pattern"}
    assert all(f["type"] == "string" and f["count"] == 60 for f in fields.values())
    renders = sorted(p.name for p in (tmp_path / "world/circo/COCO2017_unlabeled/unlabeled2017").iterdir())
    assert sorted(index.ids) == renders  # ids stay the render file names, as when the folder was indexed
    gallery = {json.loads(line)["file_name"]: json.loads(line)["attributes"]
               for line in open(tmp_path / "world" / "gallery.jsonl")}
    assert all(index.item(i)["metadata"] == gallery[i] for i in index.ids)
