"""Dynamic micro-batching: gather concurrent requests' work into one call on a worker thread.

Each `MicroBatcher` owns a bounded asyncio queue and a collector task. The collector takes the
first waiting item and runs `fn(items)` in the given executor (one thread, so the model sees
one forward pass at a time), handing each caller its own result. Callers announce work that is
on its way (`expect()`, e.g. an upload still decoding); the collector waits for announced items
up to `max_wait_s` after the first one arrived, but never for work nobody announced, so a lone
request pays no wait. While a batch runs, new requests queue up, so batches grow with load and
throughput with concurrency; `max_batch` bounds them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from typing import Callable, Generic, Sequence, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class OverloadedError(RuntimeError):
    """The batcher's queue is full: the service is over capacity."""


class MicroBatcher(Generic[T, R]):
    """Collect `submit`ted items into batches for `fn(list[T]) -> list[R]` on `executor`."""

    def __init__(self, fn: Callable[[list[T]], Sequence[R]], executor: Executor, max_batch: int = 32,
                 max_wait_s: float = 0.002, max_queue: int = 1024, name: str = "batch",
                 on_batch: Callable[[str, int], None] | None = None):
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait_s >= 0")
        self.fn, self.executor, self.name = fn, executor, name
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.on_batch = on_batch
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
        self._task: asyncio.Task | None = None
        self._expected = 0  # announced items not submitted yet (event-loop thread only)

    def expect(self) -> "Expected":
        """Announce an item that will be submitted soon; use the returned handle to submit it."""
        self._expected += 1
        return Expected(self)

    def start(self) -> None:
        """Start the collector task on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Stop collecting; callers still waiting get a RuntimeError."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while not self._queue.empty():
            _, fut, _ = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(RuntimeError("service is shutting down"))

    async def submit(self, item: T) -> R:
        """Queue one item and wait for its result (raises OverloadedError when the queue is full)."""
        if self._task is None:
            raise RuntimeError(f"batcher {self.name} is not running")
        fut = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((item, fut, time.perf_counter()))
        except asyncio.QueueFull:
            raise OverloadedError(f"{self.name} queue is full ({self._queue.maxsize} waiting)") from None
        return await fut

    async def _gather(self) -> list[tuple]:
        first = await self._queue.get()
        batch = [first]
        # The wait counts from the first item's arrival: items that queued during the previous
        # batch go out at once instead of waiting again.
        deadline = first[2] + self.max_wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or self._expected <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [entry for entry in batch if not entry[1].done()]  # drop cancelled callers
            if not live:
                continue
            if self.on_batch is not None:
                self.on_batch(self.name, len(live))
            try:
                results = await loop.run_in_executor(self.executor, self._call, [e[0] for e in live])
            except Exception as exc:  # noqa: BLE001 - e.g. executor shut down; never kill the loop
                results = [exc] * len(live)
            for (_, fut, _), result in zip(live, results):
                if fut.done():
                    continue
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)

    def _call(self, items: list[T]) -> list:
        """Run fn on the batch; if it fails, retry one by one so one bad item fails alone."""
        try:
            results = list(self.fn(items))
            if len(results) != len(items):
                raise RuntimeError(f"{self.name}: fn returned {len(results)} results for {len(items)} items")
            return results
        except Exception as exc:  # noqa: BLE001 - reported per item below
            if len(items) == 1:
                return [exc]
            log.warning("%s batch of %d failed (%s); retrying one by one", self.name, len(items), exc)
        out: list = []
        for item in items:
            try:
                out.append(self.fn([item])[0])
            except Exception as exc:  # noqa: BLE001
                out.append(exc)
        return out


class Expected:
    """An announced item of a MicroBatcher: `submit` it, or `close` it if it will never come."""

    def __init__(self, batcher: MicroBatcher):
        self.batcher, self.open = batcher, True

    def close(self) -> None:
        """Withdraw the announcement (idempotent)."""
        if self.open:
            self.open = False
            self.batcher._expected -= 1

    async def submit(self, item):
        """Submit the announced item and wait for its result."""
        self.close()
        return await self.batcher.submit(item)
