"""Procedural rendering of one shapes-world object into a small RGB image.

Each render of a combination differs a little (size, position, rotation, hue, stripe phase,
pixel noise) so that no two gallery images are identical, while every attribute stays readable
at 32 px. Drawing happens at 4x resolution and is box-filtered down, which anti-aliases edges.
The style (cir.toyworld.styles) decides the background and the lighting only.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from PIL import Image, ImageDraw

from cir.toyworld.spec import BACKGROUND, DEFAULT_IMAGE_SIZE, RGB, Attrs, to_attrs
from cir.toyworld.styles import DEFAULT_STYLE, check_style, lighting, textured_background

SUPERSAMPLE = 4
EXTENT = {"small": 0.38, "large": 0.64}  # object diameter as a share of the canvas
MARGIN = 0.05  # share of the canvas kept free at the border
STRIPE_PERIOD = 0.15  # share of the canvas
STRIPE_DARKEN = 0.45
MAX_ROTATION = 15.0  # degrees
COLOUR_JITTER = 12
NOISE_STD = 3.0


def _star(n_points: int = 5, outer: float = 1.12, inner: float = 0.48) -> list[tuple[float, float]]:
    pts = []
    for i in range(2 * n_points):
        radius = outer if i % 2 == 0 else inner
        angle = math.pi / 2 + i * math.pi / n_points
        pts.append((radius * math.cos(angle), -radius * math.sin(angle) + 0.08))
    return pts


def _cross(arm: float = 0.36, length: float = 1.0) -> list[tuple[float, float]]:
    a, s = arm, length
    return [(-a, -s), (a, -s), (a, -a), (s, -a), (s, a), (a, a), (a, s), (-a, s), (-a, a),
            (-s, a), (-s, -a), (-a, -a)]


# Unit outlines (radius ~1, y pointing down); sized so the shapes cover similar areas.
OUTLINES: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.86, -0.86), (0.86, -0.86), (0.86, 0.86), (-0.86, 0.86)],
    "triangle": [(0.0, -1.08), (1.1, 0.82), (-1.1, 0.82)],
    "star": _star(),
    "cross": _cross(),
}


def _outline(shape: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    """The shape's polygon placed at (cx, cy), scaled and rotated (angle in radians)."""
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    return [(cx + radius * (x * cos_a - y * sin_a), cy + radius * (x * sin_a + y * cos_a))
            for x, y in OUTLINES[shape]]


def _mask(attrs: Attrs, size: int, rng: np.random.Generator) -> np.ndarray:
    """Coverage of the object on the supersampled canvas, float in [0, 1]."""
    big = size * SUPERSAMPLE
    radius = EXTENT[attrs.size] * rng.uniform(0.93, 1.07) * big / 2
    offset = big / 2 - radius - MARGIN * big
    vertical, horizontal = attrs.position.split()
    cx = big / 2 + (offset if horizontal == "right" else -offset) + rng.uniform(-0.03, 0.03) * big
    cy = big / 2 + (offset if vertical == "bottom" else -offset) + rng.uniform(-0.03, 0.03) * big
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    if attrs.shape == "circle":
        r = radius * 0.95
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    else:
        angle = math.radians(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
        draw.polygon(_outline(attrs.shape, cx, cy, radius, angle), fill=255)
    return np.asarray(canvas, dtype=np.float32) / 255.0


def _fill(attrs: Attrs, size: int, rng: np.random.Generator) -> np.ndarray:
    """The object's colour field (H, W, 3) on the supersampled canvas, with stripes if any."""
    big = size * SUPERSAMPLE
    base = np.clip(np.asarray(RGB[attrs.colour], np.float32) + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, 3), 0, 255)
    fill = np.broadcast_to(base, (big, big, 3)).copy()
    if attrs.pattern == "striped":
        yy, xx = np.mgrid[0:big, 0:big].astype(np.float32)
        phase = rng.uniform(0, 1)
        dark = ((xx + yy) / (STRIPE_PERIOD * big * math.sqrt(2)) + phase) % 1.0 < 0.5
        fill[dark] *= STRIPE_DARKEN
    return fill


def render(attrs: Mapping[str, str] | Attrs, rng: np.random.Generator,
           image_size: int = DEFAULT_IMAGE_SIZE, style: str = DEFAULT_STYLE) -> Image.Image:
    """Render one object with the given attributes as an RGB image of image_size x image_size.

    A non-plain style draws its background and lighting from a child stream (`rng.spawn`), which
    leaves `rng` itself as a plain render leaves it: the same object, and the same caption drawn
    from `rng` afterwards.
    """
    a = to_attrs(attrs)
    check_style(style)
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 px, got {image_size}")
    mask = _mask(a, image_size, rng)[..., None]
    fill = _fill(a, image_size, rng)
    k = SUPERSAMPLE
    if style == "plain":
        background, gain = np.asarray(BACKGROUND, np.float32), None
    else:
        style_rng = rng.spawn(1)[0]
        background = textured_background(image_size * k, style_rng)
        gain = lighting(image_size, style_rng)
    big = background * (1 - mask) + fill * mask
    small = big.reshape(image_size, k, image_size, k, 3).mean(axis=(1, 3))
    if gain is not None:
        small *= gain
    small += rng.normal(0.0, NOISE_STD, small.shape)
    return Image.fromarray(np.clip(np.rint(small), 0, 255).astype(np.uint8), "RGB")


def render_array(attrs: Mapping[str, str] | Attrs, rng: np.random.Generator,
                 image_size: int = DEFAULT_IMAGE_SIZE, style: str = DEFAULT_STYLE) -> np.ndarray:
    """Like `render` but returns the (H, W, 3) uint8 array (for in-memory training pools)."""
    return np.asarray(render(attrs, rng, image_size, style))
