"""`cir search`: one query against a published index without a server, the same answers as HTTP."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np
import pytest

from cir_cli.main import main as cir_main
from cir_cli.search import main
from filter_fixtures import matches
from service_fixtures import rich_index, rich_server, world_index  # noqa: F401 - fixtures


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_json_output_equals_the_http_response(rich_index, rich_server, capsys):
    flt = {"price": {"gte": 10, "lt": 60}, "brand": {"ne": "acme"}}
    ref = rich_index["ids"][2]
    rc, out, _ = _run(capsys, "--index", rich_index["root"], "--reference-id", ref, "--text", "make it blue",
                      "--filter", json.dumps(flt), "--k", 5, "--alpha", 0.6, "--json")
    assert rc == 0
    body = json.loads(out)
    http = httpx.post(rich_server.url + "/search", data={"reference_id": ref, "text": "make it blue", "k": "5",
                                                         "alpha": "0.6", "filter": json.dumps(flt)}).json()
    # query_id is the service's handle for POST /feedback (null when feedback is off): no CLI search has one
    assert set(body) == set(http) - {"query_id"} and http["query_id"] is None
    assert body["index_version"] == http["index_version"]
    assert [h["id"] for h in body["results"]] == [h["id"] for h in http["results"]]
    assert np.allclose([h["score"] for h in body["results"]], [h["score"] for h in http["results"]], atol=1e-5)
    for mine, theirs in zip(body["results"], http["results"]):
        assert {k: v for k, v in mine.items() if k != "score"} == {k: v for k, v in theirs.items() if k != "score"}
    want = [i for i, m in rich_index["metadata"].items() if matches(m, flt)]
    assert body["results"] and len(body["results"]) == min(5, len(want))
    assert all(matches(h["metadata"], flt) for h in body["results"])


def test_text_output_and_the_dispatcher(rich_index, tmp_path, capsys):
    image = rich_index["paths"][rich_index["ids"][0]]
    flt_file = tmp_path / "f.json"
    flt_file.write_text('{"tags": {"any": ["sale"]}}')
    rc = cir_main(["search", "--index", str(rich_index["root"]), "--image", str(image), "--text", "a star",
                   "--filter", f"@{flt_file}", "--k", "3"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert out[0].startswith(f"index {rich_index['version']} ({len(rich_index['ids'])} items) · slerp alpha=0.75")
    assert 'filter {"tags": {"any": ["sale"]}} · 3 hits' in out[0]
    assert out[1].split() == ["rank", "score", "id", "metadata"]
    rows = [line.split() for line in out[2:]]
    assert [r[0] for r in rows] == ["1", "2", "3"] and all(r[2] in rich_index["ids"] for r in rows)
    assert all('"sale"' in line for line in out[2:])
    assert -1 <= float(rows[0][1]) <= 1


def test_no_match_is_success_with_no_hits(rich_index, capsys):
    rc, out, _ = _run(capsys, "--index", rich_index["root"], "--text", "x", "--filter", '{"colour": "magenta"}')
    assert rc == 0 and "· 0 hits ·" in out


@pytest.mark.parametrize("args, message", [
    (["--filter", '{"colr": "blue"}'], "filter: field 'colr': the index has no field 'colr'"),
    (["--filter", '{"price": "cheap"}'], "needs a number"),
    (["--filter", '{"price": NaN}'], "NaN is not a finite number"),
    (["--filter", '{"added": {"lt": "tomorrow"}}'], "needs an ISO 8601 date"),
    (["--filter", "{not json"], "not valid JSON"),
    (["--filter", "@/nonexistent/filter.json"], "No such file"),
    (["--k", "0"], "--k must be between 1 and 1000"),
    (["--alpha", "2"], "--alpha must be between 0 and 1"),
    (["--fusion", "mean"], "--fusion must be one of"),
    (["--reference-id", "no-such-item"], "no gallery item with id 'no-such-item'"),
    (["--image", "/nonexistent.png"], "No such file"),
    (["--version", "v999"], "missing or incomplete"),
    (["--runtime", "tpu"], "unknown runtime"),
])
def test_bad_input_exits_2_with_the_reason(rich_index, capsys, args, message):
    rc, out, err = _run(capsys, "--index", rich_index["root"], "--text", "make it blue", *args)
    assert rc == 2 and out == "" and message in err and err.startswith("cir search: error: ")


def test_usage_errors(tmp_path, rich_index, capsys):
    rc, _, err = _run(capsys, "--index", tmp_path)
    assert rc == 2 and "give a query" in err
    rc, _, err = _run(capsys, "--index", tmp_path, "--text", "x")
    assert rc == 2 and "no published version" in err
    bad_image = tmp_path / "a.gif"
    bad_image.write_bytes(b"GIF89a" + bytes(100))
    rc, _, err = _run(capsys, "--index", rich_index["root"], "--image", bad_image)
    assert rc == 2 and "the upload is not a JPEG, PNG" in err
    assert _run(capsys, "--text", "x")[0] == 2  # --index is required
    assert _run(capsys, "--index", tmp_path, "--image", "a", "--reference-id", "b")[0] == 2


def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys; from cir_cli.search import main; rc = main(['--help']); "
            "print(rc, sorted(m for m in ('torch', 'faiss', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--filter" in out and "--reference-id" in out and out.strip().endswith("0 []")


def test_paging_exclusion_and_references(rich_index, capsys):
    ref = rich_index["ids"][4]
    common = ["--index", rich_index["root"], "--reference-id", ref, "--json"]
    rc, out, _ = _run(capsys, *common, "--k", 16)
    everything = [h["id"] for h in json.loads(out)["results"]]
    assert rc == 0 and ref not in everything and len(everything) == len(rich_index["ids"]) - 1
    rc, out, _ = _run(capsys, *common, "--k", 5, "--offset", 5, "--exclude-id", everything[0])
    page = json.loads(out)
    assert [h["id"] for h in page["results"]] == everything[6:11] and page["next_offset"] == 10
    rc, out, _ = _run(capsys, *common, "--k", 1, "--keep-references")
    assert json.loads(out)["results"][0]["id"] == ref
    rc, _, err = _run(capsys, *common, "--k", 10, "--offset", 9995)
    assert rc == 2 and "offset + k must be at most 10000" in err
