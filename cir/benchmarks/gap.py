"""The modality gap between paired image and text embeddings (arXiv 2405.00571 section 3; Liang et al. 2022).

Used by the TAT job's before/after report and the toy model's report, so both measure it alike.
"""

from __future__ import annotations

import numpy as np


def modality_gap(images: np.ndarray, texts: np.ndarray) -> dict:
    """Paired cosine, mean unpaired cosine, and the distance and cosine between the image and text centroids.

    `images[i]` and `texts[i]` are unit embeddings of one pair; a smaller gap means a higher
    paired cosine and closer centroids.
    """
    n = len(images)
    if n == 0:
        return {"pairs": 0}
    sims = images @ texts.T
    ci, ct = images.mean(0), texts.mean(0)
    return {"pairs": n, "paired_cosine": float(np.mean(np.diag(sims))),
            "unpaired_cosine": float((sims.sum() - np.trace(sims)) / max(n * n - n, 1)),
            "centroid_distance": float(np.linalg.norm(ci - ct)),
            "centroid_cosine": float(ci @ ct / max(float(np.linalg.norm(ci) * np.linalg.norm(ct)), 1e-12))}
