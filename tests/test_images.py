"""cir.images: the one list of accepted formats, and the one decode function."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import ExifTags, Image

from cir.encoder import load_encoder
from cir.errors import error_text
from cir.images import (IMAGE_EXTENSIONS, IMAGE_FORMATS, DecodeBudget, ImageDecodeError, ImageTooLargeError,
                        decode_image, sniff_image_type)


@pytest.fixture(scope="module")
def toy_encoder():
    return load_encoder("toy", device="cpu")


def _encoded(fmt: str, size=(40, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (10, 120, 200)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", [f.pillow[0] for f in IMAGE_FORMATS])
def test_every_accepted_format_sniffs_and_decodes(fmt):
    data = _encoded(fmt)
    expected = next(f.name for f in IMAGE_FORMATS if fmt in f.pillow)
    assert sniff_image_type(data) == expected
    image = decode_image(data)
    assert image.mode == "RGB" and image.size == (40, 30)


def test_extensions_and_sniffing_are_one_list():
    assert set(IMAGE_EXTENSIONS) == {ext for f in IMAGE_FORMATS for ext in f.extensions}
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp"} <= set(IMAGE_EXTENSIONS)
    assert sniff_image_type(b"BM this is a text that starts like a bitmap") is None
    assert sniff_image_type(_encoded("GIF")) is None


def test_formats_outside_the_list_are_not_decoded():
    """Pillow reads dozens of formats; only the accepted ones are opened (no GIF, no EPS, ...)."""
    with pytest.raises(ImageDecodeError):
        decode_image(_encoded("GIF"))
    with pytest.raises(ImageDecodeError):
        decode_image(_encoded("TIFF"))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels in a few bytes (a decompression bomb's header)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [7000, 20000])
def test_decompression_bombs_are_too_large_not_corrupt(side):
    """Under Pillow's own guard our limit fires; far over it Pillow's fires while opening: both 'too large'."""
    with pytest.raises(ImageTooLargeError):
        decode_image(png_header_only(side, side), max_pixels=40_000_000)


def test_decode_errors_carry_no_object_reprs():
    with pytest.raises(ImageDecodeError) as info:
        decode_image(b"\xff\xd8\xff" + b"garbage" * 10)  # sniffs as JPEG, no plugin can read it
    assert " at 0x" not in str(info.value) and "cannot identify image file" in str(info.value)


def test_error_text():
    class Boom(Exception):
        pass
    assert error_text(Boom("cannot read <_io.BytesIO object at 0x7f3a2b1c> now")) == "Boom: cannot read now"
    assert error_text(Boom("bad <Foo at 0xDEADbeef>"), with_type=False) == "bad"
    assert error_text(Boom("")) == "Boom: no details"


def exif_rotated_jpeg(upright: Image.Image, quality: int = 95) -> bytes:
    """What a phone camera writes: the pixels stored turned, EXIF Orientation=6 saying how to turn them back."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # the viewer turns the stored pixels 90 degrees clockwise
    buf = io.BytesIO()
    upright.convert("RGB").transpose(Image.Transpose.ROTATE_90).save(buf, format="JPEG", quality=quality, exif=exif)
    return buf.getvalue()


def test_exif_orientation_is_applied():
    upright = Image.new("RGB", (60, 40), (250, 250, 250))
    upright.paste((200, 20, 20), (0, 0, 20, 20))  # a red square top left
    image = decode_image(exif_rotated_jpeg(upright))
    assert image.size == (60, 40)
    diff = np.abs(np.asarray(image, dtype=np.int16) - np.asarray(upright, dtype=np.int16)).mean()
    assert diff < 6, diff
    plain = io.BytesIO()
    upright.save(plain, format="JPEG", quality=95)
    assert decode_image(plain.getvalue()).size == (60, 40)  # no EXIF: untouched


# --- early reduction of large images and the decode memory budget ---------------------------

def _shape_picture(side: int) -> Image.Image:
    """A smooth scene (a disc and a bar on a gradient) at `side` pixels: what a resize must preserve."""
    y, x = np.mgrid[0:side, 0:side] / side
    rgb = np.stack([x * 200, y * 180, (1 - x) * 150], axis=-1)
    rgb[(x - 0.35) ** 2 + (y - 0.4) ** 2 < 0.04] = (240, 40, 40)
    rgb[(y > 0.7) & (y < 0.8) & (x > 0.2)] = (20, 20, 220)
    return Image.fromarray(rgb.astype(np.uint8))


@pytest.mark.parametrize("side,fmt", [(32, "PNG"), (127, "PNG"), (127, "JPEG")])
def test_images_up_to_four_times_the_model_side_decode_as_before(side, fmt):
    buf = io.BytesIO()
    _shape_picture(side).save(buf, format=fmt)
    reduced, full = decode_image(buf.getvalue(), reduce_for=32), decode_image(buf.getvalue())
    assert reduced.size == full.size and reduced.tobytes() == full.tobytes()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_large_images_are_reduced_early_with_the_same_embedding(fmt, toy_encoder):
    buf = io.BytesIO()
    _shape_picture(2400).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    reduced, full = decode_image(buf.getvalue(), reduce_for=32), decode_image(buf.getvalue())
    assert full.size == (2400, 2400) and 64 <= min(reduced.size) < 128
    v = toy_encoder.encode_images([reduced, full])
    assert float(v[0] @ v[1]) > 0.99


def test_the_decode_budget_bounds_concurrent_decodes():
    budget = DecodeBudget(100)
    peak, lock = [0], threading.Lock()

    def work(n: int) -> None:
        with budget.hold(n):
            with lock:
                peak[0] = max(peak[0], budget.used)
            time.sleep(0.01)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, [40, 40, 40, 70, 500, 10, 30, 60] * 3))  # 500 > the budget: runs alone
    assert 0 < peak[0] <= 100 and budget.used == 0
    with pytest.raises(ValueError):
        DecodeBudget(0)
