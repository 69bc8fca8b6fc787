"""Crash-safe embedding shards in a deterministic staging folder, so a rerun resumes."""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from cir.io import atomic_write_bytes, atomic_write_json

STAGING = "staging"
_SHARD = re.compile(r"^shard-(\d{6})\.npz$")


@dataclass
class Shard:
    """The results for positions [start, stop) of the work list: embedded rows and failures."""

    positions: np.ndarray
    embeddings: np.ndarray
    widths: np.ndarray
    heights: np.ndarray
    hashes: list[str]
    failed_positions: np.ndarray
    failed_reasons: list[str]


def staging_key(fingerprint: str, work: Sequence[tuple], batch_size: int, shard_size: int, max_pixels: int,
                max_bytes: int) -> str:
    """A digest of everything that decides the shards' contents: same arguments, same folder."""
    digest = hashlib.sha256(f"{fingerprint}|{batch_size}|{shard_size}|{max_pixels}|{max_bytes}".encode())
    for row in work:
        digest.update(("\x00".join(map(str, row)) + "\n").encode())
    return digest.hexdigest()[:20]


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, stop) position ranges of the shards of an n-item work list."""
    return [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]


class ShardStore:
    """Shard files of one job under ROOT/staging/<key>/."""

    def __init__(self, root: Path, key: str):
        self.dir = Path(root) / STAGING / key

    def open(self, description: dict) -> None:
        """Create the folder and record what job it belongs to."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "job.json").exists():
            atomic_write_json(self.dir / "job.json", description)

    def path(self, k: int) -> Path:
        return self.dir / f"shard-{k:06d}.npz"

    def done(self) -> set[int]:
        """Numbers of the shards already written completely (writes are atomic)."""
        if not self.dir.is_dir():
            return set()
        return {int(m.group(1)) for p in self.dir.iterdir() if (m := _SHARD.match(p.name))}

    def write(self, k: int, shard: Shard) -> None:
        """Atomically write shard k."""
        buf = io.BytesIO()
        np.savez(buf, positions=shard.positions.astype(np.int64), embeddings=shard.embeddings.astype(np.float32),
                 widths=shard.widths.astype(np.int64), heights=shard.heights.astype(np.int64),
                 hashes=np.array(shard.hashes, dtype="U64"),
                 failed_positions=shard.failed_positions.astype(np.int64),
                 failed_reasons=np.array(json.dumps(shard.failed_reasons)))
        atomic_write_bytes(self.path(k), buf.getvalue())

    def read(self, k: int) -> Shard:
        """Load shard k."""
        with np.load(self.path(k)) as z:
            return Shard(z["positions"], z["embeddings"], z["widths"], z["heights"], [str(h) for h in z["hashes"]],
                         z["failed_positions"], json.loads(str(z["failed_reasons"])))


class ShardWriter:
    """Collects batch results per shard and writes each shard as soon as it is complete."""

    def __init__(self, store: ShardStore, ranges: Sequence[tuple[int, int]], dim: int):
        self.store, self.ranges, self.dim = store, list(ranges), dim
        self.starts = [r[0] for r in self.ranges]
        self.open: dict[int, dict] = {}

    def shard_of(self, position: int) -> int:
        return int(np.searchsorted(self.starts, position, side="right") - 1)

    def add(self, positions, embeddings, sizes, hashes, failed) -> None:
        """Record embedded positions (with their (w, h) and sha256) and failed (position, reason)s."""
        for pos, emb, size, digest in zip(positions, embeddings, sizes, hashes):
            acc = self._acc(self.shard_of(pos))
            acc["pos"].append(pos), acc["emb"].append(emb), acc["size"].append(size), acc["hash"].append(digest)
        for pos, reason in failed:
            self._acc(self.shard_of(pos))["failed"].append((pos, reason))
        for k in [k for k, acc in self.open.items() if len(acc["pos"]) + len(acc["failed"]) == self._size(k)]:
            self._flush(k)

    def _size(self, k: int) -> int:
        return self.ranges[k][1] - self.ranges[k][0]

    def _acc(self, k: int) -> dict:
        return self.open.setdefault(k, {"pos": [], "emb": [], "size": [], "hash": [], "failed": []})

    def _flush(self, k: int) -> None:
        acc = self.open.pop(k)
        order = np.argsort(acc["pos"], kind="stable")
        fail = sorted(acc["failed"])
        emb = np.stack(acc["emb"])[order] if acc["emb"] else np.zeros((0, self.dim), np.float32)
        sizes = np.array(acc["size"], dtype=np.int64).reshape(-1, 2)[order]
        self.store.write(k, Shard(np.array(acc["pos"], dtype=np.int64)[order], emb, sizes[:, 0], sizes[:, 1],
                                  [acc["hash"][i] for i in order], np.array([p for p, _ in fail], dtype=np.int64),
                                  [r for _, r in fail]))

    def pending(self) -> list[int]:
        """Shards started but not finished (should be empty at the end of a job)."""
        return sorted(self.open)
