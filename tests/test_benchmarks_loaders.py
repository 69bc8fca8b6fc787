"""Loaders read the real annotation excerpts (no images) and the shapes world's folders."""

from __future__ import annotations

import json
import shutil

import pytest

from cir.benchmarks import (BenchmarkError, join_captions, load_benchmark, load_circo, load_cirr, load_fashioniq,
                            world_heldout)

from benchmarks_fixtures import small_world  # noqa: F401


def test_cirr_val_excerpt(shared_formats):
    data = load_cirr(shared_formats / "cirr", "val")
    raw = json.loads((shared_formats / "cirr/captions/cap.rc2.val.json").read_text())
    assert len(data.queries) == len(raw)
    q, r = data.queries[0], raw[0]
    assert (q.qid, q.reference, q.target, q.text) == (str(r["pairid"]), r["reference"], r["target_hard"], r["caption"])
    assert q.members == tuple(r["img_set"]["members"])
    assert data.remove_reference and data.has_targets
    split = json.loads((shared_formats / "cirr/image_splits/split.rc2.val.json").read_text())
    assert data.gallery == list(split)
    name = data.gallery[0]
    assert data.image_path(name).as_posix().endswith(split[name][2:])


def test_cirr_test1_excerpt_parses_without_split_file(shared_formats):
    data = load_cirr(shared_formats / "cirr", "test")
    assert data.queries and not data.has_targets
    assert all(q.target is None and len(q.members) == 6 for q in data.queries)
    with pytest.raises(BenchmarkError, match="split.rc2.test1.json"):
        data.require_gallery()


def test_circo_excerpts(shared_formats):
    val = load_circo(shared_formats / "circo", "val")
    raw = json.loads((shared_formats / "circo/annotations/val.json").read_text())
    q, r = val.queries[0], raw[0]
    assert q.targets == tuple(str(g) for g in r["gt_img_ids"]) and q.target == str(r["target_img_id"])
    assert q.reference == str(r["reference_img_id"]) and q.text == r["relative_caption"]
    assert not val.remove_reference
    assert max(len(q.targets) for q in val.queries) > 1
    with pytest.raises(BenchmarkError, match="image_info_unlabeled2017.json"):
        val.require_gallery()
    test = load_circo(shared_formats / "circo", "test")
    assert test.queries and not test.has_targets


def test_fashioniq_excerpts(shared_formats):
    [val] = load_fashioniq(shared_formats / "fashioniq", "val", ["dress"])
    raw = json.loads((shared_formats / "fashioniq/captions/cap.dress.val.json").read_text())
    q = val.queries[0]
    assert q.reference == raw[0]["candidate"] and q.target == raw[0]["target"]
    assert q.text == join_captions(*raw[0]["captions"])
    assert q.alt_text == join_captions(raw[0]["captions"][1], raw[0]["captions"][0])
    assert val.gallery == json.loads((shared_formats / "fashioniq/image_splits/split.dress.val.json").read_text())
    assert val.image_path(val.gallery[0]).name == f"{val.gallery[0]}.jpg"
    [test] = load_fashioniq(shared_formats / "fashioniq", "test", ["dress"])
    assert len(test.queries) == 3 and test.gallery is None


def test_join_captions_strips_punctuation():
    assert join_captions(" is red.", "has sleeves?") == "is red and has sleeves"


def test_bad_inputs(shared_formats, tmp_path):
    with pytest.raises(BenchmarkError, match="categor"):
        load_fashioniq(shared_formats / "fashioniq", "val", ["hats"])
    with pytest.raises(BenchmarkError, match="cap.shirt.val.json"):
        load_fashioniq(shared_formats / "fashioniq", "val", ["shirt"])
    with pytest.raises(BenchmarkError, match="split"):
        load_cirr(shared_formats / "cirr", "train")
    with pytest.raises(BenchmarkError, match="captions"):
        load_cirr(tmp_path)
    bad = tmp_path / "circo"
    shutil.copytree(shared_formats / "circo", bad)
    (bad / "annotations" / "val.json").write_text('[{"id": 0}]')
    with pytest.raises(BenchmarkError, match="lacks"):
        load_circo(bad, "val")


def test_shapes_world_folders(small_world):
    cirr = load_cirr(small_world / "cirr", "val")
    circo = load_circo(small_world / "circo", "val")
    assert len(cirr.queries) == len(circo.queries) == 16
    assert all(p.is_file() for p in cirr.paths.values())
    assert all(p.is_file() for p in circo.paths.values())
    assert all(q.target in cirr.gallery and q.reference in cirr.gallery for q in cirr.queries)
    flags = world_heldout(cirr)
    assert set(flags) == {q.qid for q in cirr.queries} == set(world_heldout(circo))
    rows = [json.loads(line) for line in (small_world / "queries.jsonl").read_text().splitlines()]
    assert sum(flags.values()) == sum(r["heldout"] for r in rows)
    # The world root itself is accepted: the loaders step into cirr/ and circo/.
    assert len(load_benchmark("cirr", small_world)[0].queries) == 16
    assert load_benchmark("circo", small_world)[0].gallery == circo.gallery


def test_world_heldout_absent_for_real_layouts(shared_formats):
    assert world_heldout(load_cirr(shared_formats / "cirr", "val")) is None
