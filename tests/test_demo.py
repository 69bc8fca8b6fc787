"""`cir demo --style textured --no-serve`: its own world, TAT run and index beside the plain demo's."""

from __future__ import annotations

import json

import pytest

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
    assert demo.main([*args, "--style", "textured"]) == 1
    assert "holds a plain world, not textured" in capsys.readouterr().err
