"""The search engine: encoder + loaded index + fusion. It knows nothing of HTTP.

`SearchEngine.search` runs one composed query through the micro-batchers (image encodes, text
encodes and index searches are each gathered across concurrent callers); `search_sync` runs the
same steps directly, one query at a time, and is the exact reference the batched path is
compared against. The loaded index is an immutable `IndexState` read once per query, so a hot
swap (`swap`) never changes the index under a query in flight.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
from PIL import Image

from cir.fusion import DEFAULT_ALPHA, fuse
from cir.images import (FORMATS_TEXT, DecodeBudget, ImageDecodeError, ImageTooLargeError, decode_image,
                        sniff_image_type)
from cir.pixels import Pixels, stack_pixels
from cir.search.batching import MicroBatcher
from cir.search.query import (AmbiguousQueryError, BadImageError, EmptyQueryError, Hit, ImagePixelsError,
                           IndexState, NotReadyError, Query, SearchResult, UnknownReferenceError,
                           UnsupportedImageError)

log = logging.getLogger(__name__)
# The text weight of the one-sided fusions (what `alpha` reports for them).
ONE_SIDED_ALPHA = {"image": 0.0, "text": 1.0}


def _plan(q: Query, fusion: str) -> tuple[str, bool, bool]:
    """Validate the query's parts and pick the effective fusion."""
    has_image = q.image_bytes is not None or q.reference_id is not None
    has_text = bool(q.text)
    if q.image_bytes is not None and q.reference_id is not None:
        raise AmbiguousQueryError("give either an image or a reference_id, not both")
    if not has_image and not has_text:
        raise EmptyQueryError("a query needs an image, a reference_id or a text")
    if not has_text:
        return "image", True, False
    if not has_image:
        return "text", False, True
    return fusion, fusion != "text", fusion != "image"


class SearchEngine:
    """Answers composed queries against the current index with one encoder."""

    def __init__(self, encoder, *, max_pixels: int, max_batch: int = 32, batch_wait_s: float = 0.002,
                 max_queue: int = 1024, decode_workers: int = 4, decode_budget: DecodeBudget | None = None,
                 default_alpha: float | None = None,
                 default_fusion: str = "slerp", on_batch: Callable[[str, int], None] | None = None):
        self.encoder = encoder
        self.max_pixels = max_pixels
        self.decode_budget = decode_budget
        # uploads far larger than the model's input are decoded small (see cir.images.decode_image)
        self._reduce_for = getattr(encoder.preprocess, "input_side", None)
        self.default_alpha = default_alpha
        self.default_fusion = default_fusion
        self._state: IndexState | None = None
        # queries in flight per index state: a swapped-out state is closed only once none holds it
        self._holds: Counter[int] = Counter()
        self._holds_lock = threading.Lock()
        self._decode_pool = ThreadPoolExecutor(decode_workers, thread_name_prefix="cir-decode")
        self._model_pool = ThreadPoolExecutor(1, thread_name_prefix="cir-model")
        self._search_pool = ThreadPoolExecutor(1, thread_name_prefix="cir-search")
        opts = dict(max_batch=max_batch, max_wait_s=batch_wait_s, max_queue=max_queue, on_batch=on_batch)
        self._images = MicroBatcher(self.encode_pixel_batch, self._model_pool, name="image", **opts)
        self._texts = MicroBatcher(self.encode_text_batch, self._model_pool, name="text", **opts)
        self._searches = MicroBatcher(self.search_batch, self._search_pool, name="search", **opts)

    # --- state -------------------------------------------------------------------------
    @property
    def state(self) -> IndexState | None:
        return self._state

    def swap(self, state: IndexState) -> IndexState | None:
        """Make `state` current (one reference assignment: atomic); return the previous one."""
        old, self._state = self._state, state
        return old

    def in_flight(self, state: IndexState) -> int:
        """How many queries are running against `state` (a retired state may close when 0)."""
        with self._holds_lock:
            return self._holds[id(state)]

    def _release(self, state: IndexState) -> None:
        with self._holds_lock:
            self._holds[id(state)] -= 1
            if self._holds[id(state)] <= 0:
                del self._holds[id(state)]

    def alpha_for(self, state: IndexState | None) -> float:
        """The text weight used when a query gives none: config, then manifest, then DEFAULT_ALPHA."""
        if self.default_alpha is not None:
            return self.default_alpha
        manifest_alpha = (state.manifest.get("default_alpha") if state else None)
        return float(manifest_alpha) if manifest_alpha is not None else DEFAULT_ALPHA

    async def start(self) -> None:
        """Start the batchers on the running event loop."""
        for batcher in (self._images, self._texts, self._searches):
            batcher.start()

    async def stop(self) -> None:
        """Stop the batchers and worker threads."""
        for batcher in (self._images, self._texts, self._searches):
            await batcher.stop()
        for pool in (self._decode_pool, self._model_pool, self._search_pool):
            pool.shutdown(wait=False, cancel_futures=True)

    def warmup(self) -> None:
        """One tiny forward pass per tower, so the first request is not the slow one."""
        self.encode_pixel_batch([self.encoder.preprocess(Image.new("RGB", (32, 32)))])
        self.encode_text_batch(["warm up"])

    # --- the steps (sync; the batchers run them on worker threads) ----------------------
    def decode(self, data: bytes) -> Pixels:
        """Upload bytes -> model-ready pixels (cir.pixels), or a QueryError."""
        if sniff_image_type(data) is None:
            raise UnsupportedImageError(f"the upload is not a {FORMATS_TEXT} image")
        try:
            image = decode_image(data, max_pixels=self.max_pixels, reduce_for=self._reduce_for,
                                 budget=self.decode_budget)
        except ImageTooLargeError as exc:
            raise ImagePixelsError(str(exc)) from exc
        except ImageDecodeError as exc:
            raise BadImageError(f"the image is truncated or corrupt: {exc}") from exc
        return self.encoder.preprocess(image)

    def encode_pixel_batch(self, pixels: list[Pixels]) -> list[np.ndarray]:
        """One forward pass of the image tower over preprocessed images."""
        return list(self.encoder.encode_pixels(stack_pixels(pixels)))

    def encode_text_batch(self, texts: list[str]) -> list[tuple[np.ndarray, bool]]:
        """One forward pass of the text tower; each row with its 'was truncated' flag."""
        return list(zip(self.encoder.encode_texts(texts), self.encoder.truncated(texts)))

    def reference(self, state: IndexState, ref_id: str) -> np.ndarray:
        """The stored embedding of a gallery item, or UnknownReferenceError."""
        vec = state.index.embedding(ref_id)
        if vec is None:
            raise UnknownReferenceError(f"no gallery item with id {ref_id!r} in index {state.version}")
        return np.asarray(vec, dtype=np.float32)

    def search_batch(self, jobs: list[tuple[IndexState, np.ndarray, int, float | None]]) -> list[list[Hit]]:
        """Search several query vectors, one FAISS call per index state, with hit metadata."""
        out: list[list[Hit] | None] = [None] * len(jobs)
        groups: dict[int, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(id(job[0]), []).append(i)
        for rows in groups.values():
            state = jobs[rows[0]][0]
            k_max = max(jobs[i][2] for i in rows)
            scores, ids = state.index.search(np.stack([jobs[i][1] for i in rows]).astype(np.float32), k_max)
            for row, i in enumerate(rows):
                _, _, k, min_score = jobs[i]
                out[i] = self._hits(state, scores[row], ids[row][:k], min_score)
        return out  # type: ignore[return-value]

    @staticmethod
    def _hits(state: IndexState, scores: np.ndarray, ids: list[str], min_score: float | None) -> list[Hit]:
        hits = []
        for score, item_id in zip(scores, ids):
            if min_score is not None and score < min_score:
                break  # scores come sorted, best first
            hits.append(Hit(id=item_id, score=float(score), rank=len(hits) + 1, item=state.index.item(item_id) or {}))
        return hits

    # --- whole queries ------------------------------------------------------------------
    def _begin(self, q: Query) -> tuple[IndexState, str, bool, bool, float]:
        state = self._state
        if state is None:
            raise NotReadyError("no index is loaded yet")
        fusion, need_image, need_text = _plan(q, q.fusion or self.default_fusion)
        alpha = q.alpha if q.alpha is not None else self.alpha_for(state)
        # report the text weight actually used: a one-sided fusion is all image or all text
        alpha = ONE_SIDED_ALPHA.get(fusion, alpha)
        with self._holds_lock:  # released by the caller when the query ends
            self._holds[id(state)] += 1
        return state, fusion, need_image, need_text, alpha

    def _compose(self, fusion: str, v: np.ndarray | None, w: np.ndarray | None, alpha: float) -> np.ndarray:
        v = w if v is None else v
        w = v if w is None else w
        return fuse(fusion, v[None], w[None], alpha)[0]

    async def search(self, q: Query) -> SearchResult:
        """Answer one query through the micro-batchers (call from the event loop)."""
        t0 = time.perf_counter()
        state, fusion, need_image, need_text, alpha = self._begin(q)
        upload = q.reference_id is None and need_image
        # Announce each stage this query will reach, so batchers wait for it (and only for it).
        try:
            tickets = {"image": self._images.expect() if upload else None,
                       "text": self._texts.expect() if need_text else None, "search": self._searches.expect()}
        except BaseException:
            self._release(state)
            raise
        try:
            return await self._search(q, state, fusion, alpha, tickets, t0)
        finally:
            for ticket in tickets.values():
                if ticket is not None:
                    ticket.close()
            self._release(state)

    async def _search(self, q: Query, state: IndexState, fusion: str, alpha: float, tickets: dict,
                      t0: float) -> SearchResult:
        timings = dict.fromkeys(("decode", "encode_image", "encode_text", "fuse", "search"), 0.0)
        loop = asyncio.get_running_loop()

        async def image_part() -> np.ndarray | None:
            if q.reference_id is not None:
                return await loop.run_in_executor(self._search_pool, self.reference, state, q.reference_id)
            if tickets["image"] is None:
                return None
            t = time.perf_counter()
            pixels = await loop.run_in_executor(self._decode_pool, self.decode, q.image_bytes)
            t1 = time.perf_counter()
            vec = await tickets["image"].submit(pixels)
            timings["decode"], timings["encode_image"] = t1 - t, time.perf_counter() - t1
            return vec

        async def text_part() -> tuple[np.ndarray | None, bool]:
            if tickets["text"] is None:
                return None, False
            t = time.perf_counter()
            vec, truncated = await tickets["text"].submit(q.text)
            timings["encode_text"] = time.perf_counter() - t
            return vec, truncated

        v, (w, truncated) = await asyncio.gather(image_part(), text_part())
        t = time.perf_counter()
        vec = self._compose(fusion, v, w, alpha)
        t1 = time.perf_counter()
        hits = await tickets["search"].submit((state, vec, q.k, q.min_score))
        timings["fuse"], timings["search"] = t1 - t, time.perf_counter() - t1
        timings["total"] = time.perf_counter() - t0
        return SearchResult(hits, alpha, fusion, state.version, truncated,
                            {k: round(s * 1000, 3) for k, s in timings.items()})

    def search_sync(self, q: Query) -> SearchResult:
        """The same query, step by step on the calling thread: no batching, no threads."""
        t0 = time.perf_counter()
        state, fusion, need_image, need_text, alpha = self._begin(q)
        try:
            return self._search_sync(q, state, fusion, need_image, need_text, alpha, t0)
        finally:
            self._release(state)

    def _search_sync(self, q: Query, state: IndexState, fusion: str, need_image: bool, need_text: bool,
                     alpha: float, t0: float) -> SearchResult:
        timings = dict.fromkeys(("decode", "encode_image", "encode_text", "fuse", "search"), 0.0)
        v = w = None
        truncated = False
        if q.reference_id is not None:
            v = self.reference(state, q.reference_id)
        elif need_image:
            t = time.perf_counter()
            pixels = self.decode(q.image_bytes)
            t1 = time.perf_counter()
            v = self.encode_pixel_batch([pixels])[0]
            timings["decode"], timings["encode_image"] = t1 - t, time.perf_counter() - t1
        if need_text:
            t = time.perf_counter()
            w, truncated = self.encode_text_batch([q.text])[0]
            timings["encode_text"] = time.perf_counter() - t
        t = time.perf_counter()
        vec = self._compose(fusion, v, w, alpha)
        t1 = time.perf_counter()
        hits = self.search_batch([(state, vec, q.k, q.min_score)])[0]
        timings["fuse"], timings["search"] = t1 - t, time.perf_counter() - t1
        timings["total"] = time.perf_counter() - t0
        return SearchResult(hits, alpha, fusion, state.version, truncated,
                            {k: round(s * 1000, 3) for k, s in timings.items()})
