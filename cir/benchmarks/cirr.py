"""CIRR (Liu et al., ICCV 2021) loader: `captions/cap.rc2.<split>.json` + `image_splits/split.rc2.<split>.json`.

The split file maps each image name to a path like "./dev/<name>.png". The official layout
keeps those folders under `img_raw/`; CLIP4Cir/SEARLE put them beside `cirr/`; the shapes
world puts them beside `captions/`. All three are found. Ranking rules (docs/method.md, section 4):
the whole split's images are the gallery and the reference is removed from each ranking.
"""

from __future__ import annotations

from pathlib import Path

from cir.benchmarks.data import BenchmarkData, BenchmarkError, CIRQuery, check_split, read_json, require_keys

VERSION = "rc2"
# CIRR calls its test split "test1".
FILE_SPLIT = {"val": "val", "test": "test1"}


def find_cirr_root(root: str | Path) -> Path:
    """The folder holding `captions/`: `root` itself or `root/cirr` (SEARLE's layout, the shapes world's parent)."""
    root = Path(root).expanduser()
    for cand in (root, root / "cirr"):
        if (cand / "captions").is_dir():
            return cand
    raise BenchmarkError(f"CIRR: no captions/ folder in {root} (nor in {root / 'cirr'})")


def _image_base(root: Path, relpaths: list[str]) -> Path:
    """The folder the split's relative paths hang from: root, root/img_raw or root's parent."""
    if not relpaths:
        return root
    first = Path(relpaths[0]).parent
    for base in (root, root / "img_raw", root.parent):
        if (base / first).is_dir():
            return base
    return root


def _query(entry: dict, path: Path, index: int, with_targets: bool) -> CIRQuery:
    keys = ("pairid", "reference", "caption", "img_set") + (("target_hard",) if with_targets else ())
    require_keys(entry, keys, path, index)
    members = entry["img_set"].get("members") if isinstance(entry["img_set"], dict) else None
    if not isinstance(members, list):
        raise BenchmarkError(f"{path}: entry {index} has no img_set.members list")
    target = str(entry["target_hard"]) if with_targets else None
    return CIRQuery(qid=str(entry["pairid"]), reference=str(entry["reference"]), text=str(entry["caption"]),
                    target=target, targets=(target,) if target else (), members=tuple(map(str, members)),
                    raw=entry)


def load_cirr(root: str | Path, split: str = "val") -> BenchmarkData:
    """Read CIRR captions and (when present) the image split; images are not opened."""
    check_split(split)
    root = find_cirr_root(root)
    fsplit = FILE_SPLIT[split]
    cap_path = root / "captions" / f"cap.{VERSION}.{fsplit}.json"
    entries = read_json(cap_path, "CIRR captions file")
    if not isinstance(entries, list):
        raise BenchmarkError(f"{cap_path}: expected a list of queries")
    queries = [_query(e, cap_path, i, split == "val") for i, e in enumerate(entries)]
    split_path = root / "image_splits" / f"split.{VERSION}.{fsplit}.json"
    if not split_path.is_file():
        return BenchmarkData("cirr", split, "cirr", root, queries, None, {}, remove_reference=True,
                             gallery_error=f"CIRR: image split file not found: {split_path}")
    mapping = read_json(split_path, "CIRR image split file")
    if not isinstance(mapping, dict):
        raise BenchmarkError(f"{split_path}: expected an object mapping image names to relative paths")
    base = _image_base(root, list(mapping.values()))
    paths = {str(name): base / rel for name, rel in mapping.items()}
    return BenchmarkData("cirr", split, "cirr", root, queries, list(paths), paths, remove_reference=True,
                         missing_hint=f"CIRR images are looked up relative to {base}.\n")
