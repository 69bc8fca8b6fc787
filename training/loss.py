"""Symmetric InfoNCE against the frozen text tower, with one-to-one or multi-positive labels.

Labels are a boolean matrix P[i, j]: "caption i describes image j". One-to-one labels (CLIP's
and the paper's) are the identity; they call a caption of another image in the batch a
negative even when it describes that image equally well ("a red shape" in a batch with two red
shapes), and ask the model to separate what cannot be separated. Multi-positive labels give each
row a target spread evenly over all of its positives.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch
import torch.nn.functional as F

from cir.toyworld import describes


def resolve_positives(mode: str, structured: bool) -> str:
    """'auto' means shapes-world labels when rows carry mentions/attributes, else equal captions."""
    if mode != "auto":
        return mode
    return "mentions" if structured else "captions"


@lru_cache(maxsize=1 << 16)
def _describes(mentions: tuple, attributes: tuple) -> bool:
    return describes(dict(mentions), dict(attributes))


def positives_matrix(captions: Sequence[str], metas: Sequence[dict | None], mode: str) -> torch.Tensor:
    """The (B, B) boolean label matrix P[caption i, image j] for one batch."""
    n = len(captions)
    eye = torch.eye(n, dtype=torch.bool)
    if mode == "pairs":
        return eye
    if mode == "captions":
        ids = {c: k for k, c in enumerate(dict.fromkeys(captions))}
        codes = torch.tensor([ids[c] for c in captions])
        return codes[:, None] == codes[None, :]
    if mode == "mentions":
        if any(not m or "mentions" not in m or "attributes" not in m for m in metas):
            raise ValueError("--positives mentions needs `mentions` and `attributes` on every data row")
        mentions = [tuple(sorted(m["mentions"].items())) for m in metas]
        attrs = [tuple(sorted(m["attributes"].items())) for m in metas]
        rows = [[_describes(mentions[i], attrs[j]) for j in range(n)] for i in range(n)]
        return torch.tensor(rows, dtype=torch.bool).reshape(n, n) | eye
    raise ValueError(f"unknown positives mode {mode!r}")


def _soft_cross_entropy(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean over rows of cross-entropy against targets spread evenly over each row's positives."""
    target = positives.float() / positives.sum(dim=1, keepdim=True).float()
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, positives: torch.Tensor,
                     logit_scale: float | torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of unit image rows against unit text rows; positives[i, j]: text i fits image j."""
    logits = logit_scale * image.float() @ text.float().T  # rows: images, columns: texts
    positives = positives.to(logits.device)
    image_to_text = _soft_cross_entropy(logits, positives.T)
    text_to_image = _soft_cross_entropy(logits.T, positives)
    return (image_to_text + text_to_image) / 2
