"""The in-memory form every benchmark loader returns: a gallery, its image files and the queries."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cir.defaults import DEFAULT_ALPHA as ALPHA  # the paper's value for CIRCO and FashionIQ

BENCHMARKS = ("cirr", "circo", "fashioniq")
SPLITS = ("val", "test")
# The paper's default text weight per benchmark (docs/method.md, section 2).
DEFAULT_ALPHA = {"cirr": 0.9, "circo": ALPHA, "fashioniq": ALPHA}
TOP_K = 50


class BenchmarkError(ValueError):
    """A benchmark folder or annotation file is missing or malformed."""


class MissingImagesError(BenchmarkError):
    """Images the benchmark needs are absent or unreadable; `.missing` lists (id, path or reason)."""

    def __init__(self, benchmark: str, missing: list[tuple[str, str]], hint: str = ""):
        self.missing = missing
        shown = "\n".join(f"  {name}: {where}" for name, where in missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        super().__init__(
            f"{benchmark}: {len(missing)} image(s) missing or unreadable:\n{shown}{more}\n"
            f"{hint}Pass --skip-missing (skip_missing=True) to drop the affected queries and count them.")


@dataclass(frozen=True)
class CIRQuery:
    """One composed query; ids are strings, and targets are empty on test splits."""

    qid: str
    reference: str
    text: str
    target: str | None = None
    targets: tuple[str, ...] = ()
    members: tuple[str, ...] = ()
    alt_text: str | None = None
    raw: dict = field(default_factory=dict, compare=False, repr=False)
    filter: dict | None = field(default=None, compare=False)  # rank only gallery items matching it (cir.filters)

    def image_ids(self) -> tuple[str, ...]:
        """Every gallery id this query needs: reference, ground truths and subset members."""
        ids = (self.reference, *((self.target,) if self.target else ()), *self.targets, *self.members)
        return tuple(dict.fromkeys(ids))


@dataclass
class BenchmarkData:
    """One evaluable part of a benchmark (a FashionIQ category is its own part).

    `gallery` is the ranking order (ties are broken by it) and is None when the annotations
    needed to list it are absent (the excerpts ship no split or image-info file): the queries
    still parse, and evaluation raises `gallery_error`.
    """

    benchmark: str
    split: str
    part: str
    root: Path
    queries: list[CIRQuery]
    gallery: list[str] | None
    paths: dict[str, Path]
    remove_reference: bool
    gallery_error: str = ""
    missing_hint: str = ""
    metadata: dict[str, dict] = field(default_factory=dict)  # gallery id -> fields for query filters

    @property
    def has_targets(self) -> bool:
        """True when the split carries ground truth (val), False for test."""
        return any(q.target for q in self.queries)

    def require_gallery(self) -> list[str]:
        """The gallery ids, or a BenchmarkError saying which file is needed to list them."""
        if self.gallery is None:
            raise BenchmarkError(self.gallery_error or f"{self.benchmark}: no gallery")
        return self.gallery

    def image_path(self, image_id: str) -> Path:
        """Where an image of this benchmark lives (whether or not it exists)."""
        try:
            return self.paths[image_id]
        except KeyError:
            raise BenchmarkError(f"{self.benchmark}: image {image_id!r} is not listed in the gallery files") from None


def read_json(path: Path, what: str) -> Any:
    """Read an annotation file, turning absence and bad JSON into BenchmarkError."""
    if not path.is_file():
        raise BenchmarkError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BenchmarkError(f"{path} is not valid JSON: {exc}") from exc


def require_keys(entry: Any, keys: tuple[str, ...], path: Path, index: int) -> dict:
    """Check that annotation entry `index` of `path` is an object with `keys`."""
    if not isinstance(entry, dict):
        raise BenchmarkError(f"{path}: entry {index} is not an object")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise BenchmarkError(f"{path}: entry {index} lacks {', '.join(missing)}")
    return entry


def check_split(split: str) -> str:
    """Validate a split name ('val' or 'test')."""
    if split not in SPLITS:
        raise BenchmarkError(f"unknown split {split!r}; choose val or test")
    return split


def default_cache_dir() -> Path:
    """Where evaluation caches gallery embeddings: $CIR_CACHE_DIR/eval-gallery, else ~/.cache/cir/eval-gallery."""
    base = os.environ.get("CIR_CACHE_DIR") or Path.home() / ".cache" / "cir"
    return Path(base) / "eval-gallery"
