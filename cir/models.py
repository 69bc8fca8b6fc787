"""Model resolution and fingerprints: where weights come from and how we recognise them again."""

from __future__ import annotations

import hashlib
import json
import logging
from importlib import resources
from pathlib import Path

import torch

from cir.hub import HubError, locate

log = logging.getLogger(__name__)

TOY_MODEL = "toy"
ADAPTER_META = "cir_adapter.json"


class ModelLoadError(RuntimeError):
    """A model or adapter could not be found or loaded."""


class AdapterMismatchError(ModelLoadError):
    """A LoRA adapter was trained on a different base model than the one being loaded."""


def toy_model_dir() -> Path:
    """Directory of the built-in demo model shipped inside the `cir` package."""
    return Path(str(resources.files("cir") / "assets" / "toy"))


def resolve_model(name_or_path: str) -> str:
    """Map 'toy' to the packaged demo model, check local folders, and locate hub ids (cache first, fast)."""
    if name_or_path == TOY_MODEL:
        path = toy_model_dir()
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"the built-in 'toy' model is missing from {path}; reinstall cir or run "
                "`python -m training.toy.model --out cir/assets/toy`"
            )
        return str(path)
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a model directory (no config.json)")
        return str(path)
    try:
        return locate(name_or_path)
    except HubError as exc:
        raise ModelLoadError(str(exc)) from None


def state_dict_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over parameter names, dtypes, shapes and fp32 bytes: identifies effective weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu")
        if t.is_floating_point():
            t = t.float()
        digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()


def read_adapter_meta(adapter_dir: str | Path) -> dict:
    """Validate a PEFT adapter directory and return CIR's metadata about it (may be empty)."""
    path = Path(adapter_dir).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise ModelLoadError(f"{path} is not a LoRA adapter directory (no adapter_config.json)")
    meta_file = path / ADAPTER_META
    if not meta_file.is_file():
        log.warning("adapter %s has no %s; its base model cannot be checked", path, ADAPTER_META)
        return {}
    try:
        return json.loads(meta_file.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{meta_file} is not valid JSON: {exc}") from exc


def check_adapter_base(meta: dict, base_fingerprint: str, adapter_dir: str | Path) -> None:
    """Refuse an adapter whose recorded base fingerprint differs from the loaded base model."""
    expected = meta.get("base_fingerprint")
    if expected and expected != base_fingerprint:
        raise AdapterMismatchError(
            f"adapter {adapter_dir} was trained on base model {meta.get('base_model', '?')} "
            f"(fingerprint {expected[:12]}), but the loaded model's fingerprint is "
            f"{base_fingerprint[:12]}; load the adapter with the model it was trained on"
        )
