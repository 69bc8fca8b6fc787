"""Image files and bytes: discovery, safe decoding and content hashing, shared by every app."""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Iterator

from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# Pillow's own default; a larger image is treated as a decompression bomb.
DEFAULT_MAX_PIXELS = 89_478_485


class ImageDecodeError(ValueError):
    """The data is not a decodable image (unknown format, truncated or corrupt)."""


class ImageTooLargeError(ImageDecodeError):
    """The image has more pixels than allowed (a decompression bomb guard)."""


def iter_image_files(root: str | Path) -> Iterator[Path]:
    """Yield image files under root recursively, in a stable sorted order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                yield Path(dirpath) / name


def decode_image(data: bytes | str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Fully decode bytes or a file into an RGB PIL image, or raise ImageDecodeError."""
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        with Image.open(source) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise ImageTooLargeError(f"image has {width}x{height} pixels, over the limit of {max_pixels}")
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im.load()
            return im.convert("RGB")
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"not a decodable image: {exc}") from exc


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
