"""TAT data: JSONL/CSV/WebDataset sources, malformed inputs, the deterministic plan, bad-image skipping."""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from training_fixtures import tat_world, world_rows, write_jsonl  # noqa: F401

from cir.encoder import load_encoder
from training.batches import Plan, PairBatches, auto_holdout
from training.data import BadImage, CsvSource, DataFormatError, JsonlSource, WebDatasetSource, open_pairs


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def make_shards(world: Path, out: Path, rows: list[dict], per_shard: int = 5) -> Path:
    """Write rows as WebDataset shards (<key>.png + <key>.txt)."""
    out.mkdir(parents=True, exist_ok=True)
    for s in range(0, len(rows), per_shard):
        with tarfile.open(out / f"shard-{s // per_shard:04d}.tar", "w") as tf:
            for k, row in enumerate(rows[s:s + per_shard]):
                key = f"{s + k:06d}"
                _add(tf, f"{key}.png", (world / row["image"]).read_bytes())
                _add(tf, f"{key}.txt", row["caption"].encode())
    return out


def test_jsonl_csv_tsv_and_webdataset_read_the_same_pairs(tat_world, tmp_path):
    rows = world_rows(tat_world)[:12]
    jsonl = JsonlSource(write_jsonl(tat_world / "sub.jsonl", rows), "image", "caption")
    for suffix, delim in ((".csv", ","), (".tsv", "\t")):
        path = tat_world / f"sub{suffix}"
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh, delimiter=delim)
            w.writerow(["caption", "image", "extra"])
            for r in rows:
                w.writerow([r["caption"], r["image"], "multi\nline, \"quoted\""])
        table = open_pairs(path)
        assert isinstance(table, CsvSource) and len(table) == len(rows)
        for i in (0, 5, 11, 3):
            assert table.record(i).caption == rows[i]["caption"]
            assert np.array_equal(np.asarray(table.image(i)), np.asarray(jsonl.image(i)))
    wds = open_pairs(make_shards(tat_world, tmp_path / "shards", rows))
    assert isinstance(wds, WebDatasetSource) and len(wds) == len(rows)
    for i in (11, 0, 7):
        assert wds.record(i).caption == rows[i]["caption"]
        assert np.array_equal(np.asarray(wds.image(i)), np.asarray(jsonl.image(i)))
    assert jsonl.structured and jsonl.record(0).meta["attributes"] == rows[0]["attributes"]
    assert not wds.structured


def test_webdataset_skips_incomplete_samples(tat_world, tmp_path):
    rows = world_rows(tat_world)[:3]
    shards = make_shards(tat_world, tmp_path / "wds", rows)
    with tarfile.open(shards / "extra.tar", "w") as tf:
        _add(tf, "lonely.png", (tat_world / rows[0]["image"]).read_bytes())
        _add(tf, "nocap.txt", b"a caption without an image")
        _add(tf, "dir/ok.jpeg", (tat_world / rows[1]["image"]).read_bytes())
        _add(tf, "dir/ok.txt", b"a red circle")
    source = open_pairs(shards)
    assert len(source) == 4 and source.incomplete == 2
    assert source.record(0).caption == "a red circle"  # extra.tar sorts first


@pytest.mark.parametrize("content, message", [
    ("", "no image-caption pairs"),
    ("\n\n", "no image-caption pairs"),
    ('{"image": "a.png", "caption": "x"}\n{not json\n', ":2: not valid JSON"),
    ('{"image": "a.png"}\n', "'caption' is missing"),
    ('["a.png", "x"]\n', ":1: expected an object"),
])
def test_malformed_jsonl_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=message.replace("(", r"\(")):
        open_pairs(path)


@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("image,caption\n", "no image-caption pairs"),
    ("image,caption\na.png,x,extra\n", "3 fields"),
    ("file,text\na.png,x\n", "'image' is missing"),
])
def test_malformed_csv_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "d.csv"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=message):
        open_pairs(path)


def test_missing_unknown_and_empty_sources(tmp_path):
    with pytest.raises(DataFormatError, match="does not exist"):
        open_pairs(tmp_path / "nope.jsonl")
    (tmp_path / "x.parquet").write_bytes(b"")
    with pytest.raises(DataFormatError, match="unknown data format"):
        open_pairs(tmp_path / "x.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="no .tar shards"):
        open_pairs(tmp_path / "empty")
    (tmp_path / "bad.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(DataFormatError, match="tar"):
        open_pairs(tmp_path / "bad.tar")


def test_plan_is_deterministic_and_splits_cleanly():
    a, b = Plan(103, 10, 8, seed=3), Plan(103, 10, 8, seed=3)
    assert np.array_equal(a.global_batch(20), b.global_batch(20))
    other = Plan(103, 10, 8, seed=4)
    assert np.array_equal(a.holdout, other.holdout)  # held-out pairs do not depend on the seed
    assert not np.array_equal(a.epoch_order(0), other.epoch_order(0))
    assert set(a.holdout).isdisjoint(a.train) and len(a.holdout) + len(a.train) == 103
    epoch = np.concatenate([a.global_batch(m) for m in range(a.micro_per_epoch)])
    assert sorted(epoch) == sorted(a.train)  # one epoch visits every training pair once
    assert len(a.global_batch(a.micro_per_epoch - 1)) == 93 % 8
    assert not np.array_equal(a.global_batch(0), a.global_batch(a.micro_per_epoch))  # epoch 1 reshuffles
    ranks = [Plan(103, 10, 8, seed=3, world_size=2, rank=r) for r in range(2)]
    for m in (0, 5, 11, 12):
        assert np.array_equal(np.concatenate([p.local_batch(m) for p in ranks]), a.global_batch(m))
    with pytest.raises(ValueError, match="divisible"):
        Plan(103, 10, 9, seed=0, world_size=2)
    with pytest.raises(ValueError, match="too few"):
        Plan(5, 4, 2, seed=0)
    assert auto_holdout(50_000) == 1000 and auto_holdout(48) == 4


def test_bad_images_are_skipped_and_reported(tat_world, tiny_clip_dir, tmp_path):
    rows = world_rows(tat_world)[:4]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG but not really")
    rows[1] = {**rows[1], "image": str(tmp_path / "broken.png")}
    rows[2] = {**rows[2], "image": "images/train/does-not-exist.png"}
    source = open_pairs(write_jsonl(tat_world / "bad.jsonl", rows))
    with pytest.raises(BadImage, match="missing image file"):
        source.image(2)
    encoder = load_encoder(str(tiny_clip_dir), device="cpu")
    batch = PairBatches(source, encoder.preprocess, lambda k: np.arange(4))[0]
    assert batch["captions"] == [rows[0]["caption"], rows[3]["caption"]]
    assert batch["pixels"].shape[0] == 2 and batch["slots"] == 4
    assert len(batch["failed"]) == 2 and "not a decodable image" in batch["failed"][0]
