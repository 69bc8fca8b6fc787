"""The indexer against hostile galleries, a full disk and rebuilds where nothing changed."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest
from index_fixtures import config, make_gallery, write_image

from cir import index_store as store
from cir.encoder import load_encoder
from cir import versioning as versions_mod
from indexer.build import build
from indexer.cli import main
from indexer.shards import STAGING, ShardStore


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir):
    return load_encoder(str(tiny_clip_dir), device="cpu")


def _hostile_gallery(root):
    make_gallery(root, 3)
    write_image(root / "big.png", 5, (120, 120))  # ~43 KB of noise: over a 0.02 MiB limit
    outside = write_image(root.parent / "outside" / "o.png", 6)
    (root / "zero.png").symlink_to("/dev/zero")
    os.mkfifo(root / "x.png")
    (root / "outside.png").symlink_to(outside)
    (root / "inside.png").symlink_to(root / "img001.jpg")  # stays in the gallery: followed
    fd = os.open(os.fsencode(root) + b"/caf\xe9.png", os.O_WRONLY | os.O_CREAT)  # Latin-1, not UTF-8
    os.write(fd, (root / "img002.jpeg").read_bytes())
    os.close(fd)


def _build_cli(gallery, model, out, *extra) -> subprocess.CompletedProcess:
    # A subprocess with a timeout: a build that hangs on a FIFO fails the test instead of the suite.
    args = ["build", "--gallery", str(gallery), "--model", str(model), "--out", str(out), "--workers", "1",
            "--device", "cpu", "--no-progress", "--max-file-mb", "0.02", "--json", *extra]
    return subprocess.run([sys.executable, "-m", "indexer", *args], capture_output=True, text=True, timeout=300)


def test_hostile_entries_are_skipped_with_a_reason(tmp_path, tiny_clip_dir):
    gallery, root = tmp_path / "g", tmp_path / "root"
    _hostile_gallery(gallery)
    done = _build_cli(gallery, tiny_clip_dir, root)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["count"] == 4  # 3 images + the in-gallery link
    info = subprocess.run([sys.executable, "-m", "indexer", "info", str(root), "--json"], capture_output=True,
                          text=True, timeout=120)
    assert info.returncode == 0, info.stderr
    skipped = {s["id"]: s["reason"] for s in json.loads(info.stdout)["skipped"]}
    assert set(skipped) == {"big.png", "zero.png", "x.png", "outside.png", "caf\\xe9.png"}
    assert "KiB, over the 20.5 KiB file limit" in skipped["big.png"]
    assert "not a regular file (a FIFO)" in skipped["x.png"]
    assert "outside the gallery folder" in skipped["zero.png"] and "/dev/zero" in skipped["zero.png"]
    assert "outside the gallery folder" in skipped["outside.png"]
    assert "not valid UTF-8" in skipped["caf\\xe9.png"]
    assert sorted(store.load_version(root).ids) == ["img001.jpg", "img002.jpeg", "inside.png", "sub/img000.png"]

    followed = _build_cli(gallery, tiny_clip_dir, root, "--follow-symlinks")
    assert followed.returncode == 0, followed.stderr
    report = store.read_json(store.IndexRoot(root).version_dir(store.IndexRoot(root).current_version())
                             / store.REPORT_FILE)
    reasons = {s["id"]: s["reason"] for s in report["skipped"]}
    assert "outside.png" not in reasons and "not a regular file (a character device)" in reasons["zero.png"]


def test_a_full_disk_while_embedding_fails_cleanly_and_resumes(tmp_path, tiny_clip_dir, monkeypatch, capsys):
    gallery, root = tmp_path / "g", tmp_path / "root"
    make_gallery(gallery, 6)
    args = ["build", "--gallery", str(gallery), "--model", str(tiny_clip_dir), "--out", str(root), "--workers", "0",
            "--device", "cpu", "--no-progress", "--batch-size", "4", "--shard-size", "4"]
    assert main(args) == 0
    first = store.IndexRoot(root).current_version()
    for i in range(12):
        write_image(gallery / "new" / f"n{i:02d}.png", 100 + i)
    real_write, calls = ShardStore.write, []

    def full_disk(self, k, shard):
        calls.append(k)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, k, shard)

    monkeypatch.setattr(ShardStore, "write", full_disk)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # (after the model loader's progress bar)
    assert last.startswith("cir index build: error: the disk is full") and "No space left on device" in last
    assert "rerunning the same command resumes" in err and "Traceback" not in err
    assert store.IndexRoot(root).current_version() == first and store.IndexRoot(root).versions() == [first]
    assert not [p for p in root.rglob("*") if ".tmp" in p.name]
    monkeypatch.setattr(ShardStore, "write", real_write)
    assert main(args) == 0
    assert store.load_version(root).count == 18 and not (root / STAGING).exists()


@pytest.mark.parametrize("failure", ["sqlite_enospc", "faiss_write_error"])
def test_a_failed_version_write_leaves_no_half_version(tmp_path, tiny_clip_dir, encoder, monkeypatch, capsys, failure):
    gallery, root = tmp_path / "g", tmp_path / "root"
    make_gallery(gallery, 5)
    first = build(config(gallery, tiny_clip_dir, root), encoder=encoder).version
    write_image(gallery / "more.png", 42)

    def fail(*_a, **_kw):
        if failure == "sqlite_enospc":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise RuntimeError("Error: 'ret == (size)' failed: write error")

    target = (versions_mod.store, "write_items") if failure == "sqlite_enospc" else (versions_mod.faiss, "write_index")
    monkeypatch.setattr(*target, fail)
    assert main(["build", "--gallery", str(gallery), "--model", str(tiny_clip_dir), "--out", str(root),
                 "--workers", "0", "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("cir index build: error: ") and "Traceback" not in err
    assert ("the disk is full" if failure == "sqlite_enospc" else "a write failed") in err
    assert store.IndexRoot(root).current_version() == first and store.IndexRoot(root).versions() == [first]
    assert not list((root / store.VERSIONS).glob(".tmp-*"))
    assert store.load_version(root).count == 5  # the published version still loads


def test_a_rebuild_with_nothing_changed_publishes_nothing(tmp_path, tiny_clip_dir, capsys):
    gallery, root = tmp_path / "g", tmp_path / "root"
    make_gallery(gallery, 5)
    (gallery / "junk.png").write_bytes(b"not an image")  # skipped each time, the same way
    args = ["build", "--gallery", str(gallery), "--model", str(tiny_clip_dir), "--out", str(root), "--workers", "0",
            "--device", "cpu", "--no-progress", "--keep", "1", "--json"]

    def run(*extra) -> dict:
        assert main([*args, *extra]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    first = run()
    assert first["status"] == "published" and first["skipped"] == 1
    again = run()
    assert (again["status"], again["version"], again["count"]) == ("unchanged", first["version"], 5)
    assert store.IndexRoot(root).versions() == [first["version"]]  # --keep 1 evicted nothing either
    assert main([a for a in args if a != "--json"]) == 0 and "unchanged" in capsys.readouterr().out
    forced = run("--force-new")
    assert forced["status"] == "published" and forced["version"] != first["version"]
    assert run("--alpha", "0.5")["status"] == "published"  # a setting that shapes the version changed
    assert run("--alpha", "0.5")["status"] == "unchanged"
    (gallery / "img001.jpg").touch()  # same bytes, new mtime: the item record changes
    assert run("--alpha", "0.5")["status"] == "published"
