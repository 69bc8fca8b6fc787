"""LoRA on the image tower only: target selection, wrapping with peft, and the frozen-text guarantees."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Sequence

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from peft.utils import load_peft_weights

from cir.families import in_tower, text_prefixes, vision_prefixes
from cir.models import check_adapter_base, read_adapter_meta

log = logging.getLogger(__name__)

# Module types peft's LoRA can wrap that we offer as targets.
_LORA_TYPES = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Embedding)
_PLAIN_NAME = re.compile(r"^[\w.]+$")


def _matches(name: str, target: str) -> bool:
    if _PLAIN_NAME.match(target):
        return name == target or name.endswith("." + target)
    return re.fullmatch(target, name) is not None


def select_targets(model: torch.nn.Module, targets: Sequence[str], prefixes=None) -> list[str]:
    """Full names of the image-tower (or `prefixes`' tower) modules that the target names or regexes select."""
    tower = "image-tower" if prefixes is None else "text-tower"
    prefixes = vision_prefixes(model) if prefixes is None else prefixes
    modules = dict(model.named_modules())
    chosen = []
    for name, module in modules.items():
        if not isinstance(module, _LORA_TYPES) or not in_tower(name, prefixes):
            continue
        parent = modules.get(name.rpartition(".")[0])
        if isinstance(parent, torch.nn.MultiheadAttention):
            continue  # MultiheadAttention reads out_proj.weight directly: a LoRA there would do nothing
        if any(_matches(name, t) for t in targets):
            chosen.append(name)
    if not chosen:
        raise ValueError(f"no {tower} module matches the LoRA targets {', '.join(targets)}")
    return chosen


def target_regex(names: Sequence[str], all_names: Sequence[str]) -> str:
    """A compact regex (layer numbers generalised) that fully matches exactly `names` among `all_names`."""
    leaves: dict[str, list[str]] = {}  # generalised parent path -> leaf names
    for name in names:
        parent, _, leaf = name.rpartition(".")
        pattern = r"\.".join(r"\d+" if p.isdigit() else re.escape(p) for p in parent.split(".")) if parent else ""
        group = leaves.setdefault(pattern, [])
        if re.escape(leaf) not in group:
            group.append(re.escape(leaf))
    parts = [(f"{parent}\\." if parent else "") + f"(?:{'|'.join(leaf)})" for parent, leaf in leaves.items()]
    regex = "(?:" + "|".join(parts) + ")"
    if {n for n in all_names if re.fullmatch(regex, n)} != set(names):
        regex = "(?:" + "|".join(re.escape(n) for n in names) + ")"
    return regex


def add_lora(model: torch.nn.Module, rank: int, alpha: float, dropout: float,
             targets: Sequence[str], text_targets: Sequence[str] | None = None) -> PeftModel:
    """Wrap the model with LoRA on the selected image-tower (and text-tower) modules; every other weight is frozen."""
    names = select_targets(model, targets)
    if text_targets:  # supervised CIR's text-LoRA ablation; TAT never passes them
        names += select_targets(model, text_targets, text_prefixes(model))
    regex = target_regex(names, [n for n, _ in model.named_modules()])
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=regex, bias="none")
    peft_model = get_peft_model(model, config)
    check_trainable(peft_model, text=bool(text_targets))
    log.info("LoRA on %d %s modules (%s)", len(names), "image- and text-tower" if text_targets else "image-tower",
             regex)
    return peft_model


def check_trainable(model: torch.nn.Module, text: bool = False) -> None:
    """Raise unless the only trainable parameters are LoRA weights in the image tower (with text: either tower)."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    prefixes = vision_prefixes(base) + (text_prefixes(base) if text else ())
    trainable = [n for n, p in base.named_parameters() if p.requires_grad]
    wrong = [n for n in trainable if "lora_" not in n or not in_tower(n, prefixes)]
    if wrong or not trainable:
        tower = "image- or text-tower" if text else "image-tower"
        raise RuntimeError(f"only {tower} LoRA weights may train; found {wrong[:5] or 'none trainable'}")


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The trainable parameters by name (the LoRA weights)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def parameter_counts(model: torch.nn.Module) -> dict:
    """Trainable and total parameter counts and the trainable share in percent."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total, "trainable_percent": round(100.0 * trainable / total, 4)}


def set_lora_train_mode(model: torch.nn.Module) -> None:
    """Base model in eval mode (its dropout off, both towers exactly as at inference), LoRA dropout on."""
    model.eval()
    for name, module in model.named_modules():
        if name.endswith("lora_dropout") or ".lora_dropout." in name:
            module.train()


def load_init_adapter(model: PeftModel, adapter: str | Path, base_fingerprint: str) -> int:
    """Copy a saved adapter's LoRA weights (e.g. a TAT run's) into the freshly wrapped model; returns the tensors set.

    The adapter must have been trained on this base model and cover every image-tower LoRA module
    of the new wrap; text-tower modules it lacks (--text-lora from a TAT adapter) start at zero.
    """
    check_adapter_base(read_adapter_meta(adapter), base_fingerprint, adapter)
    weights = load_peft_weights(str(adapter), device="cpu")
    result = set_peft_model_state_dict(model, weights)
    if result.unexpected_keys:
        raise ValueError(f"--init-adapter {adapter} holds weights this LoRA wrap lacks "
                         f"({', '.join(result.unexpected_keys[:3])}); give the same --lora-targets and rank")
    prefixes = vision_prefixes(model.get_base_model())
    missing = [k for k in result.missing_keys
               if "lora_" in k and in_tower(k.removeprefix("base_model.model."), prefixes)]
    if missing:
        raise ValueError(f"--init-adapter {adapter} lacks image-tower LoRA weights ({', '.join(missing[:3])})")
    return len(weights)


def adapter_shape(adapter: str | Path) -> dict:
    """rank, alpha and target regex of a saved PEFT LoRA adapter (its adapter_config.json)."""
    path = Path(adapter).expanduser() / "adapter_config.json"
    if not path.is_file():
        raise ValueError(f"--init-adapter {adapter} is not a LoRA adapter folder (no adapter_config.json)")
    config = json.loads(path.read_text())
    targets = config.get("target_modules")
    return {"lora_rank": int(config["r"]), "lora_alpha": float(config["lora_alpha"]),
            "lora_targets": (targets,) if isinstance(targets, str) else tuple(targets)}
