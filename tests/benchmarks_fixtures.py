"""Fixtures for the benchmark/eval tests: a small shapes world, a tiny encoder, excerpt copies with dummy images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cir.benchmarks import CATEGORIES
from cir.encoder import load_encoder
from cir.toyworld import generate_world


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    """A 60-render shapes world with 16 queries (seed distinct from any training world)."""
    root = tmp_path_factory.mktemp("world") / "w"
    generate_world(root, seed=11, gallery_size=60, n_queries=16, n_captions=0)
    return root


@pytest.fixture(scope="session")
def tiny_encoder(tiny_clip_dir):
    """The tiny random CLIP on CPU."""
    return load_encoder(str(tiny_clip_dir), device="cpu")


def dummy_image(path: Path, seed: int) -> None:
    """A small random RGB PNG/JPEG (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path)


def excerpt_with_images(shared_formats: Path, tmp: Path, name: str) -> Path:
    """Copy one benchmark's excerpt to tmp and create a dummy image for every image it names."""
    root = tmp / name
    shutil.copytree(shared_formats / name, root)
    if name == "cirr":
        split = json.loads((root / "image_splits" / "split.rc2.val.json").read_text())
        for i, rel in enumerate(split.values()):
            dummy_image(root / rel, i)
    elif name == "fashioniq":
        ids = set(json.loads((root / "image_splits" / "split.dress.val.json").read_text()))
        ids |= {q["candidate"] for q in json.loads((root / "captions" / "cap.dress.val.json").read_text())}
        for i, asin in enumerate(sorted(ids)):
            dummy_image(root / "images" / f"{asin}.{'png' if i % 2 else 'jpg'}", i)
    elif name == "circo":
        anns = json.loads((root / "annotations" / "val.json").read_text())
        ids = sorted({a["reference_img_id"] for a in anns} | {g for a in anns for g in a["gt_img_ids"]})
        ids += [900000 + i for i in range(60 - len(ids))]  # distractors, so the gallery exceeds 50
        info = {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in ids]}
        path = root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(info))
        for k, i in enumerate(ids):
            dummy_image(root / "COCO2017_unlabeled" / "unlabeled2017" / f"{i:012d}.jpg", k)
    return root


def fashioniq_dataset(root: Path, per_category: int = 14, queries: int = 8, seed: int = 0) -> Path:
    """A tiny FashionIQ folder in the real format (../shared/formats/fashioniq) for all three categories.

    Random images; the last image of each category's split is also listed in the next category's
    split, as a catalog's multi-category item would be.
    """
    rng = np.random.default_rng(seed)
    splits = {cat: [f"B{c}{i:08d}" for i in range(per_category)] for c, cat in enumerate(CATEGORIES)}
    for c, cat in enumerate(CATEGORIES[1:], start=1):
        splits[cat].insert(per_category // 2, splits[CATEGORIES[c - 1]][-1])
    words = ["is red", "is longer", "has no sleeves", "is darker", "has stripes", "is shorter"]
    for cat, asins in splits.items():
        caps = [{"target": asins[int(t)], "candidate": asins[int(r)],
                 "captions": [words[int(rng.integers(len(words)))] + ".", " " + words[int(rng.integers(len(words)))]]}
                for r, t in (rng.choice(len(asins), 2, replace=False) for _ in range(queries))]
        (root / "captions").mkdir(parents=True, exist_ok=True)
        (root / "image_splits").mkdir(parents=True, exist_ok=True)
        (root / "captions" / f"cap.{cat}.val.json").write_text(json.dumps(caps, indent=1))
        (root / "image_splits" / f"split.{cat}.val.json").write_text(json.dumps(asins, indent=1))
    for i, asin in enumerate(sorted({a for asins in splits.values() for a in asins})):
        dummy_image(root / "images" / f"{asin}.{'png' if i % 3 else 'jpg'}", 1000 + i)
    return root
