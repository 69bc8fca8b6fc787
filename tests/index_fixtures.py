"""Helpers for the indexer tests: small random galleries and build configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from indexer.config import BuildConfig


def write_image(path: Path, seed: int, size: tuple[int, int] = (36, 28)) -> Path:
    """A random RGB image at `path` (format from the suffix)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def make_gallery(root: Path, n: int, seed: int = 0) -> list[Path]:
    """n images in nested folders with every supported extension."""
    exts = ["png", "jpg", "jpeg", "webp", "bmp"]
    return [write_image(root / ("sub" if i % 3 == 0 else "") / f"img{i:03d}.{exts[i % 5]}", seed * 1000 + i,
                        (30 + i % 7, 24 + i % 5)) for i in range(n)]


def config(gallery: Path, model: Path, out: Path, **kw) -> BuildConfig:
    """A small, quiet build config."""
    defaults = dict(batch_size=4, workers=0, device="cpu", shard_size=8, progress=False)
    defaults.update(kw)
    return BuildConfig(gallery=gallery, model=str(model), out=out, **defaults)
