"""Skipped gallery files, told plainly: how many and why (stderr), and `--max-skipped N|P%`.

A build never stops for one bad file (cir.images, indexer.gallery); it leaves it out with a
reason. What a user needs on the terminal is the count, grouped by reason, and a way to make a
build that lost too much fail before it publishes: `--max-skipped 0` (none allowed),
`--max-skipped 10` (at most 10 files) or `--max-skipped 2%` (at most 2% of the gallery).
"""

from __future__ import annotations

import re
from collections import Counter

_LIMIT = re.compile(r"(\d+(?:\.\d+)?)(%?)")


def parse_max_skipped(text: str) -> tuple[float, bool]:
    """(limit, is_percent) from "N" (files) or "P%" (of the gallery); ValueError otherwise."""
    m = _LIMIT.fullmatch(text.strip())
    if m is None or (not m.group(2) and "." in m.group(1)):
        raise ValueError(f"--max-skipped takes a number of files (10) or a percentage (2%), not {text!r}")
    value, percent = float(m.group(1)), bool(m.group(2))
    if percent and value > 100:
        raise ValueError(f"--max-skipped {text}: a percentage is at most 100%")
    return value, percent


def over_limit(limit: str | None, skipped: int, total: int) -> bool:
    """Whether `skipped` of `total` gallery files passes the --max-skipped limit (None: no limit)."""
    if limit is None:
        return False
    value, percent = parse_max_skipped(limit)
    return skipped > (value * total / 100.0 if percent else value)


def _kind(reason: str) -> str:
    """A reason's kind: its text before the first colon ("missing: file not found" -> "missing")."""
    head = reason.split(":", 1)[0].strip()
    return head if 0 < len(head) <= 60 else reason[:60]


def summary(skipped: list[dict]) -> str:
    """'3 missing, 1 cannot identify image file' (most frequent first)."""
    counts = Counter(_kind(str(s.get("reason", ""))) for s in skipped)
    return ", ".join(f"{n} {kind}" for kind, n in counts.most_common(5)) + (
        f", {len(counts) - 5} other reasons" if len(counts) > 5 else "")


def skip_report(skipped: list[dict], total: int, root: str) -> str:
    """The stderr lines of a build that skipped files: count, reasons, examples, where the full list is."""
    examples = "; ".join(f"{s['id']}: {s['reason']}" for s in skipped[:3])
    return (f"skipped {len(skipped)} of {total} gallery files ({summary(skipped)}), e.g. {examples}\n"
            f"the full list: cir index info {root}")
