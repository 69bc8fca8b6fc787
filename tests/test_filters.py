"""cir.filters and the filtered search plan: every operator and error, exact on Flat, k hits on ANN."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3

import numpy as np
import pytest

from cir import index_store as store
from cir.filters import MAX_CONDITIONS, MAX_DEPTH, MAX_FILTER_BYTES, parse_filter
from cir.index_search import exact_search, filtered_search
from cir.search.query import InvalidFilterError
from filter_fixtures import (HOSTILE, brute_force, matches, random_filter, random_metadata, random_tree,
                             write_metadata_version)
from indexer.synthetic import synthetic_vectors

FIELDS = {"colour": {"type": "string"}, "price": {"type": "number"}, "in_stock": {"type": "boolean"},
          "date": {"type": "date"}, "when": {"type": "datetime"}, "tags": {"type": "tags"}, "raw": {"type": "object"}}


def _error(raw, fields=FIELDS) -> InvalidFilterError:
    with pytest.raises(InvalidFilterError) as exc:
        flt = parse_filter(raw)
        flt.bind(fields)
    return exc.value


@pytest.mark.parametrize("raw, field, reason", [
    ('{"colour": "blue"', None, "not valid JSON"),
    ('["colour"]', None, "JSON object"),
    ('"blue"', None, "JSON object"),
    ('{"price": NaN}', None, "NaN is not a finite number"),
    ('{"price": {"lt": Infinity}}', None, "Infinity is not a finite number"),
    ('{"price": {"lt": 1e400}}', "price", "not a finite number"),
    ('{"price": {"gte": 1, "gte": 2}}', None, "given twice"),
    ('{"colour": {"like": "bl%"}}', "colour", "unknown operator 'like'"),
    ('{"colour": {}}', "colour", "empty operator object"),
    ('{"colour": null}', "colour", "got null"),
    ('{"colour": ["blue", "red"]}', "colour", "got a list"),
    ('{"colour": {"in": []}}', "colour", "non-empty list"),
    ('{"colour": {"in": "blue"}}', "colour", "non-empty list"),
    ('{"colour": {"in": [{"a": 1}]}}', "colour", "got an object"),
    ('{"price": {"gt": true}}', "price", "needs a number or a date"),
    ("[" * 5000 + "]" * 5000, None, "nested too deeply"),
    ('{"colour": {"exists": "yes"}}', "colour", "'exists' needs true or false"),
    ('{"colour": {"nin": []}}', "colour", "non-empty list"),
    ('{"or": {"colour": "red"}}', None, '"or" takes a non-empty list of non-empty sub-filter objects'),
    ('{"or": []}', None, '"or" takes a non-empty list'),
    ('{"and": [{}]}', None, '"and" takes a non-empty list'),
    ('{"or": ["red"]}', None, '"or" takes a non-empty list'),
    ('{"not": [{"colour": "red"}]}', None, '"not" takes one non-empty sub-filter object'),
    ('{"not": {}}', None, '"not" takes one non-empty sub-filter object'),
    ('{"or": [{"colour": {"like": "x"}}]}', "colour", "unknown operator 'like'"),
])
def test_parse_errors(raw, field, reason):
    err = _error(raw)
    assert err.field == field and reason in err.reason and err.code == "invalid_filter"
    assert reason in str(err) and (field is None or repr(field) in str(err))


def test_depth_and_tree_condition_limits():
    nested = {"colour": "red"}
    for _ in range(MAX_DEPTH):
        nested = {"not": nested}
    assert parse_filter(nested) is not None
    assert f"nest at most {MAX_DEPTH} levels" in _error({"or": [nested]}).reason
    many = {"or": [{f"f{i}": i} for i in range(MAX_CONDITIONS + 1)]}  # counted across the whole tree
    assert f"more than {MAX_CONDITIONS} conditions" in _error(many).reason
    flt = parse_filter({"price": {"gt": 1}, "or": [{"colour": "a"}, {"not": {"tags": {"nin": ["x"]}}}]})
    assert len(flt.conditions) == 3 and parse_filter(flt.to_dict()) == flt
    assert flt.to_dict() == {"price": {"gt": 1}, "or": [{"colour": {"eq": "a"}}, {"not": {"tags": {"nin": ["x"]}}}]}


def test_size_and_condition_limits():
    assert "over the limit" in _error(json.dumps({"colour": "x" * MAX_FILTER_BYTES})).reason
    assert "over the limit" in _error({"colour": "x" * MAX_FILTER_BYTES}).reason  # the dict API too
    many = {f"f{i}": i for i in range(MAX_CONDITIONS + 1)}
    assert f"more than {MAX_CONDITIONS} conditions" in _error(json.dumps(many)).reason
    ranges = {"price": {"gt": 1, "lt": 9}}  # two conditions on one field count twice
    assert len(parse_filter({**ranges, **{f"f{i}": i for i in range(MAX_CONDITIONS - 2)}}).conditions) == 64
    assert "not plain JSON" in _error({"price": float("nan")}).reason
    assert parse_filter(None) is None and parse_filter("  ") is None and parse_filter("{}") is None


@pytest.mark.parametrize("raw, field, reason", [
    ({"colr": "blue"}, "colr", "the index has no field 'colr' (fields: 'colour'"),
    ({"colour": 3}, "colour", "needs a string for a string field, got 3"),
    ({"colour": {"gt": "b"}}, "colour", "operator 'gt' does not apply to a string field (use eq, ne, in, nin, exists)"),
    ({"price": "cheap"}, "price", 'needs a number for a number field, got "cheap"'),
    ({"price": {"any": [1]}}, "price", "does not apply to a number field"),
    ({"in_stock": "yes"}, "in_stock", "needs true or false"),
    ({"in_stock": {"gt": 0}}, "in_stock", "does not apply to a boolean field"),
    ({"date": {"gte": "yesterday"}}, "date", "needs an ISO 8601 date"),
    ({"date": {"gte": "2024-13-01"}}, "date", "needs an ISO 8601 date"),
    ({"date": 20240101}, "date", "needs an ISO 8601 date"),
    ({"when": {"lt": "2024-01-01T25:00"}}, "when", "needs an ISO 8601 date"),
    ({"tags": {"in": ["sale"]}}, "tags", "does not apply to a tags field (use eq, any, all, nin, exists)"),
    ({"tags": {"any": ["sale", 1]}}, "tags", "needs a string for a tags field"),
    ({"raw": "x"}, "raw", "holds object values, which cannot be filtered"),
    ({"or": [{"colour": 3}]}, "colour", "needs a string for a string field, got 3"),
    ({"not": {"price": {"any": [1]}}}, "price", "does not apply to a number field"),
])
def test_bind_errors(raw, field, reason):
    err = _error(raw)
    assert err.field == field and reason in err.reason, err.reason


def test_bind_accepts_every_valid_form():
    flt = parse_filter({"colour": {"in": ["a", "b"], "ne": "c"}, "price": {"gte": 1, "lt": 2.5}, "in_stock": False,
                        "date": {"gte": "2024-01-01", "lt": "2024-02-01T00:00:00+02:00"}, "when": "2024-01-01T10:00Z",
                        "tags": {"all": ["x"], "any": ["y"]}})
    bound = flt.bind(FIELDS)
    assert len(bound.conditions) == 10
    assert flt.to_dict()["price"] == {"gte": 1, "lt": 2.5} and parse_filter(flt.to_dict()) == flt


EXPLICIT = [
    {"colour": "red", "price": 5, "in_stock": True, "date": "2024-01-01", "when": "2024-01-01T10:00:00Z",
     "tags": ["sale", "new"]},
    {"colour": "blue", "price": 12.5, "in_stock": False, "date": "2024-03-01", "when": "2024-01-01T12:00:00+01:00",
     "tags": ["new"]},
    {"colour": "red", "price": 50, "date": "2024-06-30", "tags": []},
    {"price": 99.9, "in_stock": True, "when": "2025-01-01T00:00:00"},
]


@pytest.fixture(scope="module")
def explicit(tmp_path_factory):
    vectors = synthetic_vectors(len(EXPLICIT), 16, seed=3)
    return write_metadata_version(tmp_path_factory.mktemp("explicit"), vectors, EXPLICIT)


@pytest.mark.parametrize("flt, rows", [
    ({"colour": "red"}, [0, 2]), ({"colour": {"eq": "blue"}}, [1]), ({"colour": {"ne": "red"}}, [1]),
    ({"colour": {"in": ["blue", "green"]}}, [1]), ({"colour": "green"}, []),
    ({"price": 50}, [2]), ({"price": {"ne": 50}}, [0, 1, 3]), ({"price": {"in": [5, 99.9]}}, [0, 3]),
    ({"price": {"gt": 12.5}}, [2, 3]), ({"price": {"gte": 12.5}}, [1, 2, 3]), ({"price": {"lt": 12.5}}, [0]),
    ({"price": {"lte": 12.5}}, [0, 1]), ({"price": {"gte": 10, "lt": 60}}, [1, 2]),
    ({"in_stock": True}, [0, 3]), ({"in_stock": False}, [1]), ({"in_stock": {"ne": True}}, [1]),
    ({"date": "2024-03-01"}, [1]), ({"date": {"gte": "2024-03-01"}}, [1, 2]),
    ({"date": {"lt": "2024-03-01T00:00:01Z"}}, [0, 1]), ({"date": {"in": ["2024-01-01", "2024-06-30"]}}, [0, 2]),
    ({"when": {"gt": "2024-01-01T10:30:00Z"}}, [1, 3]),  # 12:00+01:00 is 11:00Z; no offset means UTC
    ({"when": "2024-01-01T11:00:00Z"}, [1]), ({"when": {"lte": "2024-12-31"}}, [0, 1]),
    ({"tags": "new"}, [0, 1]), ({"tags": {"any": ["sale", "eco"]}}, [0]), ({"tags": {"all": ["sale", "new"]}}, [0]),
    ({"tags": {"all": ["new"]}}, [0, 1]), ({"tags": {"all": ["new", "eco"]}}, []), ({"tags": {"any": ["eco"]}}, []),
    ({"colour": "red", "tags": "sale"}, [0]), ({"colour": "red", "price": {"gt": 100}}, []),
    # exclusion: nin and ne skip items lacking the field; exists and not select by absence
    ({"colour": {"nin": ["red"]}}, [1]), ({"colour": {"nin": ["red", "blue"]}}, []),
    ({"price": {"nin": [5, 50]}}, [1, 3]), ({"date": {"nin": ["2024-01-01"]}}, [1, 2]),
    ({"tags": {"nin": ["sale"]}}, [1]), ({"tags": {"nin": ["eco"]}}, [0, 1]),
    ({"colour": {"exists": True}}, [0, 1, 2]), ({"colour": {"exists": False}}, [3]),
    ({"in_stock": {"exists": False}}, [2]), ({"tags": {"exists": False}}, [2, 3]),
    ({"not": {"colour": "red"}}, [1, 3]), ({"not": {"colour": {"exists": True}}}, [3]),
    ({"or": [{"colour": "blue"}, {"price": {"gt": 60}}]}, [1, 3]),
    ({"or": [{"colour": "blue"}, {"not": {"in_stock": True}}]}, [1, 2]),
    ({"and": [{"colour": "red"}, {"not": {"tags": "sale"}}]}, [2]),
    ({"price": {"lt": 60}, "or": [{"tags": "sale"}, {"in_stock": False}]}, [0, 1]),
    ({"not": {"or": [{"colour": "red"}, {"not": {"price": {"gt": 90}}}]}}, [3]),
])
def test_every_operator(explicit, flt, rows):
    mask = parse_filter(flt).bind(explicit.manifest["fields"]).mask(explicit.columns)
    assert np.flatnonzero(mask).tolist() == rows


def test_flat_filtered_equals_brute_force(tmp_path):
    """Random filters (property-style, seeded): the engine's ranking is the exact filtered ranking."""
    metadatas = random_metadata(600, seed=1)
    vectors = synthetic_vectors(600, 32, seed=1)
    loaded = write_metadata_version(tmp_path, vectors, metadatas)
    assert loaded.manifest["fields"][HOSTILE]["type"] == "string"
    rng = random.Random(7)
    queries = synthetic_vectors(20, 32, seed=8)
    checked = 0
    for trial in range(150):
        flt = random_filter(rng)
        mask = parse_filter(json.dumps(flt)).bind(loaded.manifest["fields"]).mask(loaded.columns)
        assert mask.tolist() == [matches(m, flt) for m in metadatas], flt
        q, k = queries[trial % 20], rng.choice([1, 5, 10, 50])
        want_ids, want_scores = brute_force(vectors, metadatas, flt, q, k)
        for exact_max in (store.EXACT_MAX_MATCHES, 0):  # numpy over the rows, FAISS with a selector
            loaded.exact_max = exact_max
            scores, ids = loaded.search_filtered(q, k, mask)
            assert ids == want_ids, (flt, exact_max)
            assert np.allclose(scores, want_scores, atol=1e-5)
        checked += bool(want_ids)
    assert checked > 100  # most random filters match something


def test_boolean_trees_equal_brute_force(tmp_path):
    """Random trees of and / or / not over every operator (nin and exists too): mask and exact ranking."""
    metadatas = random_metadata(400, seed=3)
    vectors = synthetic_vectors(400, 32, seed=3)
    loaded = write_metadata_version(tmp_path, vectors, metadatas)
    rng = random.Random(11)
    queries = synthetic_vectors(10, 32, seed=12)
    kinds = set()
    for trial in range(200):
        flt = random_tree(rng)
        kinds |= {key for key in json.dumps(flt).split('"') if key in ("and", "or", "not", "nin", "exists")}
        mask = parse_filter(json.dumps(flt)).bind(loaded.manifest["fields"]).mask(loaded.columns)
        assert mask.tolist() == [matches(m, flt) for m in metadatas], flt
        q, k = queries[trial % 10], rng.choice([1, 10, 50])
        want_ids, want_scores = brute_force(vectors, metadatas, flt, q, k)
        for exact_max in (store.EXACT_MAX_MATCHES, 0):
            loaded.exact_max = exact_max
            scores, ids = loaded.search_filtered(q, k, mask)
            assert ids == want_ids and np.allclose(scores, want_scores, atol=1e-5), (flt, exact_max)
    assert kinds == {"and", "or", "not", "nin", "exists"}


@pytest.mark.parametrize("factory", ["HNSW32", "IVF64,Flat", "IVF64,PQ16x4fs"])
def test_ann_filtered_recall_and_k_hits(tmp_path, factory):
    n, k = 5000, 10
    vectors = synthetic_vectors(n, 32, seed=2)
    rng = np.random.default_rng(4)
    shares = {"half": 0.5, "tenth": 0.1, "fiftieth": 0.02, "few": 12 / n, "three": 3 / n}
    groups = rng.permutation(np.repeat(list(shares) + ["rest"],
                                       [round(s * n) for s in shares.values()] + [n - sum(round(s * n) for s in shares.values())]))
    loaded = write_metadata_version(tmp_path, vectors, [{"group": str(g)} for g in groups], factory=factory)
    loaded.exact_max = 0  # force the ANN plan: the exact scan must only be the fallback
    queries = synthetic_vectors(100, 32, seed=5)
    plans = set()
    for group in shares:
        mask = groups == group
        rows = np.flatnonzero(mask)
        found = 0
        for q in queries:
            scores, got, plan = filtered_search(loaded.index, vectors, q, k, mask, factory=factory,
                                                rerank=loaded.manifest["rerank"], exact_max=0)
            plans.add(plan)
            truth = exact_search(vectors, rows, q, k)[1]
            assert len(got) == min(k, len(rows)) and mask[got].all()
            assert np.all(np.diff(scores) <= 1e-6)  # best first
            found += len(set(got.tolist()) & set(truth.tolist()))
        recall = found / (len(queries) * min(k, len(rows)))
        assert recall >= 0.95, (factory, group, recall)
    assert "ann" in plans
    # through LoadedIndex: ids and at most k
    scores, ids = loaded.search_filtered(queries[0], k, groups == "three")
    assert len(ids) == 3 and all(groups[int(i[4:])] == "three" for i in ids)


def test_old_version_without_columns_serves_unfiltered(tmp_path, explicit):
    version = store.IndexRoot(explicit.root).current_version()
    old = tmp_path / "old"
    shutil.copytree(explicit.root, old)
    vdir = old / "versions" / version
    shutil.rmtree(vdir / "columns")
    manifest = json.loads((vdir / "manifest.json").read_text())
    del manifest["fields"]
    (vdir / "manifest.json").write_text(json.dumps(manifest))
    loaded = store.load_version(old)
    assert loaded.columns is None and len(loaded.search(np.ones((1, 16), np.float32), 2)[1][0]) == 2
    err = _error({"colour": "red"}, loaded.manifest.get("fields"))
    assert err.field == "colour" and "the index has no field 'colour'" in err.reason


def test_hostile_names_and_values_are_data(tmp_path):
    metadatas = random_metadata(50, seed=9)
    loaded = write_metadata_version(tmp_path, synthetic_vectors(50, 16, seed=9), metadatas)
    for value in ("Robert'); DROP TABLE items;--", "O'Brien", "ünïcødé ✓", "' OR '1'='1"):
        flt = {HOSTILE: value, "tags": {"any": ["'; --", "日本"]}}
        mask = parse_filter(json.dumps(flt)).bind(loaded.manifest["fields"]).mask(loaded.columns)
        assert mask.tolist() == [matches(m, flt) for m in metadatas]
    err = _error({"x' OR 1=1; --": "y"}, loaded.manifest["fields"])
    assert err.field == "x' OR 1=1; --"
    con = sqlite3.connect(store.IndexRoot(loaded.root).version_dir(loaded.version) / store.ITEMS_FILE)
    assert con.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 50
