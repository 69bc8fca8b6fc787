"""`cir train --triplets` end to end on a tiny CLIP: frozen text tower, --text-lora, --init-adapter,
hard negatives from an index, resume, and the adapter loading like any other."""

from __future__ import annotations

import json
import os
import signal
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from training_fixtures import make_config, tat_world  # noqa: F401

from cir.encoder import load_encoder
from cir.models import ADAPTER_META, ModelLoadError
from cir.toyworld import generate_world
from indexer.cli import main as index_main
from training import cli
from training.loop import train
from training.supervised import TripletBatches, reference_sets
from training.triplets import load_image, open_triplets


@pytest.fixture(scope="module")
def sup_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("sup_world") / "world"
    generate_world(root, seed=1, gallery_size=16, n_queries=8, n_captions=48, n_train_triplets=48)
    return root


def _captions(world):
    return str(world / "cirr" / "captions" / "cap.rc2.train.json")


def _sup(make_config, world, **kw):
    return make_config(data=_captions(world), objective="triplets", alpha=0.7, **kw)


def _probe(world, n=6):
    source = open_triplets(_captions(world))
    return [load_image(source.triplet(i).target) for i in range(n)]


def test_triplet_run_tunes_the_image_tower_only(make_config, sup_world, tiny_clip_dir):
    cfg = _sup(make_config, sup_world)
    result = train(cfg)
    assert result.status == "complete" and result.step == 4
    base = load_encoder(str(tiny_clip_dir), device="cpu")
    tuned = load_encoder(str(tiny_clip_dir), adapter=cfg.out, device="cpu")
    texts = ["make it blue", "a small red circle"]
    assert np.array_equal(base.encode_texts(texts), tuned.encode_texts(texts))
    images = _probe(sup_world)
    assert np.abs(base.encode_images(images) - tuned.encode_images(images)).max() > 1e-3
    meta = json.loads((result.out / ADAPTER_META).read_text())
    assert meta["method"].startswith("supervised CIR") and meta["alpha"] == 0.7 and meta["init_adapter"] is None
    report = result.report
    assert report["labels"] == "targets" and report["alpha"] == 0.7 and report["data"]["format"] == "triplet"
    for side in ("before", "after"):
        assert report[side]["triplets"]["triplets"] == 8 and 0 <= report[side]["triplets"]["R@1"] <= 100
    assert "gap" not in report["before"] and report["reload_check"]["max_abs_diff"] < 1e-5
    assert report["training"]["images"] == 4 * 8


def test_text_lora_moves_the_text_tower(make_config, sup_world, tiny_clip_dir):
    cfg = _sup(make_config, sup_world, text_lora=True)
    train(cfg)
    base = load_encoder(str(tiny_clip_dir), device="cpu")
    tuned = load_encoder(str(tiny_clip_dir), adapter=cfg.out, device="cpu")
    assert np.abs(base.encode_texts(["make it blue"]) - tuned.encode_texts(["make it blue"])).max() > 1e-4
    assert any(k.startswith("base_model.model.text_model") for k in load_file(f"{cfg.out}/adapter_model.safetensors"))


def test_init_adapter_starts_from_the_tat_weights(make_config, sup_world, tmp_path, tiny_clip_dir):
    tat = make_config(data=str(sup_world / "captions.jsonl"), out=str(tmp_path / "tat"), max_steps=3)
    train(tat)
    # a vanishing learning rate: the supervised adapter is the TAT adapter it started from
    cfg = _sup(make_config, sup_world, out=str(tmp_path / "sup"), init_adapter=tat.out, lr=1e-12, max_steps=1,
               lora_rank=4)
    result = train(cfg)
    assert result.report["config"]["lora_rank"] == 16  # the adapter's shape wins
    images = _probe(sup_world)
    base, tat_enc, sup_enc = (load_encoder(str(tiny_clip_dir), adapter=a, device="cpu")
                              for a in (None, tat.out, cfg.out))
    assert np.abs(base.encode_images(images) - tat_enc.encode_images(images)).max() > 1e-3
    assert np.abs(tat_enc.encode_images(images) - sup_enc.encode_images(images)).max() < 1e-5
    assert json.loads((result.out / ADAPTER_META).read_text())["init_adapter"] == tat.out
    with pytest.raises(ModelLoadError, match="trained on base model"):
        bad = tmp_path / "bad"
        bad.mkdir()
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            (bad / f).write_bytes((tmp_path / "tat" / f).read_bytes())
        meta = json.loads((tmp_path / "tat" / ADAPTER_META).read_text())
        (bad / ADAPTER_META).write_text(json.dumps({**meta, "base_fingerprint": "0" * 64}))
        train(_sup(make_config, sup_world, out=str(tmp_path / "sup2"), init_adapter=str(bad)))


def test_hard_negatives_are_mined_from_an_index(make_config, sup_world, tmp_path, tiny_clip_dir):
    root = tmp_path / "index"
    assert index_main(["build", "--gallery", str(sup_world / "cirr" / "train"), "--model", str(tiny_clip_dir),
                       "--out", str(root), "--workers", "0", "--no-progress", "--alpha", "0.6"]) == 0
    cfg = make_config(data=_captions(sup_world), objective="triplets", hard_negatives=str(root),
                      hard_negatives_per_query=2, out=str(tmp_path / "out"))
    result = train(cfg)
    assert result.report["alpha"] == 0.6  # the index's default alpha
    mined = json.loads((result.out / "hard_negatives.json").read_text())
    source = open_triplets(_captions(sup_world))
    assert len(mined["negatives"]) == 40 and all(len(v) == 2 for v in mined["negatives"].values())
    for i, paths in mined["negatives"].items():
        t = source.triplet(int(i))
        assert t.target not in paths and not set(t.references) & set(paths)
    encoder = load_encoder(str(tiny_clip_dir), device="cpu")
    batch = TripletBatches(source, encoder.preprocess, lambda k: np.arange(8), mined["negatives"])[0]
    train_ids = [i for i in range(8) if str(i) in mined["negatives"]]
    assert batch["pixels"].shape[0] == 8 * 2 + 2 * len(train_ids)  # references, targets, two negatives each
    assert len(batch["negatives"]) == 2 * len(train_ids)


def test_resume_after_a_signal_equals_an_uninterrupted_run(make_config, sup_world, tmp_path):
    straight = _sup(make_config, sup_world, out=str(tmp_path / "straight"), max_steps=6)
    train(straight)

    def interrupt(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    split = _sup(make_config, sup_world, out=str(tmp_path / "split"), max_steps=6)
    assert train(split, on_step=interrupt).status == "interrupted"
    assert train(split.replace(resume=True)).step == 6
    a, b = (load_file(str(tmp_path / d / "adapter_model.safetensors")) for d in ("straight", "split"))
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_reference_sets_pad_with_zero_weight():
    refs = torch.nn.functional.normalize(torch.randn(5, 4), dim=1)
    sets, weights = reference_sets(refs, [2, 1, 2])
    assert sets.shape == (3, 2, 4) and torch.equal(sets[1, 1], refs[2])
    assert weights.tolist() == [[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
    single, none = reference_sets(refs[:3], [1, 1, 1])
    assert single.shape == (3, 1, 4) and none is None


def _cli(argv, capsys):
    code = cli.main(argv)
    return code, capsys.readouterr().err


def test_cli_choices(make_config, sup_world, tmp_path, capsys, tiny_clip_dir):
    base = ["--model", str(tiny_clip_dir), "--out", str(tmp_path / "o")]
    code, err = _cli(base + ["--data", "a.jsonl", "--triplets", _captions(sup_world)], capsys)
    assert code == 2 and "not both" in err
    code, err = _cli(base, capsys)
    assert code == 2 and "--data or --triplets" in err
    code, err = _cli(base + ["--data", str(sup_world / "captions.jsonl"), "--text-lora"], capsys)
    assert code == 2 and "TAT keeps the text tower frozen" in err
    code, err = _cli(base + ["--triplets", str(tmp_path / "none.jsonl")], capsys)
    assert code == 2 and "does not exist" in err
    code, err = _cli(base + ["--triplets", _captions(sup_world), "--hard-negatives", str(tmp_path / "none")], capsys)
    assert code == 2 and "--hard-negatives" in err and "no published version" in err
    assert not (tmp_path / "o").exists()
    assert cli.main(["--check", "--triplets", _captions(sup_world), "--no-progress"]) == 0
    assert "decoded   48" in capsys.readouterr().out


def _ddp_worker(rank: int, world: int, port: int, cfg_kwargs: dict) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from training.config import TrainConfig  # noqa: PLC0415 - runs in a spawned process
    assert train(TrainConfig(**cfg_kwargs)).status == "complete"


def test_two_rank_ddp_equals_one_process(make_config, sup_world, tmp_path):
    single = _sup(make_config, sup_world, out=str(tmp_path / "single"), lora_dropout=0.0, max_steps=3)
    train(single)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, vars(single.replace(out=str(tmp_path / "ddp")))), nprocs=2, join=True)
    losses = [[json.loads(x)["loss"] for x in (tmp_path / d / "train_log.jsonl").read_text().splitlines()]
              for d in ("single", "ddp")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
