"""Cached JPEG thumbnails of gallery images, keyed by content hash and size."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image

from cir.images import decode_image
from cir.io import atomic_write_bytes


class ThumbnailCache:
    """Makes and keeps `size`-pixel (longest side) JPEG thumbnails in `folder`."""

    def __init__(self, folder: str | Path, max_pixels: int):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_pixels = max_pixels

    def path_for(self, item: dict, size: int) -> Path:
        """Where the thumbnail of `item` at `size` lives (content hash, so a changed image gets a new one)."""
        key = item.get("sha256") or hashlib.sha256(f"{item['path']}".encode()).hexdigest()
        return self.folder / key[:2] / f"{key}-{size}.jpg"

    def get(self, item: dict, size: int) -> Path:
        """The thumbnail's path, made on first use (call from a worker thread)."""
        target = self.path_for(item, size)
        if target.is_file():
            return target
        image = decode_image(item["path"], max_pixels=self.max_pixels)
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=85)
        atomic_write_bytes(target, buf.getvalue())
        return target
