"""Paging and exclusion over any gallery view: one fixed ranking per query, sliced into pages.

A page (`offset`, `k`) is a slice of the query's *sequence*: the view's top-DEPTHS[0] ranking,
followed by the items of its top-DEPTHS[1] ranking not already in it, and so on, with the
excluded ids (the query's own references, `exclude_ids`) and the hits under `min_score` dropped.
For one index version the sequence is fixed, whatever page is asked for and whatever else the
micro-batch holds, so pages are stable and never overlap: on exact plans (where a deeper
ranking starts with the shallower one) and on ANN plans alike, where a deeper search may find
better items than a shallower one and those then follow, rather than duplicate, the earlier
pages. The engine only over-fetches and drops; every store gets paging through `search` and
`search_where` alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_WINDOW = 10_000  # offset + k: the deepest result a query can page to
MAX_EXCLUDE_IDS = 1000  # ids one query may exclude
# The depths one query's sequence is searched at; the last one covers the deepest page with every
# exclusion (explicit ids and the references).
DEPTHS = (100, 1000, MAX_WINDOW + MAX_EXCLUDE_IDS + 64)


@dataclass(frozen=True)
class Window:
    """Which part of a query's sequence to return."""

    offset: int = 0
    k: int = 10
    min_score: float | None = None
    exclude: frozenset[str] = frozenset()

    @property
    def levels(self) -> int:
        """How many of DEPTHS the sequence needs: enough for the page, one more item, and every exclusion."""
        need = self.offset + self.k + 1 + len(self.exclude)
        return next((i + 1 for i, depth in enumerate(DEPTHS) if depth >= need), len(DEPTHS))


def merge(levels: list[tuple[np.ndarray, list[str]]]) -> list[tuple[float, str]]:
    """The sequence of rankings of growing depth: each one's items not in an earlier one, in its order."""
    seen: set[str] = set()
    out: list[tuple[float, str]] = []
    for scores, ids in levels:
        for score, item_id in zip(scores, ids):
            if item_id not in seen:
                seen.add(item_id)
                out.append((float(score), item_id))
    return out


def page(sequence: list[tuple[float, str]], window: Window) -> tuple[list[tuple[float, str]], int | None]:
    """The window's slice of a sequence (excluded ids and low scores dropped) and the next page's offset."""
    kept = [(s, i) for s, i in sequence
            if i not in window.exclude and (window.min_score is None or s >= window.min_score)]
    end = window.offset + window.k
    more = len(kept) > end and end < MAX_WINDOW
    return kept[window.offset:end], end if more else None


def search_levels(jobs: list[tuple]) -> list[list[tuple[np.ndarray, list[str]]]]:
    """Each job's rankings at DEPTHS, as deep as its window needs: one view call per state and depth
    for the unfiltered jobs, one per filtered job. A job is (state, vector, Window, bound filter or None)."""
    levels: list[list] = [[] for _ in jobs]
    for level, depth in enumerate(DEPTHS):
        groups: dict[int, list[int]] = {}
        for i, (state, vec, window, bound) in enumerate(jobs):
            if window.levels <= level or (level and len(levels[i][-1][1]) < DEPTHS[level - 1]):
                continue  # deep enough, or the gallery (or the filter's matches) ran out
            if bound is None:
                groups.setdefault(id(state), []).append(i)
            else:
                levels[i].append(state.index.search_where(vec, depth, bound))
        for rows in groups.values():
            state = jobs[rows[0]][0]
            scores, ids = state.index.search(np.stack([jobs[i][1] for i in rows]).astype(np.float32), depth)
            for row, i in enumerate(rows):
                levels[i].append((scores[row], ids[row]))
    return levels
