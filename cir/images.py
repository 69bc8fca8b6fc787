"""Image files and bytes: discovery, safe decoding and content hashing, shared by every app."""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from cir.errors import error_text



@dataclass(frozen=True)
class ImageFormat:
    """An accepted image format: how files are named, how its bytes start, which Pillow plugins read it."""

    name: str
    label: str
    extensions: tuple[str, ...]
    pillow: tuple[str, ...]
    sniff: Callable[[bytes], bool]


def _is_bmp(data: bytes) -> bool:
    # "BM" alone is too weak a signature: also check the DIB header size of a real bitmap.
    return data[:2] == b"BM" and int.from_bytes(data[14:18], "little") in (12, 40, 52, 56, 64, 108, 124)


# The one list of formats the indexer, training and the service accept (Pillow's JPEG plugin
# also reads the multi-picture JPEGs, MPO, of phone cameras).
IMAGE_FORMATS = (
    ImageFormat("jpeg", "JPEG", (".jpg", ".jpeg"), ("JPEG",), lambda b: b[:3] == b"\xff\xd8\xff"),
    ImageFormat("png", "PNG", (".png",), ("PNG",), lambda b: b[:8] == b"\x89PNG\r\n\x1a\n"),
    ImageFormat("webp", "WebP", (".webp",), ("WEBP",), lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP"),
    ImageFormat("bmp", "BMP", (".bmp",), ("BMP",), _is_bmp),
)
IMAGE_EXTENSIONS = tuple(ext for f in IMAGE_FORMATS for ext in f.extensions)
PILLOW_FORMATS = tuple(name for f in IMAGE_FORMATS for name in f.pillow)
FORMATS_TEXT = ", ".join(f.label for f in IMAGE_FORMATS[:-1]) + f" or {IMAGE_FORMATS[-1].label}"
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


def sniff_image_type(data: bytes) -> str | None:
    """The format of image bytes from their first bytes ('jpeg', 'png', 'webp', 'bmp'), or None."""
    return next((f.name for f in IMAGE_FORMATS if f.sniff(data)), None)


def _upright(image: Image.Image) -> Image.Image:
    """The image as it is meant to be seen: its EXIF Orientation (camera rotation/mirroring) applied."""
    if image.getexif().get(ExifTags.Base.Orientation, 1) in range(2, 9):
        return ImageOps.exif_transpose(image)
    return image  # no orientation to apply: no copy


def decode_image(data: bytes | str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Fully decode bytes or a file into an upright RGB PIL image, or raise ImageDecodeError."""
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        with warnings.catch_warnings():
            # max_pixels is checked below from the header; Pillow's own guard (twice its warning
            # limit) still raises DecompressionBombError while it opens a larger image.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source, formats=PILLOW_FORMATS) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise ImageTooLargeError(f"image has {width}x{height} pixels, over the limit of {max_pixels}")
                im.load()
                return _upright(im).convert("RGB")
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image is too large to decode: {error_text(exc, with_type=False)}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"not a decodable image: {error_text(exc, with_type=False)}") from exc


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
