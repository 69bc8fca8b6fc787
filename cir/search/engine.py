"""The search engine: encoder + loaded index + fusion. It knows nothing of HTTP.

`SearchEngine.search` runs one composed query through the micro-batchers (image encodes, text
encodes and index searches are each gathered across concurrent callers) or, when it is the only
query in flight, as `search_sync` on the model thread; `search_sync` runs the steps directly,
one query at a time, and is the exact reference the batched path is compared against. The
loaded index is an immutable `IndexState` read once per query, so a hot swap (`swap`) never
changes the index under a query in flight, and counts the queries holding each state so the
service closes a retired one only once none does (`in_flight`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
from PIL import Image

from cir.filter_hints import filter_hints
from cir.fusion import DEFAULT_ALPHA, compose
from cir.images import (FORMATS_TEXT, DecodeBudget, ImageDecodeError, ImageTooLargeError, bytes_sha256, decode_image,
                        sniff_image_type)
from cir.pixels import Pixels, stack_pixels
from cir.search.batching import MicroBatcher
from cir.search.holds import Holds
from cir.search.paging import Window, merge, page, search_levels
from cir.search.ingest import IngestMixin
from cir.search.query import (ONE_SIDED_ALPHA, BadImageError, Hit, ImagePixelsError, IndexState, NotReadyError, Plan,
                              Query, SearchResult, UnknownReferenceError, UnsupportedImageError, effective_fusion)

log = logging.getLogger(__name__)
STAGES = ("decode", "encode_image", "encode_text", "fuse", "search")


def _longest(timings: dict[str, float], **seconds: float) -> None:
    """Parts that run concurrently: a stage lasts as long as its slowest part."""
    for key, value in seconds.items():
        timings[key] = max(timings[key], value)


class SearchEngine(IngestMixin):
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
        self._on_batch = on_batch
        self._in_flight = 0  # queries inside search() (event-loop thread only)
        self._holds = Holds()  # queries in flight per index state: a swapped-out one closes once none holds it
        self._decode_pool = ThreadPoolExecutor(decode_workers, thread_name_prefix="cir-decode")
        self._decode_workers = decode_workers
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
        return self._holds.count(state)

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
        return self.encoder.preprocess(self.decode_image(data))

    def decode_image(self, data: bytes) -> Image.Image:
        """Upload bytes -> a decoded image, held to the pixel and memory limits, or a QueryError."""
        if sniff_image_type(data) is None:
            raise UnsupportedImageError(f"the upload is not a {FORMATS_TEXT} image")
        try:
            image = decode_image(data, max_pixels=self.max_pixels, reduce_for=self._reduce_for,
                                 budget=self.decode_budget)
        except ImageTooLargeError as exc:
            raise ImagePixelsError(str(exc)) from exc
        except ImageDecodeError as exc:
            raise BadImageError(f"the image is truncated or corrupt: {exc}") from exc
        return image

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

    def search_batch(self, jobs: list[tuple]) -> list[tuple[list[Hit], int | None]]:
        """Search several query vectors (cir.search.paging.search_levels), with hit metadata.

        A job is (state, vector, paging.Window, bound filter or None); its answer is (hits, next
        offset): the window's slice of the query's fixed sequence, whatever else is in the batch.
        """
        levels = search_levels(jobs)
        out = []
        for (state, _, window, _), found in zip(jobs, levels):
            pairs, next_offset = page(merge(found), window)
            out.append((self._hits(state, pairs, window.offset), next_offset))
        return out

    @staticmethod
    def _hits(state: IndexState, pairs: list[tuple[float, str]], offset: int) -> list[Hit]:
        return [Hit(id=item_id, score=score, rank=offset + n + 1, item=state.index.item(item_id) or {})
                for n, (score, item_id) in enumerate(pairs)]

    # --- whole queries ------------------------------------------------------------------
    def _begin(self, q: Query) -> Plan:
        state = self._state
        if state is None:
            raise NotReadyError("no index is loaded yet")
        q.check()
        fusion, need_image, need_text = effective_fusion(q, q.fusion or self.default_fusion)
        alpha = q.alpha if q.alpha is not None else self.alpha_for(state)
        # report the text weight actually used: a one-sided fusion is all image or all text
        alpha = ONE_SIDED_ALPHA.get(fusion, alpha)
        # Checked against this version's fields before any encoding: a bad filter fails fast.
        bound = q.filter.bind(state.index.fields) if q.filter is not None else None
        exclude = frozenset(q.exclude_ids) | (frozenset() if q.keep_references else frozenset(q.gallery_ids))
        self._holds.hold(state)  # released by the caller when the query ends
        return Plan(state, fusion, alpha, bound, q.uploads if need_image else (), q.gallery_ids if need_image else (),
                    q.text if need_text else None, tuple(q.negative_texts), exclude)

    @staticmethod
    def _compose(plan: Plan, q: Query, refs: list[np.ndarray], texts: list[tuple[np.ndarray, bool]]) -> np.ndarray:
        """cir.fusion.compose for one query (one reference and no negatives: exactly Slerp of v and w)."""
        w = texts[0][0][None] if plan.text is not None else None
        negatives = [vec for vec, _ in texts[0 if plan.text is None else 1:]]
        return compose(plan.fusion, np.stack(refs)[None] if refs else None, w, plan.alpha, q.image_weights,
                       np.stack(negatives)[None] if negatives else None, q.beta)[0]

    def same_items(self, state: IndexState, data: bytes) -> list[str]:
        """The gallery items whose image file has exactly these bytes (an upload of a gallery image)."""
        return state.index.ids_with_sha256(bytes_sha256(data))

    @staticmethod
    def _window(plan: Plan, q: Query, same: list[list[str]]) -> Window:
        """The query's page, excluding its own references (and the gallery copies of its uploads)."""
        return Window(q.offset, q.k, q.min_score, plan.exclude.union(*same))

    @staticmethod
    def _result(plan: Plan, q: Query, refs: list, texts: list, found: tuple[list[Hit], int | None],
                vec: np.ndarray, timings: dict[str, float], t0: float) -> SearchResult:
        timings["total"] = time.perf_counter() - t0
        hits, next_offset = found
        return SearchResult(hits, plan.alpha, plan.fusion, plan.state.version, any(t for _, t in texts),
                            {k: round(s * 1000, 3) for k, s in timings.items()}, references=len(refs),
                            negative_weight=q.beta if plan.negatives else None, vector=vec,
                            warnings=filter_hints(q.filter, plan.state.index.fields),
                            offset=q.offset, next_offset=next_offset)

    async def search(self, q: Query) -> SearchResult:
        """Answer one query (call from the event loop): alone, as `search_sync` in one hop to the model
        thread; while others are in flight, through the micro-batchers, so they share forward passes."""
        self._in_flight += 1
        try:
            if self._in_flight == 1:
                return await self._search_alone(q)
            return await self._search_batched(q)
        finally:
            self._in_flight -= 1

    async def _search_alone(self, q: Query) -> SearchResult:
        # Nothing to batch with: the hand-offs between decode, batcher and model threads would
        # only add latency. The model thread keeps one forward pass at a time.
        result = await asyncio.get_running_loop().run_in_executor(self._model_pool, self.search_sync, q)
        if self._on_batch is not None:  # batches of one, so the batch-size metric counts every item
            counts = {"image": len(q.uploads) if result.fusion != "text" else 0,
                      "text": (result.fusion != "image") + len(q.negative_texts), "search": 1}
            for name, count in counts.items():
                for _ in range(count):
                    self._on_batch(name, 1)
        return result

    async def _search_batched(self, q: Query) -> SearchResult:
        t0 = time.perf_counter()
        plan = self._begin(q)
        tickets: dict[str, list] = {"images": [], "texts": [], "search": []}
        try:
            # Announce each item this query will bring to a batcher, so batchers wait for it (and only for it).
            tickets["images"] = [self._images.expect() for _ in plan.uploads]
            tickets["texts"] = [self._texts.expect() for _ in plan.texts]
            tickets["search"] = [self._searches.expect()]
            return await self._search(q, plan, tickets, t0)
        finally:
            for ticket in (t for group in tickets.values() for t in group):
                ticket.close()
            self._holds.release(plan.state)

    async def _search(self, q: Query, plan: Plan, tickets: dict, t0: float) -> SearchResult:
        timings = dict.fromkeys(STAGES, 0.0)
        loop = asyncio.get_running_loop()

        async def upload(data: bytes, ticket) -> np.ndarray:
            t = time.perf_counter()
            pixels = await loop.run_in_executor(self._decode_pool, self.decode, data)
            t1 = time.perf_counter()
            vec = await ticket.submit(pixels)
            _longest(timings, decode=t1 - t, encode_image=time.perf_counter() - t1)
            return vec

        async def stored(ref_id: str) -> np.ndarray:
            return await loop.run_in_executor(self._search_pool, self.reference, plan.state, ref_id)

        async def same(data: bytes) -> list[str]:
            return await loop.run_in_executor(self._decode_pool, self.same_items, plan.state, data)

        async def text(value: str, ticket) -> tuple[np.ndarray, bool]:
            t = time.perf_counter()
            out = await ticket.submit(value)
            _longest(timings, encode_text=time.perf_counter() - t)
            return out

        copies = () if q.keep_references else q.uploads
        parts = await asyncio.gather(*map(upload, plan.uploads, tickets["images"]), *map(stored, plan.gallery_ids),
                                     *map(text, plan.texts, tickets["texts"]), *map(same, copies))
        n, m = len(plan.uploads) + len(plan.gallery_ids), len(parts) - len(copies)
        refs, texts, window = list(parts[:n]), list(parts[n:m]), self._window(plan, q, list(parts[m:]))
        t = time.perf_counter()
        vec = self._compose(plan, q, refs, texts)
        t1 = time.perf_counter()
        found = await tickets["search"][0].submit((plan.state, vec, window, plan.bound))
        timings["fuse"], timings["search"] = t1 - t, time.perf_counter() - t1
        return self._result(plan, q, refs, texts, found, vec, timings, t0)

    def search_sync(self, q: Query) -> SearchResult:
        """The same query, step by step on the calling thread: no batching, no threads."""
        t0 = time.perf_counter()
        plan = self._begin(q)
        try:
            return self._run_sync(q, plan, t0)
        finally:
            self._holds.release(plan.state)

    def _run_sync(self, q: Query, plan: Plan, t0: float) -> SearchResult:
        timings = dict.fromkeys(STAGES, 0.0)
        refs = []
        for data in plan.uploads:
            t = time.perf_counter()
            pixels = self.decode(data)
            t1 = time.perf_counter()
            refs.append(self.encode_pixel_batch([pixels])[0])
            timings["decode"] += t1 - t
            timings["encode_image"] += time.perf_counter() - t1
        refs += [self.reference(plan.state, ref_id) for ref_id in plan.gallery_ids]
        t = time.perf_counter()
        texts = [self.encode_text_batch([value])[0] for value in plan.texts]
        timings["encode_text"] = time.perf_counter() - t
        t = time.perf_counter()
        vec = self._compose(plan, q, refs, texts)
        t1 = time.perf_counter()
        same = [] if q.keep_references else [self.same_items(plan.state, data) for data in q.uploads]
        found = self.search_batch([(plan.state, vec, self._window(plan, q, same), plan.bound)])[0]
        timings["fuse"], timings["search"] = t1 - t, time.perf_counter() - t1
        return self._result(plan, q, refs, texts, found, vec, timings, t0)
