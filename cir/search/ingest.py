"""Embedding a live upsert with the serving engine: the same decode, encoder (and adapter) and item
composition as `cir index build`, batched with concurrent queries through the engine's batchers.

An index whose manifest has `item_text` {field, alpha} ranks slerp(image, text of that field,
alpha) for the items that have the text, as indexer.items composes them at build time; the
stored image embedding stays the plain one (reference_id queries and rebuilds read it).
"""

from __future__ import annotations

import asyncio
import io

import numpy as np
from PIL import Image

from cir.fusion import fuse


def item_text(item: dict, field: str) -> str | None:
    """The item's text in `field` of its metadata, or None when it has none (or not a string)."""
    value = (item.get("metadata") or {}).get(field)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def image_size(data: bytes) -> tuple[int | None, int | None]:
    """(width, height) from an image's header (the bytes were already decoded once), or Nones."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (OSError, ValueError):
        return None, None


class IngestMixin:
    """SearchEngine methods that embed gallery items written live (needs the engine's pools and batchers)."""

    async def embed_upload(self, data: bytes) -> np.ndarray:
        """Decode and embed one image (QueryError on a bad one), batched with concurrent queries."""
        loop = asyncio.get_running_loop()
        pixels = await loop.run_in_executor(self._decode_pool, self.decode, data)
        ticket = self._images.expect()
        try:
            return np.asarray(await ticket.submit(pixels), np.float32)
        finally:
            ticket.close()

    async def ranked_vector(self, embedding: np.ndarray, metadata: dict, manifest: dict) -> np.ndarray:
        """What the index ranks for an item: its embedding, or its composition with its text field."""
        record = manifest.get("item_text") or {}
        field, alpha = record.get("field"), float(record.get("alpha") or 0.0)
        text = item_text({"metadata": metadata}, field) if field else None
        if text is None or alpha == 0.0:
            return embedding
        ticket = self._texts.expect()
        try:
            text_vec, _ = await ticket.submit(text)
        finally:
            ticket.close()
        return np.asarray(fuse("slerp", embedding[None], np.asarray(text_vec, np.float32)[None], alpha)[0], np.float32)
