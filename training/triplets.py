"""Composed-retrieval triplets (references, text, target) from CIRR, FashionIQ or a JSONL file.

- CIRR train captions (`captions/cap.rc2.<split>.json`): `reference`, `caption`, `target_hard`;
  image names resolve through `image_splits/split.rc2.<split>.json` beside `captions/` (train
  images sit in numbered sub-folders, so the split file is the only way to find them).
- FashionIQ train captions (`captions/cap.<category>.<split>.json`): `candidate`, `captions`
  (two, joined as the zero-shot peers join them), `target`; images are `images/<asin>.<ext>`.
- JSONL: `{"reference": path or gallery id (or a list of them), "text": ..., "target": ...}`.
  With `--gallery INDEX_ROOT`, a string that is an id of the index's current version is that
  item's file; anything else is a path relative to the JSONL file.

Every triplet is held in memory (28K CIRR triplets are a few MB); images are decoded lazily.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from cir.benchmarks.cirr import VERSION as CIRR_VERSION
from cir.benchmarks.cirr import _image_base
from cir.benchmarks.data import BenchmarkError, read_json, require_keys
from cir.benchmarks.fashioniq import _image_files, join_captions
from cir.io import iter_jsonl
from training.data import DataFormatError, PairSource, Record, load_image

MAX_REFERENCES = 8
_CIRR_NAME = re.compile(r"^cap\.rc2\.(\w+)\.json$")
_FIQ_NAME = re.compile(r"^cap\.(\w+)\.(\w+)\.json$")


class Triplet(NamedTuple):
    """One training triplet: reference image files, the modification text, the target image file."""

    references: tuple[str, ...]
    text: str
    target: str
    where: str


class TripletSource(PairSource):
    """Random access to N triplets; `image(i)` decodes all of triplet i's images (for the data checks)."""

    def __init__(self, path: Path, triplets: list[Triplet], fmt: str, hint: str):
        super().__init__()
        if not triplets:
            raise DataFormatError(f"{path} holds no triplets")
        self.path, self.triplets, self.format, self.hint = path, triplets, fmt, hint

    def __len__(self) -> int:
        return len(self.triplets)

    def record(self, i: int) -> Record:
        t = self.triplets[i]
        return Record(t.where, t.text, None)

    def triplet(self, i: int) -> Triplet:
        """The i-th triplet."""
        return self.triplets[i]

    def image(self, i: int) -> Image.Image:
        t = self.triplets[i]
        for ref in t.references:
            load_image(ref)
        return load_image(t.target)

    def resolve_hint(self) -> str:
        return self.hint



def _cirr(path: Path, entries: list) -> TripletSource:
    match = _CIRR_NAME.match(path.name)
    root = path.parent.parent
    split = root / "image_splits" / f"split.{CIRR_VERSION}.{match.group(1) if match else 'train'}.json"
    try:
        mapping = read_json(split, "CIRR image split file")
    except BenchmarkError as exc:
        raise DataFormatError(f"{exc} (CIRR images resolve through it, never by guessing the folder)") from exc
    if not isinstance(mapping, dict):
        raise DataFormatError(f"{split}: expected an object mapping image names to relative paths")
    base = _image_base(root, list(mapping.values()))

    def resolve(name: str, where: str) -> str:
        if name not in mapping:
            raise DataFormatError(f"{where}: image {name!r} is not in {split}")
        return str(base / mapping[name])

    out = []
    for i, e in enumerate(entries):
        require_keys(e, ("reference", "caption", "target_hard"), path, i)
        where = f"{path.name} pairid {e.get('pairid', i)}"
        out.append(Triplet((resolve(str(e["reference"]), where),), str(e["caption"]).strip(),
                           resolve(str(e["target_hard"]), where), where))
    return TripletSource(path, out, "cirr", f"CIRR images are resolved through {split} relative to {base}")


def _fashioniq(path: Path, entries: list) -> TripletSource:
    root = path.parent.parent
    files = _image_files(root / "images")

    def resolve(asin: str) -> str:
        return str(files.get(asin, root / "images" / f"{asin}.jpg"))

    out = []
    for i, e in enumerate(entries):
        require_keys(e, ("candidate", "captions", "target"), path, i)
        caps = e["captions"]
        if not isinstance(caps, list) or len(caps) != 2:
            raise DataFormatError(f"{path}: entry {i} must have exactly two captions")
        out.append(Triplet((resolve(str(e["candidate"])),), join_captions(caps[0], caps[1]),
                           resolve(str(e["target"])), f"{path.name} entry {i}"))
    return TripletSource(path, out, "fashioniq", f"FashionIQ images are looked up as {root / 'images'}/<asin>.<ext>")


class _Resolver:
    """A JSONL reference: a gallery id of the --gallery index, else a path relative to the file."""

    def __init__(self, root: Path, gallery):
        self.root, self.gallery = root, gallery

    def __call__(self, value, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise DataFormatError(f"{where}: an image must be a non-empty string (a path or a gallery id)")
        if self.gallery is not None:
            item = self.gallery.item(value)
            if item is not None:
                return str(item["path"])
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else self.root / p)


def _jsonl_row(row, resolve: _Resolver, where: str) -> Triplet:
    refs = row.get("reference")
    refs = refs if isinstance(refs, list) else [refs]
    if not 1 <= len(refs) <= MAX_REFERENCES:
        raise DataFormatError(f"{where}: give 1 to {MAX_REFERENCES} references, not {len(refs)}")
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataFormatError(f"{where}: field 'text' is missing or empty")
    return Triplet(tuple(resolve(r, where) for r in refs), text.strip(), resolve(row.get("target"), where), where)


def _jsonl(path: Path, gallery) -> TripletSource:
    resolve, out = _Resolver(path.parent, gallery), []
    try:
        for lineno, row in iter_jsonl(path):
            out.append(_jsonl_row(row, resolve, f"{path}:{lineno}"))
    except DataFormatError:
        raise
    except ValueError as exc:  # cir.io's reader: not JSON, or not an object
        raise DataFormatError(str(exc)) from exc
    hint = (f"gallery ids resolve through the --gallery index, other images relative to {path.parent}"
            if gallery is not None else f"image paths are resolved relative to {path.parent} (gallery ids "
                                        "need --gallery INDEX_ROOT)")
    return TripletSource(path, out, "jsonl", hint)


def _captions_folder(p: Path) -> TripletSource:
    """Every `cap.*.train.json` of a captions folder (FashionIQ's three categories), as one source."""
    files = sorted(p.glob("cap.*.train.json"))
    if not files:
        raise DataFormatError(f"{p} holds no cap.*.train.json caption files")
    parts = [open_triplets(f) for f in files]
    return TripletSource(p, [t for part in parts for t in part.triplets], parts[0].format, parts[0].hint)


def open_triplets(path: str | Path, gallery=None) -> TripletSource:
    """Read a triplet file: CIRR or FashionIQ captions (.json), or JSONL; `gallery` is a GalleryView or None.

    A `captions/` folder stands for all of its `cap.*.train.json` files (FashionIQ's three categories).
    """
    p = Path(path).expanduser().resolve()
    if p.is_dir():
        return _captions_folder(p)
    if not p.is_file():
        raise DataFormatError(f"triplet file {path} does not exist")
    if p.suffix.lower() in (".jsonl", ".ndjson"):
        return _jsonl(p, gallery)
    if p.suffix.lower() != ".json":
        raise DataFormatError(f"unknown triplet format {p.name!r}: use CIRR's cap.rc2.<split>.json, FashionIQ's "
                              "cap.<category>.<split>.json or a .jsonl of {reference, text, target}")
    try:
        entries = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{p}: not valid JSON ({exc})") from exc
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise DataFormatError(f"{p}: expected a non-empty list of CIRR or FashionIQ caption objects")
    if "target_hard" in entries[0]:
        return _cirr(p, entries)
    if "candidate" in entries[0]:
        return _fashioniq(p, entries)
    raise DataFormatError(f"{p}: entries have neither CIRR's target_hard nor FashionIQ's candidate "
                          f"(fields: {', '.join(entries[0])})")
