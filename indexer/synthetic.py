"""Synthetic unit vectors with the low intrinsic dimension of real image embeddings (tests, benchmarks)."""

from __future__ import annotations

import numpy as np

from cir.fusion import l2_normalize


def synthetic_vectors(n: int, dim: int = 512, intrinsic: int = 32, noise: float = 0.1, seed: int = 0,
                      basis_seed: int = 1234) -> np.ndarray:
    """n unit rows: a random `intrinsic`-dim subspace of R^dim plus isotropic noise.

    The subspace depends only on `basis_seed`, so different `seed`s draw fresh points (e.g. held-
    out queries) from the same distribution. Uniform vectors on the sphere would be a worst case
    that no embedding model produces.
    """
    basis = np.random.default_rng(basis_seed).standard_normal((intrinsic, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        z = rng.standard_normal((m, intrinsic), dtype=np.float32)
        x = z @ basis / np.sqrt(intrinsic) + noise * rng.standard_normal((m, dim), dtype=np.float32)
        out[start : start + m] = l2_normalize(x)
    return out
