"""Typed metadata: type inference (JSONL and CSV), the mixed-type build error, columns and facets."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from cir import index_store as store
from cir.columns import build_columns, describe
from cir.metadata import MAX_FACET_VALUES, MetadataError, infer_types, parse_datetime
from index_fixtures import write_image
from indexer.cli import main as index_main


def _types(rows, csv=False):
    return infer_types(enumerate(rows, 1), csv=csv)


def test_jsonl_types():
    rows = [{"s": "a", "n": 1, "b": True, "d": "2024-01-31", "t": "2024-01-31T10:00:00Z", "mix": "2024-01-31",
             "tags": ["x", "y"], "o": {"k": 1}, "l": [1, 2], "notdate": "2024-01-31", "null": None},
            {"s": "b", "n": 2.5, "b": False, "d": "2024-02-01", "t": "2024-02-01 10:00+02:00",
             "mix": "2024-02-01T08:30", "tags": [], "o": {"k": 2}, "notdate": "soon"}]
    assert _types(rows) == {"b": "boolean", "d": "date", "l": "object", "mix": "datetime", "n": "number",
                            "notdate": "string", "o": "object", "s": "string", "t": "datetime", "tags": "tags"}


@pytest.mark.parametrize("rows, field, line, words", [
    ([{"price": 1}, {"price": 2}, {"price": "3"}], "price", 3, ["a string", "line 1 has a number"]),
    ([{"ok": True}, {"ok": 1}], "ok", 2, ["a number", "line 1 has a boolean"]),
    ([{"t": ["a"]}, {"t": "a"}], "t", 2, ["a string", "a list of strings"]),
    ([{"t": ["a"]}, {"t": ["a", 2]}], "t", 2, ["an object", "a list of strings"]),
    ([{"p": 1}, {"p": float("nan")}], "p", 2, ["not a finite number"]),
])
def test_jsonl_type_conflicts_name_field_and_line(rows, field, line, words):
    with pytest.raises(MetadataError) as exc:
        _types(rows)
    assert exc.value.field == field and exc.value.line == line
    assert all(w in str(exc.value) for w in words) and f"line {line}" in str(exc.value)


def test_csv_cells_are_text_typed_when_every_cell_parses():
    rows = [{"n": "12", "f": "-3.5e2", "b": "true", "d": "2024-01-31", "t": "2024-01-31T10:00", "s": "12",
             "nan": "nan", "u": "1_000", "bn": "1"},
            {"n": "7", "f": ".5", "b": "FALSE", "d": "2023-12-01", "t": "2024-01-31", "s": "twelve",
             "nan": "1", "u": "2", "bn": "0"}]
    assert _types(rows, csv=True) == {"b": "boolean", "bn": "number", "d": "date", "f": "number", "n": "number",
                                      "nan": "string", "s": "string", "t": "datetime", "u": "string"}


def test_dates():
    assert parse_datetime("2024-01-31") == (1706659200.0, False)
    assert parse_datetime("2024-01-31T01:00:00+01:00") == (1706659200.0, True)
    assert parse_datetime("2024-01-31T00:00:00Z") == parse_datetime("2024-01-31 00:00") == (1706659200.0, True)
    for bad in ("2024-13-01", "2024-02-30", "31.01.2024", "20240131", "2024-01-31T", "yesterday", 20240131, None):
        assert parse_datetime(bad) is None


def test_columns_and_facets():
    metadatas = [{"colour": "red", "price": 2, "tags": ["a", "b", "a"], "when": "2024-01-02", "ok": True},
                 {"colour": "blue", "price": 10.5, "tags": ["b"], "ok": False},
                 {"colour": "red", "when": "2024-03-04"},
                 {"other": "x"}]
    columns = build_columns(_types(metadatas), metadatas)
    fields = describe(columns)
    assert fields["colour"] == {"type": "string", "count": 3, "distinct": 2, "values": {"blue": 1, "red": 2}}
    assert fields["price"] == {"type": "number", "count": 2, "min": 2.0, "max": 10.5}
    assert fields["tags"] == {"type": "tags", "count": 2, "distinct": 2, "values": {"a": 1, "b": 2}}
    assert fields["when"] == {"type": "date", "count": 2, "min": "2024-01-02", "max": "2024-03-04"}
    assert fields["ok"] == {"type": "boolean", "count": 2, "values": {"true": 1, "false": 1}}
    assert columns.fields["colour"].data.tolist() == [1, 0, 1, -1]
    many = [{"sku": f"s{i:05d}"} for i in range(MAX_FACET_VALUES + 1)]
    assert describe(build_columns({"sku": "string"}, many))["sku"] == {"type": "string", "count": 1001,
                                                                       "distinct": 1001}


def _gallery(tmp_path, n=6):
    return [write_image(tmp_path / "g" / f"{i}.png", i) for i in range(n)]


def test_build_refuses_mixed_types_naming_field_and_line(tmp_path, tiny_clip_dir, capsys):
    paths = _gallery(tmp_path, 3)
    manifest = tmp_path / "g" / "manifest.jsonl"
    rows = [{"path": p.name, "price": v} for p, v in zip(paths, [1, 2.5, "cheap"])]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    rc = index_main(["build", "--gallery", str(manifest), "--model", str(tiny_clip_dir), "--out", str(tmp_path / "ix"),
                     "--workers", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "manifest.jsonl: line 3: field 'price'" in err and "line 1 has a number" in err
    assert not (tmp_path / "ix" / "CURRENT").exists()


def test_build_writes_typed_columns_from_csv(tmp_path, tiny_clip_dir):
    paths = _gallery(tmp_path)
    manifest = tmp_path / "g" / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["path", "id", "price", "in_stock", "added", "brand"])
        w.writeheader()
        for i, p in enumerate(paths):
            w.writerow({"path": p.name, "id": f"p{i}", "price": f"{i * 1.5}" if i != 2 else "",
                        "in_stock": ["true", "false"][i % 2], "added": f"2024-0{i + 1}-15", "brand": ["x", "y'z"][i % 2]})
    root = tmp_path / "ix"
    assert index_main(["build", "--gallery", str(manifest), "--model", str(tiny_clip_dir), "--out", str(root),
                       "--workers", "0", "--no-progress"]) == 0
    loaded = store.load_version(root)
    fields = loaded.manifest["fields"]
    assert fields["price"] == {"type": "number", "count": 5, "min": 0.0, "max": 7.5}
    assert fields["in_stock"]["type"] == "boolean" and fields["added"]["max"] == "2024-06-15"
    assert fields["brand"] == {"type": "string", "count": 6, "distinct": 2, "values": {"x": 3, "y'z": 3}}
    assert np.isnan(loaded.columns.fields["price"].data[2]) and loaded.columns.fields["price"].data[3] == 4.5
    assert loaded.item("p3")["metadata"]["price"] == "4.5"  # the stored metadata stays as given
    info = json.loads((root / "versions" / loaded.version / "columns" / "columns.json").read_text())
    assert info["count"] == 6 and [f["file"] for f in info["fields"].values()] == [f"f{i:04d}" for i in range(4)]
