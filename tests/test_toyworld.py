"""The shapes world: determinism, held-out discipline, targets, and the real CIRR/CIRCO formats."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cir.toyworld import (Attrs, all_combinations, caption, describes, generate_world, heldout_combinations,
                          is_heldout, render, vocabulary, words)
from cir.toyworld.cli import main

FORMATS = Path(os.environ.get("CIR_FORMATS_DIR", Path(__file__).resolve().parents[2] / "shared" / "formats"))
SMALL = dict(gallery_size=600, n_queries=60, n_captions=120)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("w") / "world"
    generate_world(out, seed=3, **SMALL)
    return out


def _load(path: Path):
    return json.loads(path.read_text())


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(world, tmp_path):
    again = tmp_path / "again"
    generate_world(again, seed=3, **SMALL)
    assert _digest(again) == _digest(world)
    other = tmp_path / "other"
    generate_world(other, seed=4, **SMALL)
    assert _digest(other) != _digest(world)
    assert _load(other / "world.json")["heldout_pairs"] == _load(world / "world.json")["heldout_pairs"]


def test_render_is_deterministic_and_sized():
    a = Attrs("star", "blue", "small", "top left", "striped")
    one = render(a, np.random.default_rng(7), image_size=40)
    two = render(a, np.random.default_rng(7), image_size=40)
    assert one.size == (40, 40) and one.mode == "RGB"
    assert one.tobytes() == two.tobytes()
    assert render(a, np.random.default_rng(8), image_size=40).tobytes() != one.tobytes()


def test_captions_exclude_heldout_and_gallery(world):
    rows = _jsonl(world / "captions.jsonl")
    assert len(rows) == SMALL["n_captions"]
    gallery_hashes = {hashlib.sha256(p.read_bytes()).digest() for p in (world / "circo").rglob("*.png")}
    for row in rows:
        path = world / row["image"]
        assert path.is_file() and row["caption"]
        assert not is_heldout(row["attributes"])
        assert describes(row["mentions"], row["attributes"])
        assert hashlib.sha256(path.read_bytes()).digest() not in gallery_hashes


def test_describes_is_the_multi_positive_label():
    a = Attrs("circle", "red", "large", "top left", "solid")
    assert describes({"colour": "red", "position": "left"}, a)
    assert describes({"position": "top left"}, a)
    assert not describes({"position": "right"}, a)
    assert not describes({"shape": "star"}, a)
    rng = np.random.default_rng(0)
    for _ in range(200):
        cap = caption(a, rng)
        assert describes(cap.mentions, a)
        assert set(words(cap.text)) <= set(vocabulary())


def test_heldout_list_is_fixed_and_partial():
    held = heldout_combinations()
    assert 0 < len(held) < len(all_combinations()) // 4
    shapes = {a.shape for a in held}
    colours = {a.colour for a in held}
    assert len(shapes) > 1 and len(colours) > 1  # every shape and colour is still seen elsewhere


def test_cirr_targets_exist_and_are_the_only_correct_render(world):
    cirr = world / "cirr"
    split = _load(cirr / "image_splits" / "split.rc2.val.json")
    gallery = {g["cirr_name"]: g for g in _jsonl(world / "gallery.jsonl") if g["cirr_name"]}
    assert set(split) == set(gallery)
    attrs_in_split = [tuple(g["attributes"].values()) for g in gallery.values()]
    assert len(set(attrs_in_split)) == len(attrs_in_split)  # one render per combination
    side = {q["pairid"]: q for q in _jsonl(world / "queries.jsonl")}
    for q in _load(cirr / "captions" / "cap.rc2.val.json"):
        for name in [q["reference"], q["target_hard"], *q["img_set"]["members"]]:
            assert (cirr / split[name]).is_file()
        members = q["img_set"]["members"]
        assert len(set(members)) == 6
        assert members[q["img_set"]["reference_rank"]] == q["reference"]
        assert members[q["img_set"]["target_rank"]] == q["target_hard"]
        info = side[q["pairid"]]
        assert gallery[q["target_hard"]]["attributes"] == info["target_attrs"]
        ref, tgt = info["reference_attrs"], info["target_attrs"]
        assert sorted(k for k in ref if ref[k] != tgt[k]) == sorted(info["changed"])
        assert 1 <= len(info["changed"]) <= 2
        assert info["heldout"] == is_heldout(tgt)
        assert set(words(q["caption"])) <= set(vocabulary())


def test_circo_gt_is_every_render_of_the_target(world):
    circo = world / "circo"
    images = _load(circo / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json")["images"]
    paths = {im["id"]: circo / "COCO2017_unlabeled" / "unlabeled2017" / im["file_name"] for im in images}
    attrs = {g["circo_id"]: g["attributes"] for g in _jsonl(world / "gallery.jsonl")}
    assert len(paths) == SMALL["gallery_size"] and set(paths) == set(attrs)
    for q in _load(circo / "annotations" / "val.json"):
        assert paths[q["reference_img_id"]].is_file()
        assert q["gt_img_ids"][0] == q["target_img_id"]
        target = attrs[q["target_img_id"]]
        assert sorted(q["gt_img_ids"]) == sorted(i for i, a in attrs.items() if a == target)
    with Image.open(next(iter(paths.values()))) as im:
        assert im.size == (32, 32)


def _shape(x):
    """A comparable description of a JSON value's keys and types (dict keys that are names are data)."""
    if isinstance(x, dict):
        return {k: _shape(v) for k, v in x.items()}
    if isinstance(x, list):
        kinds = {json.dumps(_shape(v), sort_keys=True) for v in x}
        return ["list", sorted(kinds)]
    return type(x).__name__


def _entry_shape(entry: dict) -> dict:
    shape = _shape(entry)
    if "target_soft" in entry:  # its keys are image names; keep only the value type
        shape["target_soft"] = sorted({type(v).__name__ for v in entry["target_soft"].values()})
    return shape


@pytest.mark.skipif(not FORMATS.is_dir(), reason=f"real format excerpts not found at {FORMATS}")
@pytest.mark.parametrize("rel", ["cirr/captions/cap.rc2.val.json", "circo/annotations/val.json"])
def test_annotation_files_match_the_real_formats(world, rel):
    real = {json.dumps(_entry_shape(e), sort_keys=True) for e in _load(FORMATS / rel)}
    ours = {json.dumps(_entry_shape(e), sort_keys=True) for e in _load(world / rel)}
    assert ours <= real, f"{rel}: generated entries have keys/types the real file never has"


@pytest.mark.skipif(not FORMATS.is_dir(), reason=f"real format excerpts not found at {FORMATS}")
def test_cirr_split_matches_the_real_format(world):
    real = _load(FORMATS / "cirr/image_splits/split.rc2.val.json")
    ours = _load(world / "cirr/image_splits/split.rc2.val.json")
    for split in (real, ours):
        assert all(isinstance(k, str) and v == f"./dev/{k}.png" for k, v in split.items())


def test_cli_writes_world_and_rejects_bad_input(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["--out", str(out), "--seed", "1", "--gallery-size", "50", "--queries", "5",
                 "--captions", "10", "--quiet"]) == 0
    assert (out / "world.json").is_file() and len(_jsonl(out / "queries.jsonl")) == 5
    assert main(["--out", str(tmp_path / "bad"), "--gallery-size", "2", "--quiet"]) != 0
    assert "gallery size" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "--gallery-size" in capsys.readouterr().out


def test_refuses_to_replace_a_folder_that_is_not_a_world(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["--out", str(tmp_path), "--gallery-size", "20", "--queries", "2", "--captions", "2",
                 "--quiet"]) != 0
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert "not a shapes world" in capsys.readouterr().err
