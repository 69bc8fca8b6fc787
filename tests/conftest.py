"""Shared fixtures: tiny random models on disk, the GPU marker."""

from __future__ import annotations

import os

# Before anything imports huggingface_hub: an unknown model id must fail at once, not retry.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import sys
from pathlib import Path

import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

from milvus_fixtures import milvus_server  # noqa: E402,F401 - the session's Milvus server
from tiny_models import (  # noqa: E402
    make_tiny_blip,
    make_tiny_clip,
    make_tiny_siglip,
    make_tiny_siglip2_fixed,
    make_tiny_siglip2_naflex,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory) -> Path:
    return make_tiny_siglip(tmp_path_factory.mktemp("tiny_siglip"))


@pytest.fixture(scope="session")
def tiny_siglip2_fixed_dir(tmp_path_factory) -> Path:
    return make_tiny_siglip2_fixed(tmp_path_factory.mktemp("tiny_siglip2_fixed"))


@pytest.fixture(scope="session")
def tiny_siglip2_naflex_dir(tmp_path_factory) -> Path:
    return make_tiny_siglip2_naflex(tmp_path_factory.mktemp("tiny_siglip2_naflex"))


@pytest.fixture(scope="session")
def tiny_blip_dir(tmp_path_factory) -> Path:
    return make_tiny_blip(tmp_path_factory.mktemp("tiny_blip"))


@pytest.fixture(scope="session")
def shared_formats() -> Path:
    path = SHARED / "formats"
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path
