"""cir.images: the one list of accepted formats, and the one decode function."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from cir.images import IMAGE_EXTENSIONS, IMAGE_FORMATS, ImageDecodeError, decode_image, sniff_image_type


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
