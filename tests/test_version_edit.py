"""Columns and items tables edited in place (what compaction writes) against the same built from scratch."""

from __future__ import annotations

import numpy as np

from cir.columns import build_columns
from cir.index_store import iter_items, write_items
from cir.metadata import BOOLEAN, DATE, NUMBER, OBJECT, STRING, TAGS
from cir.version_edit import ItemsEdit, edit_columns

TYPES = {"price": NUMBER, "colour": STRING, "tags": TAGS, "sale": BOOLEAN, "extra": OBJECT, "day": DATE,
         "late": STRING}  # "late": a field only the edit brings


def random_metadata(rng: np.random.Generator, late: bool) -> dict:
    m = {}
    if rng.random() < 0.8:
        m["price"] = float(rng.integers(0, 50))
    if rng.random() < 0.7:
        m["colour"] = ["red", "blue", "green", "ochre", "teal"][int(rng.integers(3 if not late else 5))]
    if rng.random() < 0.6:
        m["tags"] = sorted({["a", "b", "c", "d", "zz"][int(i)] for i in rng.integers(0, 4 if not late else 5, 3)})
    if rng.random() < 0.5:
        m["sale"] = bool(rng.integers(2))
    if rng.random() < 0.3:
        m["extra"] = {"k": 1}
    if rng.random() < 0.5:
        m["day"] = f"2024-0{int(rng.integers(1, 9))}-1{int(rng.integers(0, 9))}"
    if late and rng.random() < 0.5:
        m["late"] = "x" if rng.random() < 0.5 else "y"
    return m


def assert_same(got, want) -> None:
    assert got.count == want.count and set(got.fields) == set(want.fields)
    for name, col in want.fields.items():
        other = got.fields[name]
        assert other.type == col.type and other.dictionary == col.dictionary, name
        np.testing.assert_array_equal(np.asarray(other.data), np.asarray(col.data), err_msg=name)
        if col.rows is not None:
            np.testing.assert_array_equal(other.rows, col.rows, err_msg=name)


def test_edited_columns_equal_columns_built_from_the_final_metadata():
    rng = np.random.default_rng(0)
    for trial in range(20):
        base_meta = [random_metadata(rng, late=False) for _ in range(60)]
        base_types = {k: v for k, v in TYPES.items() if k != "late"}
        base = build_columns(base_types, base_meta)
        rows = rng.choice(60, size=int(rng.integers(0, 20)), replace=False)
        edits = [random_metadata(rng, late=True) if rng.random() < 0.7 else {} for _ in rows]  # {}: a tombstone
        appended = [random_metadata(rng, late=True) for _ in range(int(rng.integers(0, 10)))]
        final = list(base_meta)
        for r, m in zip(rows, edits):
            final[r] = m
        final += appended
        got = edit_columns(base, TYPES, rows, edits + appended, len(appended))
        assert_same(got, build_columns(TYPES, final))


def test_values_no_row_has_any_more_leave_the_dictionaries():
    base = build_columns({"colour": STRING, "tags": TAGS}, [{"colour": "red", "tags": ["a"]}, {"colour": "mauve",
                                                                                              "tags": ["b"]}])
    got = edit_columns(base, {"colour": STRING, "tags": TAGS}, np.array([1]), [{"colour": "red"}], 0)
    assert got.fields["colour"].dictionary == ["red"] and got.fields["tags"].dictionary == ["a"]
    assert_same(got, build_columns({"colour": STRING, "tags": TAGS}, [{"colour": "red", "tags": ["a"]},
                                                                      {"colour": "red"}]))


def test_an_edited_items_table_equals_the_table_written_whole(tmp_path):
    def item(i: int, tag: str) -> dict:
        return {"id": f"{tag}{i}", "path": f"/img/{i}.jpg", "width": 4, "height": 3, "sha256": f"h{i}", "size": 10,
                "mtime_ns": None, "metadata": {"n": i, "tag": tag}}

    base = [item(i, "b") for i in range(10)]
    write_items(tmp_path / "base.sqlite", base)
    tomb = {"id": "\x00deleted:3", "path": None, "width": None, "height": None, "sha256": None, "size": None,
            "mtime_ns": None, "metadata": {}}
    want = list(base)
    want[2] = {**want[2], "metadata": {"n": 99}}
    want[3] = tomb
    want += [item(0, "new"), {**item(1, "new"), "id": "b3"}]  # b3 is replaced: its id comes back on a new row
    edit = ItemsEdit(tmp_path / "base.sqlite", [it["id"] for it in want], metadata={2: {"n": 99}},
                     replaced={3: tomb}, appended=want[10:])
    assert edit.write(tmp_path / "edited.sqlite") == 12
    write_items(tmp_path / "whole.sqlite", want)
    assert list(iter_items(tmp_path / "edited.sqlite")) == list(iter_items(tmp_path / "whole.sqlite"))
