"""Do the data's images resolve and decode? `cir train --check`, and the sample every run checks first.

A run whose images all fail to load would otherwise "train" on nothing and exit 0 (the usual
cause: image paths written relative to the current folder instead of the data file's folder).
Every run therefore decodes a small, evenly spread sample before it loads the model, fails when
none of it loads, and warns when more than SKIP_WARN of it is skipped.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from training.batches import Chunks, make_loader
from training.data import BadImage, DataFormatError, PairSource

log = logging.getLogger(__name__)

SAMPLE = 64  # images the pre-flight check decodes
SKIP_WARN = 0.10  # a larger skipped share gets a loud warning
EXAMPLES = 3  # example reasons kept per kind


@dataclass
class DataCheck:
    """How many of the checked rows have an image file and how many decode, with example reasons."""

    path: str
    rows: int
    checked: int = 0
    decoded: int = 0
    missing: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)
    kinds: Counter = field(default_factory=Counter)
    hint: str = ""

    @property
    def resolved(self) -> int:
        """Checked rows whose image was found (it may still fail to decode)."""
        return self.checked - self.missing

    @property
    def skipped(self) -> int:
        """Checked rows whose image did not load."""
        return self.checked - self.decoded

    def add(self, kind: str | None, reason: str) -> None:
        """Count one checked row: kind None (decoded), 'missing' or 'undecodable'."""
        self.checked += 1
        if kind is None:
            self.decoded += 1
            return
        self.missing += kind == "missing"
        self.kinds[kind] += 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < EXAMPLES:
            shown.append(reason)

    def reasons(self) -> str:
        """'53 missing (e.g. ...); 2 undecodable (e.g. ...)'."""
        return "; ".join(f"{n} {kind} (e.g. {self.examples[kind][0]})" for kind, n in self.kinds.most_common())

    def lines(self) -> list[str]:
        """The report of `cir train --check`."""
        out = [f"rows      {self.rows}" + ("" if self.checked == self.rows else f" ({self.checked} checked)"),
               f"resolved  {self.resolved} (image found)", f"decoded   {self.decoded}",
               f"skipped   {self.skipped}"]
        for kind, n in self.kinds.most_common():
            out.append(f"  {n} {kind}, e.g.:")
            out += [f"    {reason}" for reason in self.examples[kind]]
        if self.missing:
            out.append(self.hint)
        return out


class _Probe:
    """Dataset item k: (kind or None, reason) for each row of chunk k (decoded in a worker)."""

    def __init__(self, source: PairSource, chunks: Chunks):
        self.source, self.chunks = source, chunks

    def __getitem__(self, k: int) -> list[tuple[str | None, str]]:
        out = []
        for i in self.chunks(k):
            try:
                self.source.image(int(i))
                out.append((None, ""))
            except BadImage as exc:
                out.append((exc.kind, str(exc)))
        return out


def check_rows(source: PairSource, indices: np.ndarray, workers: int = 0, progress: bool = False) -> DataCheck:
    """Resolve and decode the images of the given rows."""
    result = DataCheck(str(source.path), len(source), hint=source.resolve_hint())
    chunks = Chunks(np.asarray(indices), 64)
    loader = make_loader(_Probe(source, chunks), range(len(chunks)), workers)
    with tqdm(total=len(indices), desc="check", unit="img", disable=not progress) as bar:
        for outcomes in loader:
            for kind, reason in outcomes:
                result.add(kind, reason)
            bar.update(len(outcomes))
    return result


def preflight(source: PairSource) -> DataCheck:
    """Decode an evenly spread sample; raise DataFormatError when none loads, warn when many are skipped."""
    n = min(SAMPLE, len(source))
    result = check_rows(source, np.unique(np.linspace(0, len(source) - 1, num=n).round().astype(np.int64)))
    if result.decoded == 0:
        raise DataFormatError(
            f"none of the {result.checked} sampled images of {source.path} loads: {result.reasons()}. "
            f"{result.hint[0].upper()}{result.hint[1:]}. `cir train --check` checks every row")
    if result.skipped > SKIP_WARN * result.checked:
        log.warning("%d of %d sampled images (%.0f%%) do not load and will be skipped: %s. %s. "
                    "Run `cir train --check` to check every row", result.skipped, result.checked,
                    100 * result.skipped / result.checked, result.reasons(), result.hint)
    return result
