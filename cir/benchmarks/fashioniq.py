"""FashionIQ (Wu et al., CVPR 2021) loader: one evaluable part per category.

    ROOT/captions/cap.<category>.<split>.json    [{"candidate", "target", "captions": [c1, c2]}]
    ROOT/image_splits/split.<category>.<split>.json   [asin, ...]   (the category's gallery)
    ROOT/images/<asin>.jpg (or .png)

The query text joins the two captions as the zero-shot peers do (SEARLE, LinCIR):
"<c1> and <c2>", each stripped of surrounding ".?, "; `alt_text` holds the reversed order for
the optional two-order average. The gallery is the category's split; the reference stays in it.
`single_index` joins the categories into one gallery whose queries carry a category filter.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Iterable

from cir.benchmarks.data import BenchmarkData, BenchmarkError, CIRQuery, check_split, read_json, require_keys
from cir.images import IMAGE_EXTENSIONS

CATEGORIES = ("dress", "shirt", "toptee")
CATEGORY_FIELD = "category"


def join_captions(first: str, second: str) -> str:
    """The peers' FashionIQ query text: both relative captions joined with ' and '."""
    return f"{first.strip('.?, ')} and {second.strip('.?, ')}"


def check_categories(categories: Iterable[str] | None) -> tuple[str, ...]:
    """Validate a category selection (None means all three)."""
    cats = tuple(categories) if categories else CATEGORIES
    unknown = [c for c in cats if c not in CATEGORIES]
    if unknown:
        raise BenchmarkError(f"unknown FashionIQ categor{'y' if len(unknown) == 1 else 'ies'} "
                             f"{', '.join(unknown)}; choose from {', '.join(CATEGORIES)}")
    return tuple(dict.fromkeys(cats))


def _image_files(images_dir: Path) -> dict[str, Path]:
    """asin -> file, from one directory scan (FashionIQ ships .jpg or .png files)."""
    found: dict[str, Path] = {}
    if images_dir.is_dir():
        with os.scandir(images_dir) as it:
            for entry in it:
                stem, ext = os.path.splitext(entry.name)
                if ext.lower() in IMAGE_EXTENSIONS and stem not in found:
                    found[stem] = Path(entry.path)
    return found


def _query(entry: dict, path: Path, index: int, with_targets: bool) -> CIRQuery:
    require_keys(entry, ("candidate", "captions") + (("target",) if with_targets else ()), path, index)
    caps = entry["captions"]
    if not isinstance(caps, list) or len(caps) != 2:
        raise BenchmarkError(f"{path}: entry {index} must have exactly two captions")
    target = str(entry["target"]) if with_targets else None
    return CIRQuery(qid=str(index), reference=str(entry["candidate"]), text=join_captions(caps[0], caps[1]),
                    target=target, targets=(target,) if target else (),
                    alt_text=join_captions(caps[1], caps[0]), raw=entry)


def _load_category(root: Path, category: str, split: str, files: dict[str, Path]) -> BenchmarkData:
    cap_path = root / "captions" / f"cap.{category}.{split}.json"
    entries = read_json(cap_path, "FashionIQ captions file")
    if not isinstance(entries, list):
        raise BenchmarkError(f"{cap_path}: expected a list of queries")
    queries = [_query(e, cap_path, i, split == "val") for i, e in enumerate(entries)]
    split_path = root / "image_splits" / f"split.{category}.{split}.json"
    hint = f"FashionIQ images are looked up as {root / 'images'}/<asin>{{{','.join(IMAGE_EXTENSIONS)}}}.\n"
    ids = {i for q in queries for i in q.image_ids()}
    if not split_path.is_file():
        return BenchmarkData("fashioniq", split, category, root, queries, None, {}, remove_reference=False,
                             gallery_error=f"FashionIQ: image split file not found: {split_path}")
    gallery = read_json(split_path, "FashionIQ image split file")
    if not isinstance(gallery, list):
        raise BenchmarkError(f"{split_path}: expected a list of image ids")
    gallery = list(dict.fromkeys(str(g) for g in gallery))
    paths = {i: files.get(i, root / "images" / f"{i}.jpg") for i in [*gallery, *sorted(ids)]}
    return BenchmarkData("fashioniq", split, category, root, queries, gallery, paths, remove_reference=False,
                         missing_hint=hint)


def load_fashioniq(root: str | Path, split: str = "val",
                   categories: Iterable[str] | None = None) -> list[BenchmarkData]:
    """Read FashionIQ captions and splits for the chosen categories; images are only listed, not opened."""
    check_split(split)
    cats = check_categories(categories)
    root = Path(root).expanduser()
    if not (root / "captions").is_dir():
        raise BenchmarkError(f"FashionIQ: no captions/ folder in {root}")
    files = _image_files(root / "images")
    return [_load_category(root, c, split, files) for c in cats]


def single_index(parts: list[BenchmarkData]) -> BenchmarkData:
    """All categories' queries against one gallery, the union of their splits, each filtered to its category.

    The union keeps each split's order (categories in the given order), so ties break as in the
    per-category galleries; an image listed in several splits has all their categories (a tags
    field, filtered with {"category": "<name>"}). Query ids become "<category>/<qid>".
    """
    gallery: list[str] = []
    metadata: dict[str, dict] = {}
    paths: dict[str, Path] = {}
    queries = []
    for part in parts:
        for image in part.require_gallery():
            if image not in metadata:
                gallery.append(image)
                metadata[image] = {CATEGORY_FIELD: []}
            metadata[image][CATEGORY_FIELD].append(part.part)
        paths.update(part.paths)
        queries += [replace(q, qid=f"{part.part}/{q.qid}", filter={CATEGORY_FIELD: part.part}) for q in part.queries]
    first = parts[0]
    return BenchmarkData("fashioniq", first.split, "+".join(p.part for p in parts), first.root, queries, gallery,
                         paths, remove_reference=False, missing_hint=first.missing_hint, metadata=metadata)
