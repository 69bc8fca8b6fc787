"""The gallery's own catalogue in Milvus: one row per version in the collection `NAME__meta`.

A row holds a version's manifest (JSON) and whether its build completed. It lives in a
collection, not in collection properties, because Milvus writes rows to its log before it
acknowledges them, so they survive a kill -9 of the server; properties altered on Milvus 2.3
were seen to be lost by one. Milvus 2.3 wants a vector field in every collection: `unused` is a
2-d placeholder.
"""

from __future__ import annotations

import json

from cir.stores.milvus_expr import literal
from cir.stores.milvus_schema import LOAD_TIMEOUT_S, MAX_ID, MAX_TEXT, SEPARATOR

META_SUFFIX = "meta"
STRONG = {"consistency_level": "Strong"}


def meta_collection(name: str) -> str:
    """The catalogue collection of gallery `name`."""
    return f"{name}{SEPARATOR}{META_SUFFIX}"


def ensure_meta(store) -> str:
    """Create (once) and load the catalogue collection; returns its name."""
    from pymilvus import DataType  # noqa: PLC0415 - optional dependency (the `milvus` extra)

    name = meta_collection(store.location.name)
    if not store.call("has_collection", name):
        client = store.client()
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("version", DataType.VARCHAR, is_primary=True, max_length=MAX_ID)
        schema.add_field("manifest", DataType.VARCHAR, max_length=MAX_TEXT)
        schema.add_field("complete", DataType.BOOL)
        schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)
        params = client.prepare_index_params()
        params.add_index("unused", index_type="FLAT", metric_type="L2")
        store.call("create_collection", name, schema=schema, index_params=params, consistency_level="Strong",
                   timeout=LOAD_TIMEOUT_S)  # with index params it loads the collection too
    store.call("load_collection", name, timeout=LOAD_TIMEOUT_S)
    return name


def read_entry(store, version: str) -> dict | None:
    """{'manifest': dict, 'complete': bool} of a version, or None."""
    name = meta_collection(store.location.name)
    if not store.call("has_collection", name):
        return None
    rows = store.call("query", name, filter=f"version == {literal(version)}", output_fields=["manifest", "complete"],
                      **STRONG)
    if not rows:
        return None
    try:
        manifest = json.loads(rows[0]["manifest"])
    except ValueError:
        return None
    return {"manifest": manifest, "complete": bool(rows[0]["complete"])}


def write_entry(store, version: str, manifest: dict, complete: bool) -> None:
    """Record a version's manifest and completeness (acknowledged = durable)."""
    text = json.dumps({k: v for k, v in manifest.items() if k not in ("fields", "count")}, ensure_ascii=False)
    if len(text.encode()) > MAX_TEXT:
        raise ValueError(f"the manifest of {version} is over Milvus's {MAX_TEXT}-byte limit")
    store.call("upsert", ensure_meta(store), [{"version": version, "manifest": text, "complete": complete,
                                               "unused": [0.0, 0.0]}])


def delete_entry(store, version: str) -> None:
    """Forget a dropped version."""
    name = meta_collection(store.location.name)
    if store.call("has_collection", name):
        store.call("delete", name, filter=f"version == {literal(version)}")
