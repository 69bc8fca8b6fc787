"""One entry point over the three loaders, and the shapes world's seen/held-out side file."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from cir.benchmarks.circo import load_circo
from cir.benchmarks.cirr import load_cirr
from cir.benchmarks.data import BENCHMARKS, BenchmarkData, BenchmarkError
from cir.benchmarks.fashioniq import load_fashioniq
from cir.io import iter_jsonl

WORLD_QUERIES = "queries.jsonl"


def load_benchmark(benchmark: str, root: str | Path, split: str = "val",
                   categories: Iterable[str] | None = None) -> list[BenchmarkData]:
    """The benchmark's evaluable parts: one for CIRR and CIRCO, one per category for FashionIQ."""
    if benchmark == "cirr":
        return [load_cirr(root, split)]
    if benchmark == "circo":
        return [load_circo(root, split)]
    if benchmark == "fashioniq":
        return load_fashioniq(root, split, categories)
    raise BenchmarkError(f"unknown benchmark {benchmark!r}; choose from {', '.join(BENCHMARKS)}")


def world_heldout(data: BenchmarkData) -> dict[str, bool] | None:
    """qid -> held-out flag when `data` is a shapes-world folder (its parent has queries.jsonl), else None.

    CIRR query ids are the world's `pairid`s and CIRCO ids its `circo_id`s.
    """
    path = Path(data.root).resolve().parent / WORLD_QUERIES
    if data.benchmark not in ("cirr", "circo") or not path.is_file():
        return None
    id_key = "pairid" if data.benchmark == "cirr" else "circo_id"
    flags: dict[str, bool] = {}
    try:
        rows = list(iter_jsonl(path))
    except ValueError as exc:
        raise BenchmarkError(f"{exc} (not a shapes-world query file)") from exc
    for n, row in rows:
        try:
            flags[str(row.get(id_key, row["pairid"]))] = bool(row["heldout"])
        except (KeyError, TypeError) as exc:
            raise BenchmarkError(f"{path}:{n}: not a shapes-world query record ({exc})") from exc
    return flags
