"""`python -m evaluation.composition` on a small shapes world: it runs end to end and agrees with `cir eval`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cir.benchmarks import evaluate
from cir.encoder import load_encoder
from cir.models import toy_model_dir
from cir.toyworld import ATTRIBUTES, generate_world
from evaluation import composition
from evaluation.composition_world import item_titles, load_world, title_mentions

pytestmark = pytest.mark.skipif(not (toy_model_dir() / "config.json").is_file(), reason="needs the built-in toy model")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("composition") / "world"
    generate_world(root, seed=7, gallery_size=1000, n_queries=240, n_captions=0)
    return root


def test_report_tables_plot_and_agreement_with_cir_eval(world, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(composition, "REFERENCE_COUNTS", (1, 2))  # 1000 renders: 2 or 3 per combination
    for name, grid in (("ALPHAS", (0.7,)), ("GALLERY_ALPHAS", (0.7,)), ("BETAS", (0.0, 0.3)), ("TWO_BETAS", (0.3,)),
                       ("ITEM_WEIGHTS", (0.0, 0.2))):
        monkeypatch.setattr(composition, name, grid)  # small grids: the test checks the wiring, not the numbers
    out, plot = tmp_path / "out", tmp_path / "fig.png"
    rc = composition.main(["--world", str(world), "--cache-dir", str(tmp_path / "cache"), "--workers", "0",
                           "--out", str(out), "--plot", str(plot), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "### (a) Negative text" in printed and "### (b) Several references" in printed
    assert "### (c) Composed gallery items" in printed
    assert plot.stat().st_size > 10_000 and (out / "composition.md").read_text() == printed
    report = json.loads((out / "composition.json").read_text())
    assert report["command"][:3] == ["python", "-m", "evaluation.composition"] and report["world_seed"] == 7
    # the same query three ways: one reference (b), images-only gallery (c), and `cir eval`'s CIRR run
    one_ref = report["references"]["1"]["0.7"]["all"]
    images_only = report["gallery"]["variants"][report["gallery"]["main"]]["0.7"]["0.0"]["all"]
    encoder = load_encoder("toy", device="cpu")
    cirr = evaluate(encoder, "cirr", world / "cirr", fusions=[("slerp", 0.7)], workers=0, progress=False)
    assert report["references"]["skipped"] == 0 and one_ref["n"] == 240
    assert one_ref["R@1"] == images_only["R@1"] == pytest.approx(cirr["results"]["slerp@0.70"]["R@1"], abs=0.01)
    assert one_ref["R@10"] == pytest.approx(cirr["results"]["slerp@0.70"]["R@10"], abs=0.01)
    sweep = report["negatives"]["sweep"]
    assert sweep["0.0"]["all"]["n"] == report["negatives"]["queries"] > 0
    assert sweep["0.0"]["all"]["n"] == sweep["0.0"]["seen"]["n"] + sweep["0.0"]["heldout"]["n"]


def test_titles_are_partial_deterministic_and_sometimes_wrong(world):
    attrs = {"shape": "star", "colour": "red", "size": "small", "position": "top left", "pattern": "solid"}
    wrong = 0
    for i in range(300):
        m = title_mentions(attrs, np.random.default_rng(i), wrong_share=0.2)
        assert 1 <= len(m) <= 3 and set(m) <= set(ATTRIBUTES)
        wrong += any(v != attrs[k] and not set(v.split()) <= set(attrs[k].split()) for k, v in m.items())
    assert 30 < wrong < 90  # about 20%
    full = title_mentions(attrs, np.random.default_rng(0), 0.0, stated=(5, 5))
    assert full == attrs
    encoder = load_encoder("toy", device="cpu")
    w = load_world(world, encoder, None, workers=0, progress=False)
    first, again = item_titles(w, 0.2), item_titles(w, 0.2)
    assert first == again and len(first) == len(w.gallery) and all(first)
    assert sum(t is None for t in item_titles(w, 0.2, titled_share=0.5)) > len(w.gallery) // 4
