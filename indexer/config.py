"""The build job's configuration: a frozen, validated dataclass."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cir.defaults import DEFAULT_ALPHA, DEFAULT_MAX_FILE_MB, DEFAULT_MAX_PIXELS
from cir.index_factory import FORMS, parse_factory
from cir.runtimes import DEFAULT_RUNTIME, check_runtime
from indexer.skips import parse_max_skipped

EXECUTORS = ("local", "ray")
DEVICES = ("auto", "cpu", "cuda")
GPU_INDEX = ("auto", "yes", "no")
# One core stays with the encoder's process (collation, host-to-device copies).
DEFAULT_WORKERS = max(1, min(8, (os.cpu_count() or 2) - 1))
# Text weight of a composed gallery item (slerp(image, title, B)) when --item-text is given alone.
DEFAULT_ITEM_ALPHA = 0.1


@dataclass(frozen=True)
class BuildConfig:
    """Everything `cir index build` needs; validated on construction."""

    gallery: Path
    model: str
    out: Path
    adapter: Path | None = None
    factory: str = "auto"
    batch_size: int = 64
    workers: int = DEFAULT_WORKERS
    device: str = "auto"
    dtype: str = "auto"
    runtime: str = DEFAULT_RUNTIME
    onnx_cache: Path | None = None
    executor: str = "local"
    keep: int = 3
    alpha: float = DEFAULT_ALPHA
    force_new: bool = False
    shard_size: int = 4096
    recall_target: float = 0.95
    flat_max: int = 20_000
    max_memory_gb: float | None = None
    gpu_index: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_mb: float = DEFAULT_MAX_FILE_MB
    follow_symlinks: bool = False
    item_text: str | None = None
    item_alpha: float | None = None
    progress: bool = True
    max_skipped: str | None = None  # "N" files or "P%" of the gallery (indexer.skips); None: no limit
    discard_live_changes: bool = False  # build although ROOT has live changes not folded into a version

    def __post_init__(self):
        if self.factory != "auto":
            try:
                parse_factory(self.factory)
            except ValueError:
                raise ValueError(f"unsupported --factory {self.factory!r}; use auto, {FORMS}") from None
        if self.batch_size < 1 or self.shard_size < 1:
            raise ValueError("--batch-size and --shard-size must be >= 1")
        if self.workers < 0:
            raise ValueError("--workers must be >= 0")
        if self.device not in DEVICES:
            raise ValueError(f"--device must be one of {', '.join(DEVICES)}")
        if self.executor not in EXECUTORS:
            raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}")
        check_runtime(self.runtime, self.device, self.dtype)
        if self.runtime != DEFAULT_RUNTIME and self.executor != "local":
            raise ValueError(f"--runtime {self.runtime} embeds with --executor local only (Ray actors run torch)")
        if self.keep < 1:
            raise ValueError("--keep must be >= 1 (the published version is always kept)")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError("--alpha must be in [0, 1] (the text weight of Slerp)")
        if not 0.0 < self.recall_target <= 1.0:
            raise ValueError("--recall-target must be in (0, 1]")
        if self.flat_max < 0:
            raise ValueError("--flat-max must be >= 0")
        if self.max_memory_gb is not None and self.max_memory_gb <= 0:
            raise ValueError("--max-memory-gb must be > 0")
        if self.gpu_index not in GPU_INDEX:
            raise ValueError("--gpu-index must be auto, yes or no")
        if self.max_pixels < 1:
            raise ValueError("--max-pixels must be >= 1")
        if not self.max_file_mb > 0:
            raise ValueError("--max-file-mb must be > 0")
        if self.item_text is not None and not self.item_text.strip():
            raise ValueError("--item-text must name a manifest field, e.g. title")
        if self.item_alpha is not None and self.item_text is None:
            raise ValueError("--item-alpha needs --item-text (the manifest field that holds each item's text)")
        if self.item_alpha is not None and not 0.0 <= self.item_alpha <= 1.0:
            raise ValueError("--item-alpha must be in [0, 1] (the text weight of a composed gallery item)")
        if self.max_skipped is not None:
            parse_max_skipped(self.max_skipped)

    @property
    def item_weight(self) -> float:
        """The text weight B of composed gallery items (0: the items are their images)."""
        if self.item_text is None:
            return 0.0
        return DEFAULT_ITEM_ALPHA if self.item_alpha is None else self.item_alpha

    @property
    def max_file_bytes(self) -> int:
        """The file size limit in bytes."""
        return int(self.max_file_mb * 2**20)
