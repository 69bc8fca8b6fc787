"""Gallery stores: one interface (cir.stores.base), the FAISS root (default) and Milvus.

`open_store(spec)` picks the store from a location: a folder path is a FAISS index root;
`milvus://HOST:PORT/NAME` is a Milvus collection alias (cir.stores.milvus, credentials from
the environment, never from the location).
"""

from __future__ import annotations

from pathlib import Path

from cir.errors import ReadOnlyStoreError, StoreError
from cir.stores.base import Delete, GalleryStore, GalleryView, Operation, Patch, Upsert, WriteResult, check_encoder
from cir.stores.faiss_root import FaissRootStore
from cir.stores.milvus import MilvusStore  # pymilvus itself loads on first connection

__all__ = ["Delete", "FaissRootStore", "MilvusStore", "GalleryStore", "GalleryView", "Operation", "Patch", "ReadOnlyStoreError", "StoreError",
           "Upsert", "WriteResult", "check_encoder", "is_remote", "open_store"]

REMOTE_SCHEMES = ("milvus://", "milvuss://")


def is_remote(spec: str | Path) -> bool:
    """True when `spec` names a remote store (a URL) rather than an index root folder."""
    return isinstance(spec, str) and spec.lower().startswith(REMOTE_SCHEMES)


def open_store(spec: str | Path, **options) -> GalleryStore:
    """The store at `spec`: an index root folder, or a milvus:// URL."""
    if is_remote(spec):
        return MilvusStore(str(spec), **{k: v for k, v in options.items() if k == "timeout_s"})
    return FaissRootStore(spec, **options)
