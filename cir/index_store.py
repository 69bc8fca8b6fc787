"""The on-disk index format shared by the indexer (writer) and the service (reader).

Layout: ROOT/versions/<version>/{manifest.json, index.faiss, items.sqlite, embeddings.npy,
[index_vectors.npy,] columns/, report.json} and ROOT/CURRENT, a one-line file naming the published
version, replaced by an atomic rename. Row r of the FAISS index, of the .npy files, of the items
table and of the metadata columns (cir.columns; absent in versions built before them) is one item. embeddings.npy holds the IMAGE embeddings (reference_id queries and incremental
rebuilds read them); the vectors the index ranks are in the file the manifest's `index_vectors`
names: index_vectors.npy when gallery items are composed with their text, else embeddings.npy.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Iterable, Iterator

import faiss
import numpy as np

from cir.index_factory import factory_kind
from cir.columns import COLUMNS_DIR, Columns, load_columns
from cir.index_search import EXACT_MAX_MATCHES, exact_search, filtered_search, rerank_search
from cir.io import atomic_write_text
from cir.version_names import missing_message, prefix_matches, read_pruned
from cir.errors import StoreError

log = logging.getLogger(__name__)

CURRENT = "CURRENT"
VERSIONS = "versions"
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.sqlite"
EMBEDDINGS_FILE = "embeddings.npy"
INDEX_VECTORS_FILE = "index_vectors.npy"
REPORT_FILE = "report.json"
MAX_CURRENT_BYTES = 1024  # CURRENT holds one version name
ITEM_COLUMNS = ("row", "id", "path", "width", "height", "sha256", "size", "mtime_ns", "metadata")


class IndexStoreError(StoreError):
    """An index root or version is missing, incomplete or inconsistent."""


class IndexRoot:
    """An index root: its versions and the CURRENT pointer."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def current_version(self) -> str | None:
        """The published version named in ROOT/CURRENT, or None; IndexStoreError if CURRENT is unreadable."""
        path = self.root / CURRENT
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):  # a folder, FIFO or device would fail or hang a read
                raise IndexStoreError(f"{path} is not a regular file")
            with open(path, "rb") as fh:
                data = fh.read(MAX_CURRENT_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise IndexStoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            name = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise IndexStoreError(f"{path} is not a text file naming a version") from None
        simple = name.isprintable() and "/" not in name and "\\" not in name and name not in (".", "..")
        if len(data) > MAX_CURRENT_BYTES or not simple:
            raise IndexStoreError(f"{path} does not name a version folder: {name[:80]!r}")
        return name or None

    def version_dir(self, version: str) -> Path:
        """The folder of a version (it may not exist)."""
        return self.root / VERSIONS / version

    def versions(self) -> list[str]:
        """Complete versions (those with a manifest), oldest first."""
        base = self.root / VERSIONS
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file())

    def resolve(self, name: str) -> str:
        """A complete version by its full name or a unique prefix (v000003); IndexStoreError saying why not
        (pruned, with the versions kept; ambiguous; unknown)."""
        versions = self.versions()
        matches = prefix_matches(name, versions)
        if len(matches) != 1:
            raise IndexStoreError(self._missing(name, versions))
        return matches[0]

    def _missing(self, name: str, versions: list[str]) -> str:
        try:
            current = self.current_version()
        except IndexStoreError:
            current = None
        return missing_message(name, versions, read_pruned(self.root), current)

    def publish(self, version: str) -> None:
        """Point CURRENT at a complete version with an atomic rename."""
        versions = self.versions()
        if version not in versions:
            raise IndexStoreError(self._missing(version, versions))
        atomic_write_text(self.root / CURRENT, version + "\n")

    def manifest(self, version: str) -> dict:
        """A version's manifest.json."""
        return read_json(self.version_dir(version) / MANIFEST)


def read_json(path: Path) -> dict:
    """Load a JSON file, turning a missing or broken file into IndexStoreError."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise IndexStoreError(f"cannot read {path}: {exc}") from exc


def write_items(path: str | Path, rows: Iterable[dict]) -> int:
    """Write the items table (rows in FAISS row order, row numbers 0..N-1); returns the count."""
    con = sqlite3.connect(str(path))
    try:
        con.execute("CREATE TABLE items (row INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, path TEXT, "
                    "width INTEGER, height INTEGER, sha256 TEXT, size INTEGER, mtime_ns INTEGER, "
                    "metadata TEXT)")
        count = 0
        for count, item in enumerate(rows, start=1):
            con.execute("INSERT INTO items VALUES (?,?,?,?,?,?,?,?,?)",
                        (count - 1, item["id"], item["path"], item["width"], item["height"],
                         item["sha256"], item.get("size"), item.get("mtime_ns"),
                         json.dumps(item.get("metadata") or {}, sort_keys=True)))
        con.execute("CREATE INDEX items_path ON items(path)")
        con.execute("CREATE INDEX items_sha256 ON items(sha256)")  # uploads equal to a gallery file
        con.commit()
        return count
    finally:
        con.close()


def _row_to_item(row: tuple) -> dict:
    item = dict(zip(ITEM_COLUMNS, row))
    item["metadata"] = json.loads(item["metadata"] or "{}")
    return item


def iter_items(path: str | Path) -> Iterator[dict]:
    """All items of an items.sqlite in row order (with their `row`)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield from (_row_to_item(r) for r in con.execute(f"SELECT {','.join(ITEM_COLUMNS)} FROM items ORDER BY row"))
    finally:
        con.close()


def apply_search_params(index, params: dict | None) -> None:
    """Set a version's recorded search parameters (efSearch, nprobe) on a loaded index (CPU or GPU)."""
    # ParameterSpace only knows CPU index classes; a faiss-gpu index needs GpuParameterSpace.
    on_gpu = type(index).__name__.startswith("Gpu") and hasattr(faiss, "GpuParameterSpace")
    space = faiss.GpuParameterSpace() if on_gpu else faiss.ParameterSpace()
    for name, value in (params or {}).items():
        space.set_index_parameter(index, name, value)


def read_index(path: str | Path, factory: str, mmap: bool = True):
    """Read a FAISS index; IVF indexes are memory-mapped (read-only) when mmap is set."""
    flags = 0
    if mmap and factory_kind(factory) == "IVF":
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
    return faiss.read_index(str(path), flags)


class LoadedIndex:
    """A loaded, searchable version: FAISS index, item table, image embeddings and ranked vectors."""

    def __init__(self, root: Path, version: str, manifest: dict, index, ids: list[str],
                 columns: Columns | None = None):
        self.root = root
        self.version = version
        self.manifest = manifest
        self.index = index
        self.ids = ids
        self.count = len(ids)
        self.columns = columns  # typed metadata for filters; None for versions built without it
        self.gpu_resources = None  # set when the index was moved to a GPU
        self.exact_max = EXACT_MAX_MATCHES  # filtered queries with at most this many matches run exactly
        self._dir = IndexRoot(root).version_dir(version)
        self._embeddings = np.load(self._dir / EMBEDDINGS_FILE, mmap_mode="r")
        # What the index ranks (exact re-scoring reads it): the image embeddings, or composed items.
        ranked = manifest.get("index_vectors") or EMBEDDINGS_FILE
        if ranked not in (EMBEDDINGS_FILE, INDEX_VECTORS_FILE):
            raise IndexStoreError(f"version {version!r}: unknown index_vectors file {ranked!r} in the manifest")
        self.vectors = self._embeddings if ranked == EMBEDDINGS_FILE else np.load(self._dir / ranked, mmap_mode="r")
        if self._embeddings.shape[0] != self.count or self.vectors.shape[0] != self.count:
            raise IndexStoreError(f"version {version!r} is inconsistent: {self.count} items, "
                                  f"{self._embeddings.shape[0]} embeddings, {self.vectors.shape[0]} ranked vectors")
        self._con = sqlite3.connect(f"file:{self._dir / ITEMS_FILE}?mode=ro", uri=True, check_same_thread=False)
        self._lock = threading.Lock()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k inner-product search; returns scores (B, k) and item ids (-1 rows dropped)."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.manifest["dim"]:
            raise ValueError(f"query dim {q.shape[1]} != index dim {self.manifest['dim']}")
        k = int(min(k, max(self.count, 1)))
        scores, rows = rerank_search(self.index, self.vectors, q, k, int(self.manifest.get("rerank") or 0))
        for i in np.flatnonzero((rows >= 0).sum(axis=1) < min(k, self.count)):
            # a graph walk can reach fewer than k items (deep pages): the exact scan answers, as when filtered
            found, exact = exact_search(self.vectors, np.arange(self.count), q[i], k)
            scores[i, : len(found)], rows[i, : len(found)] = found, exact
        ids = [[self.ids[r] for r in row if r >= 0] for row in rows]
        return scores, ids

    def search_filtered(self, query: np.ndarray, k: int, mask: np.ndarray, packed=None) -> tuple[np.ndarray, list[str]]:
        """Top-k of one query among the rows where `mask` is true (cir.index_search's plan; `packed`: its
        precomputed (count, bits)); (scores, ids)."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.manifest["dim"]:
            raise ValueError(f"query dim {q.shape[0]} != index dim {self.manifest['dim']}")
        scores, rows, _ = filtered_search(self.index, self.vectors, q, k, mask,
                                          factory=self.manifest.get("factory", ""),
                                          rerank=int(self.manifest.get("rerank") or 0),
                                          on_gpu=self.gpu_resources is not None, exact_max=self.exact_max,
                                          packed=packed)
        return scores, [self.ids[r] for r in rows]

    @property
    def fields(self) -> dict[str, dict]:
        """The filterable fields with their facets (the manifest's `fields`)."""
        return self.manifest.get("fields") or {}

    def search_where(self, query: np.ndarray, k: int, bound) -> tuple[np.ndarray, list[str]]:
        """Top-k of one query among the items matching `bound` (cir.filters.BoundFilter): the GalleryView call."""
        return self.search_filtered(query, k, bound.mask(self.columns))

    def _query(self, sql: str, args: tuple) -> tuple | None:
        with self._lock:
            return self._con.execute(sql, args).fetchone()

    def item(self, item_id: str) -> dict | None:
        """An item's record (id, path, width, height, sha256, metadata, ...), or None."""
        row = self._query(f"SELECT {','.join(ITEM_COLUMNS)} FROM items WHERE id = ?", (item_id,))
        return _row_to_item(row) if row else None

    def ids_with_sha256(self, sha256: str) -> list[str]:
        """The ids of the items whose image file has this SHA-256 (hex), in row order."""
        with self._lock:
            return [r[0] for r in self._con.execute("SELECT id FROM items WHERE sha256 = ? ORDER BY row", (sha256,))]

    def browse(self, n: int, order: str = "random", seed: int | None = None) -> list[str]:
        """Up to n item ids to show before any search: a random sample, or the newest (last indexed) first."""
        n = max(0, min(int(n), self.count))
        if order == "newest":
            return [self.ids[r] for r in range(self.count - 1, self.count - 1 - n, -1)]
        if order != "random":
            raise ValueError(f"order must be 'random' or 'newest', got {order!r}")
        rows = np.random.default_rng(seed).choice(self.count, size=n, replace=False) if n else []
        return [self.ids[int(r)] for r in rows]

    def embedding(self, item_id: str) -> np.ndarray | None:
        """The stored unit image embedding of an item, or None."""
        row = self._query("SELECT row FROM items WHERE id = ?", (item_id,))
        return None if row is None else np.array(self._embeddings[row[0]], dtype=np.float32)

    def row_embedding(self, row: int) -> np.ndarray:
        """The stored unit image embedding of row `row`."""
        return np.array(self._embeddings[row], dtype=np.float32)

    def close(self) -> None:
        """Release the sqlite connection (the index and mmaps go with the object)."""
        with self._lock:
            self._con.close()


def to_gpu(index, factory: str):
    """Move a Flat/IVF index to GPU 0 with faiss-gpu (HNSW stays on the CPU); returns (index, resources)."""
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        raise IndexStoreError("GPU search needs faiss-gpu and a CUDA device")
    if factory_kind(factory) == "HNSW":
        log.warning("%s has no GPU implementation; searching on the CPU", factory)
        return index, None
    resources = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(resources, 0, index), resources


def load_version(root: str | Path, version: str | None = None, mmap: bool = True, gpu: bool = False) -> LoadedIndex:
    """Load a version (default: the published CURRENT) for searching, optionally on the GPU."""
    store = IndexRoot(root)
    version = version or store.current_version()
    if version is None:
        raise IndexStoreError(f"{root} has no published version (no {CURRENT} file)")
    vdir = store.version_dir(version)
    if not (vdir / MANIFEST).is_file():
        raise IndexStoreError(f"version {version!r} is missing or incomplete in {root}")
    manifest = read_json(vdir / MANIFEST)
    index = read_index(vdir / INDEX_FILE, manifest.get("factory", ""), mmap=mmap)
    resources = None
    if gpu:
        index, resources = to_gpu(index, manifest.get("factory", ""))
    apply_search_params(index, manifest.get("search_params"))
    con = sqlite3.connect(f"file:{vdir / ITEMS_FILE}?mode=ro", uri=True)
    try:
        ids = [r[0] for r in con.execute("SELECT id FROM items ORDER BY row")]
    finally:
        con.close()
    if index.ntotal != len(ids) or manifest.get("count") != len(ids):
        raise IndexStoreError(f"version {version!r} is inconsistent: index has {index.ntotal} rows, "
                              f"items {len(ids)}, manifest {manifest.get('count')}")
    columns = load_columns(vdir / COLUMNS_DIR)
    if columns is not None and columns.count != len(ids):
        raise IndexStoreError(f"version {version!r} is inconsistent: columns have {columns.count} rows, "
                              f"items {len(ids)}")
    loaded = LoadedIndex(Path(root), version, manifest, index, ids, columns)
    loaded.gpu_resources = resources  # must outlive the GPU index
    return loaded
