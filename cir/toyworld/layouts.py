"""Writers for the benchmark layouts: the same queries as CIRR val and CIRCO val files.

The JSON keys and value types are exactly those of the real annotation files, so the real
benchmarks' loaders read a generated world unchanged:

- CIRR: `cirr/captions/cap.rc2.val.json`, `cirr/image_splits/split.rc2.val.json` (name ->
  "./dev/<name>.png", relative to `cirr/`), images in `cirr/dev/`.
- CIRCO: `circo/annotations/val.json`, the COCO-style image list
  `circo/COCO2017_unlabeled/annotations/image_info_unlabeled2017.json` ({"images": [{"id",
  "file_name", "width", "height"}]}), images in `circo/COCO2017_unlabeled/unlabeled2017/`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, NamedTuple

from cir.io import atomic_write_json, atomic_write_text
from cir.toyworld.spec import Attrs

CIRR_CAPTIONS = Path("cirr/captions/cap.rc2.val.json")
CIRR_SPLIT = Path("cirr/image_splits/split.rc2.val.json")
CIRR_IMAGES = Path("cirr/dev")
CIRCO_ANNOTATIONS = Path("circo/annotations/val.json")
CIRCO_IMAGE_INFO = Path("circo/COCO2017_unlabeled/annotations/image_info_unlabeled2017.json")
CIRCO_IMAGES = Path("circo/COCO2017_unlabeled/unlabeled2017")
# The CIRCO gallery as an indexer manifest (`cir index build --gallery`): path, id, attributes.
CIRCO_MANIFEST = Path("circo/gallery_manifest.jsonl")


class GalleryItem(NamedTuple):
    """One gallery render: its CIRCO id and file, and its CIRR name when it is in the CIRR split."""

    circo_id: int
    attrs: Attrs
    file_name: str
    cirr_name: str | None


class Query(NamedTuple):
    """A composed query tied to gallery renders."""

    pairid: int
    reference: GalleryItem
    target: GalleryItem
    gt_ids: list[int]
    members: list[str]
    text: str
    changed: tuple[str, ...]
    shared_concept: str
    heldout: bool


def write_json(path: Path, data: Any, indent: int | None = 1) -> None:
    """Write JSON atomically."""
    atomic_write_json(path, data, indent=indent)


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Write one JSON object per line, atomically."""
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def cirr_entry(q: Query) -> dict:
    """One query in CIRR's cap.rc2.val.json format."""
    return {
        "pairid": q.pairid,
        "reference": q.reference.cirr_name,
        "target_hard": q.target.cirr_name,
        "target_soft": {q.target.cirr_name: 1.0},
        "caption": q.text,
        "img_set": {
            "id": q.pairid,
            "members": list(q.members),
            "reference_rank": q.members.index(q.reference.cirr_name),
            "target_rank": q.members.index(q.target.cirr_name),
        },
    }


def circo_entry(q: Query) -> dict:
    """One query in CIRCO's val.json format; semantic_aspects name the changed attributes."""
    aspects = list(q.changed) + (["statement_with_conjunction"] if len(q.changed) > 1 else [])
    return {
        "reference_img_id": q.reference.circo_id,
        "target_img_id": q.target.circo_id,
        "relative_caption": q.text,
        "shared_concept": q.shared_concept,
        "gt_img_ids": list(q.gt_ids),
        "id": q.pairid,
        "semantic_aspects": aspects,
    }


def write_cirr(root: Path, gallery: list[GalleryItem], queries: list[Query]) -> None:
    """Write the CIRR val captions and split files (images are written by the caller)."""
    split = {g.cirr_name: f"./dev/{g.cirr_name}.png" for g in gallery if g.cirr_name is not None}
    write_json(root / CIRR_SPLIT, dict(sorted(split.items())))
    write_json(root / CIRR_CAPTIONS, [cirr_entry(q) for q in queries])


def write_circo(root: Path, gallery: list[GalleryItem], queries: list[Query], image_size: int) -> None:
    """Write the CIRCO val annotations and the COCO-style image list."""
    images = [{"id": g.circo_id, "file_name": g.file_name, "width": image_size, "height": image_size}
              for g in sorted(gallery, key=lambda g: g.circo_id)]
    write_json(root / CIRCO_IMAGE_INFO, {"images": images})
    write_json(root / CIRCO_ANNOTATIONS, [circo_entry(q) for q in queries])


def gallery_record(g: GalleryItem) -> dict:
    """The side-file line for a gallery render (gallery.jsonl): ids, files and attributes."""
    return {"circo_id": g.circo_id, "file_name": g.file_name, "cirr_name": g.cirr_name,
            "attributes": g.attrs.as_dict()}


def manifest_record(g: GalleryItem) -> dict:
    """The indexer manifest line of a render: its path (relative to circo/), id = file name, attributes."""
    return {"path": (CIRCO_IMAGES.relative_to("circo") / g.file_name).as_posix(), "id": g.file_name,
            **g.attrs.as_dict()}


def query_record(q: Query) -> dict:
    """The side-file line for a query (queries.jsonl): everything the JSON layouts cannot hold."""
    return {
        "pairid": q.pairid,
        "circo_id": q.pairid,
        "reference": q.reference.cirr_name,
        "reference_img_id": q.reference.circo_id,
        "target": q.target.cirr_name,
        "target_img_id": q.target.circo_id,
        "gt_img_ids": list(q.gt_ids),
        "caption": q.text,
        "changed": list(q.changed),
        "reference_attrs": q.reference.attrs.as_dict(),
        "target_attrs": q.target.attrs.as_dict(),
        "heldout": q.heldout,
    }
