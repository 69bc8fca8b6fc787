"""Render styles of the shapes world: what surrounds the object, never the object itself.

`plain` is the world the built-in toy model was trained on: a flat grey background. `textured`
puts the same object over a background that no caption mentions (a tinted, low-saturation
surface with a soft texture, a few faint clutter strokes, and a lighting ramp over the whole
image), a shifted image domain for Text-Anchored Tuning to close (docs/tat.md). The object's
shape, colour, size, position and pattern are untouched, so every caption and query stays
true. A style draws from its own random stream, never from the object's, so a textured world
keeps the object geometry and the captions of the plain world with the same seed.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

STYLES = ("plain", "textured")
DEFAULT_STYLE = "plain"


@dataclass(frozen=True)
class Textured:
    """How strong each part of the textured background is (calibrated in docs/tat.md)."""

    saturation: tuple[float, float] = (0.0, 0.08)  # background tint, HSV saturation range
    value: tuple[float, float] = (0.45, 0.55)  # background brightness range (HSV value; plain grey is 0.5)
    texture: float = 6.0  # amplitude of the smooth value-noise texture, in 8-bit levels
    texture_cells: tuple[int, int] = (3, 7)  # noise grid cells across the image
    strokes: tuple[int, int] = (1, 3)  # faint clutter strokes (lines and rings) per image
    stroke_contrast: float = 25.0  # their brightness offset from the local background
    light: float = 0.05  # lighting ramp: gain 1 - light .. 1 + light across the image

TEXTURED = Textured()


def check_style(style: str) -> str:
    """Return `style` if it is a known style, else raise ValueError."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
    return style


def style_info(style: str) -> dict:
    """What world.json records about the style: nothing for plain (old worlds stay byte-identical)."""
    if check_style(style) == DEFAULT_STYLE:
        return {}
    return {"style": style, "textured": dataclasses.asdict(TEXTURED)}


def _tint(rng: np.random.Generator, p: Textured) -> np.ndarray:
    h, s, v = rng.uniform(0, 1), rng.uniform(*p.saturation), rng.uniform(*p.value)
    return np.asarray(colorsys.hsv_to_rgb(h, s, v), np.float32) * 255


def _value_noise(big: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise in [-1, 1] on a big x big canvas: a random grid, bicubically upsampled."""
    grid = rng.uniform(-1, 1, (cells + 1, cells + 1)).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((big, big), Image.BICUBIC)
    return np.clip(np.asarray(img), -1, 1)


def _strokes(big: int, rng: np.random.Generator, p: Textured) -> np.ndarray:
    """Offsets in 8-bit levels of a few faint lines and rings (the clutter)."""
    canvas = Image.new("F", (big, big), 0.0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(p.strokes[0], p.strokes[1] + 1)):
        level = float(rng.choice([-1.0, 1.0]) * p.stroke_contrast * rng.uniform(0.6, 1.0))
        width = int(rng.integers(1, 3)) * big // 64
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(-0.1, 1.1, 4) * big)
        if rng.uniform() < 0.6:
            draw.line((x0, y0, x1, y1), fill=level, width=max(width, 1))
        else:
            r = rng.uniform(0.08, 0.3) * big
            draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), outline=level, width=max(width, 1))
    return np.asarray(canvas)


def textured_background(big: int, rng: np.random.Generator, p: Textured = TEXTURED) -> np.ndarray:
    """A (big, big, 3) float background: tint + texture + clutter strokes."""
    cells = int(rng.integers(p.texture_cells[0], p.texture_cells[1] + 1))
    shade = p.texture * _value_noise(big, cells, rng) + _strokes(big, rng, p)
    return np.clip(_tint(rng, p)[None, None, :] + shade[..., None], 0, 255)


def lighting(size: int, rng: np.random.Generator, p: Textured = TEXTURED) -> np.ndarray:
    """A (size, size, 1) gain field: a linear light ramp in a random direction over the whole image."""
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size - 0.5
    ramp = (xx * math.cos(angle) + yy * math.sin(angle)) / (math.sqrt(2) / 2)  # in [-1, 1]
    return (1 + p.light * rng.uniform(0.5, 1.0) * ramp)[..., None]
