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

from cir.errors import QueryError
from cir.fusion import fuse
from cir.pixels import pixel_row

DECODE_CHUNK = 16  # uploads per preprocessing call of a bulk write (one call per image costs more)


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


def composing_text(metadata: dict, manifest: dict) -> tuple[str | None, float]:
    """(the text an item is composed with in this version, its weight), or (None, 0) when it is not composed."""
    record = manifest.get("item_text") or {}
    field, alpha = record.get("field"), float(record.get("alpha") or 0.0)
    text = item_text({"metadata": metadata}, field) if field else None
    return (text, alpha) if text is not None and alpha > 0.0 else (None, 0.0)


def composed(embedding: np.ndarray, text_vec: np.ndarray, alpha: float) -> np.ndarray:
    """slerp(image embedding, text embedding, alpha): a composed item's ranked vector (as indexer.items)."""
    return np.asarray(fuse("slerp", embedding[None], np.asarray(text_vec, np.float32)[None], alpha)[0], np.float32)


def embed_item_sync(engine, data: bytes, metadata: dict, manifest: dict) -> tuple[np.ndarray, np.ndarray]:
    """(embedding, ranked vector) of an image on the calling thread (`cir index apply`; no batching)."""
    embedding = np.asarray(engine.encode_pixel_batch([engine.decode(data)])[0], np.float32)
    text, alpha = composing_text(metadata, manifest)
    if text is None:
        return embedding, embedding
    return embedding, composed(embedding, engine.encode_text_batch([text])[0][0], alpha)


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

    def decode_chunk(self, datas: list[bytes]) -> list:
        """Pixels of each upload (one preprocessing call for the chunk), or its QueryError."""
        out: list = []
        for data in datas:
            try:
                out.append(self.decode_image(data))
            except QueryError as exc:
                out.append(exc)
        good = [i for i, im in enumerate(out) if not isinstance(im, QueryError)]
        if good:
            batch = self.encoder.preprocess.batch([out[i] for i in good])
            for j, i in enumerate(good):
                out[i] = pixel_row(batch, j)
        return out

    async def embed_uploads(self, datas: list[bytes]) -> list[np.ndarray | QueryError]:
        """Decode and embed many images (a bulk write): decoded in chunks on the decode pool, then encoded
        in batches of the largest micro-batch on the model's thread; a QueryError in place of each bad image."""
        loop = asyncio.get_running_loop()
        size = max(1, min(DECODE_CHUNK, -(-len(datas) // self._decode_workers)))
        chunks = await asyncio.gather(*(loop.run_in_executor(self._decode_pool, self.decode_chunk, datas[i:i + size])
                                        for i in range(0, len(datas), size)))
        decoded = [d for chunk in chunks for d in chunk]
        good = [i for i, d in enumerate(decoded) if not isinstance(d, QueryError)]
        out: list = list(decoded)
        step = self._images.max_batch
        for start in range(0, len(good), step):
            rows = good[start:start + step]
            vecs = await loop.run_in_executor(self._model_pool, self.encode_pixel_batch, [decoded[i] for i in rows])
            for i, vec in zip(rows, vecs):
                out[i] = np.asarray(vec, np.float32)
        return out

    async def ranked_vector(self, embedding: np.ndarray, metadata: dict, manifest: dict) -> np.ndarray:
        """What the index ranks for an item: its embedding, or its composition with its text field."""
        text, alpha = composing_text(metadata, manifest)
        if text is None:
            return embedding
        ticket = self._texts.expect()
        try:
            text_vec, _ = await ticket.submit(text)
        finally:
            ticket.close()
        return composed(embedding, text_vec, alpha)
