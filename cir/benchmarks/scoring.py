"""Turn a run's rankings into the benchmark's metrics, overall and per shapes-world group."""

from __future__ import annotations

from typing import Callable, Sequence

from cir.benchmarks.config import PartRun
from cir.benchmarks.data import CIRQuery
from cir.benchmarks.loaders import world_heldout
from cir.benchmarks.metrics import circo_metrics, cirr_metrics, fashioniq_metrics

GROUPS = ("seen", "heldout")
DECIMALS = 4  # of a percentage: far below one query in any benchmark


def _part_metrics(benchmark: str, run: PartRun, key: str, queries: Sequence[CIRQuery]) -> dict[str, float]:
    ranks = [run.rankings[key][q.qid] for q in queries]
    if benchmark == "cirr":
        subsets = [run.subsets[key][q.qid] for q in queries]
        return cirr_metrics(ranks, [q.target for q in queries], [q.reference for q in queries],
                            [q.members for q in queries], subset_rankings=subsets)
    if benchmark == "circo":
        return circo_metrics(ranks, [q.targets for q in queries], [q.target for q in queries])
    return fashioniq_metrics({run.data.part: (ranks, [q.target for q in queries])})


def _score(benchmark: str, parts: list[PartRun], keys: list[str],
           select: Callable[[PartRun], list[CIRQuery]]) -> dict[str, dict[str, float]]:
    chosen = [(p, select(p)) for p in parts]
    chosen = [(p, qs) for p, qs in chosen if qs and p.data.has_targets]
    if not chosen:
        return {k: {} for k in keys}
    out = {}
    for key in keys:
        if benchmark == "fashioniq":
            per_cat = {p.data.part: ([p.rankings[key][q.qid] for q in qs], [q.target for q in qs])
                       for p, qs in chosen}
            out[key] = fashioniq_metrics(per_cat)
        else:
            out[key] = _part_metrics(benchmark, chosen[0][0], key, chosen[0][1])
        out[key] = {m: round(v, DECIMALS) for m, v in out[key].items()}
    return out


def score_parts(benchmark: str, parts: list[PartRun], keys: list[str]) -> dict[str, dict[str, float]]:
    """Metrics (x100) per fusion key over every evaluated query; empty dicts on test splits."""
    return _score(benchmark, parts, keys, lambda p: p.data.queries)


def group_report(benchmark: str, parts: list[PartRun], keys: list[str]) -> tuple[dict, dict] | None:
    """Shapes-world metrics split into seen and held-out target combinations, with query counts."""
    if len(parts) != 1:
        return None
    flags = world_heldout(parts[0].data)
    if flags is None:
        return None
    groups, counts = {}, {}
    for name in GROUPS:
        want = name == "heldout"
        pick = [q for q in parts[0].data.queries if q.qid in flags and flags[q.qid] == want]
        counts[name] = len(pick)
        if pick:
            groups[name] = _score(benchmark, parts, keys, lambda p, pick=pick: pick)
    return groups, counts
