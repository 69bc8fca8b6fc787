"""Tiny random dual encoders of every family saved to disk, so tests exercise the real loading path offline."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    AutoModel,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipForImageTextRetrieval,
    BlipImageProcessor,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    PreTrainedTokenizerFast,
    Siglip2Config,
    Siglip2ImageProcessor,
    Siglip2Model,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
)

from cir.families import GEMMA_VOCAB
from cir.models import ADAPTER_META

WORDS = ("a photo of red blue green big small circle square left right make it two dogs "
         "the dress but same shirt and with turn into move").split()
SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
# transformers 5 reads a siglip2 checkpoint's tokenizer as Siglip2Tokenizer (Gemma-style BPE over
# this vocabulary, lowercasing, spaces as "▁"): single characters keep its token counts realistic.
CHARS = tuple("abcdefghijklmnopqrstuvwxyz▁")


def _tokenizer(max_length: int, first: str = "[BOS]", last: str = "[EOS]", extra: tuple[str, ...] = ()
               ) -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(SPECIALS + WORDS + list(extra)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    # CLIP pools at the EOS token, so every sequence must end with one (BLIP pools at the first, its [CLS]).
    tok.post_processor = processors.TemplateProcessing(
        single=f"{first} $A {last}", special_tokens=[(first, vocab[first]), (last, vocab[last])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token=first, eos_token=last, model_max_length=max_length)


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


def make_tiny_siglip2_fixed(out: Path, seed: int = 0, image_size: int = 32) -> Path:
    """A SigLIP 2 fixed-resolution checkpoint: a SiglipModel with Gemma's vocabulary size (2 layers, width 32)."""
    torch.manual_seed(seed)
    text, vision = _towers(image_size)
    model = SiglipModel(SiglipConfig(text_config=dict(text, vocab_size=GEMMA_VOCAB), vision_config=vision))
    model.save_pretrained(out)
    _tokenizer(16).save_pretrained(out)
    SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(out)
    return Path(out)


def make_tiny_siglip2_naflex(out: Path, seed: int = 0, max_patches: int = 16) -> Path:
    """A SigLIP 2 NaFlex checkpoint (Siglip2Model; patch 8, at most `max_patches` patches per image)."""
    torch.manual_seed(seed)
    text, vision = _towers(32)
    vision = {k: v for k, v in vision.items() if k != "image_size"}
    model = Siglip2Model(Siglip2Config(text_config=dict(text, vocab_size=len(SPECIALS) + len(WORDS) + len(CHARS)),
                                       vision_config=dict(vision, num_patches=max_patches)))
    model.save_pretrained(out)
    _tokenizer(16, extra=CHARS).save_pretrained(out)
    Siglip2ImageProcessor(patch_size=8, max_num_patches=max_patches).save_pretrained(out)
    return Path(out)


def _blip_config(image_size: int) -> BlipConfig:
    text, vision = _towers(image_size)
    text = dict(text, max_position_embeddings=40, bos_token_id=2, sep_token_id=3)
    return BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=16, projection_dim=16)


def make_tiny_blip(out: Path, seed: int = 0, image_size: int = 32, captioning: bool = False) -> Path:
    """A BLIP retrieval checkpoint (BlipForImageTextRetrieval), or a captioning one (no ITC projections)."""
    torch.manual_seed(seed)
    model_class = BlipForConditionalGeneration if captioning else BlipForImageTextRetrieval
    model_class(_blip_config(image_size)).save_pretrained(out)
    _tokenizer(40).save_pretrained(out)
    BlipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(out)
    return Path(out)
