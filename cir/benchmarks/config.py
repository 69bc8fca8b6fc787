"""What an evaluation is asked (EvalConfig) and what it produced (PartRun, EvalRun): no heavy imports.

The runner fills these and the scoring reads them; both import them from here, never each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from cir.benchmarks.data import BENCHMARKS, TOP_K, BenchmarkData, check_split
from cir.benchmarks.fashioniq import check_categories
from cir.defaults import DEFAULT_ALPHA, FUSIONS

CAPTION_ORDERS = ("forward", "both")


def fusion_key(name: str, alpha: float) -> str:
    """The results key of a fusion: '<name>@<alpha:.2f>' (image is always @0.00, text @1.00)."""
    return f"{name}@{alpha:.2f}"


def normalize_fusions(fusions: Iterable[tuple[str, float]]) -> tuple[tuple[str, float], ...]:
    """Validate (name, alpha) pairs, pin image/text to alpha 0/1 and drop duplicates, keeping order."""
    out: dict[str, tuple[str, float]] = {}
    for name, alpha in fusions:
        if name not in FUSIONS:
            raise ValueError(f"unknown fusion {name!r}; choose from {', '.join(FUSIONS)}")
        alpha = {"image": 0.0, "text": 1.0}.get(name, float(alpha))
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha (the text weight) must lie in [0, 1], got {alpha}")
        out.setdefault(fusion_key(name, alpha), (name, round(alpha, 6)))
    if not out:
        raise ValueError("at least one fusion is needed")
    return tuple(out.values())


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how; validated on construction."""

    benchmark: str
    root: Path
    split: str = "val"
    fusions: tuple[tuple[str, float], ...] = (("slerp", DEFAULT_ALPHA),)
    batch_size: int = 64
    workers: int = 2
    cache_dir: Path | None = None
    skip_missing: bool = False
    categories: tuple[str, ...] | None = None
    caption_order: str = "forward"
    top_k: int = TOP_K
    progress: bool = True
    single_index: bool = False

    def __post_init__(self):
        if self.benchmark not in BENCHMARKS:
            raise ValueError(f"unknown benchmark {self.benchmark!r}; choose from {', '.join(BENCHMARKS)}")
        check_split(self.split)
        object.__setattr__(self, "root", Path(self.root).expanduser())
        object.__setattr__(self, "fusions", normalize_fusions(self.fusions))
        if self.batch_size < 1 or self.workers < 0 or self.top_k < 1:
            raise ValueError("batch_size and top_k must be >= 1 and workers >= 0")
        if self.caption_order not in CAPTION_ORDERS:
            raise ValueError(f"caption_order must be one of {', '.join(CAPTION_ORDERS)}")
        if self.categories is not None:
            if self.benchmark != "fashioniq":
                raise ValueError("categories apply to fashioniq only")
            object.__setattr__(self, "categories", check_categories(self.categories))
        if self.single_index and self.benchmark != "fashioniq":
            raise ValueError("single_index applies to fashioniq only")

    @property
    def keys(self) -> list[str]:
        """The results keys, in request order."""
        return [fusion_key(n, a) for n, a in self.fusions]


@dataclass
class PartRun:
    """One part's evaluated queries and, per fusion key, each query's top-k and subset ranking."""

    data: BenchmarkData
    gallery_size: int
    rankings: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    subsets: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)
    truncated_texts: int = 0


@dataclass
class EvalRun:
    """Everything one evaluation produced: the report dict (evaluate's return value) and the rankings."""

    config: EvalConfig
    report: dict
    parts: list[PartRun]
