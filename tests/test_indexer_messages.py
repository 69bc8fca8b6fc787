"""What the indexer tells its user: skipped files on stderr and --max-skipped, no bars with
--no-progress, no faiss loader noise, rollback by a version prefix, and a pruned version named as such."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from index_fixtures import config, make_gallery

from cir import index_store as store
from indexer.build import build
from indexer.cli import main
from indexer.skips import over_limit, parse_max_skipped

ROOT = Path(__file__).resolve().parents[1]


def _build_args(gallery: Path, model: Path, root: Path, *extra: str) -> list[str]:
    return ["build", "--gallery", str(gallery), "--model", str(model), "--out", str(root), "--workers", "0",
            "--device", "cpu", *extra]


def _gallery_with_two_bad_files(tmp_path: Path) -> Path:
    gallery = tmp_path / "g"
    paths = make_gallery(gallery, 8)
    (gallery / "corrupt.jpg").write_bytes(paths[1].read_bytes()[:40])
    (gallery / "text.png").write_text("not an image")
    return gallery


def test_a_build_that_skipped_files_says_how_many_and_why_on_stderr(tmp_path, tiny_clip_dir, capsys):
    gallery = _gallery_with_two_bad_files(tmp_path)
    assert main(_build_args(gallery, tiny_clip_dir, tmp_path / "root", "--no-progress", "--json")) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.splitlines()[-1])["skipped"] == 2  # stdout stays one JSON line
    assert "skipped 2 of 10 gallery files" in captured.err
    assert "corrupt.jpg" in captured.err and "text.png" in captured.err
    assert f"cir index info {tmp_path / 'root'}" in captured.err


def test_a_clean_build_says_nothing_of_skips(tmp_path, tiny_clip_dir, capsys):
    make_gallery(tmp_path / "g", 4)
    assert main(_build_args(tmp_path / "g", tiny_clip_dir, tmp_path / "root", "--no-progress")) == 0
    assert "skipped" not in capsys.readouterr().err


@pytest.mark.parametrize("limit,fails", [("0", True), ("1", True), ("2", False), ("10%", True), ("20%", False),
                                         ("100%", False)])
def test_max_skipped_fails_the_build_before_it_publishes(tmp_path, tiny_clip_dir, capsys, limit, fails):
    gallery, root = _gallery_with_two_bad_files(tmp_path), tmp_path / "root"
    rc = main(_build_args(gallery, tiny_clip_dir, root, "--no-progress", "--max-skipped", limit))
    err = capsys.readouterr().err
    if fails:
        assert rc == 2 and f"over --max-skipped {limit}: nothing published" in err
        assert store.IndexRoot(root).current_version() is None
    else:
        assert rc == 0 and store.IndexRoot(root).current_version() is not None


@pytest.mark.parametrize("bad", ["-1", "x", "1.5", "150%", "%", ""])
def test_a_bad_max_skipped_is_a_usage_error(tmp_path, tiny_clip_dir, capsys, bad):
    make_gallery(tmp_path / "g", 2)
    assert main(_build_args(tmp_path / "g", tiny_clip_dir, tmp_path / "root", "--max-skipped", bad)) == 2
    assert "--max-skipped" in capsys.readouterr().err


def test_max_skipped_arithmetic():
    assert parse_max_skipped("3") == (3.0, False) and parse_max_skipped("2.5%") == (2.5, True)
    assert not over_limit(None, 10**6, 1) and over_limit("0", 1, 100) and not over_limit("1%", 1, 100)
    assert over_limit("1%", 2, 100)


def test_no_progress_shows_no_bar_at_all(tmp_path, tiny_clip_dir, capsys):
    make_gallery(tmp_path / "g", 3)
    assert main(_build_args(tmp_path / "g", tiny_clip_dir, tmp_path / "root", "--no-progress")) == 0
    err = capsys.readouterr().err
    assert "Loading weights" not in err and "it/s" not in err and "%|" not in err, err


def test_no_faiss_loader_noise():
    code = "import logging; logging.basicConfig(level=logging.DEBUG); import cir, faiss"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "faiss.loader" not in done.stderr and "swigfaiss" not in done.stderr


def _versions(tmp_path, tiny_clip_dir, n: int, keep: int) -> tuple[Path, list[str]]:
    gallery, root = tmp_path / "g", tmp_path / "root"
    make_gallery(gallery, 2)
    versions = [build(config(gallery, tiny_clip_dir, root, keep=keep, force_new=True)).version for _ in range(n)]
    return root, versions


def test_publish_takes_a_unique_prefix(tmp_path, tiny_clip_dir, capsys):
    root, versions = _versions(tmp_path, tiny_clip_dir, 3, keep=3)
    short = versions[0].split("-")[0]  # v000001
    assert main(["publish", str(root), short]) == 0
    assert store.IndexRoot(root).current_version() == versions[0]
    assert capsys.readouterr().out.strip() == f"published {versions[0]}"
    assert main(["publish", str(root), "v00000"]) == 2  # matches all three
    assert "matches 3 versions" in capsys.readouterr().err
    assert store.IndexRoot(root).current_version() == versions[0]


def test_a_pruned_version_is_named_as_pruned_with_the_versions_kept(tmp_path, tiny_clip_dir, capsys):
    root, versions = _versions(tmp_path, tiny_clip_dir, 4, keep=2)
    for name in (versions[0], versions[0].split("-")[0]):
        assert main(["publish", str(root), name]) == 2
        err = capsys.readouterr().err
        assert f"version {versions[0]} was pruned" in err
        assert f"versions kept: {versions[2]}, {versions[3]} (CURRENT)" in err
    assert main(["publish", str(root), "v999"]) == 2
    assert "no complete version 'v999'" in capsys.readouterr().err
