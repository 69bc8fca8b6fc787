"""The shapes world as the composition measurements read it: renders, queries, embeddings, item titles.

Everything comes from the world's own files (`gallery.jsonl`, `queries.jsonl`, the CIRCO image
folder, which holds every render) and its attribute tables; the CIRR protocol is kept: the
gallery is the one canonical render per combination, the reference is removed from its own
ranking and `target` (the target's canonical render) is the only right answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cir.benchmarks.gallery_cache import GalleryCache
from cir.benchmarks.ranking import rank_gallery
from cir.io import iter_jsonl
from cir.toyworld import ATTRIBUTES, noun_phrase
from cir.toyworld.layouts import CIRCO_IMAGES

TITLE_STREAM = 9  # the titles' own random stream, apart from the world generator's (1..6)


class WorldError(ValueError):
    """The folder is not a complete shapes world."""


def _key(attrs: dict) -> tuple:
    return tuple(attrs[name] for name in ATTRIBUTES)


@dataclass
class World:
    """A world's renders and queries, with the image embedding of every render."""

    root: Path
    seed: int
    renders: list[dict]  # gallery.jsonl rows, in file order
    queries: list[dict]  # queries.jsonl rows
    images: np.ndarray  # (renders, dim) unit image embeddings, row = position in `renders`
    gallery: list[int]  # the CIRR gallery: rows of the canonical renders, ordered by name
    by_combo: dict[tuple, list[int]]  # attribute key -> rows, the canonical render first

    def pos(self, cirr_name: str) -> int:
        """Position in `gallery` of a canonical render."""
        return self._pos[cirr_name]

    def __post_init__(self):
        self._pos = {self.renders[r]["cirr_name"]: i for i, r in enumerate(self.gallery)}

    def heldout(self, queries: list[dict]) -> np.ndarray:
        """The queries' held-out flags."""
        return np.array([bool(q["heldout"]) for q in queries])


def load_world(root: Path, encoder, cache_dir: Path | None, batch_size: int = 64, workers: int = 2,
               progress: bool = True) -> World:
    """Read a world written by `cir toyworld` and embed its renders (cached by the evaluation's gallery cache)."""
    root = Path(root)
    needed = [root / "world.json", root / "gallery.jsonl", root / "queries.jsonl"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise WorldError(f"{root} is not a shapes world (missing {', '.join(missing)}); write one with "
                         f"`cir toyworld --out {root} --seed 123 --queries 3000 --captions 0`")
    renders = [row for _, row in iter_jsonl(root / "gallery.jsonl")]
    queries = [row for _, row in iter_jsonl(root / "queries.jsonl")]
    seed = int(json.loads((root / "world.json").read_text())["seed"])
    paths = [root / CIRCO_IMAGES / r["file_name"] for r in renders]
    res = GalleryCache(cache_dir).embed(encoder, paths, batch_size=batch_size, workers=workers, progress=progress,
                                        desc="embed world renders")
    if res.failed:
        raise WorldError(f"{len(res.failed)} renders could not be read, e.g. {res.failed[0]}")
    by_combo: dict[tuple, list[int]] = {}
    for row, r in enumerate(renders):
        by_combo.setdefault(_key(r["attributes"]), []).append(row)
    for rows in by_combo.values():
        rows.sort(key=lambda row: (renders[row]["cirr_name"] is None, renders[row]["circo_id"]))
    gallery = sorted((row for row, r in enumerate(renders) if r["cirr_name"]), key=lambda row: renders[row]["cirr_name"])
    return World(root, seed, renders, queries, res.embeddings, gallery, by_combo)


def recalls(world: World, queries: list[dict], vectors: np.ndarray, gallery: np.ndarray | None = None,
            ks: tuple[int, ...] = (1, 10)) -> dict[str, dict[str, float]]:
    """R@K (x100) of query vectors over the CIRR gallery (default: its image embeddings; reference removed):
    all queries, seen and held-out targets."""
    exclude = [world.pos(q["reference"]) for q in queries]
    gallery = world.images[world.gallery] if gallery is None else gallery
    tops, _ = rank_gallery(vectors, gallery, max(ks), exclude)
    targets = np.array([world.pos(q["target"]) for q in queries])
    hit = {k: np.array([t in top[:k] for t, top in zip(targets, tops)]) for k in ks}
    flags = world.heldout(queries)
    out = {}
    for group, mask in (("all", np.ones(len(queries), bool)), ("seen", ~flags), ("heldout", flags)):
        out[group] = {f"R@{k}": round(float(hit[k][mask].mean() * 100), 2) if mask.any() else float("nan")
                      for k in ks}
        out[group]["n"] = int(mask.sum())
    return out


def title_mentions(attrs: dict, rng: np.random.Generator, wrong_share: float,
                   stated: tuple[int, int] = (1, 3)) -> dict[str, str]:
    """What a title states: `stated` = (fewest, most) of the item's attributes; with probability wrong_share one is wrong."""
    names = list(ATTRIBUTES)
    k = int(rng.integers(stated[0], stated[1] + 1))
    chosen = [names[i] for i in sorted(rng.choice(len(names), size=k, replace=False))]
    mentions = {name: attrs[name] for name in chosen}
    if rng.random() < wrong_share:
        name = chosen[int(rng.integers(k))]
        others = [v for v in ATTRIBUTES[name] if v != attrs[name]]
        mentions[name] = others[int(rng.integers(len(others)))]
    if "position" in mentions and k < len(names) and rng.random() < 0.5:  # "on the left" as often as "top left"
        mentions["position"] = mentions["position"].split()[int(rng.integers(2))]
    return mentions


def item_titles(world: World, wrong_share: float, titled_share: float = 1.0, seed: int = 0,
                stated: tuple[int, int] = (1, 3)) -> list[str | None]:
    """A title per CIRR gallery item (None: untitled), a pure function of the world seed and `seed`."""
    titles: list[str | None] = []
    for row in world.gallery:
        r = world.renders[row]
        rng = np.random.default_rng([world.seed, TITLE_STREAM, seed, r["circo_id"]])
        mentions = title_mentions(r["attributes"], rng, wrong_share, stated)
        titles.append(noun_phrase(mentions, rng) if rng.random() < titled_share else None)
    return titles


class Texts:
    """Text embeddings by text, each distinct text encoded once per run."""

    def __init__(self, encoder):
        self.encoder, self.rows = encoder, {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) unit rows."""
        new = [t for t in dict.fromkeys(texts) if t not in self.rows]
        if new:
            self.rows.update(zip(new, self.encoder.encode_texts(new)))
        return np.stack([self.rows[t] for t in texts])
