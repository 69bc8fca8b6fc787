"""`cir index build --store milvus://...`: the Milvus half of a build job (a frozen, validated dataclass).

Light on purpose (no pymilvus, no faiss): the CLI builds it before anything heavy loads.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from cir.defaults import is_remote_store

MILVUS_INDEXES = ("HNSW", "FLAT", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "DISKANN")
DEFAULT_INDEX_PARAMS = {"HNSW": {"M": 16, "efConstruction": 200}, "FLAT": {}, "IVF_FLAT": {"nlist": 1024},
                        "IVF_SQ8": {"nlist": 1024}, "IVF_PQ": {"nlist": 1024, "m": 16, "nbits": 8}, "DISKANN": {}}


def default_work_root(store: str) -> Path:
    """Where the embedding shards and the local copy of a Milvus build live by default."""
    slug = "".join(c if c.isalnum() else "_" for c in store.split("://", 1)[1])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cir" / "milvus-builds" / slug


def _json_object(flag: str, text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{flag} must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object, e.g. '{{\"M\": 16}}'")
    return value


@dataclass(frozen=True)
class MilvusBuildConfig:
    """Where and how a build lands in Milvus: location, index type and parameters, full or incremental."""

    store: str
    index_type: str = "HNSW"
    index_params: str | None = None  # JSON object; default DEFAULT_INDEX_PARAMS[index_type]
    search_params: str | None = None  # JSON object; default cir.stores.milvus_schema.DEFAULT_SEARCH
    full: bool = False
    index: dict = field(init=False)
    search: dict | None = field(init=False)

    def __post_init__(self):
        if not is_remote_store(self.store):
            raise ValueError(f"--store {self.store!r} is not a milvus://HOST:PORT/NAME location")
        if self.index_type not in MILVUS_INDEXES:
            raise ValueError(f"--milvus-index must be one of {', '.join(MILVUS_INDEXES)}")
        params = _json_object("--milvus-index-params", self.index_params)
        index = {"index_type": self.index_type, "params": DEFAULT_INDEX_PARAMS[self.index_type] if params is None
                 else params}
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "search", _json_object("--milvus-search-params", self.search_params))
