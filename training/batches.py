"""Which pairs train and which are held out, the order of every epoch, and batch loading.

The order is a pure function of (seed, epoch), global micro-batch m is the m-th slice of the
concatenated epochs, and rank r of W reads the r-th 1/W of it: resuming is starting at m, and a
DDP run sees exactly the global batches a single process would.
"""

from __future__ import annotations

import logging
import math
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cir.workers import iterate, worker_init
from training.data import BadImage, PairSource

log = logging.getLogger(__name__)

# Fixed stream for the held-out split, so that runs with different seeds measure the same pairs.
HOLDOUT_STREAM = 0x7A7
MAX_AUTO_HOLDOUT = 1000


def auto_holdout(n: int) -> int:
    """Default held-out pairs: 10% of the data, at most 1000."""
    return min(MAX_AUTO_HOLDOUT, n // 10)


class Plan:
    """The train/held-out split and the deterministic sequence of global micro-batches."""

    def __init__(self, n: int, holdout: int, batch_size: int, seed: int, world_size: int = 1, rank: int = 0):
        if holdout > n - 2:
            raise ValueError(f"the data has {n} pairs: too few to hold out {holdout} and still train")
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by the {world_size} ranks")
        perm = np.random.default_rng([HOLDOUT_STREAM, n]).permutation(n)
        self.holdout = np.sort(perm[:holdout])
        self.train = np.sort(perm[holdout:])
        self.batch_size, self.seed, self.world_size, self.rank = batch_size, seed, world_size, rank
        self.local_size = batch_size // world_size
        self.micro_per_epoch = math.ceil(len(self.train) / batch_size)
        self._cached: tuple[int, np.ndarray] | None = None

    def __getstate__(self):
        return {**self.__dict__, "_cached": None}

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Training pair indices in the order of this epoch."""
        if self._cached is None or self._cached[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._cached = (epoch, self.train[rng.permutation(len(self.train))])
        return self._cached[1]

    def global_batch(self, m: int) -> np.ndarray:
        """Pair indices of global micro-batch m (the last one of an epoch may be short)."""
        epoch, k = divmod(m, self.micro_per_epoch)
        return self.epoch_order(epoch)[k * self.batch_size:(k + 1) * self.batch_size]

    def local_batch(self, m: int) -> np.ndarray:
        """This rank's share of global micro-batch m."""
        start = self.rank * self.local_size
        return self.global_batch(m)[start:start + self.local_size]


class Chunks:
    """Fixed index chunks (for embedding held-out pairs)."""

    def __init__(self, indices: np.ndarray, size: int):
        self.chunks = [indices[i:i + size] for i in range(0, len(indices), size)]

    def __call__(self, k: int) -> np.ndarray:
        return self.chunks[k]

    def __len__(self) -> int:
        return len(self.chunks)


class PairBatches(Dataset):
    """Item k: the decoded, preprocessed pairs of batch_indices(k); unreadable images are reported."""

    def __init__(self, source: PairSource, preprocess, batch_indices):
        self.source, self.preprocess, self.batch_indices = source, preprocess, batch_indices

    def __getitem__(self, k: int) -> dict:
        images, captions, metas, failed = [], [], [], []
        indices = self.batch_indices(k)
        for i in indices:
            record = self.source.record(int(i))
            try:
                images.append(self.source.image(int(i)))
            except BadImage as exc:
                failed.append(str(exc))
                continue
            captions.append(record.caption)
            metas.append(record.meta)
        pixels = self.preprocess.batch(images) if images else torch.zeros(0)
        return {"index": k, "pixels": pixels, "captions": captions, "meta": metas, "failed": failed,
                "slots": len(indices)}


def make_loader(dataset, keys: range, workers: int, pin_memory: bool = False) -> Iterator[dict]:
    """Iterate dataset[k] for k in keys, in order, prefetched by DataLoader worker processes.

    The workers ignore SIGINT/SIGTERM (the main process checkpoints first) and die with it.
    """
    # Its own generator: creating the iterator must not draw from the global RNG that LoRA dropout
    # uses, or a resumed run (which creates one more iterator) would drift from an uninterrupted one.
    return iterate(DataLoader(dataset, batch_size=None, sampler=list(keys), num_workers=workers,
                              worker_init_fn=worker_init() if workers else None, pin_memory=pin_memory,
                              prefetch_factor=4 if workers else None,
                              generator=torch.Generator().manual_seed(0)))
