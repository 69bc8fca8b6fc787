"""cir.io: atomic writes, folder swaps and the shared JSONL reader."""

import os
import stat

import pytest

from cir.io import atomic_write_json, iter_jsonl, replace_dir


def test_atomic_write_leaves_no_temp_file_and_is_readable_by_others(tmp_path):
    target = tmp_path / "sub" / "out.json"
    atomic_write_json(target, {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_replace_dir_swaps_in_the_new_folder(tmp_path):
    out, new = tmp_path / "out", tmp_path / "new"
    out.mkdir(); (out / "old.txt").write_text("old")
    new.mkdir(); (new / "new.txt").write_text("new")
    replace_dir(new, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in out.iterdir()] == ["new.txt"]


def test_iter_jsonl_yields_objects_with_line_numbers(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (3, {"a": 2})]


@pytest.mark.parametrize("text, message", [('{"a": 1}\n{oops\n', ":2: not valid JSON"),
                                           ('[1, 2]\n', ":1: each line must be a JSON object")])
def test_iter_jsonl_names_the_bad_line(tmp_path, text, message):
    path = tmp_path / "rows.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        list(iter_jsonl(path))
