"""Generate a shapes world on disk: training captions, a gallery, queries, CIRR and CIRCO files.

Every random choice draws from its own `numpy` stream keyed by (seed, purpose, index), so a world
is a pure function of its arguments. The CIRR split holds ONE render per combination (the
"canonical" one), so its single `target_hard` is the only correct answer and Recall@1 is not a
coin toss between near-duplicates; the CIRCO files index every render, and `gt_img_ids` lists
all renders of the target combination. The world is built in a temporary sibling folder and
swapped in at the end, so a reader never sees half a world.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cir.io import replace_dir
from cir.toyworld import layouts
from cir.toyworld.captions import caption, noun_phrase
from cir.toyworld.layouts import GalleryItem, Query
from cir.toyworld.queries import QuerySpec, make_queries
from cir.toyworld.render import render
from cir.toyworld.spec import (DEFAULT_IMAGE_SIZE, Attrs, all_combinations, is_heldout, iter_neighbours,
                               seen_combinations, spec_dict)
from cir.toyworld.styles import DEFAULT_STYLE, check_style, style_info
from cir.toyworld.train_split import write_train_split

log = logging.getLogger(__name__)

WORLD_VERSION = 1
# Stream ids: one independent random stream per purpose.
PLAN, GALLERY, QUERIES, SETS, CAPTION_PLAN, CAPTIONS = range(1, 7)


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def plan_gallery(seed: int, gallery_size: int) -> list[tuple[Attrs, bool]]:
    """(attrs, canonical) per gallery slot: one canonical render per chosen combination, then extras."""
    rng = np.random.default_rng([seed, PLAN])
    combos = all_combinations()
    if gallery_size < len(combos):
        chosen = [combos[i] for i in sorted(rng.choice(len(combos), size=gallery_size, replace=False))]
    else:
        chosen = combos
    order = rng.permutation(len(chosen))
    extras = [chosen[order[j % len(chosen)]] for j in range(gallery_size - len(chosen))]
    slots = [(a, True) for a in chosen] + [(a, False) for a in extras]
    return [slots[i] for i in rng.permutation(len(slots))]


def render_gallery(root: Path, seed: int, plan: list[tuple[Attrs, bool]], image_size: int,
                   progress: bool, style: str = DEFAULT_STYLE) -> list[GalleryItem]:
    """Render the gallery into the CIRCO image folder (and the CIRR one for canonical renders)."""
    (root / layouts.CIRCO_IMAGES).mkdir(parents=True, exist_ok=True)
    (root / layouts.CIRR_IMAGES).mkdir(parents=True, exist_ok=True)
    items = []
    for i, (attrs, canonical) in enumerate(tqdm(plan, desc="gallery", disable=not progress)):
        circo_id = i + 1
        item = GalleryItem(circo_id, attrs, f"{circo_id:012d}.png", f"dev-{circo_id}-0-img0" if canonical else None)
        data = _png(render(attrs, np.random.default_rng([seed, GALLERY, i]), image_size, style))
        (root / layouts.CIRCO_IMAGES / item.file_name).write_bytes(data)
        if canonical:
            (root / layouts.CIRR_IMAGES / f"{item.cirr_name}.png").write_bytes(data)
        items.append(item)
    return items


def _members(spec: QuerySpec, canon: dict[Attrs, GalleryItem], rng: np.random.Generator) -> list[str]:
    """CIRR img_set of 6: reference, target and near misses (one attribute away from the target)."""
    near = [a for a in iter_neighbours(spec.target) if a in canon and a != spec.reference]
    others = [a for a in canon if a not in (spec.reference, spec.target) and a not in near]
    picks = [near[i] for i in rng.permutation(len(near))[:4]]
    if len(picks) < 4:
        picks += [others[i] for i in rng.permutation(len(others))[: 4 - len(picks)]]
    names = [canon[a].cirr_name for a in [spec.reference, spec.target] + picks]
    return [names[i] for i in rng.permutation(len(names))]


def build_queries(seed: int, gallery: list[GalleryItem], n_queries: int) -> list[Query]:
    """Sample the composed queries and tie them to gallery renders."""
    canon = {g.attrs: g for g in gallery if g.cirr_name is not None}
    by_combo: dict[Attrs, list[int]] = {}
    for g in gallery:
        by_combo.setdefault(g.attrs, []).append(g.circo_id)
    specs = make_queries(list(canon), n_queries, np.random.default_rng([seed, QUERIES]))
    queries = []
    for pairid, spec in enumerate(specs):
        rng = np.random.default_rng([seed, SETS, pairid])
        target = canon[spec.target]
        gt = [target.circo_id] + sorted(i for i in by_combo[spec.target] if i != target.circo_id)
        kept = {n: getattr(spec.target, n) for n in spec.target._fields if n not in spec.changed}
        queries.append(Query(pairid, canon[spec.reference], target, gt, _members(spec, canon, rng), spec.text,
                             spec.changed, noun_phrase(kept, rng), is_heldout(spec.target)))
    return queries


def write_captions(root: Path, seed: int, n_captions: int, image_size: int, progress: bool,
                   style: str = DEFAULT_STYLE) -> None:
    """Render training image-caption pairs of seen combinations only, balanced over combinations."""
    seen = seen_combinations()
    order = np.random.default_rng([seed, CAPTION_PLAN]).permutation(n_captions) % len(seen)
    (root / "images" / "train").mkdir(parents=True, exist_ok=True)
    rows = []
    for k in tqdm(range(n_captions), desc="captions", disable=not progress):
        attrs = seen[order[k]]
        rng = np.random.default_rng([seed, CAPTIONS, k])
        rel = f"images/train/{k:06d}.png"
        (root / rel).write_bytes(_png(render(attrs, rng, image_size, style)))
        cap = caption(attrs, rng)
        rows.append({"image": rel, "caption": cap.text, "mentions": cap.mentions, "attributes": attrs.as_dict()})
    layouts.write_jsonl(root / "captions.jsonl", rows)


def _check_args(seed: int, gallery_size: int, n_queries: int, n_captions: int, image_size: int, style: str,
                n_train_triplets: int = 0) -> None:
    check_style(style)
    if n_train_triplets < 0:
        raise ValueError(f"the number of train triplets must be >= 0, got {n_train_triplets}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if gallery_size < 8:
        raise ValueError(f"gallery size must be at least 8, got {gallery_size}")
    if n_queries < 0 or n_captions < 0:
        raise ValueError("the numbers of queries and captions must be >= 0")
    if image_size < 16:
        raise ValueError(f"image size must be at least 16 px, got {image_size}")


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace `out` by the finished world in `tmp`; refuse to clobber a folder that is not a world."""
    if out.exists():
        if any(out.iterdir()) and not (out / "world.json").is_file():
            raise FileExistsError(f"{out} exists, is not empty and is not a shapes world; choose another --out")
    replace_dir(tmp, out)


def generate_world(out: str | Path, seed: int = 0, gallery_size: int = 3000, n_queries: int = 1000,
                   n_captions: int = 10000, image_size: int = DEFAULT_IMAGE_SIZE, progress: bool = False,
                   style: str = DEFAULT_STYLE, n_train_triplets: int = 0) -> dict:
    """Write a complete shapes world to `out` and return its world.json contents.

    `style` changes the renders' backgrounds only (cir.toyworld.styles): the same seed gives the
    same objects, captions and queries in every style. `n_train_triplets` adds a CIRR-layout train
    split of supervised triplets from seen combinations only (cir.toyworld.train_split).
    """
    _check_args(seed, gallery_size, n_queries, n_captions, image_size, style, n_train_triplets)
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; a world is shared data
    try:
        gallery = render_gallery(tmp, seed, plan_gallery(seed, gallery_size), image_size, progress, style)
        queries = build_queries(seed, gallery, n_queries)
        layouts.write_cirr(tmp, gallery, queries)
        layouts.write_circo(tmp, gallery, queries, image_size)
        layouts.write_jsonl(tmp / "queries.jsonl", [layouts.query_record(q) for q in queries])
        layouts.write_jsonl(tmp / "gallery.jsonl", [layouts.gallery_record(g) for g in gallery])
        layouts.write_jsonl(tmp / layouts.CIRCO_MANIFEST, [layouts.manifest_record(g) for g in gallery])
        write_captions(tmp, seed, n_captions, image_size, progress, style)
        write_train_split(tmp, seed, n_train_triplets, image_size, _png, style, progress)
        info = {
            "version": WORLD_VERSION, "seed": seed, "image_size": image_size, "gallery_size": gallery_size,
            "n_queries": len(queries), "n_heldout_queries": sum(q.heldout for q in queries),
            "n_captions": n_captions, "n_cirr_images": sum(g.cirr_name is not None for g in gallery),
            "cirr_gallery": "one canonical render per combination (target_hard is unique)",
            "circo_gallery": "every render; gt_img_ids = all renders of the target combination",
            **spec_dict(),
            # absent means plain, as in worlds written before styles existed (kept byte-identical)
            **style_info(style),
            # absent means none, as in worlds written before train splits existed
            **({"n_train_triplets": n_train_triplets} if n_train_triplets else {}),
        }
        layouts.write_json(tmp / "world.json", info, indent=2)
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %s shapes world (seed %d, %d gallery renders, %d queries, %d captions) to %s",
             style, seed, gallery_size, len(queries), n_captions, out)
    return info


def holds_world(out: str | Path, seed: int = 0, gallery_size: int = 3000, n_queries: int = 1000,
                n_captions: int = 10000, image_size: int = DEFAULT_IMAGE_SIZE, style: str = DEFAULT_STYLE,
                n_train_triplets: int = 0) -> bool:
    """Does `out` already hold the world that `generate_world` writes for these arguments (per its world.json)?"""
    path = Path(out).expanduser() / "world.json"
    if not path.is_file():
        return False
    info = json.loads(path.read_text())
    want = {"version": WORLD_VERSION, "seed": seed, "gallery_size": gallery_size, "n_queries": n_queries,
            "n_captions": n_captions, "image_size": image_size}
    styled = {k: v for k, v in info.items() if k in ("style", "textured")}
    if info.get("n_train_triplets", 0) != n_train_triplets:
        return False
    return all(info.get(k) == v for k, v in want.items()) and styled == json.loads(json.dumps(style_info(style)))
