"""The built-in toy CLIP: a word-level tokenizer, an image processor and a small transformers CLIPModel.

Pitfalls this module avoids (transformers 5): CLIP pools text at the first EOS token unless
`eos_token_id == 2`, where it falls back to legacy argmax-id pooling, so EOS gets id 3;
CLIPTokenizer refuses a word-level vocabulary, so the tokenizer is a `tokenizers` WordLevel
model wrapped in PreTrainedTokenizerFast (AutoTokenizer loads it back).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

from cir.toyworld import vocabulary

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)  # ids 0..3: EOS is 3, never 2 (see the module docstring)
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ArchConfig:
    """Sizes of the toy CLIP's towers."""

    image_size: int = 32
    patch_size: int = 8
    width: int = 128
    vision_layers: int = 4
    text_layers: int = 3
    heads: int = 4
    mlp_ratio: int = 4
    projection_dim: int = 128
    max_text_len: int = 32

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")
        if min(self.vision_layers, self.text_layers, self.projection_dim, self.max_text_len) < 1:
            raise ValueError("layer counts, projection_dim and max_text_len must be positive")


def build_tokenizer(max_len: int) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer over the shapes world's vocabulary: '<bos> words <eos>'."""
    vocab = {tok: i for i, tok in enumerate(list(SPECIALS) + vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B {EOS}",
        special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD,
        model_max_length=max_len, padding_side="right", model_input_names=["input_ids", "attention_mask"])


def build_image_processor(image_size: int) -> CLIPImageProcessor:
    """CLIP preprocessing at the toy size: resize, centre crop, scale to [-1, 1]."""
    return CLIPImageProcessor(
        do_resize=True, size={"shortest_edge": image_size}, do_center_crop=True,
        crop_size={"height": image_size, "width": image_size}, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=list(IMAGE_MEAN), image_std=list(IMAGE_STD), do_convert_rgb=True)


def pixels_from_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 renders -> (N, 3, H, W) pixel_values, exactly as the image processor makes them."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def build_model(arch: ArchConfig, vocab_size: int) -> CLIPModel:
    """A freshly initialised CLIPModel of the given sizes."""
    text = dict(vocab_size=vocab_size, hidden_size=arch.width, intermediate_size=arch.width * arch.mlp_ratio,
                num_hidden_layers=arch.text_layers, num_attention_heads=arch.heads,
                max_position_embeddings=arch.max_text_len, pad_token_id=0, bos_token_id=2, eos_token_id=3,
                projection_dim=arch.projection_dim)
    vision = dict(image_size=arch.image_size, patch_size=arch.patch_size, hidden_size=arch.width,
                  intermediate_size=arch.width * arch.mlp_ratio, num_hidden_layers=arch.vision_layers,
                  num_attention_heads=arch.heads, num_channels=3, projection_dim=arch.projection_dim)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=arch.projection_dim)
    if config.text_config.eos_token_id == 2:
        raise ValueError("eos_token_id 2 switches CLIP to legacy argmax pooling")
    return CLIPModel(config)
