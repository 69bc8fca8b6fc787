"""Training data for the toy CLIP: an in-memory pool of shapes-world renders and shape-contrast batches.

Only seen combinations are rendered (the held-out ones never reach training). Batches are built
as groups that differ only in shape, because shape is what a small model learns last: colour,
size, position and pattern separate images within a minute, and without such hard negatives
the model never needs to look at the outline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from cir.toyworld import ATTRIBUTES, Attrs, caption, render_array, seen_combinations

# Label columns: position is split into its two axes so that "on the left" is a partial label.
COLUMNS = ("shape", "colour", "size", "vertical", "horizontal", "pattern")
_VALUES = {
    "shape": ATTRIBUTES["shape"], "colour": ATTRIBUTES["colour"], "size": ATTRIBUTES["size"],
    "vertical": ("top", "bottom"), "horizontal": ("left", "right"), "pattern": ATTRIBUTES["pattern"],
}
POOL_STREAM = 100


def attr_codes(attrs: Attrs) -> list[int]:
    """One integer per label column for a full attribute set."""
    vertical, horizontal = attrs.position.split()
    named = {**attrs.as_dict(), "vertical": vertical, "horizontal": horizontal}
    return [_VALUES[c].index(named[c]) for c in COLUMNS]


def mention_codes(mentions: dict[str, str]) -> list[int]:
    """One integer per label column for a caption's mentions; -1 where the caption is silent."""
    named = {k: v for k, v in mentions.items() if k != "position"}
    for word in mentions.get("position", "").split():
        named["vertical" if word in _VALUES["vertical"] else "horizontal"] = word
    return [_VALUES[c].index(named[c]) if c in named else -1 for c in COLUMNS]


def positives(image_codes: np.ndarray, caption_codes: np.ndarray) -> np.ndarray:
    """(N_img, N_cap) bool: caption j truly describes image i (the vectorised `describes`)."""
    img = image_codes[:, None, :]
    cap = caption_codes[None, :, :]
    return np.all((cap < 0) | (cap == img), axis=-1)


@dataclass
class Batch:
    """One training batch: uint8 images, captions and the multi-positive label matrix."""

    images: torch.Tensor  # (B, H, W, 3) uint8
    captions: list[str]
    positives: torch.Tensor  # (B, B) bool, [image, caption]


class RenderPool:
    """Renders of every seen combination, kept in memory as uint8."""

    def __init__(self, seed: int, renders_per_combo: int, image_size: int, progress: bool = True):
        self.combos = seen_combinations()
        self.renders = renders_per_combo
        self.codes = np.array([attr_codes(a) for a in self.combos], dtype=np.int64)
        arrays = np.empty((len(self.combos) * renders_per_combo, image_size, image_size, 3), np.uint8)
        jobs = [(c, r) for c in range(len(self.combos)) for r in range(renders_per_combo)]
        for k, (c, r) in enumerate(tqdm(jobs, desc="render pool", disable=not progress)):
            arrays[k] = render_array(self.combos[c], np.random.default_rng([seed, POOL_STREAM, c, r]), image_size)
        self.images = torch.from_numpy(arrays)
        key = {a: i for i, a in enumerate(self.combos)}
        # Groups of combinations that differ only in shape (4 or 5 members: held-out ones are absent).
        groups: dict[tuple, list[int]] = {}
        for a in self.combos:
            groups.setdefault(a[1:], []).append(key[a])
        self.groups = [np.array(g) for g in groups.values()]

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """A batch of shape-contrast groups, each image with a fresh random caption."""
        combos: list[int] = []
        while len(combos) < batch_size:
            group = self.groups[int(rng.integers(len(self.groups)))]
            combos.extend(rng.permutation(group).tolist())
        combos = combos[:batch_size]
        index = [c * self.renders + int(rng.integers(self.renders)) for c in combos]
        caps = [caption(self.combos[c], rng) for c in combos]
        cap_codes = np.array([mention_codes(c.mentions) for c in caps], dtype=np.int64)
        pos = positives(self.codes[combos], cap_codes)
        return Batch(self.images[index], [c.text for c in caps], torch.from_numpy(pos))
