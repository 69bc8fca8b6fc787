"""Worker processes that never outlive their parent: the DataLoader decode workers of every job.

A DataLoader worker whose parent is killed with SIGKILL is not told: it blocks forever on a
full result pipe that its siblings keep open (and it ignores SIGTERM, see below), holding its
memory and any file it inherited. `worker_init()` makes each worker ask the kernel for SIGKILL
when its parent dies (prctl PR_SET_PDEATHSIG on Linux; a watchdog thread elsewhere), and makes
it ignore SIGINT/SIGTERM: a Ctrl-C reaches the whole process group, and the parent alone
decides how to stop (checkpoint, one-line message), not the workers mid-batch.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import sys
import threading
import time
from typing import Callable, Iterable, Iterator

PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
WATCH_INTERVAL_S = 1.0
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _arm_death_signal() -> bool:
    """Ask the kernel to SIGKILL this process when its parent exits (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent: int) -> None:
    while True:
        time.sleep(WATCH_INTERVAL_S)
        if os.getppid() != parent:
            os._exit(1)


def die_with_parent(parent: int) -> None:
    """Make this process end when process `parent` (its parent) ends."""
    # The kernel's death signal fires when the parent's forking thread exits; every job iterates
    # its DataLoader on the main thread, so that is the parent's own end.
    if not _arm_death_signal():
        threading.Thread(target=_watch, args=(parent,), daemon=True, name="cir-parent-watch").start()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _init_worker(parent: int, _worker_id: int) -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    die_with_parent(parent)


def worker_init() -> Callable[[int], None]:
    """A DataLoader `worker_init_fn` (picklable): ignore SIGINT/SIGTERM, die with this process."""
    return functools.partial(_init_worker, os.getpid())


@contextlib.contextmanager
def _stop_signals_deferred():
    if threading.current_thread() is not threading.main_thread():  # only the main thread handles signals
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: caught.append(signum)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for sig in caught:
            signal.raise_signal(sig)  # now the caller's handler sees it, outside the DataLoader's set-up


def iterate(loader: Iterable) -> Iterator:
    """iter(loader), with SIGINT/SIGTERM held back while its workers are forked and set up.

    A Ctrl-C during the DataLoader's set-up would leave it half-built (its workers never told to
    stop), and one reaching a worker before its `worker_init` would kill it: both turned a clean
    stop into a crash or a hang. A signal that arrives meanwhile is re-raised right after.
    """
    with _stop_signals_deferred():
        return iter(loader)
