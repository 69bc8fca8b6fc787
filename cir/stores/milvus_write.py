"""Live writes to a Milvus collection: Upsert, Patch (read, merge, upsert) and Delete, in order.

Milvus 2.3 has no partial upsert, so a Patch reads the whole row (Strong), merges the metadata
(JSON merge patch: None removes a key) and upserts it back with its vectors. A metadata field the
collection was built without is kept in the item's metadata but cannot be filtered until the next
full build adds a column for it; a value that does not fit a typed field's column is 'invalid'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cir.stores.base import Delete, Operation, Patch, Upsert, WriteResult
from cir.stores.milvus_expr import literal
from cir.stores.milvus_schema import RECORD_FIELDS, item_row, row_record


def _vector(value, dim: int, what: str) -> np.ndarray:
    vec = np.asarray(value, dtype=np.float32).reshape(-1)
    if vec.shape[0] != dim or not np.isfinite(vec).all():
        raise ValueError(f"{what} must be {dim} finite numbers, got {vec.shape[0]}")
    norm = float(np.linalg.norm(vec))
    if not math.isclose(norm, 1.0, rel_tol=1e-3, abs_tol=1e-3):
        raise ValueError(f"{what} must be a unit vector (norm {norm:.4f})")
    return vec


def _upsert_row(op: Upsert, manifest: dict) -> dict:
    milvus, dim = manifest["milvus"], int(manifest["dim"])
    if not isinstance(op.id, str) or not op.id:
        raise ValueError("an item id is a non-empty string")
    embedding = _vector(op.embedding, dim, "embedding")
    vector = _vector(op.vector, dim, "vector")
    if not milvus["embedding_field"] and not np.allclose(embedding, vector, atol=1e-6):
        raise ValueError("this collection ranks the image embeddings themselves (no composed items): "
                         "vector must equal embedding")
    if not isinstance(op.metadata, dict):
        raise ValueError("metadata must be a JSON object")
    record = {"id": op.id, "path": op.path, "width": op.width, "height": op.height, "sha256": op.sha256,
              "size": op.size, "metadata": op.metadata}
    return item_row(record, vector, embedding, milvus["columns"], milvus["embedding_field"])


def _read(store, collection: str, item_id: str, fields: list[str]) -> dict | None:
    rows = store.call("query", collection, filter=f"id == {literal(item_id)}", output_fields=fields,
                      consistency_level="Strong")
    return rows[0] if rows else None


def _patch(store, collection: str, manifest: dict, op: Patch) -> WriteResult:
    milvus = manifest["milvus"]
    if not isinstance(op.metadata, dict):
        return WriteResult(op.id, "patch", "invalid", error="metadata must be a JSON object")
    vectors = ["vector", "embedding"] if milvus["embedding_field"] else ["vector"]
    row = _read(store, collection, op.id, [*RECORD_FIELDS, "seq", *vectors])
    if row is None:
        return WriteResult(op.id, "patch", "not_found", error=f"no item {op.id!r}")
    record = row_record(row)
    merged = dict(record["metadata"])
    for key, value in op.metadata.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    record["metadata"] = merged
    try:
        new = item_row(record, row["vector"], row.get("embedding"), milvus["columns"], milvus["embedding_field"],
                       seq=row["seq"])
    except ValueError as exc:
        return WriteResult(op.id, "patch", "invalid", error=str(exc))
    store.call("upsert", collection, [new])
    return WriteResult(op.id, "patch", "ok")


def _delete(store, collection: str, op: Delete) -> WriteResult:
    if _read(store, collection, op.id, ["id"]) is None:
        return WriteResult(op.id, "delete", "not_found", error=f"no item {op.id!r}")
    store.call("delete", collection, filter=f"id in {literal([op.id])}")
    return WriteResult(op.id, "delete", "ok")


def apply_operations(store, collection: str, manifest: dict, ops: Sequence[Operation]) -> list[WriteResult]:
    """Apply ops in order; consecutive upserts of distinct ids go to Milvus as one call."""
    results: list[WriteResult] = []
    pending: list[tuple[int, dict]] = []

    def flush() -> None:
        if pending:
            store.call("upsert", collection, [row for _, row in pending])
            pending.clear()

    for op in ops:
        if isinstance(op, Upsert):
            try:
                row = _upsert_row(op, manifest)
            except ValueError as exc:
                results.append(WriteResult(str(op.id), "upsert", "invalid", error=str(exc)))
                continue
            if any(r["id"] == row["id"] for _, r in pending):
                flush()
            pending.append((len(results), row))
            results.append(WriteResult(op.id, "upsert", "ok"))
            continue
        flush()
        if isinstance(op, Patch):
            results.append(_patch(store, collection, manifest, op))
        elif isinstance(op, Delete):
            results.append(_delete(store, collection, op))
        else:
            raise TypeError(f"not a write operation: {op!r}")
    flush()  # if it raises, the caller gets the error, not results: a retry is safe (upserts are idempotent)
    return results
