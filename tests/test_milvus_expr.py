"""Filter expressions for Milvus: generated field names, escaped values, and hostile input on a real server."""

from __future__ import annotations

import numpy as np
import pytest

from cir.filters import parse_filter
from cir.search.query import InvalidFilterError
from cir.stores import Upsert, open_store
from cir.stores.milvus_expr import literal, to_expression
from cir.stores.milvus_schema import field_columns
from cir.stores.milvus_sync import sync_version
from milvus_fixtures import FLAT, faiss_version

HOSTILE_VALUES = ['a"b', "a'b", "back\\slash", 'end\\', '\\"', "'; --", '" or id != "', "new\nline\ttab",
                  "ünïcødé ✓ 日本", "\u2028sep", "emoji 🎉", "", " ", "x) or (1 == 1"]
HOSTILE_FIELD = 'na\'me"; DROP TABLE items;-- ) or (true'


def test_literals_are_escaped_json_strings():
    assert literal('a"b') == '"a\\"b"'
    assert literal("back\\slash") == '"back\\\\slash"'
    assert literal("x\ny") == '"x\\ny"'
    assert literal(True) == "true" and literal(2) == "2.0" and literal(1e-5) == "1e-05"
    assert literal(["a", 'b"']) == '["a", "b\\""]'
    for bad in (float("nan"), float("inf"), {"a": 1}, "\ud800"):
        with pytest.raises(InvalidFilterError):
            literal(bad)


def test_field_names_never_reach_the_expression():
    columns = field_columns({HOSTILE_FIELD: "string", "price": "number", "tags": "tags", "when": "date",
                             "blob": "object"})
    assert columns["blob"]["field"] is None  # an object field has only its presence flag
    fields = {name: {"type": info["type"]} for name, info in columns.items()}
    flt = {HOSTILE_FIELD: {"in": ["a", 'b"']}, "price": {"gte": 1, "lt": 2}, "tags": {"all": ["x"]},
           "when": {"gt": "2024-01-01"}}
    expr = to_expression(parse_filter(flt).bind(fields), columns)
    assert "DROP" not in expr and "na'me" not in expr
    assert expr.startswith('(h0001 == true and f0001 in ["a", "b\\""])')  # "blob" is f0000
    assert "array_contains_all(f0003" in expr and "f0004 > 1704067200.0" in expr


def test_hostile_values_match_exactly_on_the_server(milvus_server, tmp_path):
    """Each hostile value finds exactly its own item, as an eq, an in, a ne and a tag."""
    faiss_view, _, _, metas = faiss_version(tmp_path, n=20)
    milvus = open_store(milvus_server.url())
    sync_version(milvus, faiss_view, index=FLAT)
    rng = np.random.default_rng(0)
    ops = []
    for i, value in enumerate(HOSTILE_VALUES):
        v = rng.normal(size=16).astype(np.float32)
        v /= np.linalg.norm(v)
        # the fields of random_metadata: a hostile name holding hostile values, and tags
        meta = {'na\'me"; DROP TABLE items;--': value, "tags": [value]}
        ops.append(Upsert(f"hostile{i}", v, v, meta))
    assert all(r.status == "ok" for r in milvus.write(ops))
    view = milvus.open()
    q = np.ones(16, np.float32) / 4
    field = 'na\'me"; DROP TABLE items;--'
    for i, value in enumerate(HOSTILE_VALUES):
        for flt in ({field: value}, {field: {"in": [value, "zzz-none"]}}):
            _, ids = view.search_where(q, 100, parse_filter(flt).bind(view.fields))
            assert ids == [f"hostile{i}"], (value, flt)
        tagged = {f"item{j}" for j, m in enumerate(metas) if value in m.get("tags", [])}  # "'; --" is a gallery tag
        for flt in ({"tags": value}, {"tags": {"all": [value]}}, {"tags": {"any": [value, "zzz-none"]}}):
            _, ids = view.search_where(q, 100, parse_filter(flt).bind(view.fields))
            assert set(ids) == {f"hostile{i}"} | tagged, (value, flt)
        _, ids = view.search_where(q, 100, parse_filter({field: {"ne": value}}).bind(view.fields))
        assert f"hostile{i}" not in ids and len(ids) == 20 + len(HOSTILE_VALUES) - 1 - _absent(faiss_view, field)
    milvus.close()


def _absent(view, field: str) -> int:
    return view.count - view.fields[field]["count"]
