"""The TAT job end to end on a tiny CLIP: frozen text tower, outputs, resume, merge, bad input, DDP."""

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
from training_fixtures import make_config, tat_world, world_rows, write_jsonl  # noqa: F401

from cir.encoder import load_encoder
from cir.models import ADAPTER_META
from training import cli, compare, diagnose
from training.loop import train


def _images(world, n=6):
    from PIL import Image  # noqa: PLC0415 - test helper
    return [Image.open(world / r["image"]).convert("RGB") for r in world_rows(world)[:n]]


def _adapter(out):
    return load_file(str(out / "adapter_model.safetensors"))


def test_training_moves_only_the_image_tower(make_config, tat_world, tiny_clip_dir):
    cfg = make_config()
    result = train(cfg)
    assert result.status == "complete" and result.step == 4
    base = load_encoder(str(tiny_clip_dir), device="cpu")
    tuned = load_encoder(str(tiny_clip_dir), adapter=cfg.out, device="cpu")
    texts = [r["caption"] for r in world_rows(tat_world)[:10]] + ["make it blue"]
    assert np.array_equal(base.encode_texts(texts), tuned.encode_texts(texts))  # bit for bit
    base_sd, tuned_sd = base.model.state_dict(), tuned.model.state_dict()
    for name, value in base_sd.items():
        if not name.startswith(("vision_model.", "visual_projection")):
            assert torch.equal(value, tuned_sd[name]), name
    images = _images(tat_world)
    assert np.abs(base.encode_images(images) - tuned.encode_images(images)).max() > 1e-3

    out = result.out
    meta = json.loads((out / ADAPTER_META).read_text())
    assert meta["base_fingerprint"] == base.base_fingerprint and meta["steps"] == 4
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "LORA"
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3, 4]
    assert all({"loss", "lr", "images_per_s"} <= set(row) for row in log)
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "complete" and report["labels"] == "mentions"
    assert report["logit_scale"] == pytest.approx(1 / 0.07, rel=1e-4)
    for side in ("before", "after"):
        gap = report[side]["gap"]
        assert gap["pairs"] == 8 and -1 <= gap["paired_cosine"] <= 1 and gap["centroid_distance"] >= 0
    assert report["reload_check"]["max_abs_diff"] < 1e-5
    assert report["training"]["images"] == 4 * 8 and report["training"]["skipped_images"] == 0
    assert 0 < report["parameters"]["trainable_percent"] < 100


def test_resume_after_a_signal_equals_an_uninterrupted_run(make_config, tmp_path):
    straight = make_config(out=str(tmp_path / "straight"), max_steps=6, lora_dropout=0.1)
    train(straight)

    def interrupt(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    # a different worker count must not change anything either
    split = make_config(out=str(tmp_path / "split"), max_steps=6, lora_dropout=0.1, workers=1)
    first = train(split, on_step=interrupt)
    assert first.status == "interrupted" and first.step == 3 and first.signal == signal.SIGTERM
    assert (first.out / "checkpoints" / "step_00000003" / "state.pt").is_file()
    assert not (first.out / "adapter_model.safetensors").exists()
    second = train(split.replace(resume=True))
    assert second.status == "complete" and second.step == 6
    a, b = _adapter(straight and tmp_path / "straight"), _adapter(tmp_path / "split")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
    logs = [(tmp_path / d / "train_log.jsonl").read_text().splitlines() for d in ("straight", "split")]
    assert [json.loads(x)["loss"] for x in logs[0]] == pytest.approx([json.loads(x)["loss"] for x in logs[1]])
    # resuming a finished run does nothing and reports it
    again = train(split.replace(resume=True))
    assert again.status == "complete" and again.report["status"] == "complete"


def test_merged_model_equals_the_adapter(make_config, tat_world, tmp_path, tiny_clip_dir):
    train(make_config(out=str(tmp_path / "adapter")))
    train(make_config(out=str(tmp_path / "merged"), merge=True))
    assert (tmp_path / "merged" / "config.json").is_file()
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    merged = load_encoder(str(tmp_path / "merged"), device="cpu")
    adapted = load_encoder(str(tiny_clip_dir), adapter=tmp_path / "adapter", device="cpu")
    images = _images(tat_world)
    assert np.abs(merged.encode_images(images) - adapted.encode_images(images)).max() < 1e-5
    assert np.array_equal(merged.encode_texts(["a red circle"]), adapted.encode_texts(["a red circle"]))


def test_bad_images_are_skipped_and_counted(make_config, tat_world, tmp_path):
    rows = world_rows(tat_world)[:20]
    (tmp_path / "junk.png").write_bytes(b"garbage")
    rows[3] = {**rows[3], "image": str(tmp_path / "junk.png")}
    rows[11] = {**rows[11], "image": "images/train/missing.png"}
    data = write_jsonl(tat_world / "with_bad.jsonl", rows)
    result = train(make_config(data=str(data), holdout=0, max_steps=None, batch_size=4))
    training = result.report["training"]
    assert result.step == 5 and training["images"] == 18 and training["skipped_images"] == 2
    assert any("missing image file" in r for r in training["skipped_examples"])


def _run_cli(argv, capsys):
    code = cli.main(argv)
    return code, capsys.readouterr().err


def test_cli_errors_leave_nothing_behind(make_config, tat_world, tmp_path, capsys, tiny_clip_dir, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # an unknown hub id fails at once
    cfg = make_config()
    base = ["--model", str(tiny_clip_dir), "--batch-size", "8", "--max-steps", "2", "--workers", "0",
            "--no-progress", "--holdout", "4"]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, err = _run_cli(base + ["--data", str(empty), "--out", str(tmp_path / "o1")], capsys)
    assert code == 2 and "no image-caption pairs" in err and not (tmp_path / "o1").exists()
    code, err = _run_cli(base + ["--data", cfg.data, "--out", str(tmp_path / "o2"), "--model", str(tmp_path / "nope")],
                         capsys)
    assert code == 2 and "no local folder or known model named" in err and "no such folder" in err
    assert not (tmp_path / "o2").exists()
    code, err = _run_cli(base + ["--data", cfg.data, "--out", str(tmp_path / "o3"), "--model", "no-such/model-xyz"],
                         capsys)
    assert code == 2 and "no local folder or known model named 'no-such/model-xyz'" in err and "cache" in err

    out = tmp_path / "run"
    assert _run_cli(base + ["--data", cfg.data, "--out", str(out)], capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    code, err = _run_cli(base + ["--data", cfg.data, "--out", str(out), "--lr", "0.5"], capsys)
    assert code == 2 and "different run" in err and "lr" in err
    code, err = _run_cli(base + ["--data", cfg.data, "--out", str(out), "--lr", "0.5", "--resume"], capsys)
    assert code == 2 and "different run" in err
    code, err = _run_cli(base + ["--data", cfg.data, "--out", str(out)], capsys)
    assert code == 2 and "--resume" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before

    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "adapter_config.json").write_text("{}")
    code, err = _run_cli(base + ["--data", cfg.data, "--out", str(stranger)], capsys)
    assert code == 2 and "holds no TAT run" in err
    assert (stranger / "adapter_config.json").read_text() == "{}"
    code, err = _run_cli(base + ["--data", cfg.data, "--out", str(tmp_path / "o4"), "--temperature", "hot"], capsys)
    assert code == 2 and "temperature" in err


def test_help_documents_every_option(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for action in cli.build_parser()._actions:
        for option in action.option_strings:
            assert option in text
        assert action.help, action.option_strings
    for flag in ("--batch-size", "--lr", "--epochs", "--max-steps", "--lora-rank", "--lora-alpha",
                 "--lora-dropout", "--lora-targets", "--seed", "--resume", "--merge", "--eval-cir"):
        assert flag in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfg_kwargs: dict) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from training.config import TrainConfig  # noqa: PLC0415 - runs in a spawned process
    result = train(TrainConfig(**cfg_kwargs))
    assert result.status == "complete"


def test_two_rank_ddp_equals_one_process(make_config, tmp_path):
    # without dropout the only difference is who computes which half of each global batch
    single = make_config(out=str(tmp_path / "single"), lora_dropout=0.0, max_steps=3)
    train(single)
    ddp = single.replace(out=str(tmp_path / "ddp"))
    mp.spawn(_ddp_worker, args=(2, _free_port(), vars(ddp)), nprocs=2, join=True)
    losses = [[json.loads(x)["loss"] for x in (tmp_path / d / "train_log.jsonl").read_text().splitlines()]
              for d in ("single", "ddp")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    # Adam divides by sqrt(v): float-rounding differences in near-zero gradient entries (two partial sums
    # instead of one) grow to ~1e-4 after a few steps of lr 1e-2, against updates of ~1e-2
    a, b = _adapter(tmp_path / "single"), _adapter(tmp_path / "ddp")
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-3), name
    report = json.loads((tmp_path / "ddp" / "report.json").read_text())
    assert report["world_size"] == 2 and report["training"]["images"] == 3 * 8


def test_eval_cir_reports_recall_before_and_after(make_config, tat_world):
    result = train(make_config(eval_cir=str(tat_world / "cirr"), eval_alpha=(0.5, 0.8), max_steps=2))
    report = result.report
    for side in ("before", "after"):
        cir_part = report[side]["cir"]
        assert {"slerp@0.50", "slerp@0.80", "image@0.00", "text@1.00"} <= set(cir_part["all"])
        assert {"R@1", "R@5", "R@10"} <= set(cir_part["all"]["slerp@0.80"])
        assert set(cir_part) - {"all"} <= {"seen", "heldout"} and len(cir_part) >= 2
    assert "R@1" in report["change"]["cir"]["all"]["slerp@0.80"]
    table = compare.table([result.out], "slerp@0.80", ("R@1",), ("all", "heldout"))
    assert table.count("\n") == 2 and "→" in table.splitlines()[2]


@pytest.mark.gpu
def test_gpu_bf16_run_resumes_and_keeps_the_text_tower(make_config, tat_world, tmp_path, tiny_clip_dir):
    straight = make_config(out=str(tmp_path / "straight"), device="cuda", max_steps=4)
    report = train(straight).report
    assert report["after"]["encoder"]["device"].startswith("cuda")

    def interrupt(step):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    split = straight.replace(out=str(tmp_path / "split"))
    assert train(split, on_step=interrupt).status == "interrupted"
    assert train(split.replace(resume=True)).status == "complete"
    a, b = _adapter(tmp_path / "straight"), _adapter(tmp_path / "split")
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-3), name
    base = load_encoder(str(tiny_clip_dir), device="cpu")
    tuned = load_encoder(str(tiny_clip_dir), adapter=tmp_path / "straight", device="cpu")
    assert np.array_equal(base.encode_texts(["a red circle"]), tuned.encode_texts(["a red circle"]))


def test_diagnose_and_compare_tools(make_config, tat_world, tiny_clip_dir, capsys):
    out = train(make_config(max_steps=2)).out
    assert diagnose.main(["--world", str(tat_world), "--model", str(tiny_clip_dir), "--adapter", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| all | 8 |" in table and "shape only, old value named" in table and f"| {out.name} |" in table
    assert diagnose.main(["--world", str(out), "--model", str(tiny_clip_dir)]) == 2
    assert compare.main([str(out)]) == 0 and compare.main([str(tat_world)]) == 2
