"""CIRCO (Baldrati et al., ICCV 2023) loader: `annotations/<split>.json` over COCO 2017 unlabeled.

Layout of the official repository (miccunifi/CIRCO, src/dataset.py), which the shapes
world's `circo/` folder also follows:

    ROOT/annotations/{val,test}.json
    ROOT/COCO2017_unlabeled/annotations/image_info_unlabeled2017.json   {"images": [{"id", "file_name"}]}
    ROOT/COCO2017_unlabeled/unlabeled2017/<file_name>

The gallery is every image of the info file, in its order; the reference is NOT removed.
"""

from __future__ import annotations

from pathlib import Path

from cir.benchmarks.data import BenchmarkData, BenchmarkError, CIRQuery, check_split, read_json, require_keys

IMAGE_INFO = Path("COCO2017_unlabeled/annotations/image_info_unlabeled2017.json")
IMAGE_DIR = Path("COCO2017_unlabeled/unlabeled2017")


def find_circo_root(root: str | Path) -> Path:
    """The folder holding `annotations/`: `root` itself or `root/circo` (a shapes world)."""
    root = Path(root).expanduser()
    for cand in (root, root / "circo"):
        if (cand / "annotations").is_dir():
            return cand
    raise BenchmarkError(f"CIRCO: no annotations/ folder in {root} (nor in {root / 'circo'})")


def _query(entry: dict, path: Path, index: int, with_targets: bool) -> CIRQuery:
    keys = ("id", "reference_img_id", "relative_caption") + (("target_img_id", "gt_img_ids") if with_targets else ())
    require_keys(entry, keys, path, index)
    if not with_targets:
        return CIRQuery(qid=str(entry["id"]), reference=str(entry["reference_img_id"]),
                        text=str(entry["relative_caption"]), raw=entry)
    gts = entry["gt_img_ids"]
    if not isinstance(gts, list) or not gts:
        raise BenchmarkError(f"{path}: entry {index} has an empty or non-list gt_img_ids")
    return CIRQuery(qid=str(entry["id"]), reference=str(entry["reference_img_id"]),
                    text=str(entry["relative_caption"]), target=str(entry["target_img_id"]),
                    targets=tuple(str(g) for g in gts), raw=entry)


def _gallery(root: Path) -> tuple[list[str], dict[str, Path]]:
    info_path = root / IMAGE_INFO
    info = read_json(info_path, "COCO unlabeled2017 image-info file")
    images = info.get("images") if isinstance(info, dict) else None
    if not isinstance(images, list):
        raise BenchmarkError(f"{info_path}: expected COCO format {{\"images\": [{{\"id\", \"file_name\"}}, ...]}}")
    paths: dict[str, Path] = {}
    for i, img in enumerate(images):
        require_keys(img, ("id", "file_name"), info_path, i)
        paths[str(img["id"])] = root / IMAGE_DIR / img["file_name"]
    return list(paths), paths


def load_circo(root: str | Path, split: str = "val") -> BenchmarkData:
    """Read CIRCO annotations and (when present) the COCO image list; images are not opened."""
    check_split(split)
    root = find_circo_root(root)
    ann_path = root / "annotations" / f"{split}.json"
    entries = read_json(ann_path, "CIRCO annotation file")
    if not isinstance(entries, list):
        raise BenchmarkError(f"{ann_path}: expected a list of queries")
    queries = [_query(e, ann_path, i, split == "val") for i, e in enumerate(entries)]
    if not (root / IMAGE_INFO).is_file():
        return BenchmarkData("circo", split, "circo", root, queries, None, {}, remove_reference=False,
                             gallery_error=f"CIRCO: COCO image-info file not found: {root / IMAGE_INFO} "
                                           "(download image_info_unlabeled2017.json from cocodataset.org)")
    gallery, paths = _gallery(root)
    return BenchmarkData("circo", split, "circo", root, queries, gallery, paths, remove_reference=False,
                         missing_hint=f"CIRCO images are looked up in {root / IMAGE_DIR}.\n")
