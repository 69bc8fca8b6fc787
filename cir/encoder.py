"""The one embedding module: image and text towers of a CLIP-family dual encoder.

`load_encoder` returns an `Encoder` whose `encode_images` / `encode_texts` give L2-normalised
float32 numpy rows. Preprocessing is a separate picklable `ImagePreprocessor`, so jobs can run
it inside DataLoader worker processes and feed `encode_pixels` with ready batches (one tensor,
or a dict of tensors for NaFlex models: cir.pixels). How each family (CLIP, SigLIP, SigLIP 2,
BLIP) is loaded and embedded is decided by its entry in cir.families.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import transformers
from peft import PeftModel
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer
from transformers.utils import logging as hf_logging

from cir.families import GENERIC, Family, check_architecture, family_of, missing_weights
from cir.fusion import l2_normalize
from cir.models import (
    ModelLoadError,
    check_adapter_base,
    read_adapter_meta,
    resolve_model,
    state_dict_fingerprint,
)
from cir.pixels import Pixels, pixel_inputs, pixel_row

log = logging.getLogger(__name__)

_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU; anything else is passed to torch.device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available")
    return dev


def resolve_autocast(dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 on GPU for 'auto', none (fp32) on CPU or for 'float32'."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if dtype in ("float32", "fp32"):
        return None
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto, float32, bfloat16 or float16")
    return _DTYPES[dtype]


class ImagePreprocessor:
    """Picklable PIL -> pixels transform of a model's image processor: a (3, H, W) tensor, or a dict (NaFlex)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, image: Image.Image) -> Pixels:
        """Preprocess one image (any mode) exactly as the model expects."""
        return pixel_row(self.batch([image]), 0)

    @property
    def input_side(self) -> int | None:
        """The side the processor resizes images to (its shortest edge or its height/width), if it says."""
        size = getattr(self.processor, "size", None)  # a dict, or transformers 5's SizeDict
        read = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
        sides = [int(s) for s in (read("shortest_edge"), read("height"), read("width")) if s]
        return max(sides) if sides else None

    def batch(self, images: Sequence[Image.Image]) -> Pixels:
        """Preprocess several images into one batch: (N, 3, H, W), or a dict of (N, ...) tensors."""
        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        out = self.processor(images=rgb, return_tensors="pt")
        if set(out.keys()) == {"pixel_values"}:
            return out["pixel_values"]
        return dict(out.items())  # NaFlex: pixel_values, pixel_attention_mask, spatial_shapes


def pooled_output(output) -> torch.Tensor:
    """The pooled embedding of get_*_features: a ModelOutput in transformers 5, a tensor before."""
    if isinstance(output, torch.Tensor):
        return output
    for key in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(output, key, None)
        if value is not None:
            return value
    raise ModelLoadError(f"cannot find pooled embeddings in {type(output).__name__}")


def _blip_itc_image(model, inputs: dict) -> torch.Tensor:
    # BLIP's ITC: the vision CLS token (post-layernorm, not HF's pooler_output) -> vision_proj.
    hidden = model.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state
    return model.vision_proj(hidden[:, 0, :])


def _blip_itc_text(model, tokens: dict) -> torch.Tensor:
    # The unimodal text encoder (no cross-attention to the image) CLS token -> text_proj.
    hidden = model.text_encoder(input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask"))
    return model.text_proj(hidden.last_hidden_state[:, 0, :])


# cir.families' `features` names -> (image features, text features), both un-normalised.
FEATURES = {
    "dual": (lambda model, inputs: pooled_output(model.get_image_features(**inputs)),
             lambda model, tokens: pooled_output(model.get_text_features(**tokens))),
    "blip_itc": (_blip_itc_image, _blip_itc_text),
}


@dataclass
class Encoder:
    """A loaded dual encoder: model, tokenizer, preprocessing, device and identity."""

    model: torch.nn.Module
    tokenizer: object
    preprocess: ImagePreprocessor
    device: torch.device
    autocast_dtype: torch.dtype | None
    name: str
    adapter: str | None
    fingerprint: str
    base_fingerprint: str
    text_max_length: int
    family: Family = GENERIC
    dim: int = field(init=False, default=0)

    def __post_init__(self):
        self.dim = int(self.encode_texts(["a"]).shape[1])

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def image_features(self, pixels: Pixels) -> torch.Tensor:
        """Un-normalised image features of a preprocessed batch, on the device (autograd and autocast: the caller's)."""
        return FEATURES[self.family.features][0](self.model, pixel_inputs(pixels, self.device))

    def text_features(self, tokens: dict) -> torch.Tensor:
        """Un-normalised text features of `tokenize` output, on the device."""
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k != "token_type_ids"}
        return FEATURES[self.family.features][1](self.model, tokens)

    @torch.inference_mode()
    def encode_pixels(self, pixels: Pixels) -> np.ndarray:
        """Embed a preprocessed batch ((N, 3, H, W), or a NaFlex dict); unit float32 rows."""
        with self._autocast():
            out = self.image_features(pixels)
        return l2_normalize(out.float()).cpu().numpy()

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        """Embed PIL images in batches; unit float32 rows, shape (N, dim)."""
        chunks = [self.encode_pixels(self.preprocess.batch(images[i : i + batch_size]))
                  for i in range(0, len(images), batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def _texts(self, texts: Sequence[str]) -> list[str]:
        return [t.lower() for t in texts] if self.family.lowercase else list(texts)

    def tokenize(self, texts: Sequence[str]) -> dict:
        """Tokenize with the family's text rules (padding, lowercasing), truncating to the tower's length."""
        padding = "max_length" if self.family.pad_to_max else True
        return self.tokenizer(self._texts(texts), padding=padding, truncation=True,
                              max_length=self.text_max_length, return_tensors="pt")

    def truncated(self, texts: Sequence[str]) -> list[bool]:
        """Which texts are longer than the text tower accepts (and so get truncated)."""
        ids = self.tokenizer(self._texts(texts), truncation=False)["input_ids"]
        return [len(row) > self.text_max_length for row in ids]

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Embed raw texts (no prompt template) in batches; unit float32 rows."""
        chunks = []
        for i in range(0, len(texts), batch_size):
            with self._autocast():
                out = self.text_features(self.tokenize(texts[i : i + batch_size]))
            chunks.append(l2_normalize(out.float()).cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def info(self) -> dict:
        """A JSON-able description of this encoder's identity."""
        return {"model": self.name, "adapter": self.adapter, "fingerprint": self.fingerprint,
                "base_fingerprint": self.base_fingerprint, "dim": self.dim, "device": str(self.device),
                "family": self.family.name}


def _text_max_length(model, tokenizer, family: Family) -> int:
    limit = getattr(getattr(model.config, "text_config", model.config), "max_position_embeddings", None) or 77
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if tok_limit and tok_limit < 100_000:
        limit = min(limit, tok_limit)
    return int(min(limit, family.max_text_length or limit))


def model_family(name_or_path: str) -> Family:
    """The family of a model ('toy', a hub id or a local dir) from its config alone."""
    path = resolve_model(name_or_path)
    try:
        return family_of(AutoConfig.from_pretrained(path))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model {path!r}: {exc}") from exc


def _load_base(path: str):
    try:
        config = AutoConfig.from_pretrained(path)
        family = family_of(config)
        check_architecture(family, config)
        model_class = getattr(transformers, family.model_class)
        model, info = model_class.from_pretrained(path, dtype=torch.float32, output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(path)
        processor = AutoImageProcessor.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model {path!r}: {exc}") from exc
    if family.features == "dual" and not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise ModelLoadError(f"{path!r} is not a dual encoder (no get_image_features/get_text_features)")
    missing = missing_weights(family, info.get("missing_keys", ()))
    if missing:  # transformers would have initialised them randomly: refuse random embeddings
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        raise ModelLoadError(f"{path!r} lacks weights its {family.name} embeddings need ({shown}); "
                             f"they would be random. {family.hint or 'Load a complete dual-encoder checkpoint'}")
    return model, tokenizer, processor, family


def apply_adapter(model: torch.nn.Module, adapter: str | Path) -> torch.nn.Module:
    """Apply a PEFT LoRA adapter directory to the model and merge it into the weights."""
    try:
        with warnings.catch_warnings():
            # peft calls a transformers API deprecated in v5; not actionable for users.
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = PeftModel.from_pretrained(model, str(adapter))
    except (ValueError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(f"adapter {adapter} does not fit this model: {exc}") from exc
    return peft_model.merge_and_unload()


@contextlib.contextmanager
def loading_bars(enabled: bool) -> Iterator[None]:
    """transformers' and the hub's progress bars (the "Loading weights" bar) on or off for a block."""
    was = hf_logging.is_progress_bar_enabled()
    if enabled or not was:
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def load_encoder(name_or_path: str, adapter: str | Path | None = None,
                 device: str = "auto", dtype: str = "auto") -> Encoder:
    """Load a CLIP, SigLIP, SigLIP 2 or BLIP dual encoder ('toy', a hub id or a folder), optionally with a LoRA adapter."""
    path = resolve_model(name_or_path)
    dev = resolve_device(device)
    autocast = resolve_autocast(dtype, dev)
    model, tokenizer, processor, family = _load_base(path)
    base_fp = state_dict_fingerprint(model)
    fingerprint = base_fp
    if adapter is not None:
        meta = read_adapter_meta(adapter)
        check_adapter_base(meta, base_fp, adapter)
        model = apply_adapter(model, adapter)
        fingerprint = hashlib.sha256(f"{base_fp}+{state_dict_fingerprint(model)}".encode()).hexdigest()
    model = model.to(dev).eval()
    log.info("loaded %s (%s)%s on %s (fingerprint %s)", name_or_path, family.name,
             f" + adapter {adapter}" if adapter else "", dev, fingerprint[:12])
    return Encoder(model=model, tokenizer=tokenizer, preprocess=ImagePreprocessor(processor), device=dev,
                   autocast_dtype=autocast, name=name_or_path, adapter=str(adapter) if adapter else None,
                   fingerprint=fingerprint, base_fingerprint=base_fp,
                   text_max_length=_text_max_length(model, tokenizer, family), family=family)
