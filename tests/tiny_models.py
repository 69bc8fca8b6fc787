"""Tiny random dual encoders saved to disk, so tests exercise the real loading path offline."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    AutoModel,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
)

from cir.models import ADAPTER_META

WORDS = ("a photo of red blue green big small circle square left right make it two dogs "
         "the dress but same shirt and with turn into move").split()
SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]


def _tokenizer(max_length: int) -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    # CLIP pools at the EOS token, so every sequence must end with one.
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]", model_max_length=max_length)


def _towers(image_size: int) -> tuple[dict, dict]:
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    text = dict(common, vocab_size=len(SPECIALS) + len(WORDS), max_position_embeddings=16,
                pad_token_id=0, bos_token_id=2, eos_token_id=3)
    vision = dict(common, image_size=image_size, patch_size=8, num_channels=3)
    return text, vision


def make_tiny_clip(out: Path, seed: int = 0, image_size: int = 32) -> Path:
    """Save a randomly initialised 2-layer CLIP with tokenizer and processor to `out`."""
    torch.manual_seed(seed)
    text, vision = _towers(image_size)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    model.save_pretrained(out)
    _tokenizer(16).save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(out)
    return Path(out)


def make_tiny_siglip(out: Path, seed: int = 0, image_size: int = 32) -> Path:
    """Save a randomly initialised 2-layer SigLIP with tokenizer and processor to `out`."""
    torch.manual_seed(seed)
    text, vision = _towers(image_size)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    model.save_pretrained(out)
    _tokenizer(16).save_pretrained(out)
    SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(out)
    return Path(out)


def save_tiny_adapter(base_dir: Path, out: Path, fingerprint: str) -> Path:
    """Save a random (non-zero) LoRA adapter on the image tower of the model in `base_dir`, with CIR's metadata."""
    model = AutoModel.from_pretrained(base_dir)
    cfg = LoraConfig(r=4, lora_alpha=4, target_modules=r".*vision_model.*\.(q_proj|v_proj)", init_lora_weights=False)
    get_peft_model(model, cfg).save_pretrained(out)
    (Path(out) / ADAPTER_META).write_text(json.dumps({"base_model": str(base_dir), "base_fingerprint": fingerprint}))
    return Path(out)
