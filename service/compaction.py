"""The live side of a server: who takes the writes of a root, and compaction in the background.

At start the server claims the root's writer lock (CIR_WRITES=auto, the default: when another
server already holds it, this one serves reads only, follows that writer's log within its
reload interval and answers writes with 409 naming the writer; `on` refuses to start instead;
`off` never writes). The writer compacts on its own when the pending changes pass
CIR_COMPACT_PENDING or the oldest is CIR_COMPACT_AGE_S old, and on POST /admin/compact;
compaction runs in a child process (cir.stores.compact, at a lower priority) while every request
is answered, then the new version is
swapped in like any published version (service.swap).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time

from fastapi import APIRouter, Depends, Request

from cir.errors import error_text
from cir.stores import FaissRootStore
from service.auth import require_admin_key
from service.items import ERRORS, ItemError
from service.swap import IndexLoadError, IndexManager
from service.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(tags=["admin"])
CHILD_NICE = 10  # the compaction process yields the CPU to serving


async def compact_in_child(root) -> dict:
    """Run cir.stores.compact in a lower-priority child process: its Python work never holds this
    process's GIL, so serving goes on at its pace; a failure is ItemError 503."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "cir.stores.compact", str(root),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                preexec_fn=lambda: os.nice(CHILD_NICE))
    try:
        out, err = await proc.communicate()
    except asyncio.CancelledError:  # the server stops: a compaction cut short publishes nothing
        proc.kill()
        raise
    if proc.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        raise ItemError(503, "compaction_failed", lines[-1] if lines else f"exit status {proc.returncode}")
    return json.loads(out.decode().strip().splitlines()[-1])


class Compactor:
    """Runs one compaction at a time for the server's store, by request or by threshold."""

    def __init__(self, manager: IndexManager, settings: Settings):
        self.manager, self.settings = manager, settings
        self.lock = asyncio.Lock()
        self.task: asyncio.Task | None = None
        self.last: dict | None = None

    @property
    def store(self):
        return self.manager.store

    def due(self) -> str | None:
        """Why a compaction should run now (a threshold passed), or None."""
        p = self.store.pending()
        if not p["pending"]:
            return None
        if self.settings.compact_pending and p["pending"] >= self.settings.compact_pending:
            return f"{p['pending']} pending changes"
        age = time.time() - (p["oldest"] or time.time())
        if self.settings.compact_age_s and age >= self.settings.compact_age_s:
            return f"the oldest pending change is {age:.0f} s old"
        return None

    async def run(self, reason: str) -> dict:
        """Compact now (ItemError 409 while another compaction runs), then serve the new version."""
        if self.lock.locked():
            raise ItemError(409, "compaction_running", "a compaction is running; try again when it ends")
        async with self.lock:
            log.info("compacting: %s", reason)
            result = await compact_in_child(self.store.root)
            if result["status"] == "compacted":
                await self.manager.reload()
            self.last = result
            return result

    async def watch(self) -> None:
        """Check the thresholds every CIR_COMPACT_CHECK_S and compact when one passed."""
        while True:
            await asyncio.sleep(self.settings.compact_check_s)
            try:
                if (reason := self.due()) is not None and not self.lock.locked():
                    await self.run(reason)
            except Exception as exc:  # noqa: BLE001 - the watcher must survive anything
                log.error("background compaction failed: %s", error_text(exc))


async def start(app, manager: IndexManager, settings: Settings) -> None:
    """Claim (or not) the root's writes per CIR_WRITES, and start the compaction watcher on the writer."""
    store = manager.store
    app.state.compactor = None
    if not isinstance(store, FaissRootStore):
        return  # another store takes its writes and compacts on its own
    if settings.writes == "off":
        store.read_only_reason = "writes are off on this server (CIR_WRITES=off)"
        return
    if not store.root.is_dir():  # --wait-for-index: claim the writes once the index job made the root
        store.read_only_reason = "the index root does not exist yet"
        app.state.claim_task = asyncio.get_running_loop().create_task(_claim_later(app, manager, settings))
        return
    _claim(app, manager, settings)


async def _claim_later(app, manager: IndexManager, settings: Settings) -> None:
    while not manager.store.root.is_dir():
        await asyncio.sleep(max(settings.reload_interval_s, 0.05))
    manager.store.read_only_reason = None
    _claim(app, manager, settings)


def _claim(app, manager: IndexManager, settings: Settings) -> None:
    store = manager.store
    if not store.claim_writer():
        if settings.writes == "on":
            manager.last_error = store.read_only_reason + " (CIR_WRITES=on: not starting)"
            raise IndexLoadError(manager.last_error)
        log.warning("read-only: %s", store.read_only_reason)
        return
    compactor = app.state.compactor = Compactor(manager, settings)
    if settings.compact_pending or settings.compact_age_s:
        compactor.task = asyncio.get_running_loop().create_task(compactor.watch(), name="cir-compact-watch")


async def stop(app) -> None:
    """Stop the compaction watcher (a compaction in progress finishes or leaves no published trace)."""
    compactor = getattr(app.state, "compactor", None)
    for task in (getattr(app.state, "claim_task", None), compactor.task if compactor is not None else None):
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass


@router.post("/admin/compact", dependencies=[Depends(require_admin_key)], responses=ERRORS,
             summary="Fold the pending live changes into a new published version now (in the background of serving)")
async def admin_compact(request: Request):
    compactor = getattr(request.app.state, "compactor", None)
    if compactor is None:
        reason = getattr(request.app.state.manager.store, "read_only_reason", None) or "this store compacts itself"
        raise ItemError(409, "not_the_writer", reason)
    return await compactor.run("requested by POST /admin/compact")
