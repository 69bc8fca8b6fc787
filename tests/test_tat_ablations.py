"""perf/tat_ablations.py in its tiny mode: every variant trains the towers it names, and only those."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from cir.encoder import load_encoder
from cir.families import in_tower, vision_prefixes

SCRIPT = Path(__file__).resolve().parents[1] / "perf" / "tat_ablations.py"
spec = importlib.util.spec_from_file_location("tat_ablations", SCRIPT)
ablations = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = ablations  # dataclasses look their module up there
spec.loader.exec_module(ablations)


@pytest.fixture(scope="module")
def run(tiny_clip_dir, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("ablations")
    out = work / "result.json"
    assert ablations.main(["--tiny", "--model", str(tiny_clip_dir), "--work", str(work), "--out", str(out),
                           "--threads", "1"]) == 0
    return json.loads(out.read_text())


def test_every_variant_runs_and_is_scored(run, capsys):
    rows = run["rows"]
    assert list(rows) == ["base", *ablations.VARIANTS]
    for name, row in rows.items():
        assert 0 <= row["cirr_r1"]["all"] <= 100 and 0 <= row["circo_map10"]["all"] <= 100
        assert -1 <= row["paired_cosine"] <= 1 and 0 <= row["plain_cirr_r1"]["all"] <= 100
        assert row["cirr_r1"]["alpha"] in ablations.ALPHAS
        if name != "base":
            assert row["training"]["trainable"] > 0 and np.isfinite(row["training"]["final_loss"])
    assert rows["full_vision"]["training"]["lr"] == 1e-4 and rows["tat"]["training"]["lr"] == 1e-3


def test_unknown_variant_is_a_usage_error(capsys):
    assert ablations.main(["--variants", "tat,nope"]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(ablations.VARIANTS))
def test_variant_trains_exactly_its_towers(name, run, tiny_clip_dir):
    args = ablations.build_parser().parse_args(["--tiny", "--model", str(tiny_clip_dir), "--steps", "2"])
    args.batch_size = 16
    variant = ablations.VARIANTS[name]
    work = Path(run["args"]["work"])
    source = ablations.open_pairs(work / "train_textured_1" / "captions.jsonl")
    plan = ablations.Plan(len(source), ablations.auto_holdout(len(source)), args.batch_size, 0)
    encoder = load_encoder(str(tiny_clip_dir), device="cpu")
    data = ablations.load_train_set(encoder, source, plan)
    pixels, captions = data["pixels"][:8], data["captions"][:8]
    image0, text0 = encoder.encode_pixels(pixels), encoder.encode_texts(captions)
    ablations.train_variant(encoder, data, plan, variant, args, "mentions")
    model = encoder.model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    prefixes = vision_prefixes(model.get_base_model() if hasattr(model, "get_base_model") else model)
    strip = lambda n: n.removeprefix("base_model.model.")  # noqa: E731
    vision = [n for n in trainable if in_tower(strip(n), prefixes)]
    text = [n for n in trainable if not in_tower(strip(n), prefixes)]
    assert bool(vision) == (variant.vision != "frozen") and bool(text) == (variant.text != "frozen")
    assert all("lora_" in n for n in trainable) == (variant.vision != "full")
    image1, text1 = encoder.encode_pixels(pixels), encoder.encode_texts(captions)
    assert np.array_equal(image0, image1) == (variant.vision == "frozen")
    assert np.array_equal(text0, text1) == (variant.text == "frozen")
