"""Checkpoints (resume after a kill) and the atomic write of the finished toy model package."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import torch

from cir.io import make_temp_dir, replace_dir, restore_mode
from training.toy.arch import build_image_processor

log = logging.getLogger(__name__)


def config_key(cfg) -> str:
    """What a checkpoint must match to be resumed (everything but output places and logging)."""
    d = dataclasses.asdict(cfg)
    for k in ("out", "checkpoint_dir", "probe_every", "checkpoint_every"):
        d.pop(k)
    return json.dumps(d, sort_keys=True)


def save_checkpoint(path: Path, step: int, model, opt, rng: np.random.Generator, curve: list, cfg) -> None:
    """Write the training state atomically so that a killed run resumes at `step`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"step": step, "model": model.state_dict(), "opt": opt.state_dict(), "rng": rng.bit_generator.state,
                "curve": curve, "config": config_key(cfg)}, tmp)
    tmp.replace(path)


def resume(path: Path, model, opt, rng: np.random.Generator, cfg) -> tuple[int, list]:
    """Load a checkpoint written for the same configuration; returns (start step, probe curve)."""
    if not path.is_file():
        return 0, []
    state = torch.load(path, weights_only=False)
    if state["config"] != config_key(cfg):
        log.warning("ignoring checkpoint %s: it was written for another configuration", path)
        return 0, []
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    rng.bit_generator.state = state["rng"]
    log.info("resuming from step %d (%s)", state["step"], path)
    return state["step"], state["curve"]


def save_package(model, tokenizer, image_size: int, out: Path) -> None:
    """Write model, tokenizer and image processor to `out`, replacing an earlier model atomically."""
    out = out.resolve()
    if out.exists() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise FileExistsError(f"{out} is not empty and holds no model; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out.parent, f".{out.name}.tmp-")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    build_image_processor(image_size).save_pretrained(tmp)
    for f in tmp.iterdir():
        restore_mode(f)  # the package data must be readable by other users (safetensors writes 0600)
    replace_dir(tmp, out)
