"""`cir train` under a new user's mistakes and a hard kill: unloadable data, orphaned workers, permissions."""

from __future__ import annotations

import logging
import os
import signal
import stat

from training_fixtures import make_config, tat_world, world_rows, write_jsonl  # noqa: F401

from training import cli
from training.loop import train


def _base(tiny_clip_dir) -> list[str]:
    return ["--model", str(tiny_clip_dir), "--batch-size", "8", "--max-steps", "2", "--workers", "0",
            "--no-progress", "--holdout", "4"]


def test_no_loadable_image_fails_and_says_where_paths_are_resolved(tat_world, tmp_path, tiny_clip_dir, capsys):
    # the classic mistake: a captions file copied away from its images (paths stay relative to the file)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    data = write_jsonl(elsewhere / "captions.jsonl", world_rows(tat_world))
    out = tmp_path / "out"
    assert cli.main(_base(tiny_clip_dir) + ["--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "none of the" in err and "missing image file" in err
    assert f"resolved relative to {elsewhere}" in err and "--check" in err
    assert not out.exists()


def test_check_reports_rows_resolved_decoded_and_reasons(tat_world, tmp_path, capsys):
    rows = world_rows(tat_world)
    (tat_world / "junk.png").write_bytes(b"not an image")
    rows[2] = {**rows[2], "image": "junk.png"}
    rows[5] = {**rows[5], "image": "images/train/nope.png"}
    data = write_jsonl(tat_world / "check.jsonl", rows)
    assert cli.main(["--check", "--data", str(data), "--no-progress"]) == 0  # no --model or --out needed
    out = capsys.readouterr().out
    n = len(rows)
    assert f"rows      {n}" in out and f"resolved  {n - 1}" in out and f"decoded   {n - 2}" in out
    assert "skipped   2" in out and "1 missing" in out and "1 undecodable" in out and "nope.png" in out
    elsewhere = write_jsonl(tmp_path / "elsewhere.jsonl", rows)
    assert cli.main(["--check", "--data", str(elsewhere), "--no-progress", "--workers", "1"]) == 2
    captured = capsys.readouterr()
    assert "decoded   0" in captured.out and "no image of the data loads" in captured.err
    assert cli.main(["--data", str(data)]) == 2  # without --check, --model and --out are required
    assert "--model, --out" in capsys.readouterr().err


def test_many_skipped_images_warn_loudly(tat_world, tiny_clip_dir, tmp_path, capsys, caplog):
    rows = world_rows(tat_world)
    for i in range(0, len(rows), 3):  # a third of the images are missing
        rows[i] = {**rows[i], "image": f"images/train/gone-{i}.png"}
    data = write_jsonl(tat_world / "a_third_missing.jsonl", rows)
    with caplog.at_level(logging.WARNING):
        code = cli.main(_base(tiny_clip_dir) + ["--data", str(data), "--out", str(tmp_path / "out")])
    assert code == 0
    assert "did not load and were skipped" in capsys.readouterr().err
    assert any("sampled images" in r.getMessage() and "will be skipped" in r.getMessage() for r in caplog.records)


def test_outputs_are_readable_by_other_users_and_resume_removes_partial_checkpoints(make_config, tmp_path):
    previous = os.umask(0o022)
    try:
        cfg = make_config(out=str(tmp_path / "run"), max_steps=4, checkpoint_every=1)

        def interrupt(step):
            if step == 2:
                os.kill(os.getpid(), signal.SIGTERM)

        assert train(cfg, on_step=interrupt).status == "interrupted"
        out = tmp_path / "run"
        # what a kill -9 during the next checkpoint or the final save leaves behind
        (out / "checkpoints" / ".tmp-k1ll3d").mkdir()
        (out / "checkpoints" / ".tmp-k1ll3d" / "state.pt").write_bytes(b"half")
        (out / ".tmp-save-k1ll3d").mkdir()
        assert train(cfg.replace(resume=True)).status == "complete"
    finally:
        os.umask(previous)
    assert not list(out.glob("checkpoints/.tmp-*")) and not list(out.glob(".tmp-*"))
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    for f in out.iterdir():
        if f.is_file():
            assert mode(f) == 0o644, f
    dirs = [out / "checkpoints", *(out / "checkpoints").iterdir()]
    assert len(dirs) == 3 and all(mode(d) == 0o755 for d in dirs), [oct(mode(d)) for d in dirs]
    assert all(mode(d / "state.pt") == 0o644 for d in dirs[1:])
