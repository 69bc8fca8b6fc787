"""`cir search` with several references, image weights and negative texts: the HTTP answers, exit 2 on bad input."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

import cir.runtimes
from cir_cli.search import main
from service_fixtures import live_server, world_index  # noqa: F401 - fixtures


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_several_references_and_a_negative_equal_the_http_answer(world_index, live_server, capsys):
    ids, paths = world_index["ids"], world_index["paths"]
    images = [paths[ids[3]], paths[ids[4]]]
    rc, out, _ = _run(capsys, "--index", world_index["root"], "--image", images[0], "--image", images[1],
                      "--reference-id", ids[7], "--image-weights", "2,1,0.5", "--text", "make it blue",
                      "--negative-text", "red", "--negative-text", "striped", "--negative-weight", 0.4,
                      "--k", 6, "--json")
    assert rc == 0
    body = json.loads(out)
    files = [("image", (p.name, p.read_bytes())) for p in images]
    http = httpx.post(live_server.url + "/search", files=files,
                      data={"reference_id": ids[7], "image_weights": "2,1,0.5", "text": "make it blue",
                            "negative_text": ["red", "striped"], "negative_weight": "0.4", "k": "6"}).json()
    assert body["references"] == http["references"] == 3 and body["negative_weight"] == http["negative_weight"] == 0.4
    assert [h["id"] for h in body["results"]] == [h["id"] for h in http["results"]]
    assert np.allclose([h["score"] for h in body["results"]], [h["score"] for h in http["results"]], atol=1e-5)
    rc, out, _ = _run(capsys, "--index", world_index["root"], "--reference-id", ids[1], "--reference-id", ids[2],
                      "--text", "add stripes", "--negative-text", "small")
    assert rc == 0 and "2 references" in out and "not beta=0.30" in out


@pytest.mark.parametrize("extra, message", [
    (["--reference-id", "a"] * 9, "at most 8"),
    (["--reference-id", "a", "--image-weights", "1,2"], "image_weights: 2 weights for 1 references"),
    (["--reference-id", "a", "--image-weights", "1,x"], "not comma-separated numbers"),
    (["--reference-id", "a", "--image-weights", "-1"], "image_weights"),
    (["--text", "red", "--negative-text", "blue", "--negative-weight", "1.5"], "negative_weight must be in [0, 1]"),
    (["--negative-text", "blue"], "give a query"),
])
def test_bad_compositions_exit_2_before_the_model_loads(world_index, capsys, monkeypatch, extra, message):
    monkeypatch.setattr(cir.runtimes, "load_runtime_encoder", lambda *a, **k: pytest.fail("loaded the model"))
    rc, _, err = _run(capsys, "--index", world_index["root"], *extra)
    assert rc == 2 and message in err and err.startswith("cir search: error:")
