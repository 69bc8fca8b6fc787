"""Model families: the one place that knows how CLIP, SigLIP, SigLIP 2 and BLIP differ.

A `Family` says which transformers class loads a checkpoint, which top-level submodules are
the image tower and the text tower, the default LoRA targets inside the image tower (TAT), the
text rules (padding, lowercasing, length) and which feature recipe `cir.encoder` runs.
`family_of(config)` picks the family from a model config; any other dual encoder that
transformers' AutoModel loads with get_image_features/get_text_features is GENERIC, its towers
found by name. This module is plain data: it imports neither torch nor transformers.
"""

from __future__ import annotations

from dataclasses import dataclass

# Attention projections of the CLIP/SigLIP vision layers (q/k/v/out_proj); the paper does not
# name its targets. BLIP's vision attention is one fused `qkv` Linear and a `projection`.
ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
BLIP_ATTENTION_TARGETS = ("qkv", "projection")
# SigLIP 2's fixed-resolution checkpoints are model_type "siglip" with Gemma's vocabulary.
GEMMA_VOCAB = 256_000


@dataclass(frozen=True)
class Family:
    """How one model family is loaded, split into towers, tuned and embedded."""

    name: str
    model_class: str = "AutoModel"  # a transformers class name
    architectures: tuple[str, ...] = ()  # checkpoint architectures it accepts (empty: any)
    vision_modules: tuple[str, ...] = ()  # top-level submodules of the image tower (empty: by name)
    text_modules: tuple[str, ...] = ()
    lora_targets: tuple[str, ...] = ATTENTION_TARGETS
    features: str = "dual"  # cir.encoder's recipe: "dual" (get_*_features) or "blip_itc"
    pad_to_max: bool = False  # pad every text to the tower's length (SigLIP was trained so)
    lowercase: bool = False  # lowercase texts before tokenizing (the model was trained on lowercased text)
    max_text_length: int | None = None  # cap below the tower's position limit
    unused_modules: tuple[str, ...] = ()  # checkpoint parts the embeddings never use (may be missing)
    hint: str = ""  # what to load instead, for errors


# The family table. TAT's default LoRA targets per family live here (`lora_targets`);
# an explicit `cir train --lora-targets` always wins.
FAMILIES = {
    "clip": Family("clip", vision_modules=("vision_model", "visual_projection"),
                   text_modules=("text_model", "text_projection")),
    "siglip": Family("siglip", vision_modules=("vision_model",), text_modules=("text_model",), pad_to_max=True),
    # Fixed-resolution (SiglipModel, Gemma vocabulary) and NaFlex (Siglip2Model) checkpoints:
    # the model card asks for lowercased text padded to 64 tokens.
    "siglip2": Family("siglip2", vision_modules=("vision_model",), text_modules=("text_model",),
                      pad_to_max=True, lowercase=True),
    # BLIP's image-text contrastive (ITC) features, as the paper uses: only the retrieval
    # checkpoints carry the ITC projections (AutoModel would build BlipModel and initialise its
    # projections randomly). 35 tokens is the text length of BLIP's own retrieval code.
    "blip": Family("blip", model_class="BlipForImageTextRetrieval", architectures=("BlipForImageTextRetrieval",),
                   vision_modules=("vision_model", "vision_proj"), text_modules=("text_encoder", "text_proj"),
                   lora_targets=BLIP_ATTENTION_TARGETS, features="blip_itc", max_text_length=35,
                   unused_modules=("itm_head",),
                   hint="CIR uses BLIP's image-text contrastive features, which only the retrieval checkpoints "
                        "(BlipForImageTextRetrieval, e.g. Salesforce/blip-itm-base-coco) carry"),
}
GENERIC = Family("dual")


def family_of(config) -> Family:
    """The family of a transformers model config (GENERIC for other dual encoders)."""
    model_type = getattr(config, "model_type", "")
    text_config = getattr(config, "text_config", None)
    if model_type == "siglip" and getattr(text_config, "vocab_size", None) == GEMMA_VOCAB:
        return FAMILIES["siglip2"]
    return FAMILIES.get(model_type, GENERIC)


def check_architecture(family: Family, config) -> None:
    """Refuse (ValueError) a checkpoint whose architecture lacks what the family's features need."""
    found = tuple(getattr(config, "architectures", None) or ())
    if family.architectures and found and not set(found) & set(family.architectures):
        raise ValueError(f"it is a {', '.join(found)} checkpoint; {family.hint}")


def missing_weights(family: Family, missing_keys) -> list[str]:
    """Checkpoint weights that loading had to initialise randomly and the embeddings would use."""
    unused = tuple(m + "." for m in family.unused_modules)
    return sorted(k for k in missing_keys if not k.startswith(unused))


def _top_level(model, wanted: tuple[str, ...], words: tuple[str, ...]) -> tuple[str, ...]:
    children = [n for n, _ in model.named_children()]
    if wanted:
        return tuple(n for n in wanted if n in children)
    return tuple(n for n in children if any(w in n for w in words))


def vision_prefixes(model) -> tuple[str, ...]:
    """Top-level submodules of the model that belong to the image tower."""
    names = _top_level(model, family_of(model.config).vision_modules, ("vision", "visual"))
    if not names:
        raise ValueError(f"{type(model).__name__} has no vision tower submodule (vision_model/visual_*)")
    return names


def text_prefixes(model) -> tuple[str, ...]:
    """Top-level submodules of the model that belong to the text tower."""
    names = _top_level(model, family_of(model.config).text_modules, ("text",))
    if not names:
        raise ValueError(f"{type(model).__name__} has no text tower submodule (text_*)")
    return names


def in_tower(name: str, prefixes) -> bool:
    """Is this parameter or module name part of the tower with these top-level prefixes?"""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def default_targets_help() -> str:
    """The per-family default LoRA targets, as one line for --help texts."""
    return "; ".join(f"{f.name} {','.join(f.lora_targets)}" for f in (*FAMILIES.values(), GENERIC))
