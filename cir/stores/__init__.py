"""Gallery stores: one interface (cir.stores.base), the FAISS root (default) and Milvus.

`open_store(spec)` picks the store from a location: a folder path is a FAISS index root;
`milvus://HOST:PORT/NAME` is a Milvus collection alias (cir.stores.milvus, credentials from
the environment, never from the location).
"""

from __future__ import annotations

from pathlib import Path

from cir.defaults import is_remote_store
from cir.errors import ReadOnlyStoreError, StoreError
from cir.stores.base import Delete, GalleryStore, GalleryView, Operation, Patch, Upsert, WriteResult, check_encoder
from cir.stores.faiss_root import FaissRootStore
from cir.stores.milvus import MilvusStore  # pymilvus itself loads on first connection

__all__ = ["Delete", "FaissRootStore", "MilvusStore", "GalleryStore", "GalleryView", "Operation", "Patch", "ReadOnlyStoreError", "StoreError",
           "Upsert", "WriteResult", "check_encoder", "is_remote", "open_store"]

is_remote = is_remote_store  # one parser of store locations (cir.defaults, light for the CLIs)


def open_store(spec: str | Path, **options) -> GalleryStore:
    """The store at `spec`: an index root folder, or a milvus:// URL."""
    if is_remote(spec):
        return MilvusStore(str(spec), **{k: v for k, v in options.items() if k in ("timeout_s", "consistency")})
    return FaissRootStore(spec, **options)
