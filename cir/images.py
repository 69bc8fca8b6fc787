"""Image files and bytes: discovery, safe decoding and content hashing, shared by every app."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from cir.defaults import DEFAULT_MAX_PIXELS
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
# Modes Image.reduce works on directly (others are converted to RGB first).
REDUCIBLE_MODES = ("L", "LA", "RGB", "RGBA", "I", "F")
# After a decode this large, freed memory is handed back to the OS at once.
TRIM_AFTER_BYTES = 32 << 20


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not Linux/glibc (musl, macOS, Windows): nothing to trim
        return None
    return libc if hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()


class DecodeBudget:
    """Bounds the memory of the decodes running at once: each holds its decoded size while it runs,
    and waits until the others leave room (one larger than the whole budget runs alone)."""

    def __init__(self, max_bytes: int):
        if max_bytes < 1:
            raise ValueError("a decode budget needs at least one byte")
        self.max_bytes = max_bytes
        self.used = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        """Hold `nbytes` of the budget for the duration of the block (blocking until they are free)."""
        nbytes = min(nbytes, self.max_bytes)
        with self._cond:
            self._cond.wait_for(lambda: self.used + nbytes <= self.max_bytes)
            self.used += nbytes
        try:
            yield
        finally:
            with self._cond:
                self.used -= nbytes
                self._cond.notify_all()


def release_memory() -> None:
    """Hand freed heap memory back to the OS (glibc keeps it in its arenas otherwise); a no-op elsewhere."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


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


def _reduce_factor(size: tuple[int, int], reduce_for: int | None) -> int:
    # Keep at least twice the consumer's side: its own (antialiased) resize does the last step,
    # so images up to about 4x the model's input decode exactly as before.
    return max(1, min(size) // (2 * reduce_for)) if reduce_for else 1


def decode_image(data: bytes | str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, reduce_for: int | None = None,
                 budget: DecodeBudget | None = None) -> Image.Image:
    """Decode bytes or a file into an upright RGB PIL image, or raise ImageDecodeError.

    `reduce_for`: the side the caller resizes the image to next (a model's input); a much larger
    image is then decoded small (JPEG DCT scaling) or reduced at once by an integer factor, never
    below twice that side. `budget` bounds the memory of the decodes running at once.
    """
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    held = 0
    try:
        with warnings.catch_warnings():
            # max_pixels is checked below from the header; Pillow's own guard (twice its warning
            # limit) still raises DecompressionBombError while it opens a larger image.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source, formats=PILLOW_FORMATS) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise ImageTooLargeError(f"image has {width}x{height} pixels, over the limit of {max_pixels}")
                factor = _reduce_factor(im.size, reduce_for)
                if factor > 1 and im.format == "JPEG":
                    im.draft("RGB", (width // factor, height // factor))  # libjpeg decodes at 1/2, 1/4 or 1/8
                    factor = _reduce_factor(im.size, reduce_for)
                # Pillow keeps 4 bytes a pixel; a full-size mode conversion needs a second copy
                full_copy = factor == 1 or im.mode not in REDUCIBLE_MODES
                held = im.width * im.height * 4 * (2 if full_copy else 1)
                with budget.hold(held) if budget is not None else contextlib.nullcontext():
                    im.load()
                    image = _upright(im)
                    if factor > 1:
                        image = (image if image.mode in REDUCIBLE_MODES else image.convert("RGB")).reduce(factor)
                    return image.convert("RGB")
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image is too large to decode: {error_text(exc, with_type=False)}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"not a decodable image: {error_text(exc, with_type=False)}") from exc
    finally:
        if held >= TRIM_AFTER_BYTES:
            release_memory()


def bytes_sha256(data: bytes) -> str:
    """sha256 (hex) of bytes in memory: equals file_sha256 of a file holding them (the items' `sha256`)."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
