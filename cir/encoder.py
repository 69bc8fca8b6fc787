"""The one embedding module: image and text towers of a CLIP-family dual encoder.

`load_encoder` returns an `Encoder` whose `encode_images` / `encode_texts` give L2-normalised
float32 numpy rows. Preprocessing is a separate picklable `ImagePreprocessor`, so jobs can run
it inside DataLoader worker processes and feed `encode_pixels` with ready batches.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from peft import PeftModel
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

from cir.fusion import l2_normalize
from cir.models import (
    ModelLoadError,
    check_adapter_base,
    read_adapter_meta,
    resolve_model,
    state_dict_fingerprint,
)

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
    """Picklable PIL -> (3, H, W) float tensor transform of a model's image processor."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """Preprocess one image (any mode) exactly as the model expects."""
        return self.batch([image])[0]

    @property
    def input_side(self) -> int | None:
        """The side the processor resizes images to (its shortest edge or its height/width), if it says."""
        size = getattr(self.processor, "size", None)  # a dict, or transformers 5's SizeDict
        read = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
        sides = [int(s) for s in (read("shortest_edge"), read("height"), read("width")) if s]
        return max(sides) if sides else None

    def batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Preprocess several images into one (N, 3, H, W) tensor."""
        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        return self.processor(images=rgb, return_tensors="pt")["pixel_values"]


def pooled_output(output) -> torch.Tensor:
    """The pooled embedding of get_*_features: a ModelOutput in transformers 5, a tensor before."""
    if isinstance(output, torch.Tensor):
        return output
    for key in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(output, key, None)
        if value is not None:
            return value
    raise ModelLoadError(f"cannot find pooled embeddings in {type(output).__name__}")


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
    pad_to_max: bool = False
    dim: int = field(init=False, default=0)

    def __post_init__(self):
        self.dim = int(self.encode_texts(["a"]).shape[1])

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    @torch.inference_mode()
    def encode_pixels(self, pixel_values: torch.Tensor) -> np.ndarray:
        """Embed a preprocessed (N, 3, H, W) batch; unit float32 rows."""
        with self._autocast():
            out = pooled_output(self.model.get_image_features(pixel_values=pixel_values.to(self.device)))
        return l2_normalize(out.float()).cpu().numpy()

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        """Embed PIL images in batches; unit float32 rows, shape (N, dim)."""
        chunks = [self.encode_pixels(self.preprocess.batch(images[i : i + batch_size]))
                  for i in range(0, len(images), batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def tokenize(self, texts: Sequence[str]) -> dict:
        """Tokenize with the model's padding rule, truncating to the text tower's length."""
        padding = "max_length" if self.pad_to_max else True
        return self.tokenizer(list(texts), padding=padding, truncation=True,
                              max_length=self.text_max_length, return_tensors="pt")

    def truncated(self, texts: Sequence[str]) -> list[bool]:
        """Which texts are longer than the text tower accepts (and so get truncated)."""
        ids = self.tokenizer(list(texts), truncation=False)["input_ids"]
        return [len(row) > self.text_max_length for row in ids]

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Embed raw texts (no prompt template) in batches; unit float32 rows."""
        chunks = []
        for i in range(0, len(texts), batch_size):
            tokens = {k: v.to(self.device) for k, v in self.tokenize(texts[i : i + batch_size]).items()}
            if "token_type_ids" in tokens:
                tokens.pop("token_type_ids")
            with self._autocast():
                out = pooled_output(self.model.get_text_features(**tokens))
            chunks.append(l2_normalize(out.float()).cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def info(self) -> dict:
        """A JSON-able description of this encoder's identity."""
        return {"model": self.name, "adapter": self.adapter, "fingerprint": self.fingerprint,
                "base_fingerprint": self.base_fingerprint, "dim": self.dim, "device": str(self.device)}


def _text_max_length(model, tokenizer) -> int:
    limit = getattr(getattr(model.config, "text_config", model.config), "max_position_embeddings", None) or 77
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if tok_limit and tok_limit < 100_000:
        limit = min(limit, tok_limit)
    return int(limit)


def _load_base(path: str):
    try:
        model = AutoModel.from_pretrained(path, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path)
        processor = AutoImageProcessor.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model {path!r}: {exc}") from exc
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise ModelLoadError(f"{path!r} is not a dual encoder (no get_image_features/get_text_features)")
    return model, tokenizer, processor


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


def load_encoder(name_or_path: str, adapter: str | Path | None = None,
                 device: str = "auto", dtype: str = "auto") -> Encoder:
    """Load a CLIP/SigLIP-family dual encoder ('toy', a hub id or a local dir), optionally with a LoRA adapter."""
    path = resolve_model(name_or_path)
    dev = resolve_device(device)
    autocast = resolve_autocast(dtype, dev)
    model, tokenizer, processor = _load_base(path)
    base_fp = state_dict_fingerprint(model)
    fingerprint = base_fp
    if adapter is not None:
        meta = read_adapter_meta(adapter)
        check_adapter_base(meta, base_fp, adapter)
        model = apply_adapter(model, adapter)
        fingerprint = hashlib.sha256(f"{base_fp}+{state_dict_fingerprint(model)}".encode()).hexdigest()
    model = model.to(dev).eval()
    model_type = getattr(model.config, "model_type", "")
    log.info("loaded %s%s on %s (fingerprint %s)", name_or_path,
             f" + adapter {adapter}" if adapter else "", dev, fingerprint[:12])
    return Encoder(model=model, tokenizer=tokenizer, preprocess=ImagePreprocessor(processor), device=dev,
                   autocast_dtype=autocast, name=name_or_path, adapter=str(adapter) if adapter else None,
                   fingerprint=fingerprint, base_fingerprint=base_fp,
                   text_max_length=_text_max_length(model, tokenizer), pad_to_max="siglip" in model_type)
