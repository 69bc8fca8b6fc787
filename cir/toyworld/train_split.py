"""A CIRR-layout train split of a shapes world: supervised triplets from seen combinations only.

Every reference and every target is a seen combination (never one of the held-out shape-colour
pairs), each rendered afresh for its triplet from its own random stream, so the gallery, the
captions and the held-out evaluation stay exactly as they are without the split. Files, as
CIRR's train split has them (the images in numbered sub-folders, found through the split file):

- `cirr/captions/cap.rc2.train.json`: [{pairid, reference, target_hard, target_soft, caption, img_set}]
- `cirr/image_splits/split.rc2.train.json`: {"train-<k>-0-img0": "./train/<k // 100>/train-<k>-0-img0.png", ...}
- `cirr/train/<bucket>/*.png`
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from cir.toyworld import layouts
from cir.toyworld.queries import make_queries
from cir.toyworld.render import render
from cir.toyworld.spec import seen_combinations

# Random streams of their own (world.py uses 1 to 6), so adding a train split changes nothing else.
TRAIN_QUERIES, TRAIN_RENDERS = 7, 8
CIRR_TRAIN_CAPTIONS = Path("cirr/captions/cap.rc2.train.json")
CIRR_TRAIN_SPLIT = Path("cirr/image_splits/split.rc2.train.json")
BUCKET = 100  # triplets per numbered image sub-folder
SET_SIZE = 3  # triplets sharing one img_set (6 members), as CIRR groups its pairs


def _names(k: int) -> tuple[str, str]:
    return f"train-{k}-0-img0", f"train-{k}-1-img1"


def write_train_split(root: Path, seed: int, n: int, image_size: int, png, style: str, progress: bool) -> int:
    """Render n triplets of seen combinations into the CIRR train layout; returns n."""
    if n <= 0:
        return 0
    specs = make_queries(seen_combinations(), n, np.random.default_rng([seed, TRAIN_QUERIES]), heldout_share=0.0)
    split, entries = {}, []
    for k, spec in enumerate(tqdm(specs, desc="train triplets", disable=not progress)):
        folder = Path("train") / str(k // BUCKET)
        (root / "cirr" / folder).mkdir(parents=True, exist_ok=True)
        for name, attrs, j in zip(_names(k), (spec.reference, spec.target), (0, 1)):
            rel = folder / f"{name}.png"
            image = render(attrs, np.random.default_rng([seed, TRAIN_RENDERS, k, j]), image_size, style)
            (root / "cirr" / rel).write_bytes(png(image))
            split[name] = f"./{rel.as_posix()}"
    for k, spec in enumerate(specs):
        first = k - k % SET_SIZE
        members = [name for j in range(first, min(first + SET_SIZE, n)) for name in _names(j)]
        reference, target = _names(k)
        entries.append({"pairid": k, "reference": reference, "target_hard": target, "target_soft": {target: 1.0},
                        "caption": spec.text,
                        "img_set": {"id": first // SET_SIZE, "members": members,
                                    "reference_rank": members.index(reference),
                                    "target_rank": members.index(target)}})
    layouts.write_json(root / CIRR_TRAIN_SPLIT, split)
    layouts.write_json(root / CIRR_TRAIN_CAPTIONS, entries)
    return n
