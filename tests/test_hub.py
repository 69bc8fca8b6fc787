"""Hub ids without network: fail fast with what to do, or load the cached copy; typos and missing folders say so.

The hub is made unreachable on purpose (HF_ENDPOINT on a closed local port), so these tests
behave the same with or without a network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cir.encoder import load_encoder
from cir.models import ModelLoadError

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: connection refused at once


def _online_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=UNREACHABLE, HF_HUB_ETAG_TIMEOUT="3")
    return env


def hf_hub_cache(hf_home: Path) -> Path:
    return hf_home / "hub"


def _cache_model(hf_home: Path, repo: str, model_dir: Path) -> None:
    """Lay out `model_dir` in the Hugging Face cache as hub model `repo` would be after a download."""
    base = hf_hub_cache(hf_home) / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(model_dir, base / "snapshots" / commit)
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)


def test_a_typo_without_network_fails_fast_and_says_what_to_do(tmp_path):
    gallery = tmp_path / "g"
    gallery.mkdir()
    (gallery / "a.png").write_bytes(b"never read: the model fails first")
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "indexer", "build", "--gallery", str(gallery), "--model", "tyo",
                           "--out", str(tmp_path / "root"), "--workers", "0", "--no-progress"],
                          capture_output=True, text=True, env=_online_env(tmp_path), timeout=120)
    seconds = time.monotonic() - t0
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "no local folder or known model named 'tyo'" in last
    assert "No network: set HF_HUB_OFFLINE=1 or give a local model folder" in last
    assert "Retrying" not in done.stderr and "Traceback" not in done.stderr
    assert seconds < 60  # (python start and imports included: the hub itself is asked once)


def test_a_cached_model_loads_without_network(tmp_path, tiny_clip_dir):
    _cache_model(tmp_path / "hf", "cirtest/tiny-clip", tiny_clip_dir)
    code = ("from cir.encoder import load_encoder; e = load_encoder('cirtest/tiny-clip', device='cpu'); "
            "print('dim', e.dim)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_online_env(tmp_path),
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "dim" in done.stdout and "loading the cached copy of cirtest/tiny-clip" in done.stderr
    assert "Retrying" not in done.stderr


def test_offline_mode_and_missing_folders_name_the_problem(tmp_path, tiny_clip_dir, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hf_hub_cache(tmp_path / "hf")))
    with pytest.raises(ModelLoadError, match="no local folder or known model named 'org/not-cached'.*"
                                             "HF_HUB_OFFLINE=1 is set"):
        load_encoder("org/not-cached", device="cpu")
    for missing in ("./models/clip", str(tmp_path / "no" / "such" / "model"), "models/clip/"):
        with pytest.raises(ModelLoadError, match=f"no local folder or known model named '{missing}': there is no "
                                                 "such folder"):
            load_encoder(missing, device="cpu")
    _cache_model(tmp_path / "hf", "org/cached", tiny_clip_dir)
    assert load_encoder("org/cached", device="cpu").name == "org/cached"
