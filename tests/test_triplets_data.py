"""Triplet sources for `cir train --triplets`: CIRR and FashionIQ captions in their exact formats, JSONL,
and the shapes world's CIRR-layout train split (seen combinations only)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cir.benchmarks.fashioniq import join_captions
from cir.toyworld import generate_world, holds_world, is_heldout
from cir.toyworld.queries import make_queries
from cir.toyworld.spec import seen_combinations
from cir.toyworld.train_split import TRAIN_QUERIES
from training.data import BadImage, DataFormatError
from training.triplets import open_triplets


@pytest.fixture(scope="module")
def train_world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("triplet_world") / "world"
    generate_world(root, seed=3, gallery_size=16, n_queries=4, n_captions=4, n_train_triplets=40)
    return root


def test_toyworld_train_split_is_cirr_layout_of_seen_combinations(train_world, tmp_path):
    captions = train_world / "cirr" / "captions" / "cap.rc2.train.json"
    entries = json.loads(captions.read_text())
    split = json.loads((train_world / "cirr" / "image_splits" / "split.rc2.train.json").read_text())
    assert len(entries) == 40 and set(entries[0]) == {"pairid", "reference", "target_hard", "target_soft", "caption",
                                                      "img_set"}
    assert all(len(e["img_set"]["members"]) <= 6 and e["img_set"]["members"][e["img_set"]["target_rank"]]
               == e["target_hard"] for e in entries)
    assert split["train-0-0-img0"] == "./train/0/train-0-0-img0.png"  # nested folders, as CIRR's train
    specs = make_queries(seen_combinations(), 40, np.random.default_rng([3, TRAIN_QUERIES]), heldout_share=0.0)
    assert [s.text for s in specs] == [e["caption"] for e in entries]
    assert not any(is_heldout(s.reference) or is_heldout(s.target) for s in specs)
    source = open_triplets(captions)
    assert len(source) == 40 and source.format == "cirr"
    t = source.triplet(0)
    assert Path(t.target).is_file() and Path(t.references[0]).is_file() and t.text == entries[0]["caption"]
    assert source.image(5).size == (32, 32)
    # a world without a split is exactly as before, and holds_world tells the two apart
    info = json.loads((train_world / "world.json").read_text())
    assert info["n_train_triplets"] == 40
    assert holds_world(train_world, seed=3, gallery_size=16, n_queries=4, n_captions=4, n_train_triplets=40)
    assert not holds_world(train_world, seed=3, gallery_size=16, n_queries=4, n_captions=4)
    plain = tmp_path / "plain"
    generate_world(plain, seed=3, gallery_size=16, n_queries=4, n_captions=4)
    assert "n_train_triplets" not in json.loads((plain / "world.json").read_text())
    assert not (plain / "cirr" / "train").exists()
    for rel in ("cirr/captions/cap.rc2.val.json", "circo/annotations/val.json", "captions.jsonl"):
        assert (plain / rel).read_bytes() == (train_world / rel).read_bytes(), rel


def test_cirr_names_resolve_only_through_the_split_file(train_world, tmp_path):
    root = tmp_path / "cirr"
    shutil.copytree(train_world / "cirr", root)
    split = root / "image_splits" / "split.rc2.train.json"
    mapping = json.loads(split.read_text())
    del mapping["train-3-1-img1"]
    split.write_text(json.dumps(mapping))
    with pytest.raises(DataFormatError, match="train-3-1-img1"):
        open_triplets(root / "captions" / "cap.rc2.train.json")
    split.unlink()
    with pytest.raises(DataFormatError, match="split.rc2.train.json"):
        open_triplets(root / "captions" / "cap.rc2.train.json")


def test_real_cirr_format_excerpt(shared_formats, tmp_path):
    root = tmp_path / "cirr"
    (root / "captions").mkdir(parents=True)
    (root / "image_splits").mkdir()
    shutil.copy(shared_formats / "cirr" / "captions" / "cap.rc2.val.json", root / "captions")
    shutil.copy(shared_formats / "cirr" / "image_splits" / "split.rc2.val.json", root / "image_splits")
    (root / "dev").mkdir()
    entries = json.loads((root / "captions" / "cap.rc2.val.json").read_text())
    source = open_triplets(root / "captions" / "cap.rc2.val.json")
    assert len(source) == len(entries)
    t = source.triplet(0)
    assert t.references == (str(root / "dev" / f"{entries[0]['reference']}.png"),)
    assert t.target == str(root / "dev" / f"{entries[0]['target_hard']}.png") and t.text == entries[0]["caption"]
    with pytest.raises(BadImage, match="missing image"):
        source.image(0)


def test_real_fashioniq_train_excerpt(shared_formats, tmp_path):
    root = tmp_path / "fiq"
    (root / "captions").mkdir(parents=True)
    shutil.copy(shared_formats / "fashioniq" / "captions" / "cap.dress.train.json", root / "captions")
    entries = json.loads((root / "captions" / "cap.dress.train.json").read_text())
    (root / "images").mkdir()
    (root / "images" / f"{entries[0]['candidate']}.png").write_bytes(b"")
    source = open_triplets(root / "captions" / "cap.dress.train.json")
    assert len(source) == len(entries) and source.format == "fashioniq"
    t = source.triplet(0)
    assert t.text == join_captions(*entries[0]["captions"])
    assert t.references == (str(root / "images" / f"{entries[0]['candidate']}.png"),)
    assert t.target == str(root / "images" / f"{entries[0]['target']}.jpg")
    shutil.copy(root / "captions" / "cap.dress.train.json", root / "captions" / "cap.shirt.train.json")
    shutil.copy(shared_formats / "fashioniq" / "captions" / "cap.dress.val.json", root / "captions")
    both = open_triplets(root / "captions")  # the folder: every category's train captions, not val
    assert len(both) == 2 * len(entries) and both.format == "fashioniq"


class _Gallery:
    def __init__(self, paths: dict):
        self.paths = paths

    def item(self, item_id):
        return {"path": self.paths[item_id]} if item_id in self.paths else None


def test_jsonl_paths_lists_and_gallery_ids(tmp_path):
    data = tmp_path / "t.jsonl"
    data.write_text(json.dumps({"reference": "a.png", "text": " make it red ", "target": "g1"}) + "\n\n"
                    + json.dumps({"reference": ["g1", "/abs/b.png"], "text": "bigger", "target": "c.png"}) + "\n")
    source = open_triplets(data, _Gallery({"g1": "/gallery/one.png"}))
    assert source.triplet(0) == (((str(tmp_path / "a.png"),), "make it red", "/gallery/one.png",
                                  f"{data.resolve()}:1"))
    assert source.triplet(1).references == ("/gallery/one.png", "/abs/b.png")
    assert open_triplets(data).triplet(0).target == str(tmp_path / "g1")  # no gallery: a path


@pytest.mark.parametrize("content,message", [
    ('{"reference": "a.png", "target": "b.png"}\n', "'text'"),
    ('{"reference": [], "text": "x", "target": "b.png"}\n', "1 to 8 references"),
    ('{"reference": "a.png", "text": "x", "target": 3}\n', "non-empty string"),
    ("not json\n", "not valid JSON"),
    ("", "holds no triplets"),
])
def test_bad_jsonl(tmp_path, content, message):
    (tmp_path / "t.jsonl").write_text(content)
    with pytest.raises(DataFormatError, match=message):
        open_triplets(tmp_path / "t.jsonl")


def test_unknown_formats(tmp_path):
    (tmp_path / "x.json").write_text('[{"foo": 1}]')
    with pytest.raises(DataFormatError, match="neither CIRR"):
        open_triplets(tmp_path / "x.json")
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(DataFormatError, match="unknown triplet format"):
        open_triplets(tmp_path / "x.csv")
    with pytest.raises(DataFormatError, match="does not exist"):
        open_triplets(tmp_path / "none.jsonl")
