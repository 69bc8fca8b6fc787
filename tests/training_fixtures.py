"""Fixtures for the TAT job's tests: a tiny shapes world and small, fast training configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cir.toyworld import generate_world
from training.config import TrainConfig


@pytest.fixture(scope="session")
def tat_world(tmp_path_factory) -> Path:
    """A tiny shapes world (48 training pairs, 32 px images) for the tiny test models."""
    root = tmp_path_factory.mktemp("tat_world") / "world"
    generate_world(root, seed=1, gallery_size=16, n_queries=8, n_captions=48)
    return root


@pytest.fixture
def make_config(tiny_clip_dir, tat_world, tmp_path):
    """Factory of small TrainConfigs on the tiny CLIP and the tiny world; keyword overrides."""

    def make(**overrides) -> TrainConfig:
        base = dict(model=str(tiny_clip_dir), data=str(tat_world / "captions.jsonl"), out=str(tmp_path / "out"),
                    batch_size=8, max_steps=4, lr=1e-2, holdout=8, workers=0, progress=False,
                    checkpoint_every=0, log_every=1, eval_batch_size=16, device="cpu")
        base.update(overrides)
        return TrainConfig(**base)

    return make


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write rows as JSON lines."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def world_rows(world: Path) -> list[dict]:
    """The training rows of a world's captions.jsonl."""
    return [json.loads(line) for line in (world / "captions.jsonl").read_text().splitlines()]
