"""The indexer job end to end: build, incremental, resume after a crash, atomic publish, bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from index_fixtures import config, make_gallery, write_image
from PIL import Image

from cir import index_store as store
from cir.encoder import load_encoder
from cir.images import file_sha256
from indexer import build as build_mod
from cir import versioning as versions_mod
from indexer.build import BuildError, build
from indexer.cli import main
from indexer.shards import STAGING, ShardStore


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir):
    return load_encoder(str(tiny_clip_dir), device="cpu")


@pytest.fixture()
def spy(monkeypatch):
    """Records the paths the embedding stage actually decodes and encodes."""
    seen: list[str] = []
    real = build_mod.iter_embedded_batches

    def wrapper(encoder, paths, batches, **kw):
        seen.extend(paths[i] for b in batches for i in b)
        return real(encoder, paths, batches, **kw)

    monkeypatch.setattr(build_mod, "iter_embedded_batches", wrapper)
    return seen


def _cli_json(capsys, *argv) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_build_folder(tmp_path, tiny_clip_dir, encoder, capsys):
    gallery = tmp_path / "g"
    paths = make_gallery(gallery, 12)
    (gallery / "corrupt.jpg").write_bytes(paths[1].read_bytes()[:40])  # truncated
    (gallery / "text.png").write_text("not an image")
    out = _cli_json(capsys, "build", "--gallery", str(gallery), "--model", str(tiny_clip_dir), "--out",
                    str(tmp_path / "root"), "--workers", "2", "--batch-size", "5", "--device", "cpu", "--json")
    assert set(out) == {"status", "version", "count", "embedded", "reused", "skipped", "seconds", "images_per_s"}
    assert (out["count"], out["embedded"], out["reused"], out["skipped"]) == (12, 12, 0, 2)
    loaded = store.load_version(tmp_path / "root")
    assert loaded.version == out["version"] == store.IndexRoot(tmp_path / "root").current_version()
    m = loaded.manifest
    assert (m["metric"], m["factory"], m["count"], m["dim"], m["default_alpha"]) == ("ip", "Flat", 12, encoder.dim, 0.8)
    assert m["fingerprint"] == encoder.fingerprint and m["adapter"] is None and m["recall_at_10"] == 1.0
    assert sorted(loaded.ids) == sorted(p.relative_to(gallery).as_posix() for p in paths)
    item = loaded.item("sub/img000.png")
    assert item["path"] == str(paths[0]) and item["sha256"] == file_sha256(paths[0])
    assert (item["width"], item["height"]) == Image.open(paths[0]).size
    # Stored embeddings equal one-by-one encoding, and search equals numpy brute force.
    single = encoder.encode_images([Image.open(paths[4]).convert("RGB")])[0]
    np.testing.assert_allclose(loaded.embedding(paths[4].relative_to(gallery).as_posix()), single, atol=1e-4)
    vectors = np.load(loaded._dir / store.EMBEDDINGS_FILE)
    scores, ids = loaded.search(vectors[:3], 5)
    brute = vectors[:3] @ vectors.T
    assert ids == [[loaded.ids[j] for j in np.argsort(-row, kind="stable")[:5]] for row in brute]
    report = json.loads((loaded._dir / store.REPORT_FILE).read_text())
    assert sorted(s["id"] for s in report["skipped"]) == ["corrupt.jpg", "text.png"]
    assert all(s["reason"] for s in report["skipped"])
    assert not any(" at 0x" in s["reason"] for s in report["skipped"]), report["skipped"]  # no object reprs
    assert main(["info", str(tmp_path / "root")]) == 0
    assert "corrupt.jpg" in capsys.readouterr().out
    assert not (tmp_path / "root" / STAGING).exists()


def test_manifest_galleries(tmp_path, tiny_clip_dir, encoder):
    make_gallery(tmp_path / "imgs", 5)
    lines = [{"path": "imgs/img001.jpg", "id": "a", "label": "cat"}, {"path": "imgs/img002.jpeg", "tags": [1, 2]},
             {"path": "imgs/missing.png", "id": "gone"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    result = build(config(tmp_path / "m.jsonl", tiny_clip_dir, tmp_path / "r1"), encoder=encoder)
    assert (result.count, result.skipped) == (2, 1)
    loaded = store.load_version(tmp_path / "r1")
    assert loaded.ids == ["a", "imgs/img002.jpeg"]
    assert loaded.item("a")["metadata"] == {"label": "cat"}
    assert loaded.item("imgs/img002.jpeg")["metadata"] == {"tags": [1, 2]}
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "id", "split"])
        writer.writeheader()
        writer.writerow({"path": str(tmp_path / "imgs/img004.bmp"), "id": "", "split": "val"})
    build(config(tmp_path / "m.csv", tiny_clip_dir, tmp_path / "r2"), encoder=encoder)
    loaded = store.load_version(tmp_path / "r2")
    assert loaded.ids == ["imgs/img004.bmp"] and loaded.item("imgs/img004.bmp")["metadata"] == {"split": "val"}


def test_incremental_embeds_only_new_and_changed(tmp_path, tiny_clip_dir, encoder, spy):
    gallery, root = tmp_path / "g", tmp_path / "root"
    paths = make_gallery(gallery, 10)
    first = build(config(gallery, tiny_clip_dir, root), encoder=encoder)
    assert first.embedded == 10 and len(spy) == 10
    spy.clear()
    added = [write_image(gallery / "new" / f"n{i}.png", 500 + i) for i in range(2)]
    write_image(paths[2], 777, (30, 24))  # changed content (same name)
    paths[5].unlink()  # deleted
    paths[6].touch()  # touched: same bytes, new mtime
    second = build(config(gallery, tiny_clip_dir, root), encoder=encoder)
    assert sorted(spy) == sorted(str(p) for p in [*added, paths[2]])
    assert (second.count, second.embedded, second.reused, second.skipped) == (11, 3, 8, 0)
    loaded = store.load_version(root)
    assert loaded.version == second.version and paths[5].relative_to(gallery).as_posix() not in loaded.ids
    # Same result as re-embedding everything from scratch.
    build(config(gallery, tiny_clip_dir, tmp_path / "fresh"), encoder=encoder)
    fresh = store.load_version(tmp_path / "fresh")
    assert fresh.ids == loaded.ids
    for item_id in loaded.ids:
        np.testing.assert_allclose(loaded.embedding(item_id), fresh.embedding(item_id), atol=1e-5)
    # The old version is kept and can be rolled back to.
    assert main(["publish", str(root), first.version]) == 0
    assert store.load_version(root).version == first.version and store.load_version(root).count == 10


class Crash(Exception):
    pass


def test_killed_job_resumes_to_identical_index(tmp_path, tiny_clip_dir, encoder, monkeypatch, spy):
    gallery, root = tmp_path / "g", tmp_path / "root"
    make_gallery(gallery, 30)  # 4 shards of 8
    build(config(gallery, tiny_clip_dir, tmp_path / "clean"), encoder=encoder)
    spy.clear()
    real_write, writes = ShardStore.write, []

    def dying_write(self, k, shard):
        if len(writes) == 2:
            raise Crash("killed while embedding shard 3")
        writes.append(k)
        real_write(self, k, shard)

    monkeypatch.setattr(ShardStore, "write", dying_write)
    with pytest.raises(Crash):
        build(config(gallery, tiny_clip_dir, root), encoder=encoder)
    assert store.IndexRoot(root).current_version() is None and store.IndexRoot(root).versions() == []
    monkeypatch.setattr(ShardStore, "write", real_write)
    spy.clear()
    result = build(config(gallery, tiny_clip_dir, root), encoder=encoder)
    assert len(spy) == 30 - 16  # only the unfinished shards were embedded again
    assert result.count == 30 and result.embedded == 30
    a = store.IndexRoot(tmp_path / "clean")
    b = store.IndexRoot(root)
    for name in (store.EMBEDDINGS_FILE, store.INDEX_FILE):
        assert (a.version_dir(a.current_version()) / name).read_bytes() == \
               (b.version_dir(b.current_version()) / name).read_bytes()
    assert list(store.iter_items(a.version_dir(a.current_version()) / store.ITEMS_FILE)) == \
        list(store.iter_items(b.version_dir(b.current_version()) / store.ITEMS_FILE))


def test_current_changes_only_after_complete_build(tmp_path, tiny_clip_dir, encoder, monkeypatch):
    gallery, root = tmp_path / "g", tmp_path / "root"
    make_gallery(gallery, 6)
    first = build(config(gallery, tiny_clip_dir, root), encoder=encoder).version
    write_image(gallery / "more.png", 99)

    def failing_verify(*a, **kw):
        raise versions_mod.OutputError("verification failed: disk full")

    with monkeypatch.context() as patch:
        patch.setattr(versions_mod, "verify", failing_verify)
        with pytest.raises(BuildError, match="disk full"):
            build(config(gallery, tiny_clip_dir, root), encoder=encoder)
    assert store.IndexRoot(root).current_version() == first and store.IndexRoot(root).versions() == [first]
    assert not list((root / "versions").glob(".tmp-*"))  # the half-written version is removed at once
    published = []
    real_publish = store.IndexRoot.publish

    def checking_publish(self, version):
        vdir = self.version_dir(version)
        published.append(all((vdir / f).is_file() for f in (store.MANIFEST, store.INDEX_FILE, store.ITEMS_FILE,
                                                            store.EMBEDDINGS_FILE, store.REPORT_FILE)))
        assert self.current_version() == first  # still the old one until this rename
        real_publish(self, version)

    monkeypatch.setattr(store.IndexRoot, "publish", checking_publish)
    second = build(config(gallery, tiny_clip_dir, root), encoder=encoder).version
    assert published == [True] and store.IndexRoot(root).current_version() == second
    assert not list((root / "versions").glob(".tmp-*"))  # the crashed build's leftovers are gone


def test_bad_inputs_fail_cleanly(tmp_path, tiny_clip_dir, tiny_siglip_dir, encoder, capsys):
    gallery, root = tmp_path / "g", tmp_path / "root"
    make_gallery(gallery, 5)
    args = ["build", "--gallery", str(gallery), "--model", str(tiny_clip_dir), "--out", str(root),
            "--device", "cpu", "--workers", "0", "--no-progress"]
    assert main(args) == 0
    current = store.IndexRoot(root).current_version()
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    cases = {
        "contains no images": ["--gallery", str(tmp_path / "empty")],
        "does not exist": ["--gallery", str(tmp_path / "nope")],
        "another encoder": ["--model", str(tiny_siglip_dir)],
        "not writable": ["--out", str(gallery / "img001.jpg" / "root")],
        "unsupported --factory": ["--factory", "LSH"],
        "cannot load the encoder": ["--model", str(tmp_path / "empty")],
        "at least": ["--factory", "IVF64,Flat"],
    }
    for message, override in cases.items():
        argv = list(args)
        for flag, value in zip(override[::2], override[1::2]):
            if flag in argv:
                argv[argv.index(flag) + 1] = value
            else:
                argv += [flag, value]
        assert main(argv) == 2, message
        assert message in capsys.readouterr().err
        assert store.IndexRoot(root).current_version() == current
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"junk")
    assert main([*args[:2], str(bad), *args[3:]]) == 2
    assert "could be read" in capsys.readouterr().err
    # --force-new accepts another encoder and re-embeds everything.
    argv = list(args)
    argv[argv.index("--model") + 1] = str(tiny_siglip_dir)
    assert main([*argv, "--force-new", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["embedded"] == 5
    assert store.IndexRoot(root).current_version() != current
    assert main(["publish", str(root), "v999"]) == 2


def test_keep_prunes_old_versions(tmp_path, tiny_clip_dir, encoder):
    gallery, root = tmp_path / "g", tmp_path / "root"
    make_gallery(gallery, 3)
    versions = [build(config(gallery, tiny_clip_dir, root, keep=2, force_new=True), encoder=encoder).version
                for _ in range(4)]
    assert versions == sorted(versions) and len(set(versions)) == 4
    assert store.IndexRoot(root).versions() == versions[2:]


KILLER = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from index_fixtures import config
from indexer.build import build
from indexer.shards import ShardStore
real = ShardStore.write
def write(self, k, shard):
    real(self, k, shard)
    if k == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind, like kill -9 or an OOM kill
ShardStore.write = write
build(config(Path({gallery!r}), Path({model!r}), Path({out!r})))
"""


def test_sigkilled_job_resumes(tmp_path, tiny_clip_dir, encoder, spy):
    gallery, root = tmp_path / "g", tmp_path / "root"
    make_gallery(gallery, 20)  # 3 shards of 8
    script = KILLER.format(tests=str(Path(__file__).parent), gallery=str(gallery), model=str(tiny_clip_dir),
                           out=str(root))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert store.IndexRoot(root).current_version() is None
    result = build(config(gallery, tiny_clip_dir, root), encoder=encoder)
    assert len(spy) == 20 - 16 and result.count == 20
    build(config(gallery, tiny_clip_dir, tmp_path / "clean"), encoder=encoder)
    a, b = (store.load_version(p) for p in (root, tmp_path / "clean"))
    assert np.array_equal(np.load(a._dir / store.EMBEDDINGS_FILE), np.load(b._dir / store.EMBEDDINGS_FILE))
