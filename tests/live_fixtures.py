"""Helpers for the live-gallery tests: index roots of random unit vectors, and a brute-force model of the live set."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from cir import index_store as store
from cir.columns import build_columns, describe
from cir.metadata import infer_types
from cir.versioning import write_version

COLOURS = ["red", "blue", "green", "black"]
TAGS = [["sale"], ["new"], ["sale", "new"], []]


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """n random unit rows."""
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def metadata(rng: np.random.Generator, i: int) -> dict:
    """Random metadata of every filterable type, some fields absent."""
    meta = {"colour": COLOURS[int(rng.integers(len(COLOURS)))], "price": float(rng.integers(0, 100)),
            "in_stock": bool(rng.integers(2)), "added": f"2024-0{int(rng.integers(1, 10))}-15",
            "tags": TAGS[int(rng.integers(len(TAGS)))]}
    if i % 5 == 4:
        del meta["price"]
    return meta


def make_root(root: Path, n: int = 60, dim: int = 16, seed: int = 0, factory: str = "Flat",
              version: str = "v000001-base") -> dict:
    """A published version of n random items: {'root', 'vectors' (id -> row), 'metadata' (id -> dict)}."""
    rng = np.random.default_rng(seed)
    vec = unit(rng, n, dim)
    items = [{"id": f"b{i:04d}", "path": str(root / f"b{i}.png"), "width": 8, "height": 8, "sha256": f"{i:064x}",
              "size": 1, "mtime_ns": 0, "metadata": metadata(rng, i)} for i in range(n)]
    types = infer_types([(None, it["metadata"]) for it in items])
    cols = build_columns(types, [it["metadata"] for it in items])
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(vec)
    index.add(vec)
    manifest = {"format": 1, "version": version, "dim": dim, "count": n, "factory": factory, "fields": describe(cols),
                "fingerprint": "random", "model": "none", "metric": "ip", "normalized": True, "rerank": 0,
                "search_params": {}, "index_vectors": store.EMBEDDINGS_FILE}
    root.mkdir(parents=True, exist_ok=True)
    write_version(root, version, vec, items, index, manifest, {"version": version}, None, cols)
    store.IndexRoot(root).publish(version)
    return {"root": root, "vectors": {it["id"]: vec[i] for i, it in enumerate(items)},
            "metadata": {it["id"]: it["metadata"] for it in items}, "types": types}


class LiveModel:
    """The live set as a dict, searched by brute force: what every live view must answer."""

    def __init__(self, vectors: dict, metadata: dict, types: dict):
        self.vectors, self.metadata = dict(vectors), {k: dict(v) for k, v in metadata.items()}
        self.types = dict(types)

    def _type(self, meta: dict) -> None:
        for name, value in meta.items():
            if name not in self.types and value is not None:
                self.types.update(infer_types([(None, {name: value})]))

    def upsert(self, item_id: str, vec: np.ndarray, meta: dict) -> None:
        self.vectors[item_id], self.metadata[item_id] = vec, {k: v for k, v in meta.items() if v is not None}
        self._type(meta)

    def patch(self, item_id: str, patch: dict) -> None:
        meta = self.metadata[item_id]
        self._type(patch)
        for k, v in patch.items():
            if v is None:
                meta.pop(k, None)
            else:
                meta[k] = v

    def delete(self, item_id: str) -> None:
        del self.vectors[item_id], self.metadata[item_id]

    def search(self, query: np.ndarray, k: int, keep=None) -> list[tuple[str, float]]:
        ids = [i for i in self.vectors if keep is None or keep(self.metadata[i])]
        scores = [float(self.vectors[i] @ query) for i in ids]
        order = np.argsort(-np.asarray(scores), kind="stable")[:k]
        return [(ids[j], scores[j]) for j in order]

    def facets(self) -> dict:
        ids = sorted(self.vectors)
        metas = [self.metadata[i] for i in ids]
        return describe(build_columns(self.types, metas))
