"""The supported backbones at their published sizes, saved with random weights (no hub download).

Each entry restates the hub checkpoint's config.json and preprocessor_config.json (layer
widths and depths, heads, image and patch size, text positions, vocabulary size, special-token
ids, resize/crop/normalisation) so `load_encoder` sees exactly the real architecture. Hub
tokenizers cannot be downloaded here: the folder gets a word-level stand-in with the real
vocabulary size, special-token ids, template and max length (token counts of real text differ).

    from archs import ARCHS, save_random
    save_random("clip-vit-l14", Path("/tmp/l14"))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

WORDS = ("a photo of red blue green big small circle square dog cat on the left right top bottom with stripes "
         "and two three house car tree sky make it same but instead turn into move").split()
CHARS = tuple("abcdefghijklmnopqrstuvwxyz▁")  # Siglip2Tokenizer (NaFlex) splits words into these


@dataclass(frozen=True)
class TokenizerSpec:
    """A stand-in for the hub tokenizer: vocabulary size, special tokens at their real ids, template, length."""

    vocab_size: int
    max_length: int
    specials: dict[str, int]
    template: str  # tokenizers TemplateProcessing, e.g. "<bos> $A <eos>"
    roles: dict[str, str]  # pad_token, unk_token, bos_token, eos_token, ... -> special token
    lowercase: bool = False


@dataclass(frozen=True)
class Arch:
    """One published architecture: hub id, config class and arguments, image processor, tokenizer."""

    hub_id: str
    config_class: str
    text: dict
    vision: dict
    processor_class: str
    processor: dict
    tokenizer: TokenizerSpec
    model_class: str = "AutoModel"
    extra: dict = field(default_factory=dict)


def _tower(width: int, layers: int, heads: int, mlp: int, **kw) -> dict:
    return dict(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=mlp, **kw)


CLIP_TOKENIZER = TokenizerSpec(49408, 77, {"<|startoftext|>": 49406, "<|endoftext|>": 49407},
                               "<|startoftext|> $A <|endoftext|>",
                               {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                                "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}, lowercase=True)


def _clip_text(width: int, heads: int) -> dict:
    return _tower(width, 12, heads, 4 * width, vocab_size=49408, max_position_embeddings=77, bos_token_id=49406,
                  eos_token_id=49407, pad_token_id=1)


SIGLIP_TOKENIZER = TokenizerSpec(32000, 64, {"</s>": 1, "<unk>": 2}, "$A </s>",
                                 {"eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"}, lowercase=True)
GEMMA_TOKENIZER = TokenizerSpec(256000, 64, {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}, "<bos> $A <eos>",
                                {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"})
BERT_TOKENIZER = TokenizerSpec(30524, 512, {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103,
                                            "[DEC]": 30522, "[ENC]": 30523}, "[CLS] $A [SEP]",
                               {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                                "mask_token": "[MASK]", "bos_token": "[DEC]"}, lowercase=True)


def _clip(hub_id: str, width: int, layers: int, heads: int, patch: int, image: int, proj: int, text: dict) -> Arch:
    return Arch(hub_id, "CLIPConfig", text, _tower(width, layers, heads, 4 * width, patch_size=patch, image_size=image),
                "CLIPImageProcessor", {"size": {"shortest_edge": image}, "crop_size": {"height": image, "width": image}},
                CLIP_TOKENIZER, extra={"projection_dim": proj})


def _siglip(hub_id: str, width: int, layers: int, heads: int, mlp: int, patch: int, image: int,
            tokenizer: TokenizerSpec) -> Arch:
    text = _tower(width, layers, heads, mlp, vocab_size=tokenizer.vocab_size, max_position_embeddings=64,
                  pad_token_id=tokenizer.specials[tokenizer.roles["pad_token"]],
                  eos_token_id=tokenizer.specials[tokenizer.roles["eos_token"]], bos_token_id=None)
    return Arch(hub_id, "SiglipConfig", text, _tower(width, layers, heads, mlp, patch_size=patch, image_size=image),
                "SiglipImageProcessor", {"size": {"height": image, "width": image}}, tokenizer)


ARCHS = {
    "clip-vit-b32": _clip("openai/clip-vit-base-patch32", 768, 12, 12, 32, 224, 512, _clip_text(512, 8)),
    "clip-vit-b16": _clip("openai/clip-vit-base-patch16", 768, 12, 12, 16, 224, 512, _clip_text(512, 8)),
    "clip-vit-l14": _clip("openai/clip-vit-large-patch14", 1024, 24, 16, 14, 224, 768, _clip_text(768, 12)),
    "clip-vit-l14-336": _clip("openai/clip-vit-large-patch14-336", 1024, 24, 16, 14, 336, 768, _clip_text(768, 12)),
    "siglip-base": _siglip("google/siglip-base-patch16-224", 768, 12, 12, 3072, 16, 224, SIGLIP_TOKENIZER),
    "siglip-so400m": _siglip("google/siglip-so400m-patch14-384", 1152, 27, 16, 4304, 14, 384, SIGLIP_TOKENIZER),
    "siglip2-base": _siglip("google/siglip2-base-patch16-224", 768, 12, 12, 3072, 16, 224, GEMMA_TOKENIZER),
    "siglip2-base-naflex": Arch(
        "google/siglip2-base-patch16-naflex", "Siglip2Config",
        _tower(768, 12, 12, 3072, vocab_size=256000, max_position_embeddings=64, pad_token_id=0, eos_token_id=1,
               bos_token_id=2),
        _tower(768, 12, 12, 3072, patch_size=16, num_patches=256),
        "Siglip2ImageProcessor", {"patch_size": 16, "max_num_patches": 256}, GEMMA_TOKENIZER),
    "blip-itm-base-coco": Arch(
        "Salesforce/blip-itm-base-coco", "BlipConfig",
        _tower(768, 12, 12, 3072, vocab_size=30524, max_position_embeddings=512, encoder_hidden_size=768,
               pad_token_id=0, bos_token_id=30522, sep_token_id=102, eos_token_id=2),
        _tower(768, 12, 12, 3072, patch_size=16, image_size=384),
        "BlipImageProcessor", {"size": {"height": 384, "width": 384}}, BERT_TOKENIZER,
        model_class="BlipForImageTextRetrieval", extra={"image_text_hidden_size": 256, "projection_dim": 512}),
}


def build_tokenizer(spec: TokenizerSpec) -> PreTrainedTokenizerFast:
    """A word-level tokenizer with the spec's vocabulary size, special ids, template and length."""
    tokens = [f"[unused{i}]" for i in range(spec.vocab_size)]
    for token, i in spec.specials.items():
        tokens[i] = token
    free = (i for i in range(1000, spec.vocab_size) if i not in spec.specials.values())
    for word in dict.fromkeys(WORDS + list(CHARS)):
        tokens[next(free)] = word
    tok = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(tokens)}, unk_token=spec.roles["unk_token"]))
    if spec.lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    used = [t for t in spec.specials if t in spec.template.split()]
    tok.post_processor = processors.TemplateProcessing(single=spec.template,
                                                       special_tokens=[(t, spec.specials[t]) for t in used])
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=spec.max_length, **spec.roles)


def build_model(arch: Arch) -> torch.nn.Module:
    """The randomly initialised model of an architecture (fixed seed)."""
    torch.manual_seed(0)
    config = getattr(transformers, arch.config_class)(text_config=arch.text, vision_config=arch.vision, **arch.extra)
    model_class = getattr(transformers, arch.model_class)
    return model_class.from_config(config) if arch.model_class == "AutoModel" else model_class(config)


def save_random(name: str, out: Path) -> Path:
    """Save architecture `name` with random weights, its tokenizer stand-in and image processor to `out`."""
    arch = ARCHS[name]
    out.mkdir(parents=True, exist_ok=True)
    build_model(arch).save_pretrained(out)
    build_tokenizer(arch.tokenizer).save_pretrained(out)
    getattr(transformers, arch.processor_class)(**arch.processor).save_pretrained(out)
    return out
