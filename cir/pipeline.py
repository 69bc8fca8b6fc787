"""Overlapped image embedding: DataLoader workers decode and preprocess while the encoder runs.

`embed_image_files` is the one way every app embeds a gallery of files. Worker processes run
`cir.images.decode_image` and the encoder's picklable preprocessor; the main process runs
batched `Encoder.encode_pixels` (autocast on GPU), so throughput approaches the slower stage.
Unreadable files never stop the job: they come back in `.failed` with a reason.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from cir.defaults import DEFAULT_MAX_FILE_MB
from cir.errors import error_text
from cir.images import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image
from cir.io import read_regular_file
from cir.pixels import stack_pixels
from cir.workers import iterate, worker_init

DEFAULT_MAX_FILE_BYTES = DEFAULT_MAX_FILE_MB * 2**20


@dataclass
class EmbedResult:
    """Embeddings of the readable images, which inputs they are, and which failed."""

    embeddings: np.ndarray
    ok: list[int]
    failed: list[tuple[str, str]]
    seconds: float


@dataclass
class EmbeddedBatch:
    """One encoded batch: input indices, their unit embeddings, per-image facts and failures."""

    indices: list[int]
    embeddings: np.ndarray
    sizes: list[tuple[int, int]]
    hashes: list[str | None]
    failed: list[tuple[int, str]] = field(default_factory=list)


class ImageFileDataset(Dataset):
    """Reads, optionally hashes, decodes and preprocesses one file per item (runs in workers)."""

    def __init__(self, paths: Sequence[str | Path], preprocess, hash_files: bool = False,
                 max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_FILE_BYTES):
        self.paths = [str(p) for p in paths]
        self.preprocess = preprocess
        self.hash_files = hash_files
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        try:
            data = read_regular_file(self.paths[i], self.max_bytes)  # never a FIFO, a device, a huge file
            image = decode_image(data, self.max_pixels, reduce_for=getattr(self.preprocess, "input_side", None))
            pixels = self.preprocess(image)
        except (ImageDecodeError, OSError, ValueError) as exc:
            return {"index": i, "error": error_text(exc)}
        digest = hashlib.sha256(data).hexdigest() if self.hash_files else None
        return {"index": i, "pixels": pixels, "size": image.size, "sha256": digest}


def collate_images(items: list[dict]) -> dict:
    """Stack the decoded items of a batch; keep the failures beside them."""
    good = [it for it in items if "pixels" in it]
    return {
        "indices": [it["index"] for it in good],
        "pixels": stack_pixels([it["pixels"] for it in good]) if good else None,
        "sizes": [tuple(it["size"]) for it in good],
        "hashes": [it["sha256"] for it in good],
        "failed": [(it["index"], it["error"]) for it in items if "pixels" not in it],
    }


def make_batches(n: int, batch_size: int, boundaries: Sequence[int] = ()) -> list[list[int]]:
    """Consecutive index batches of at most batch_size that never cross a boundary (shard edge)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    edges = sorted({0, n, *[b for b in boundaries if 0 < b < n]})
    batches = []
    for start, stop in zip(edges[:-1], edges[1:]):
        batches += [list(range(i, min(i + batch_size, stop))) for i in range(start, stop, batch_size)]
    return batches


def iter_embedded_batches(encoder, paths: Sequence[str | Path], batches: Sequence[Sequence[int]],
                          workers: int = 2, hash_files: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
                          max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Iterator[EmbeddedBatch]:
    """Yield an EmbeddedBatch per index batch, in order, decoding in `workers` processes."""
    dataset = ImageFileDataset(paths, encoder.preprocess, hash_files=hash_files, max_pixels=max_pixels,
                               max_bytes=max_bytes)
    loader = DataLoader(
        dataset, batch_sampler=[list(b) for b in batches], num_workers=workers,
        collate_fn=collate_images, pin_memory=encoder.device.type == "cuda",
        # Workers leave Ctrl-C to this process and die with it (even under kill -9).
        worker_init_fn=worker_init() if workers > 0 else None,
        # Deep prefetch keeps the accelerator busy across slow (large) images.
        prefetch_factor=4 if workers > 0 else None, persistent_workers=False,
    )
    for batch in iterate(loader):
        if batch["pixels"] is None:
            embeddings = np.zeros((0, encoder.dim), np.float32)
        else:
            embeddings = encoder.encode_pixels(batch["pixels"])
        yield EmbeddedBatch(batch["indices"], embeddings, batch["sizes"], batch["hashes"], batch["failed"])


def embed_image_files(encoder, paths: Sequence[str | Path], batch_size: int = 64, workers: int = 2,
                      progress: bool = True, desc: str = "embed") -> EmbedResult:
    """Embed image files with overlapped decoding; unreadable files are reported, not fatal."""
    start = time.perf_counter()
    chunks, ok, failed = [], [], []
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, smoothing=0.1)
    for batch in iter_embedded_batches(encoder, paths, make_batches(len(paths), batch_size), workers):
        chunks.append(batch.embeddings)
        ok += batch.indices
        failed += [(str(paths[i]), reason) for i, reason in batch.failed]
        bar.update(len(batch.indices) + len(batch.failed))
    bar.close()
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, encoder.dim), np.float32)
    return EmbedResult(embeddings.astype(np.float32, copy=False), ok, failed, time.perf_counter() - start)
