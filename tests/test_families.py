"""Every model family on a tiny random config: both towers, text rules, LoRA targets, TAT, index, search."""

from __future__ import annotations

import asyncio
import json
import pickle
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from training_fixtures import tat_world  # noqa: F401 - fixture
from transformers import BlipForImageTextRetrieval

from cir.encoder import load_encoder
from cir.families import FAMILIES, in_tower, text_prefixes, vision_prefixes
from cir.index_store import load_version
from cir.models import ModelLoadError
from cir.pipeline import embed_image_files
from cir.search.engine import IndexState, Query, SearchEngine
from indexer.build import build
from indexer.cli import main as index_main
from indexer.config import BuildConfig
from service_fixtures import API_KEY, LiveServer, server_settings
from tiny_models import make_tiny_blip
from training import cli
from training.lora import select_targets

# test name -> (fixture, expected family)
CASES = {"clip": ("tiny_clip_dir", "clip"), "siglip": ("tiny_siglip_dir", "siglip"),
         "siglip2_fixed": ("tiny_siglip2_fixed_dir", "siglip2"),
         "siglip2_naflex": ("tiny_siglip2_naflex_dir", "siglip2"), "blip": ("tiny_blip_dir", "blip")}
TEXTS = ["a red circle", "the big blue square on the left", "make it two dogs", ""]


@pytest.fixture(params=list(CASES))
def case(request):
    fixture, family = CASES[request.param]
    return request.param, request.getfixturevalue(fixture), family


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    sizes = [(40, 50), (32, 32), (64, 20), (23, 61)]
    return [Image.fromarray(rng.integers(0, 255, (*sizes[i % 4], 3), dtype=np.uint8)) for i in range(n)]


def test_both_towers_and_every_pixel_path(case, tmp_path):
    name, path, family = case
    enc = load_encoder(str(path), device="cpu")
    assert enc.family.name == family and enc.info()["family"] == family
    images = _images(6)
    img, txt = enc.encode_images(images, batch_size=4), enc.encode_texts(TEXTS)
    assert img.shape == (6, enc.dim) and txt.shape == (4, enc.dim) and img.dtype == txt.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1, atol=1e-5)
    for i in (0, 3):  # batch composition changes nothing (NaFlex pads each image to its own patch count)
        np.testing.assert_allclose(enc.encode_images([images[i]])[0], img[i], atol=1e-5)
        np.testing.assert_allclose(enc.encode_texts([TEXTS[i]])[0], txt[i], atol=1e-5)
    assert isinstance(enc.preprocess(images[0]), dict) == (name == "siglip2_naflex")
    # the indexer's path: a pickled preprocessor in a decode worker process, batches collated there
    clone = pickle.loads(pickle.dumps(enc.preprocess))
    assert type(clone(images[0])) is type(enc.preprocess(images[0]))
    paths = []
    for i, im in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    result = embed_image_files(enc, paths, batch_size=4, workers=1, progress=False)
    assert result.ok == list(range(6)) and not result.failed
    np.testing.assert_allclose(result.embeddings, img, atol=1e-5)


def test_text_rules(case):
    name, path, family = case
    enc = load_encoder(str(path), device="cpu")
    rules = FAMILIES[family]
    ids = enc.tokenize(TEXTS[:2])["input_ids"]
    longest = max(len(r) for r in enc.tokenizer(TEXTS[:2])["input_ids"])
    assert ids.shape[1] == (enc.text_max_length if rules.pad_to_max else longest)
    upper, lower = enc.encode_texts(["A Red Circle"]), enc.encode_texts(["a red circle"])
    assert np.array_equal(upper, lower) == rules.lowercase  # the tiny vocabulary is case-sensitive
    if family == "blip":
        assert enc.text_max_length == 35  # BLIP's retrieval code, below the tower's 40 positions
    assert enc.truncated(["red " * 60, "red"]) == [True, False]


def test_default_lora_targets_are_image_tower_attention(case):
    _, path, family = case
    model = load_encoder(str(path), device="cpu").model
    vision, text = vision_prefixes(model), text_prefixes(model)
    assert not set(vision) & set(text)
    targets = FAMILIES[family].lora_targets
    chosen = select_targets(model, targets)
    assert all(in_tower(n, vision) and not in_tower(n, text) for n in chosen)
    assert {n.rsplit(".", 1)[1] for n in chosen} == set(targets)
    assert len(chosen) == 2 * len(targets)  # 2 vision layers; never the SigLIP head's MultiheadAttention


def _train(model, world, out):
    return cli.main(["--model", str(model), "--data", str(world / "captions.jsonl"), "--out", str(out),
                     "--batch-size", "8", "--max-steps", "2", "--lr", "1e-2", "--holdout", "8", "--workers", "0",
                     "--no-progress", "--checkpoint-every", "0", "--eval-cir", str(world / "cirr"),
                     "--eval-batch-size", "16", "--device", "cpu"])


def test_tat_then_index_then_search(case, tat_world, tmp_path):
    _, path, family = case
    out = tmp_path / "tat"
    assert _train(path, tat_world, out) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["lora_targets"] == list(FAMILIES[family].lora_targets)
    assert "R@1" in report["after"]["cir"]["all"]["slerp@0.80"]  # the eval smoke: CIR recall after TAT
    base = load_encoder(str(path), device="cpu")
    tuned = load_encoder(str(path), adapter=out, device="cpu")
    assert np.array_equal(base.encode_texts(TEXTS), tuned.encode_texts(TEXTS))  # bit for bit
    text = text_prefixes(base.model)
    tuned_sd = tuned.model.state_dict()
    for key, value in base.model.state_dict().items():
        if in_tower(key, text):
            assert torch.equal(value, tuned_sd[key]), key
    images = _images(3)
    assert np.abs(base.encode_images(images) - tuned.encode_images(images)).max() > 1e-4

    gallery = tat_world / "circo" / "COCO2017_unlabeled" / "unlabeled2017"
    build(BuildConfig(gallery=gallery, model=str(path), adapter=out, out=tmp_path / "index", batch_size=4,
                      workers=0, device="cpu", factory="Flat", progress=False))
    index = load_version(tmp_path / "index")
    engine = SearchEngine(tuned, max_pixels=10**7, max_batch=4, batch_wait_s=0.05)
    engine.swap(IndexState.of(index))
    uploads = [open(index.item(i)["path"], "rb").read() for i in index.ids[:4]]
    own = engine.search_sync(Query(image_bytes=uploads[0], k=3, keep_references=True)).hits[0]
    assert own.id == index.ids[0] and own.score == pytest.approx(1.0, abs=1e-4)
    queries = [Query(image_bytes=data, text="make it blue", k=5) for data in uploads]
    expected = [engine.search_sync(q) for q in queries]

    async def concurrently():  # the service's path: decoded pixels micro-batched across queries
        await engine.start()
        try:
            return await asyncio.gather(*(engine.search(q) for q in queries))
        finally:
            await engine.stop()

    for got, want in zip(asyncio.run(concurrently()), expected):
        assert [h.id for h in got.hits] == [h.id for h in want.hits]
        np.testing.assert_allclose([h.score for h in got.hits], [h.score for h in want.hits], atol=1e-5)


def test_blip_embeddings_are_its_itc_features(tiny_blip_dir):
    enc = load_encoder(str(tiny_blip_dir), device="cpu")
    model = BlipForImageTextRetrieval.from_pretrained(tiny_blip_dir).eval()
    images, texts = _images(3), TEXTS[:3]
    tokens = enc.tokenize(texts)
    with torch.no_grad():  # transformers' own ITC path: normalised vision_proj(CLS) . text_proj(CLS)
        itc = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                    pixel_values=enc.preprocess.batch(images), use_itm_head=False).itm_score
    np.testing.assert_allclose(enc.encode_images(images) @ enc.encode_texts(texts).T, itc.numpy(), atol=1e-5)


def test_blip_without_itc_weights_is_refused(tiny_blip_dir, tmp_path):
    captioning = make_tiny_blip(tmp_path / "captioning", captioning=True)
    with pytest.raises(ModelLoadError, match="BlipForConditionalGeneration checkpoint.*BlipForImageTextRetrieval"):
        load_encoder(str(captioning), device="cpu")
    broken = shutil.copytree(tiny_blip_dir, tmp_path / "broken")
    weights = load_file(broken / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("vision_proj.")}, broken / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"lacks weights .*vision_proj\.bias, vision_proj\.weight.*random"):
        load_encoder(str(broken), device="cpu")


def test_explicit_lora_targets_win_and_blip_needs_a_temperature(tiny_blip_dir, tat_world, tmp_path, capsys):
    common = ["--model", str(tiny_blip_dir), "--data", str(tat_world / "captions.jsonl"), "--out", str(tmp_path)]
    parse = cli.build_parser().parse_args
    assert cli.config_from_args(parse(common)).lora_targets is None  # resolved from the family at start
    assert cli.config_from_args(parse([*common, "--lora-targets", "qkv"])).lora_targets == ("qkv",)
    assert cli.main([*common, "--temperature", "model", "--device", "cpu", "--no-progress"]) == 2
    assert "no learned logit scale: give --temperature" in capsys.readouterr().err


@pytest.mark.parametrize("fixture", ["tiny_blip_dir", "tiny_siglip2_naflex_dir"])
def test_index_cli_and_http_search(fixture, tat_world, tmp_path, request):
    """As a user runs them: `cir index build` and `cir serve`, one composed query over HTTP."""
    model = request.getfixturevalue(fixture)
    gallery = tat_world / "circo" / "COCO2017_unlabeled" / "unlabeled2017"
    assert index_main(["build", "--gallery", str(gallery), "--model", str(model), "--out", str(tmp_path / "root"),
                       "--workers", "1", "--factory", "Flat", "--device", "cpu", "--no-progress"]) == 0
    upload = sorted(gallery.iterdir())[0]
    with LiveServer(server_settings(tmp_path / "root")) as server:
        with httpx.Client(base_url=server.url, timeout=60, headers={"X-API-Key": API_KEY}) as client:
            info = client.get("/info").json()
            hits = client.post("/search", data={"text": "make it blue", "k": "5"},
                               files={"image": (upload.name, upload.read_bytes(), "image/png")})
            alone = client.post("/search", data={"k": "16", "keep_references": "true"},
                                files={"image": (upload.name, upload.read_bytes(), "image/png")})
    # a local model shows as the last two parts of its path: no server path in a response
    assert info["model"] == "/".join(Path(model).resolve().parts[-2:]) and info["count"] == 16
    assert hits.status_code == 200 and len(hits.json()["results"]) == 5
    assert alone.status_code == 200, alone.text
    # the upload is its own best match (a tiny random model may tie it with others at the same score)
    top = alone.json()["results"]
    assert upload.name in [h["id"] for h in top if h["score"] >= top[0]["score"] - 1e-6], top[:3]
