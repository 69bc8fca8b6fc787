"""Real `cir train` / `cir index build` / `cir serve` processes killed with SIGKILL or stopped with Ctrl-C.

Workers must not outlive a killed parent, the index root's lock must die with the build, a
Ctrl-C gives one line (with the resume hint) and exit status 130, never a traceback, and a
server that cannot start says why in one line.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from cli_process import start_cli
from index_fixtures import write_image
from tiny_models import make_tiny_clip
from training_fixtures import make_config, tat_world, world_rows, write_jsonl  # noqa: F401

from indexer.cli import main as index_main
from training.loop import train

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def _children(pid: int) -> set[int]:
    kids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None and st[1] == pid:
            kids.add(int(entry))
    return kids


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _wait_for(condition, timeout: float, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (rc {proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _assert_gone(pids: set[int], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    orphans = [p for p in pids if _alive(p)]
    for p in orphans:  # never leave them running, even when the test fails
        os.kill(p, signal.SIGKILL)
    assert not orphans, "workers outlived their killed parent"


@pytest.fixture(scope="module")
def big_gallery(tmp_path_factory) -> Path:
    """Enough small images that a build with batch size 2 runs for a while."""
    root = tmp_path_factory.mktemp("kill_gallery")
    for i in range(160):
        write_image(root / f"img{i:04d}.png", i, (24, 24))
    return root


def _build_args(gallery: Path, model: Path, out: Path) -> list[str]:
    return ["build", "--gallery", str(gallery), "--model", str(model), "--out", str(out), "--workers", "2",
            "--batch-size", "2", "--shard-size", "16", "--device", "cpu", "--no-progress"]


def test_kill_9_of_training_leaves_no_dataloader_workers(tat_world, tiny_clip_dir, tmp_path):
    # Big batches (long captions) fill the workers' result pipe: an orphan then blocks on it forever.
    rows = world_rows(tat_world)
    long = [{"image": str(tat_world / rows[i % len(rows)]["image"]), "caption": f"{i} " + "a red circle " * 100}
            for i in range(1024)]
    data = write_jsonl(tmp_path / "long.jsonl", long)
    out = tmp_path / "run"
    proc = start_cli(["training", "--model", str(tiny_clip_dir), "--data", str(data), "--out", str(out),
                   "--workers", "2", "--max-steps", "100000", "--batch-size", "256", "--holdout", "4",
                   "--log-every", "1", "--no-progress"])
    log = out / "train_log.jsonl"
    _wait_for(lambda: log.is_file() and log.stat().st_size > 0 and len(_children(proc.pid)) >= 2, 180, proc,
              "the training loop's workers")
    workers = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _assert_gone(workers, within=15.0)  # longer than the DataLoader's own 5 s parent check


def test_kill_9_of_a_build_frees_workers_and_lock_for_an_immediate_rerun(big_gallery, tiny_clip_dir, tmp_path):
    out = tmp_path / "root"
    args = _build_args(big_gallery, tiny_clip_dir, out)
    proc = start_cli(["indexer", *args])
    _wait_for(lambda: len(_children(proc.pid)) >= 2, 180, proc, "the decode workers")
    workers = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert index_main(args) == 0  # at once: the lock died with the build, not with its workers
    _assert_gone(workers)


def test_ctrl_c_in_a_build_prints_one_line_and_exits_130(big_gallery, tiny_clip_dir, tmp_path):
    out = tmp_path / "root"
    proc = start_cli(["indexer", *_build_args(big_gallery, tiny_clip_dir, out)], start_new_session=True)
    _wait_for(lambda: len(_children(proc.pid)) >= 2, 180, proc, "the decode workers")
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "interrupted" in err and "rerun the same command" in err
    assert index_main(_build_args(big_gallery, tiny_clip_dir, out)) == 0


@pytest.fixture(scope="module")
def small_index(tmp_path_factory, tiny_clip_dir) -> Path:
    gallery = tmp_path_factory.mktemp("serve_gallery")
    for i in range(12):
        write_image(gallery / f"img{i:02d}.png", i, (24, 24))
    root = tmp_path_factory.mktemp("serve_index") / "root"
    assert index_main(["build", "--gallery", str(gallery), "--model", str(tiny_clip_dir), "--out", str(root),
                       "--workers", "0", "--device", "cpu", "--no-progress"]) == 0
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_with_an_adapter_of_another_model_fails_in_one_line(small_index, make_config, tmp_path):
    other = make_tiny_clip(tmp_path / "other_clip", seed=1)
    adapter = train(make_config(model=str(other), out=str(tmp_path / "adapter"), max_steps=1)).out
    proc = start_cli(["service", "--index", str(small_index), "--adapter", str(adapter), "--port", str(_free_port()),
                   "--device", "cpu"])
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 2, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("cir serve: error: cannot start:"), err
    assert "was trained on base model" in errors[0]


def test_ctrl_c_stops_the_server_in_one_line(small_index):
    port = _free_port()
    proc = start_cli(["service", "--index", str(small_index), "--port", str(port), "--device", "cpu"],
                  start_new_session=True)

    def ready() -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200
        except OSError:
            return False

    _wait_for(ready, 180, proc, "the server to be ready")
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1] == "cir serve: stopped (Ctrl-C)"
