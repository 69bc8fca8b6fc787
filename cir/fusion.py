"""Query fusion: Slerp (arXiv 2405.00571) and its baselines, plus the project's one L2 normalisation.

`alpha` is always the TEXT weight: alpha = 0 returns the image embedding, alpha = 1 the text
embedding. Every caller (server, evaluation, training reports) goes through `fuse`, so that a
query is composed the same way everywhere.
"""

from __future__ import annotations

from typing import Callable, Union

import numpy as np
import torch

from cir.defaults import DEFAULT_ALPHA, FUSIONS

ArrayLike = Union[np.ndarray, torch.Tensor]
AlphaLike = Union[float, np.ndarray, torch.Tensor]

# Below this angle (|cos| above it) the slerp weights divide by ~0; the authors' cutoff.
PARALLEL_DOT = 0.9995


def l2_normalize(x: ArrayLike, dim: int = -1, eps: float = 1e-12) -> ArrayLike:
    """Return x scaled to unit L2 norm along `dim` (torch or numpy, zero rows stay zero)."""
    if isinstance(x, np.ndarray):
        norm = np.linalg.norm(x, axis=dim, keepdims=True)
        return (x / np.maximum(norm, eps)).astype(x.dtype, copy=False)
    return x / x.norm(dim=dim, keepdim=True).clamp_min(eps)


def _alpha_column(alpha: AlphaLike, ref: torch.Tensor) -> torch.Tensor:
    """Validate alpha and shape it to broadcast against `ref` (rows of embeddings)."""
    a = torch.as_tensor(alpha, dtype=ref.dtype, device=ref.device)
    if a.ndim > 1:
        raise ValueError(f"alpha must be a scalar or a (B,) vector, got shape {tuple(a.shape)}")
    if a.ndim == 1 and (ref.ndim != 2 or a.shape[0] != ref.shape[0]):
        raise ValueError(f"per-row alpha of length {a.shape[0]} does not match embeddings {tuple(ref.shape)}")
    if not bool(torch.all((a >= 0) & (a <= 1))):
        raise ValueError("alpha (the text weight) must lie in [0, 1]")
    return a.unsqueeze(-1) if a.ndim == 1 else a


def _orthogonal(v: torch.Tensor) -> torch.Tensor:
    """A unit vector orthogonal to each unit row of v, chosen deterministically."""
    basis = torch.zeros_like(v)
    basis.scatter_(-1, v.abs().argmin(dim=-1, keepdim=True), 1.0)
    return l2_normalize(basis - (basis * v).sum(-1, keepdim=True) * v)


def slerp(v: torch.Tensor, w: torch.Tensor, alpha: AlphaLike) -> torch.Tensor:
    """Spherical interpolation from image v (alpha=0) to text w (alpha=1); unit rows, finite grads.

    v, w: (D,) or (B, D); alpha: float or (B,). Near-parallel inputs fall back to normalised
    linear interpolation; antipodal inputs rotate from v through a fixed orthogonal direction.
    """
    if v.shape != w.shape or v.ndim not in (1, 2):
        raise ValueError(f"slerp needs v and w of equal shape (D,) or (B, D), got {tuple(v.shape)} and {tuple(w.shape)}")
    v, w = l2_normalize(v), l2_normalize(w)
    a = _alpha_column(alpha, v)
    dot = (v * w).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    parallel = dot > PARALLEL_DOT
    antipodal = dot < -PARALLEL_DOT
    general = ~(parallel | antipodal)

    # Each branch is fed safe values where it is not selected, so no NaN reaches any gradient.
    theta = torch.acos(torch.where(general, dot, torch.zeros_like(dot)))
    sin_t = torch.sin(theta)
    spherical = (torch.sin((1 - a) * theta) * v + torch.sin(a * theta) * w) / sin_t
    linear_mix = (1 - a) * v + a * w

    residual = w - dot * v
    res_norm = residual.norm(dim=-1, keepdim=True)
    away = torch.where(res_norm > 1e-6, residual / res_norm.clamp_min(1e-6), _orthogonal(v))
    half_turn = torch.cos(a * torch.pi) * v + torch.sin(a * torch.pi) * away

    out = torch.where(general, spherical, torch.where(parallel, linear_mix, half_turn))
    return l2_normalize(out)


def linear(v: torch.Tensor, w: torch.Tensor, alpha: AlphaLike) -> torch.Tensor:
    """The 'mixture' baseline: normalize((1 - alpha) v + alpha w) of the normalised inputs."""
    v, w = l2_normalize(v), l2_normalize(w)
    a = _alpha_column(alpha, v)
    return l2_normalize((1 - a) * v + a * w)


def image_only(v: torch.Tensor, w: torch.Tensor, alpha: AlphaLike = 0.0) -> torch.Tensor:
    """Baseline that ignores the text: the normalised image embedding."""
    return l2_normalize(v)


def text_only(v: torch.Tensor, w: torch.Tensor, alpha: AlphaLike = 1.0) -> torch.Tensor:
    """Baseline that ignores the image: the normalised text embedding."""
    return l2_normalize(w)


_FUSERS: dict[str, Callable[..., torch.Tensor]] = {
    "slerp": slerp,
    "linear": linear,
    "image": image_only,
    "text": text_only,
}


def get_fusion(name: str) -> Callable[..., torch.Tensor]:
    """Look up a fusion function by name (slerp, linear, image, text)."""
    try:
        return _FUSERS[name]
    except KeyError:
        raise ValueError(f"unknown fusion {name!r}; choose one of {', '.join(FUSIONS)}") from None


def fuse(name: str, v: ArrayLike, w: ArrayLike, alpha: AlphaLike) -> ArrayLike:
    """Compose queries with the named fusion; numpy in gives float32 numpy out, torch in torch out."""
    fn = get_fusion(name)
    if isinstance(v, np.ndarray) or isinstance(w, np.ndarray):
        tv = torch.from_numpy(np.asarray(v, dtype=np.float32))
        tw = torch.from_numpy(np.asarray(w, dtype=np.float32))
        ta = torch.from_numpy(np.asarray(alpha, dtype=np.float32)) if isinstance(alpha, np.ndarray) else alpha
        with torch.no_grad():
            return fn(tv, tw, ta).numpy().astype(np.float32, copy=False)
    return fn(v, w, alpha)


# DEFAULT_ALPHA and FUSIONS live in cir.defaults (importable without torch) and are re-exported here.
__all__ = ["DEFAULT_ALPHA", "FUSIONS", "PARALLEL_DOT", "fuse", "get_fusion", "image_only", "l2_normalize", "linear",
           "slerp", "text_only"]
