"""Constants that command lines and config dataclasses need, free of heavy imports.

A CLI builds its parser from these (and from its config dataclass's field defaults) before it
imports torch, so `--help` and usage errors answer at once. `cir.fusion` re-exports them.
"""

from __future__ import annotations

# The fusions `cir.fusion.fuse` knows: the method and the paper's three baselines.
FUSIONS = ("slerp", "linear", "image", "text")
# The text weight used when none is given: the paper's value for CIRCO and FashionIQ.
DEFAULT_ALPHA = 0.8
# The largest image file a job reads: a bigger file (or a device posing as one) is skipped.
DEFAULT_MAX_FILE_MB = 64
# Pillow's own default; a larger image is treated as a decompression bomb.
DEFAULT_MAX_PIXELS = 89_478_485
# Store locations that are servers, not index root folders (cir.stores.open_store).
REMOTE_STORE_SCHEMES = ("milvus://", "milvuss://")


def is_remote_store(spec) -> bool:
    """True when `spec` names a remote store (a milvus:// URL) rather than an index root folder."""
    return isinstance(spec, str) and spec.lower().startswith(REMOTE_STORE_SCHEMES)
