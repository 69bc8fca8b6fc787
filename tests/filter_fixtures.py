"""Helpers for the filter tests: versions with typed metadata, random metadata and filters, and a
brute-force reference that evaluates a filter on plain dicts, independently of cir.filters."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from cir import index_store as store
from cir.columns import build_columns, describe
from cir.metadata import infer_types
from indexer.factory import build_index
from cir.versioning import write_version

HOSTILE = "na'me\"; DROP TABLE items;--"
COLOURS = ["red", "blue", "green", "O'Brien", "Robert'); DROP TABLE items;--", "ünïcødé ✓"]
TAGS = ["sale", "new", "eco", "'; --", "日本"]


def write_metadata_version(root: Path, vectors: np.ndarray, metadatas: list[dict], factory: str = "Flat",
                           csv: bool = False, version: str = "v000001") -> store.LoadedIndex:
    """Write and publish a version of `vectors` with typed columns of `metadatas`; return it loaded."""
    columns = build_columns(infer_types(enumerate(metadatas, 1), csv=csv), metadatas)
    built = build_index(vectors, factory)
    items = [{"id": f"item{i}", "path": f"/gallery/{i}.png", "width": 8, "height": 8, "sha256": f"h{i}",
              "size": 1, "mtime_ns": 1, "metadata": m} for i, m in enumerate(metadatas)]
    manifest = {"format": 1, "version": version, "dim": vectors.shape[1], "count": len(vectors), "metric": "ip",
                "factory": built.factory, "search_params": built.search_params, "rerank": built.rerank,
                "fingerprint": "test", "default_alpha": 0.8, "fields": describe(columns)}
    write_version(root, version, vectors, items, built.index, manifest, {}, columns=columns)
    store.IndexRoot(root).publish(version)
    return store.load_version(root)


def random_metadata(n: int, seed: int = 0) -> list[dict]:
    """Items with a string (hostile values), number, boolean, date and tags field, each absent ~10%."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        m = {HOSTILE: COLOURS[rng.integers(len(COLOURS))],
             "price": float(round(rng.uniform(0, 100), 1)) if rng.random() < 0.5 else int(rng.integers(0, 100)),
             "in_stock": bool(rng.random() < 0.5),
             "date": f"2024-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}",
             "tags": sorted({TAGS[i] for i in rng.integers(0, len(TAGS), rng.integers(0, 4))})}
        out.append({k: v for k, v in m.items() if rng.random() >= 0.1})
    return out


def random_filter(rng: random.Random) -> dict:
    """1-3 random conditions over random_metadata's fields (values sometimes absent from the data)."""
    def colour():
        return rng.choice(COLOURS) if rng.random() < 0.9 else "purple"

    def date():
        return f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"

    def tag_list():
        return [rng.choice(TAGS) if rng.random() < 0.9 else "none" for _ in range(rng.randint(1, 2))]

    def number():
        return round(rng.uniform(-5, 105), 1)

    def ops(names, value):
        return {op: value() for op in rng.sample(names, rng.randint(1, 2))}

    def exists():
        return {"exists": rng.random() < 0.5}

    makers = {
        HOSTILE: lambda: rng.choice([colour(), {"eq": colour()}, {"ne": colour()}, {"in": [colour(), colour()]},
                                     {"nin": [colour(), colour()]}, exists()]),
        "price": lambda: ops(["gt", "gte", "lt", "lte", "ne"], number) if rng.random() < 0.7
        else rng.choice([{"in": [rng.randint(0, 99), number()]}, {"nin": [rng.randint(0, 99), number()]}, exists()]),
        "in_stock": lambda: rng.choice([True, False, {"ne": True}, {"eq": False}, exists()]),
        "date": lambda: ops(["gt", "gte", "lt", "lte", "eq"], date) if rng.random() < 0.8
        else rng.choice([{"nin": [date(), date()]}, exists()]),
        "tags": lambda: rng.choice([{"any": tag_list()}, {"all": tag_list()}, rng.choice(TAGS), {"nin": tag_list()},
                                    exists()]),
    }
    return {name: makers[name]() for name in rng.sample(list(makers), rng.randint(1, 3))}


def random_tree(rng: random.Random, depth: int = 0) -> dict:
    """A random filter with and / or / not over random_filter's conditions, up to 3 levels deep."""
    flt = random_filter(rng)
    if depth >= 3 or rng.random() < 0.35:
        return flt
    op = rng.choice(["and", "or", "not"])
    parts = [random_tree(rng, depth + 1) for _ in range(1 if op == "not" else rng.randint(1, 3))]
    sub = parts[0] if op == "not" else parts
    return {op: sub} if rng.random() < 0.4 else {**flt, op: sub}


_COMPARE = {"eq": lambda v, x: v == x, "ne": lambda v, x: v != x, "gt": lambda v, x: v > x,
            "gte": lambda v, x: v >= x, "lt": lambda v, x: v < x, "lte": lambda v, x: v <= x,
            "in": lambda v, x: v in x}


def _field_matches(value, op: str, x) -> bool:
    if op == "exists":
        return (value is not None) == x
    if value is None:
        return False  # an absent field fails every comparison, ne and nin included
    if isinstance(value, list):
        return {"eq": lambda: x in value, "any": lambda: bool(set(x) & set(value)),
                "all": lambda: set(x) <= set(value), "nin": lambda: not set(x) & set(value)}[op]()
    if op == "nin":
        return value not in x
    return _COMPARE[op](value, x)


def matches(meta: dict, flt: dict) -> bool:
    """The documented semantics on one item's metadata: every condition; absent fields fail comparisons;
    `and` / `or` over sub-filters, `not` the complement; an empty tags list is an absent field.

    Dates here are all YYYY-MM-DD strings, whose string order is their time order.
    """
    for field, spec in flt.items():
        if field == "and":
            ok = all(matches(meta, sub) for sub in spec)
        elif field == "or":
            ok = any(matches(meta, sub) for sub in spec)
        elif field == "not":
            ok = not matches(meta, spec)
        else:
            value = meta.get(field)
            value = None if value == [] else value
            ops = spec if isinstance(spec, dict) else {"eq": spec}
            ok = all(_field_matches(value, op, x) for op, x in ops.items())
        if not ok:
            return False
    return True


def brute_force(vectors: np.ndarray, metadatas: list[dict], flt: dict, query: np.ndarray, k: int):
    """Exact filtered ranking: (ids, scores) by score descending, then row."""
    rows = np.array([i for i, m in enumerate(metadatas) if matches(m, flt)], dtype=np.int64)
    if len(rows) == 0:
        return [], np.empty(0, np.float32)
    scores = vectors[rows] @ query
    order = np.lexsort((rows, -scores))[:k]
    return [f"item{r}" for r in rows[order]], scores[order]


def dumps(flt: dict) -> str:
    """A filter as the JSON text a client sends."""
    return json.dumps(flt, ensure_ascii=False)
