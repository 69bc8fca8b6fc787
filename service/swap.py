"""Index hot swap: watch ROOT/CURRENT, load new versions in the background, swap them in atomically.

A new version is loaded on a worker thread while the old one keeps serving, checked against
the running encoder's fingerprint and dimension, and only then made current by one reference
assignment in the engine. Queries in flight keep the state they started with. A version that
fails to load or check is logged, remembered (not retried until CURRENT changes or a forced
reload) and the old one stays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cir.errors import error_text
from cir.errors import StoreError
from cir.stores import GalleryStore, check_encoder, open_store
from cir.encoder import loading_bars
from cir.runtimes import load_runtime_encoder
from cir.search.engine import IndexState, SearchEngine
from service.settings import Settings

log = logging.getLogger(__name__)


class IndexLoadError(RuntimeError):
    """An index version could not be loaded or does not fit the running encoder."""


@dataclass
class ReloadOutcome:
    """What a reload did: 'swapped', 'unchanged', 'failed' or 'no_version'."""

    status: str
    version: str | None
    previous: str | None
    error: str | None = None


def unpublished_reason(root: Path) -> str | None:
    """Why the index root `root` has nothing to serve yet, or None when it has a version."""
    return open_store(root).unpublished_reason()


# After a swap the old version stays open while queries still use it, and this much longer for
# readers outside the engine (an /images lookup that picked the state just before the swap).
RETIRE_GRACE_S = 2.0


class IndexManager:
    """Owns the encoder, the engine and the published versions of one gallery store."""

    def __init__(self, settings: Settings, engine_factory: Callable[[object], SearchEngine],
                 on_swap: Callable[[IndexState], None] | None = None,
                 on_failure: Callable[[str, str], None] | None = None, store: GalleryStore | None = None,
                 encoders=None, name: str = "default"):
        if store is None:
            if settings.index is None:
                raise ValueError("no index root given: pass --index ROOT or set CIR_INDEX")
            if not settings.wait_for_index and not settings.index.is_dir():
                raise ValueError(f"index root {settings.index} is not a directory")
            store = open_store(settings.index)
        self.settings = settings
        self.store = store
        self.name = name  # the gallery's name (GET /collections)
        self.encoders = encoders  # a service.galleries.EncoderCache: galleries with one encoder share it
        self.engine_factory = engine_factory
        self.on_swap, self.on_failure = on_swap, on_failure
        self.engine: SearchEngine | None = None
        self._pending_encoder = None  # loaded with the first version, before the engine exists
        self.failed_version: str | None = None
        self.last_error: str | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._retiring: dict[asyncio.Task, IndexState] = {}
        self._superseded: list[IndexState] = []  # older live snapshots of the served base, maybe still in use

    @property
    def ready(self) -> bool:
        """True once an encoder and an index are loaded."""
        return self.engine is not None and self.engine.state is not None

    async def start(self) -> None:
        """Load the current version and start watching (with wait_for_index, also before one is published)."""
        if not self.settings.wait_for_index and (reason := self.store.unpublished_reason()):
            raise IndexLoadError(reason)
        outcome = await self.reload(force=True)
        if outcome.status == "failed":
            raise IndexLoadError(outcome.error)
        if outcome.status == "no_version":
            log.warning("%s has no published version yet; not ready until one is published", self.store.name)
        if self.settings.reload_interval_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="cir-index-watch")

    async def stop(self) -> None:
        """Stop watching and stop the engine."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for task, state in list(self._retiring.items()):
            task.cancel()
            state.index.close()
        self._retiring.clear()
        if self.engine is not None:
            await self.engine.stop()
            if self.engine.state is not None:
                self.engine.state.index.close()
        self.store.close()

    async def _watch(self) -> None:
        last = None
        while True:
            await asyncio.sleep(self.settings.reload_interval_s)
            try:
                await self.reload(force=False)
                last = None
            except Exception as exc:  # noqa: BLE001 - the watcher must survive anything
                if error_text(exc) != last:  # one log line per distinct error, not one per interval
                    log.exception("index watcher check failed")
                last = error_text(exc)

    async def reload(self, force: bool = False) -> ReloadOutcome:
        """Load ROOT/CURRENT if it changed (or always, when forced) and swap it in."""
        async with self._lock:
            running = self.engine.state.version if self.ready else None
            try:
                version = await asyncio.to_thread(self.store.current_version)
            except StoreError as exc:  # CURRENT is a folder, binary, unreadable, ...
                return self._failed(None, running, error_text(exc), force)
            if version is None:
                return ReloadOutcome("no_version", running, running)
            if not force and version == running:
                self.last_error = None  # CURRENT names what is served: any earlier failure is over
                if await asyncio.to_thread(self.store.refresh):  # writes another process logged
                    await self._serve_latest()
                return ReloadOutcome("unchanged", running, running)
            if not force and version == self.failed_version:
                return ReloadOutcome("unchanged", running, running)
            t0 = time.perf_counter()
            try:
                state = await asyncio.to_thread(self._load, version)
            except Exception as exc:  # noqa: BLE001 - any failure keeps the old version
                return self._failed(version, running, error_text(exc), force)
            if self.engine is None:
                await self._start_engine(state)
            elif self._pending_encoder is not None:  # a version of another model or adapter
                await self._replace_engine(state)
            old = self.engine.swap(state)
            if old is not None and getattr(old.index, "base", old) is not getattr(state.index, "base", state):
                self._retire(old)  # (a newer snapshot of the same base version shares its files: nothing to close)
            self.failed_version, self.last_error = None, None
            log.info("serving index version %s (%d items, loaded in %.2f s; was %s)",
                     version, state.count, time.perf_counter() - t0, running)
            if self.on_swap is not None:
                self.on_swap(state)
            return ReloadOutcome("swapped", version, running)

    async def _replace_engine(self, state: IndexState) -> None:
        """Start an engine for the new encoder, make it serve, and stop the old one once idle."""
        previous = self.engine
        await self._start_engine(state)
        log.info("encoder switched to %s%s (fingerprint %s)", self.engine.encoder.name,
                 f" + adapter {self.engine.encoder.adapter}" if self.engine.encoder.adapter else "",
                 self.engine.encoder.fingerprint[:12])

        async def stop_when_idle() -> None:
            await asyncio.sleep(RETIRE_GRACE_S)  # requests that picked the old engine just before
            while previous.state is not None and previous.in_flight(previous.state):
                await asyncio.sleep(0.05)
            await previous.stop()
            if previous.state is not None:
                await asyncio.to_thread(previous.state.index.close)

        task = asyncio.get_running_loop().create_task(stop_when_idle(), name="cir-retire-engine")
        self._retiring[task] = previous.state
        task.add_done_callback(lambda done: self._retiring.pop(done, None))

    async def refresh_live(self) -> None:
        """Serve the store's latest live view now: after a write is logged, before it is acknowledged."""
        async with self._lock:
            if self.ready:
                await self._serve_latest()

    async def _serve_latest(self) -> None:
        """Swap in the published version's newest view (holding the lock); a new version retires the old one."""
        state = self.engine.state
        view = await asyncio.to_thread(self.store.open)
        if view is state.index:
            return
        if view.version == state.version:
            # the same base version: the old snapshot holds nothing of its own to close, but its
            # queries must end before the base version is retired
            old = self.engine.swap(IndexState.of(view))
            self._superseded = [s for s in self._superseded if self.engine.in_flight(s)] + [old]
            return
        new = await asyncio.to_thread(self._check, view, view.version)
        self._retire(self.engine.swap(new))
        if self.on_swap is not None:
            self.on_swap(new)

    def _retire(self, old: IndexState) -> None:
        """Close a swapped-out version's index (its sqlite connection) once no query holds it."""
        async def close_when_idle() -> None:
            await asyncio.sleep(RETIRE_GRACE_S)
            base = getattr(old.index, "base", old)
            while self.engine.in_flight(old) or any(self.engine.in_flight(s) for s in self._superseded
                                                    if getattr(s.index, "base", s) is base):
                await asyncio.sleep(0.05)
            await asyncio.to_thread(old.index.close)
            log.info("closed index version %s", old.version)

        task = asyncio.get_running_loop().create_task(close_when_idle(), name=f"cir-retire-{old.version}")
        self._retiring[task] = old
        task.add_done_callback(lambda done: self._retiring.pop(done, None))

    def _failed(self, version: str | None, running: str | None, error: str, force: bool) -> ReloadOutcome:
        """Keep the old version and remember why; log and count a failure once, not on every watcher check."""
        repeated = not force and (version, error) == (self.failed_version, self.last_error)
        self.failed_version, self.last_error = version, error
        if not repeated:
            log.error("index version %s not loaded (still serving %s): %s", version or "in CURRENT",
                      running or "nothing", error)
            if self.on_failure is not None:
                self.on_failure(version or "", error)
        return ReloadOutcome("failed", running, running, error)

    def _load(self, version: str) -> IndexState:
        """Load one version on a worker thread and check it fits the encoder (loading that first if needed)."""
        index = self.store.open(version)
        try:
            return self._check(index, version)
        except BaseException:
            index.close()  # a refused version must not keep its files open
            raise

    def _follows_manifest(self) -> bool:
        """Whether the served model is the manifest's (no CIR_MODEL / CIR_ADAPTER override)."""
        return self.settings.model is None and self.settings.adapter is None

    def _check(self, index, version: str) -> IndexState:
        manifest = dict(index.manifest)
        self._pending_encoder = None
        if self.engine is None or (self._follows_manifest() and manifest.get("fingerprint")
                                   != self.engine.encoder.fingerprint):
            # the first version, or one built with another model or adapter (e.g. a TAT run's):
            # its encoder loads here, beside the serving one, and the engine switches with the index
            self._pending_encoder = self._load_encoder(manifest)
        encoder = self._pending_encoder if self._pending_encoder is not None else self.engine.encoder
        try:
            check_encoder(manifest, encoder)
        except StoreError as exc:
            raise IndexLoadError(str(exc)) from exc
        return IndexState(index=index, version=version, manifest=manifest)

    def _load_encoder(self, manifest: dict):
        model = self.settings.model or manifest.get("model")
        if not model:
            raise IndexLoadError("the index manifest names no model and CIR_MODEL is not set")
        adapter = self.settings.adapter or manifest.get("adapter")

        def load():
            with loading_bars(False):  # a server's log is no place for a progress bar
                return load_runtime_encoder(model, adapter=adapter, device=self.settings.device,
                                            dtype=self.settings.dtype, runtime=self.settings.runtime,
                                            onnx_cache=self.settings.onnx_cache)

        return load() if self.encoders is None else self.encoders.get((model, adapter), load)

    async def _start_engine(self, state: IndexState) -> None:
        engine = self.engine_factory(self._pending_encoder)
        self._pending_encoder = None
        await asyncio.to_thread(engine.warmup)
        await engine.start()
        self.engine = engine
