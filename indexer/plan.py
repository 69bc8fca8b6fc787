"""What a build must do: the published version it starts from, and per entry reuse, embed or skip.

A rebuild whose result would equal the published version (same items, same skipped files,
and, compared by the build, the same index settings) publishes nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cir import index_store as store
from cir.io import FileRefusedError, read_regular_file
from indexer.errors import BuildError
from indexer.gallery import GalleryEntry, file_facts


@dataclass
class Base:
    """The published version a build starts from: its items (in order, and by path) and embeddings."""

    version: str
    items: list[dict]
    by_path: dict
    embeddings: np.ndarray
    manifest: dict
    skipped: list[dict]


@dataclass
class Plan:
    """Per gallery entry: reuse a stored row, embed it (a work position) or skip it (reason)."""

    entries: list[GalleryEntry]
    stats: list
    reuse: dict = field(default_factory=dict)
    work: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)


def load_base(root: Path, fingerprint: str, force_new: bool) -> Base | None:
    """The published version to reuse embeddings from; refuses another encoder's root."""
    idx = store.IndexRoot(root)
    version = idx.current_version()
    if version is None:
        return None
    manifest = idx.manifest(version)
    if manifest.get("fingerprint") != fingerprint:
        if not force_new:
            raise BuildError(
                f"{root} holds version {version} built with another encoder (fingerprint "
                f"{str(manifest.get('fingerprint'))[:12]}, model {manifest.get('model')}); this encoder is "
                f"{fingerprint[:12]}. Use another --out, or --force-new to re-embed everything into this root")
        return None
    vdir = idx.version_dir(version)
    items = list(store.iter_items(vdir / store.ITEMS_FILE))
    report = vdir / store.REPORT_FILE
    skipped = store.read_json(report).get("skipped", []) if report.is_file() else []
    return Base(version, items, {it["path"]: it for it in items},
                np.load(vdir / store.EMBEDDINGS_FILE, mmap_mode="r"), manifest, skipped)


def make_plan(entries: list[GalleryEntry], base: Base | None, max_bytes: int) -> Plan:
    """Reuse unchanged files (same stat, or same content hash); embed new and changed ones; skip the rest."""
    plan = Plan(entries, [file_facts(e.path, max_bytes) if e.problem is None else e.problem for e in entries])
    for i, (entry, st) in enumerate(zip(entries, plan.stats)):
        old = base.by_path.get(entry.path) if base else None
        if isinstance(st, str):
            plan.skipped[i] = st
        elif old is not None and (old["size"], old["mtime_ns"]) == st:
            plan.reuse[i] = old
        elif old is not None and _sha_or_none(entry.path, max_bytes) == old["sha256"]:
            plan.reuse[i] = old  # touched but unchanged content
        else:
            plan.work.append(i)
    return plan


def _sha_or_none(path: str, max_bytes: int) -> str | None:
    try:
        return hashlib.sha256(read_regular_file(path, max_bytes)).hexdigest()
    except (OSError, FileRefusedError):
        return None


def unchanged(base: Base | None, items: list[dict], skipped: list[dict]) -> bool:
    """True when the base already holds exactly these items and skipped files (settings are compared apart)."""
    if base is None:
        return False
    old = [{k: v for k, v in it.items() if k != "row"} for it in base.items]
    same_skips = [(s["id"], s["path"]) for s in base.skipped] == [(s["id"], s["path"]) for s in skipped]
    return old == items and same_skips  # (a reason's wording may vary from run to run)
