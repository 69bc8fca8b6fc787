"""On-disk cache of gallery embeddings, keyed by the encoder fingerprint and the image files.

A gallery is embedded in shards; each shard is stored as one .npz named by a hash of the
encoder's effective weights (fingerprint, incl. any adapter), its autocast dtype and
preprocessing, and each file's path, size and mtime. A sweep, a second run or a run
interrupted half-way reuses whatever shards already exist.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from cir.io import atomic_write_bytes
from cir.pipeline import embed_image_files

log = logging.getLogger(__name__)

SHARD = 16384
CACHE_VERSION = "1"


@dataclass
class GalleryEmbeddings:
    """Embeddings of the readable images (`ok` indexes `paths`) and the unreadable ones with reasons."""

    embeddings: np.ndarray
    ok: list[int]
    failed: list[tuple[str, str]] = field(default_factory=list)
    cached_shards: int = 0
    embedded_shards: int = 0


def encoder_key(encoder) -> str:
    """What besides the files decides an embedding: weights, autocast dtype and preprocessing."""
    processor = getattr(encoder.preprocess, "processor", encoder.preprocess)
    parts = [CACHE_VERSION, encoder.fingerprint, str(encoder.autocast_dtype), repr(processor)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def shard_key(enc_key: str, paths: Sequence[Path]) -> str:
    """Hash of the encoder key and each file's resolved path, size and mtime."""
    digest = hashlib.sha256(enc_key.encode())
    for p in paths:
        st = os.stat(p)
        digest.update(f"\n{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return digest.hexdigest()


class GalleryCache:
    """Embeds image files through `cir.pipeline.embed_image_files`, reusing shards stored under `cache_dir`."""

    def __init__(self, cache_dir: str | Path | None, shard_size: int = SHARD):
        if shard_size < 1:
            raise ValueError("shard_size must be >= 1")
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.shard_size = shard_size

    def _shard_path(self, encoder, key: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / encoder.fingerprint[:16] / f"{key[:32]}.npz"

    @staticmethod
    def _read(path: Path | None) -> tuple[np.ndarray, list[int], list[tuple[str, str]]] | None:
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                failed = [tuple(x) for x in json.loads(str(z["failed"]))]
                return z["embeddings"].astype(np.float32), z["ok"].tolist(), failed
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable cache shard %s: %s", path, exc)
            return None

    @staticmethod
    def _write(path: Path | None, emb: np.ndarray, ok: list[int], failed: list[tuple[str, str]]) -> None:
        if path is None:
            return
        buf = io.BytesIO()
        np.savez(buf, embeddings=emb, ok=np.asarray(ok, dtype=np.int64), failed=np.asarray(json.dumps(failed)))
        atomic_write_bytes(path, buf.getvalue())

    def embed(self, encoder, paths: Sequence[str | Path], batch_size: int = 64, workers: int = 2,
              progress: bool = True, desc: str = "embed gallery") -> GalleryEmbeddings:
        """Embeddings for `paths` (all must exist), from the cache where possible."""
        paths = [Path(p) for p in paths]
        enc_key = encoder_key(encoder)
        chunks, ok, failed = [], [], []
        cached = embedded = 0
        n_shards = max(1, -(-len(paths) // self.shard_size))
        for s, start in enumerate(range(0, len(paths), self.shard_size)):
            shard = paths[start:start + self.shard_size]
            where = self._shard_path(encoder, shard_key(enc_key, shard))
            hit = self._read(where)
            if hit is None:
                label = desc if n_shards == 1 else f"{desc} {s + 1}/{n_shards}"
                res = embed_image_files(encoder, [str(p) for p in shard], batch_size=batch_size,
                                        workers=workers, progress=progress, desc=label)
                hit = (np.asarray(res.embeddings, dtype=np.float32).reshape(-1, encoder.dim),
                       [int(i) for i in res.ok], [(str(p), str(r)) for p, r in res.failed])
                self._write(where, *hit)
                embedded += 1
            else:
                cached += 1
            chunks.append(hit[0])
            ok.extend(start + i for i in hit[1])
            failed.extend(hit[2])
        emb = np.concatenate(chunks) if chunks else np.zeros((0, encoder.dim), np.float32)
        if cached:
            log.info("gallery embeddings: %d shard(s) from cache %s, %d embedded", cached, self.cache_dir, embedded)
        return GalleryEmbeddings(emb, ok, failed, cached, embedded)
