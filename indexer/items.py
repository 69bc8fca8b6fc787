"""Composed gallery items: an item whose manifest row has the text field (a product title, a caption)
is indexed as slerp(image_embedding, text_embedding, B); items without it keep their image embedding.

The image embeddings are always stored as they are (reference_id queries and incremental rebuilds
read them); only the vectors the index ranks change, so a new field or weight needs text
encodes but no image encodes.
"""

from __future__ import annotations

import logging

import numpy as np
from tqdm import tqdm

from cir.fusion import fuse
from cir.search.ingest import item_text  # one definition: live upserts compose items the same way

log = logging.getLogger(__name__)

TEXT_CHUNK = 4096  # texts per progress-bar step


def encode_unique(encoder, texts: list[str], progress: bool) -> tuple[dict[str, np.ndarray], int]:
    """Embed each distinct text once (titles repeat); returns text -> unit row, and how many were truncated."""
    unique = list(dict.fromkeys(texts))
    rows: dict[str, np.ndarray] = {}
    truncated = 0
    with tqdm(total=len(unique), desc="item texts", unit="text", disable=not progress) as bar:
        for start in range(0, len(unique), TEXT_CHUNK):
            chunk = unique[start:start + TEXT_CHUNK]
            rows.update(zip(chunk, encoder.encode_texts(chunk)))
            truncated += sum(encoder.truncated(chunk))
            bar.update(len(chunk))
    return rows, truncated


def compose_items(encoder, items: list[dict], images: np.ndarray, field: str | None, alpha: float,
                  progress: bool = False) -> tuple[np.ndarray | None, dict | None]:
    """The vectors the index should rank (None: the image embeddings themselves) and the manifest record.

    With no field there is no record; with alpha 0, or no item holding the field, the index is
    exactly the image index.
    """
    if field is None:
        return None, None
    texts = [item_text(it, field) for it in items]
    rows = [i for i, t in enumerate(texts) if t is not None]
    record = {"field": field, "alpha": alpha, "composed": 0, "without_text": len(items) - len(rows),
              "truncated_texts": 0}
    if not rows:
        log.warning("no gallery item has a %r text: the index holds image embeddings only", field)
        return None, record
    if alpha == 0.0:
        return None, record
    embedded, record["truncated_texts"] = encode_unique(encoder, [texts[i] for i in rows], progress)
    composed = images.copy()
    composed[rows] = fuse("slerp", images[rows], np.stack([embedded[texts[i]] for i in rows]), alpha)
    record["composed"] = len(rows)
    log.info("composed %d of %d gallery items with their %r text (weight %.2f)", len(rows), len(items), field, alpha)
    return composed, record
