"""The output folder of a run: its identity (run.json), checkpoints, and what may be overwritten.

A checkpoint holds everything the rest of the run depends on: the LoRA weights, the optimizer
and scheduler state, every rank's RNG state and the data position (the next micro-batch).
Each is written to a temporary folder and renamed into place, so a kill at any moment leaves
either the previous checkpoint or the new one.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from cir.io import atomic_write_json, make_temp_dir
from training.config import TrainConfig, identity_hash

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
CHECKPOINTS = "checkpoints"
STATE_FILE = "state.pt"
TMP_PREFIX = ".tmp-"  # a checkpoint being written (left behind by a kill)


class OutputDirError(ValueError):
    """The output folder holds something this run must not overwrite."""


def read_run(out: Path) -> dict | None:
    """The run.json of an output folder, or None when there is none."""
    path = out / RUN_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise OutputDirError(f"{path} is not valid JSON ({exc}); refusing to touch {out}") from exc


def _describe_difference(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:6])


def check_out_dir(cfg: TrainConfig) -> str:
    """Decide what to do with --out: 'fresh', 'resume' or 'complete'; raise if it holds another run."""
    out = Path(cfg.out).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--out {out} exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return "fresh"
    run = read_run(out)
    if run is None:
        raise OutputDirError(f"--out {out} is not empty and holds no TAT run ({RUN_FILE}); choose an empty folder")
    if run.get("identity") != cfg.identity():
        diff = _describe_difference(run.get("identity", {}), cfg.identity())
        raise OutputDirError(f"--out {out} holds a different run ({diff}); choose another folder (nothing was changed)")
    if not cfg.resume:
        raise OutputDirError(f"--out {out} already holds this run ({run.get('status')}); pass --resume to "
                             "continue it or choose another folder")
    return "complete" if run.get("status") == "complete" else "resume"


def check_base(out: Path, base_fingerprint: str) -> None:
    """Refuse to resume a run that was started on a different base model."""
    run = read_run(out) or {}
    if run.get("base_fingerprint") not in (None, base_fingerprint):
        raise OutputDirError(f"{out} was trained from a base model with fingerprint {run['base_fingerprint'][:12]}, "
                             f"not {base_fingerprint[:12]}")


def write_run(out: Path, cfg: TrainConfig, status: str, **extra) -> dict:
    """Write (or update) run.json: the identity of the run and its status."""
    run = read_run(out) or {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    run.update({"identity": cfg.identity(), "identity_hash": identity_hash(cfg.identity()), "status": status,
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra})
    atomic_write_json(out / RUN_FILE, run)
    return run


def rng_state() -> dict:
    """This process's RNG states (torch, CUDA, numpy, python)."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    """Restore what rng_state() returned."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def checkpoint_dirs(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = out / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith("step_") and (p / STATE_FILE).is_file())


def save_checkpoint(out: Path, step: int, state: dict, keep: int) -> Path:
    """Write a checkpoint atomically and prune all but the newest `keep`."""
    root = out / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = make_temp_dir(root, TMP_PREFIX)
    try:
        torch.save(state, tmp / STATE_FILE)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in checkpoint_dirs(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint at step %d: %s", step, final)
    return final


def remove_partial(out: Path) -> list[Path]:
    """Delete half-written checkpoint and save folders that a kill left behind; returns them."""
    doomed = [*(out / CHECKPOINTS).glob(TMP_PREFIX + "*"), *out.glob(".tmp-save-*")]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def load_latest(out: Path) -> dict | None:
    """The newest checkpoint's state, or None when there is none."""
    dirs = checkpoint_dirs(out)
    if not dirs:
        return None
    log.info("resuming from %s", dirs[-1])
    return torch.load(dirs[-1] / STATE_FILE, map_location="cpu", weights_only=False)
