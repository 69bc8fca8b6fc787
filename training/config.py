"""The TAT job's configuration: one frozen dataclass, validated on construction."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

from cir.defaults import DEFAULT_ALPHA

PAPER_TEMPERATURE = 0.07
POSITIVES = ("auto", "pairs", "captions", "mentions")
OBJECTIVES = ("tat", "triplets")
# Fields added with supervised training: left out of a run's identity while at their default, so
# TAT runs started before they existed still resume.
LATER_FIELDS = {"objective": "tat", "alpha": None, "init_adapter": None, "text_lora": False,
                "hard_negatives": None, "hard_negatives_per_query": 1, "gallery": None}
# Fields that change how a run is carried out but not what it computes: a run may be resumed
# with different values of these.
RUNTIME_FIELDS = frozenset({
    "out", "resume", "workers", "progress", "log_every", "checkpoint_every", "keep_checkpoints",
    "eval_cir", "eval_alpha", "eval_split", "device", "dtype", "eval_batch_size", "threads",
})


@dataclass(frozen=True)
class TrainConfig:
    """Everything a Text-Anchored Tuning run needs; see `cir train --help` for each field."""

    model: str
    data: str
    out: str
    batch_size: int = 128
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int | None = None
    epochs: int = 1
    max_steps: int | None = None
    lora_rank: int = 16
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    lora_targets: tuple[str, ...] | None = None  # None: the model family's (cir.families)
    temperature: float | None = PAPER_TEMPERATURE
    positives: str = "auto"
    seed: int = 0
    holdout: int | None = None
    image_key: str = "image"
    caption_key: str = "caption"
    merge: bool = False
    resume: bool = False
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    eval_cir: str | None = None
    eval_alpha: tuple[float, ...] = (DEFAULT_ALPHA,)
    eval_split: str = "val"
    eval_batch_size: int = 256
    device: str = "auto"
    dtype: str = "auto"
    workers: int = 2
    threads: int | None = None
    log_every: int = 10
    progress: bool = True
    objective: str = "tat"  # "triplets": `data` is a triplet file (training/triplets.py)
    alpha: float | None = None  # triplets: Slerp text weight (None: the index's, else DEFAULT_ALPHA)
    init_adapter: str | None = None  # start from this (TAT) adapter's LoRA weights
    text_lora: bool = False  # triplets: LoRA on the text tower too (the ablation)
    hard_negatives: str | None = None  # triplets: index root to mine hard negatives from
    hard_negatives_per_query: int = 1
    gallery: str | None = None  # triplets: index root whose ids JSONL references may name

    def __post_init__(self):
        for name in ("model", "data", "out", "image_key", "caption_key"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        _positive("batch_size", self.batch_size, minimum=2)
        for name in ("grad_accum", "epochs", "lora_rank", "log_every", "keep_checkpoints", "eval_batch_size"):
            _positive(name, getattr(self, name))
        for name in ("max_steps",):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if self.threads is not None:
            _positive("threads", self.threads)
        for name in ("warmup_steps", "holdout", "checkpoint_every", "workers", "seed"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not (self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not (self.lora_alpha > 0):
            raise ValueError(f"lora_alpha must be > 0, got {self.lora_alpha}")
        if not (0.0 <= self.lora_dropout < 1.0):
            raise ValueError(f"lora_dropout must lie in [0, 1), got {self.lora_dropout}")
        if self.lora_targets is not None and (not self.lora_targets or any(not t for t in self.lora_targets)):
            raise ValueError("lora_targets must name at least one module")
        if self.temperature is not None and not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a positive number (or None for the model's own), "
                             f"got {self.temperature}")
        if self.positives not in POSITIVES:
            raise ValueError(f"positives must be one of {', '.join(POSITIVES)}, got {self.positives!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.alpha is not None and not (0.0 <= self.alpha <= 1.0):
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}")
        _positive("hard_negatives_per_query", self.hard_negatives_per_query)
        triplet_only = self.text_lora or self.hard_negatives or self.gallery or self.alpha is not None
        if self.objective == "tat" and triplet_only:
            raise ValueError("text LoRA, hard negatives, a gallery and alpha are options of triplet training "
                             "(--triplets); TAT keeps the text tower frozen")
        if not self.eval_alpha or any(not (0.0 <= a <= 1.0) for a in self.eval_alpha):
            raise ValueError(f"eval_alpha values must lie in [0, 1], got {self.eval_alpha}")

    @property
    def logit_scale(self) -> float | None:
        """The fixed logit scale 1/temperature (None: use the base model's learned scale)."""
        return None if self.temperature is None else 1.0 / self.temperature

    def to_dict(self) -> dict:
        """The config as JSON-able data (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def identity(self) -> dict:
        """The fields that define what a run computes: two runs with equal identity are the same run."""
        return {k: v for k, v in self.to_dict().items()
                if k not in RUNTIME_FIELDS and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}

    def replace(self, **changes) -> "TrainConfig":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def identity_hash(identity: dict) -> str:
    """A short stable hash of a run identity."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _positive(name: str, value, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
