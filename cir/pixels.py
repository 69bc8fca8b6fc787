"""Pixel batches: what `ImagePreprocessor` produces and `Encoder.encode_pixels` consumes.

Fixed-resolution models (CLIP, SigLIP, BLIP, SigLIP 2 FixRes) take one (3, H, W) tensor per
image and an (N, 3, H, W) tensor per batch. NaFlex models (SigLIP 2) take several tensors per
image (patches, a patch mask, the patch grid's shape), each padded to a fixed patch count: then
an image is a dict of tensors and a batch is the same dict with a leading batch dimension.
These helpers treat both forms alike, so decode workers, collate functions, the service's
micro-batcher and training batches never look inside.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import torch

Pixels = Union[torch.Tensor, dict[str, torch.Tensor]]


def map_pixels(fn: Callable[[torch.Tensor], torch.Tensor], pixels: Pixels) -> Pixels:
    """Apply fn to the tensor, or to every tensor of a dict."""
    if isinstance(pixels, dict):
        return {k: fn(v) for k, v in pixels.items()}
    return fn(pixels)


def stack_pixels(items: Sequence[Pixels]) -> Pixels:
    """Stack single images into a batch (one new leading dimension)."""
    if isinstance(items[0], dict):
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}
    return torch.stack(list(items))


def pixel_row(batch: Pixels, i: int) -> Pixels:
    """Image i of a batch."""
    return map_pixels(lambda t: t[i], batch)


def pixels_len(batch: Pixels) -> int:
    """Number of images in a batch."""
    return len(next(iter(batch.values()))) if isinstance(batch, dict) else len(batch)


def pixel_inputs(batch: Pixels, device: torch.device) -> dict[str, torch.Tensor]:
    """Keyword arguments of the image tower (pixel_values, and NaFlex's mask and shapes) on the device."""
    inputs = batch if isinstance(batch, dict) else {"pixel_values": batch}
    return {k: v.to(device) for k, v in inputs.items()}
