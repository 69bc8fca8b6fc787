"""The Milvus side of a gallery: locations, the collection schema, rows, and the stored manifest.

A version is one collection `NAME__VERSION`; the alias `NAME` is the published one. Its schema:

    id        VARCHAR primary key        vector    FLOAT_VECTOR (what the index ranks, metric IP)
    embedding ARRAY<FLOAT> (only when items are composed with a text: the image embedding)
    path, sha256, metadata (the item's JSON, as given), digest   VARCHAR
    width, height, size, mtime_ns, seq (write time in ms, for "newest")  INT64
    f0000 ... one scalar field per typed metadata field: string VARCHAR, number/date/datetime
              DOUBLE (dates as UTC epoch seconds), boolean BOOL, tags ARRAY<VARCHAR>
    h0000 ... BOOL "the item has this field" (Milvus 2.3 has no NULL; tags need none: [] is absent)

Field names are generated, never taken from the gallery; the manifest maps each gallery field to its columns and records the encoder
fingerprint, dim, model, adapter, default alpha and the Milvus index. It is kept in the
gallery's catalogue collection (cir.stores.milvus_meta), marked complete only once a build has
filled, indexed and counted the collection: a collection without that mark is partial and is
never aliased.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

from cir.errors import StoreError
from cir.metadata import BOOLEAN, NUMBER, OBJECT, STRING, TAGS, TIME_TYPES, typed_value

SEPARATOR = "__"
LOAD_TIMEOUT_S = 600.0  # building an index or loading a collection into the query nodes takes longer
MAX_ID, MAX_PATH, MAX_TEXT, MAX_TAGS = 4096, 4096, 65535, 1024
RECORD_FIELDS = ["id", "path", "width", "height", "sha256", "size", "mtime_ns", "metadata"]
DEFAULT_INDEX = {"index_type": "HNSW", "params": {"M": 16, "efConstruction": 200}}
DEFAULT_SEARCH = {"HNSW": {"ef": 128}, "FLAT": {}, "IVF_FLAT": {"nprobe": 32}, "IVF_SQ8": {"nprobe": 32},
                  "IVF_PQ": {"nprobe": 32}}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,190}")


@dataclass(frozen=True)
class MilvusLocation:
    """milvus://HOST:PORT/NAME (milvuss:// for TLS); the token comes from CIR_MILVUS_TOKEN only."""

    host: str
    port: int
    name: str
    tls: bool

    @classmethod
    def parse(cls, spec: str) -> "MilvusLocation":
        """Parse a store URL; StoreError naming what is wrong."""
        parts = urlsplit(spec)
        if parts.scheme not in ("milvus", "milvuss"):
            raise StoreError(f"{spec!r} is not a milvus://HOST:PORT/NAME location")
        if parts.username or parts.password or parts.query:
            raise StoreError("put no credentials or options in the milvus:// location: set CIR_MILVUS_TOKEN "
                             "(user:password or an API key) and, for TLS, use milvuss:// or CIR_MILVUS_TLS=1")
        name = parts.path.strip("/")
        if not _NAME.fullmatch(name) or SEPARATOR in name:
            raise StoreError(f"collection name {name!r} must be letters, digits and single underscores, "
                             "starting with a letter (milvus://HOST:PORT/NAME)")
        try:
            port = parts.port or 19530
        except ValueError as exc:
            raise StoreError(f"bad port in {spec!r}: {exc}") from None
        tls = parts.scheme == "milvuss" or os.environ.get("CIR_MILVUS_TLS", "").lower() in ("1", "true", "yes")
        return cls(parts.hostname or "localhost", port, name, tls)

    @property
    def uri(self) -> str:
        """The endpoint pymilvus dials."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"milvus{'s' if self.tls else ''}://{self.host}:{self.port}/{self.name}"

    def collection(self, version: str) -> str:
        """The collection that holds `version`."""
        return f"{self.name}{SEPARATOR}{version}"


def version_slug(version: str) -> str:
    """A version name as a collection-name suffix (letters, digits, underscores)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", version)[:60]


def field_columns(types: dict[str, str]) -> dict[str, dict]:
    """Gallery field -> {"type", "field", "flag"}: generated Milvus names, in a stable order."""
    out = {}
    for i, (name, ftype) in enumerate(sorted(types.items())):
        # an object field is stored in `metadata` and never filtered: only its flag (for the facet count)
        # every field has a presence flag (a tags field: at least one tag), since Milvus 2.3 has no
        # NULL and its execution backend cannot compare array_length
        out[name] = {"type": ftype, "field": None if ftype == OBJECT else f"f{i:04d}", "flag": f"h{i:04d}"}
    return out


def make_schema(client, dim: int, columns: dict[str, dict], with_embedding: bool):
    """The collection schema of a gallery version (see the module docstring)."""
    from pymilvus import DataType  # noqa: PLC0415 - optional dependency (the `milvus` extra)

    s = client.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID)
    s.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    if with_embedding:
        s.add_field("embedding", DataType.ARRAY, element_type=DataType.FLOAT, max_capacity=dim)
    for name, length in (("path", MAX_PATH), ("sha256", 64), ("metadata", MAX_TEXT), ("digest", 64)):
        s.add_field(name, DataType.VARCHAR, max_length=length)
    for name in ("width", "height", "size", "mtime_ns", "seq"):
        s.add_field(name, DataType.INT64)
    for info in columns.values():
        ftype = info["type"]
        if ftype == OBJECT:
            s.add_field(info["flag"], DataType.BOOL)
            continue
        if ftype == TAGS:
            s.add_field(info["field"], DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_TAGS,
                        max_length=MAX_TEXT)
            s.add_field(info["flag"], DataType.BOOL)
            continue
        kind = {STRING: DataType.VARCHAR, BOOLEAN: DataType.BOOL}.get(ftype, DataType.DOUBLE)
        s.add_field(info["field"], kind, **({"max_length": MAX_TEXT} if kind == DataType.VARCHAR else {}))
        s.add_field(info["flag"], DataType.BOOL)
    return s


def scalar_index_params(client, columns: dict[str, dict], index: dict):
    """Index params: the vector index (metric IP) and a scalar index per filterable field."""
    params = client.prepare_index_params()
    params.add_index("vector", index_type=index["index_type"], metric_type="IP", params=index.get("params") or {})
    params.add_index("sha256", index_type="", index_name="sha256_idx")  # "" = the server's default scalar index
    for info in columns.values():
        if info["type"] not in (TAGS, BOOLEAN, OBJECT):  # Milvus 2.3 indexes no ARRAY or BOOL field
            params.add_index(info["field"], index_type="", index_name=f"{info['field']}_idx")
    return params


def _typed(name: str, info: dict, value) -> object:
    """One metadata value as its column value; ValueError naming the field when it does not fit."""
    ftype = info["type"]
    try:
        if ftype == TAGS:
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                raise ValueError
            return typed_value(ftype, value)
        if ftype == STRING and not isinstance(value, str):
            raise ValueError
        if ftype == BOOLEAN and not isinstance(value, (bool, str)):
            raise ValueError
        out = typed_value(ftype, value)
        if out is None:
            raise ValueError
        return out
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ValueError(f"field {name!r} is a {ftype} field; {json.dumps(value)[:80]} does not fit it") from None


def item_row(record: dict, vector: np.ndarray, embedding: np.ndarray | None, columns: dict[str, dict],
             with_embedding: bool, seq: int | None = None) -> dict:
    """A Milvus row of an item record (id, path, ..., metadata); ValueError when a value does not fit."""
    meta = record.get("metadata") or {}
    text = json.dumps(meta, ensure_ascii=False, sort_keys=True)
    item_id = str(record["id"])
    if len(item_id.encode()) > MAX_ID or len(text.encode()) > MAX_TEXT:
        raise ValueError(f"the id or the metadata of {item_id[:40]!r} is over Milvus's {MAX_TEXT}-byte limit")
    row = {"id": item_id, "vector": np.asarray(vector, np.float32).tolist(), "path": str(record.get("path") or ""),
           "sha256": str(record.get("sha256") or ""), "metadata": text,
           "width": int(record.get("width") or 0), "height": int(record.get("height") or 0),
           "size": int(record.get("size") or 0), "mtime_ns": int(record.get("mtime_ns") or 0),
           "seq": int(seq if seq is not None else time.time() * 1000)}
    if with_embedding:
        row["embedding"] = np.asarray(embedding if embedding is not None else vector, np.float32).tolist()
    for name, info in columns.items():
        value = meta.get(name)
        present = value is not None and value != []
        if info["type"] == OBJECT:
            row[info["flag"]] = value is not None
            continue
        typed = _typed(name, info, value) if present else None
        if info["type"] == TAGS:
            row[info["field"]] = list(typed or [])
            row[info["flag"]] = bool(typed)
            continue
        default = {STRING: "", BOOLEAN: False}.get(info["type"], 0.0)
        row[info["field"]] = typed if present else default
        row[info["flag"]] = present
    row["digest"] = hashlib.sha256(json.dumps([row["path"], row["sha256"], text, row["vector"], row.get("embedding")])
                                   .encode()).hexdigest()
    return row


def row_record(row: dict) -> dict:
    """An item record (what GalleryView.item returns) from a Milvus row."""
    out = {k: row.get(k) for k in RECORD_FIELDS if k in row}
    out["metadata"] = json.loads(row.get("metadata") or "{}")
    for key in ("width", "height", "mtime_ns"):  # stored as 0 when unknown (Milvus 2.3 has no NULL)
        if key in out:
            out[key] = out[key] or None
    return out


def is_number_type(ftype: str) -> bool:
    """True for fields held as DOUBLE (numbers and dates)."""
    return ftype == NUMBER or ftype in TIME_TYPES
