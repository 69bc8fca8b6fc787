"""The shapes world's attributes, their combinations and the fixed held-out combinations.

One object on a plain grey background, described by five attributes. The held-out list is a
property of the world itself (the same for every seed): no training caption ever shows one of
these combinations, so composed queries whose target is one of them test compositional
generalisation, i.e. what "zero-shot" means here.
"""

from __future__ import annotations

import itertools
from typing import Iterator, Mapping, NamedTuple

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple")
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
PATTERNS = ("solid", "striped")

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": COLOURS,
    "size": SIZES,
    "position": POSITIONS,
    "pattern": PATTERNS,
}

# RGB of each colour name; far apart so that a striped (darkened) render keeps its hue.
RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (235, 220, 35),
    "green": (40, 165, 60),
    "blue": (45, 85, 225),
    "purple": (145, 55, 195),
}
BACKGROUND = (128, 128, 128)
DEFAULT_IMAGE_SIZE = 32

# One colour per shape, never shown together in training: 5 of the 30 shape-colour pairs,
# i.e. 80 of the 480 combinations. Every shape and every colour is still seen elsewhere.
HELDOUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("circle", "green"),
    ("square", "purple"),
    ("triangle", "orange"),
    ("star", "blue"),
    ("cross", "yellow"),
)


class Attrs(NamedTuple):
    """The full description of one render: one value per attribute."""

    shape: str
    colour: str
    size: str
    position: str
    pattern: str

    def as_dict(self) -> dict[str, str]:
        """The attributes as a plain JSON-able dict."""
        return dict(self._asdict())

    def replace(self, **changes: str) -> "Attrs":
        """A copy with some attributes changed (validated)."""
        return to_attrs({**self.as_dict(), **changes})


def to_attrs(value: Mapping[str, str] | Attrs) -> Attrs:
    """Validate a mapping of all five attributes and return it as `Attrs`."""
    if isinstance(value, Attrs):
        return value
    missing = [name for name in ATTRIBUTES if name not in value]
    if missing:
        raise ValueError(f"attributes missing: {', '.join(missing)}")
    for name, allowed in ATTRIBUTES.items():
        if value[name] not in allowed:
            raise ValueError(f"unknown {name} {value[name]!r}; choose one of {', '.join(allowed)}")
    return Attrs(**{name: value[name] for name in ATTRIBUTES})


def all_combinations() -> list[Attrs]:
    """Every attribute combination in a fixed order (480 of them)."""
    return [Attrs(*values) for values in itertools.product(*ATTRIBUTES.values())]


def is_heldout(attrs: Mapping[str, str] | Attrs) -> bool:
    """True when the combination is one that training data must never show."""
    a = to_attrs(attrs)
    return (a.shape, a.colour) in HELDOUT_PAIRS


def seen_combinations() -> list[Attrs]:
    """The combinations that training captions may show."""
    return [a for a in all_combinations() if not is_heldout(a)]


def heldout_combinations() -> list[Attrs]:
    """The combinations kept out of every training set."""
    return [a for a in all_combinations() if is_heldout(a)]


def differing(a: Attrs, b: Attrs) -> list[str]:
    """Names of the attributes in which two combinations differ."""
    return [name for name in ATTRIBUTES if getattr(a, name) != getattr(b, name)]


def iter_neighbours(a: Attrs) -> Iterator[Attrs]:
    """Combinations that differ from `a` in exactly one attribute."""
    for name, values in ATTRIBUTES.items():
        for value in values:
            if value != getattr(a, name):
                yield a.replace(**{name: value})


def spec_dict() -> dict:
    """The world specification as JSON (written to world.json)."""
    return {
        "attributes": {name: list(values) for name, values in ATTRIBUTES.items()},
        "rgb": {name: list(rgb) for name, rgb in RGB.items()},
        "background": list(BACKGROUND),
        "heldout_pairs": [{"shape": s, "colour": c} for s, c in HELDOUT_PAIRS],
        "n_combinations": len(all_combinations()),
        "n_heldout_combinations": len(heldout_combinations()),
    }
