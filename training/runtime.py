"""Run-time pieces of the TAT loop: counters, the stop flag, the LR schedule, seeding, train_log.jsonl."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cir.io import atomic_write_text
from training.check import SKIP_WARN

log = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"
MAX_LOGGED_FAILURES = 20


@dataclass
class RunState:
    """Counters carried across checkpoints."""

    step: int = 0
    images: int = 0
    skipped: int = 0
    seconds: float = 0.0
    failures: list = field(default_factory=list)
    seen: int = 0  # image slots this rank tried: loaded + skipped
    warned: bool = False

    def count_batch(self, batch: dict) -> None:
        """Count a batch's skipped images, keep (and log) the first few reasons, warn once when many fail."""
        failed = batch["failed"]
        for reason in failed:
            if len(self.failures) < MAX_LOGGED_FAILURES:
                self.failures.append(reason)
                log.warning("skipped image: %s", reason)
        self.skipped += len(failed)
        self.seen += batch["slots"]
        if not self.warned and self.seen >= 32 and self.skipped > SKIP_WARN * self.seen:
            self.warned = True
            log.warning("%d of the %d images read so far (%.0f%%) did not load and were skipped; "
                        "`cir train --check` lists why", self.skipped, self.seen, 100 * self.skipped / self.seen)


class StopFlag:
    """Set by SIGINT/SIGTERM: the loop checkpoints and exits after the current step."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: signals stay as they are
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signum = signum
        log.warning("signal %d: stopping after this step with a checkpoint", signum)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


WARMUP_SHARE = 0.05  # default warmup: this share of the steps


def default_warmup(steps: int) -> int:
    """The default number of warmup steps of a run of `steps` optimiser steps."""
    return round(WARMUP_SHARE * steps)


def warmup_cosine(step: int, warmup: int, total: int, peak: float = 1.0) -> float:
    """The one LR schedule (TAT job and toy trainer): linear warmup to `peak`, then cosine decay to 0.

    Step s < warmup gets peak * (s + 1) / warmup (the peak at step warmup - 1); later steps
    follow peak * (1 + cos(pi * (s - warmup) / (total - warmup))) / 2. With peak 1 it is a
    factor for LambdaLR; the toy trainer passes its learning rate as the peak.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and python RNGs."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))
    random.seed(seed)


class TrainLog:
    """Averages loss and images/s over each logging window and appends a line to train_log.jsonl."""

    def __init__(self, out: Path, every: int, enabled: bool):
        self.path, self.every, self.enabled = out / LOG_FILE, every, enabled
        self._reset()

    def _reset(self) -> None:
        self.loss, self.steps, self.images, self.t0 = 0.0, 0, 0, time.perf_counter()

    def add(self, state: RunState, loss: float, lr: float, images: int, epoch: int, last: bool) -> dict | None:
        """Account one step; returns (and writes) the log row when this step closes a window."""
        self.loss, self.steps, self.images = self.loss + loss, self.steps + 1, self.images + images
        if state.step % self.every and not last:
            return None
        rate = self.images / max(time.perf_counter() - self.t0, 1e-9)
        row = {"step": state.step, "epoch": epoch, "loss": round(self.loss / self.steps, 6), "lr": lr,
               "images_per_s": round(rate, 2), "images": state.images, "skipped": state.skipped}
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
        self._reset()
        return row

    def truncate(self, step: int) -> None:
        """Drop lines past the resumed step (written after the checkpoint that the run resumes from)."""
        if self.enabled and self.path.is_file():
            keep = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
            atomic_write_text(self.path, "".join(ln + "\n" for ln in keep))
