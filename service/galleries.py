"""The galleries of one server: an IndexManager per index root, one loaded encoder per distinct model.

`cir serve --index NAME=ROOT` (repeatable) or CIR_INDEX + CIR_COLLECTIONS name the roots
(Settings.galleries). Each gallery has its own manager (hot swap, engine, micro-batchers), so a
publish in one never touches another; managers whose manifests name the same model and adapter,
or whose loaded encoders turn out to have the same fingerprint, share one encoder object.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from cir.stores import open_store
from service.settings import Settings
from service.swap import IndexManager

log = logging.getLogger(__name__)


class EncoderCache:
    """Loaded encoders by (model, adapter), deduplicated by fingerprint; safe to use from worker threads."""

    def __init__(self) -> None:
        self._by_key: dict[tuple, object] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple, load: Callable[[], object]):
        """The encoder for `key`, loading it on first use (one load at a time)."""
        with self._lock:
            if key not in self._by_key:
                encoder = load()
                same = next((e for e in self._by_key.values() if e.fingerprint == encoder.fingerprint), None)
                self._by_key[key] = same or encoder
                if same is not None:
                    log.info("model %s is already loaded (same fingerprint): shared", key[0])
            return self._by_key[key]

    def __len__(self) -> int:
        return len({id(e) for e in self._by_key.values()})


def check_roots(settings: Settings) -> None:
    """ValueError naming the gallery whose root is not a folder (unless the server waits for indexes)."""
    if not settings.galleries:
        raise ValueError("no index root given: pass --index ROOT or set CIR_INDEX")
    for name, root in settings.galleries.items():
        if not settings.wait_for_index and not root.is_dir():
            raise ValueError(f"gallery {name!r}: index root {root} is not a directory")


def make_managers(settings: Settings, engine_factory, on_swap: Callable[[str, object], None],
                  on_failure: Callable[[str, str, str], None]) -> dict[str, IndexManager]:
    """One manager per gallery, sharing one EncoderCache (not started)."""
    check_roots(settings)
    encoders = EncoderCache()
    return {name: IndexManager(settings, engine_factory, store=open_store(root), encoders=encoders, name=name,
                               on_swap=lambda state, name=name: on_swap(name, state),
                               on_failure=lambda version, error, name=name: on_failure(name, version, error))
            for name, root in settings.galleries.items()}
