"""Cached JPEG thumbnails of gallery images: a few fixed sizes, keyed by content hash, bounded (LRU).

A requested size is rounded up to one of THUMB_SIZES, so at most five thumbnails exist per
image whatever sizes clients ask for, and the cache folder is held under a byte and a file
budget by evicting the least recently used thumbnails. Thumbnails come back as bytes (they are
small), so an eviction can never remove a file a response is about to send.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from cir.images import DecodeBudget, decode_image
from cir.io import atomic_write_bytes

log = logging.getLogger(__name__)

THUMB_SIZES = (64, 128, 256, 512, 1024)


def thumb_size(size: int) -> int:
    """The cached size serving a request for `size` pixels: the next of THUMB_SIZES (the largest at most)."""
    return next((s for s in THUMB_SIZES if s >= size), THUMB_SIZES[-1])


class ThumbnailCache:
    """Makes and keeps longest-side `thumb_size(size)` JPEG thumbnails in `folder`, LRU-bounded."""

    def __init__(self, folder: str | Path, max_pixels: int, max_bytes: int = 256 << 20, max_files: int = 10_000,
                 budget: DecodeBudget | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_pixels, self.max_bytes, self.max_files = max_pixels, max_bytes, max_files
        self.budget = budget
        self._lock = threading.Lock()
        self._entries: OrderedDict[Path, int] = OrderedDict()  # path -> bytes, least recently used first
        self._bytes = 0
        # thumbnails left by an earlier run count too (oldest first), so a restart keeps the bound
        for path in sorted(self.folder.glob("*/*.jpg"), key=lambda p: p.stat().st_mtime):
            self._remember(path, path.stat().st_size)
        self._evict()

    def path_for(self, item: dict, size: int) -> Path:
        """Where the thumbnail of `item` for a request of `size` lives (content hash: a changed image gets a new one)."""
        key = item.get("sha256") or hashlib.sha256(f"{item['path']}".encode()).hexdigest()
        return self.folder / key[:2] / f"{key}-{thumb_size(size)}.jpg"

    def get(self, item: dict, size: int) -> bytes:
        """The thumbnail's JPEG bytes, made on first use (call from a worker thread)."""
        target = self.path_for(item, size)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            data = self._make(item, thumb_size(size))
            atomic_write_bytes(target, data)
        with self._lock:
            self._remember(target, len(data))
            self._evict()
        return data

    def _make(self, item: dict, side: int) -> bytes:
        image = decode_image(item["path"], max_pixels=self.max_pixels, reduce_for=side, budget=self.budget)
        image.thumbnail((side, side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=85)
        return buf.getvalue()

    def _remember(self, path: Path, size: int) -> None:
        self._bytes += size - self._entries.pop(path, 0)
        self._entries[path] = size

    def _evict(self) -> None:
        # the newest entry always stays, even when it alone is over the budget
        while len(self._entries) > 1 and (len(self._entries) > self.max_files or self._bytes > self.max_bytes):
            path, size = self._entries.popitem(last=False)
            self._bytes -= size
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove thumbnail %s: %s", path, exc)
