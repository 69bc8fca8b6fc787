"""Counts of the queries running against each index state, so a retired state is closed only when idle."""

from __future__ import annotations

import threading
from collections import Counter


class Holds:
    """A thread-safe count of holders per object (by identity)."""

    def __init__(self) -> None:
        self._counts: Counter[int] = Counter()
        self._lock = threading.Lock()

    def hold(self, obj: object) -> None:
        """One more holder of `obj`."""
        with self._lock:
            self._counts[id(obj)] += 1

    def release(self, obj: object) -> None:
        """One holder of `obj` fewer."""
        with self._lock:
            self._counts[id(obj)] -= 1
            if self._counts[id(obj)] <= 0:
                del self._counts[id(obj)]

    def count(self, obj: object) -> int:
        """How many hold `obj` now."""
        with self._lock:
            return self._counts[id(obj)]
