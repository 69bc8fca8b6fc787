"""Query composition on the unit sphere: Slerp (arXiv 2405.00571), its baselines, the spherical
mean of several references, the push away from a negative text, and the one L2 normalisation.

`alpha` is always the TEXT weight: alpha = 0 returns the image embedding, alpha = 1 the text
embedding. Every caller (engine, indexer, evaluation, training reports) goes through `fuse` or
`compose`, so that a query is composed the same way everywhere.
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
# How far a query is pushed away from a negative text when no weight is given (beta).
DEFAULT_NEGATIVE_WEIGHT = 0.3
# Karcher-mean iteration: stop when the step is below MEAN_TOL radians, or after MEAN_MAX_ITER.
MEAN_TOL = 1e-9
MEAN_MAX_ITER = 100
# A weighted Euclidean mean shorter than this has no direction (e.g. two opposite vectors).
DEGENERATE_NORM = 1e-9


def l2_normalize(x: ArrayLike, dim: int = -1, eps: float = 1e-12) -> ArrayLike:
    """Return x scaled to unit L2 norm along `dim` (torch or numpy, zero rows stay zero)."""
    if isinstance(x, np.ndarray):
        norm = np.linalg.norm(x, axis=dim, keepdims=True)
        return (x / np.maximum(norm, eps)).astype(x.dtype, copy=False)
    return x / x.norm(dim=dim, keepdim=True).clamp_min(eps)


def _torch(x: ArrayLike | None) -> torch.Tensor | None:
    """float32 torch view of a numpy array (torch tensors and None pass through)."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) if isinstance(x, np.ndarray) else x


def _numpy_or_torch(fn: Callable[..., torch.Tensor], *args):
    """Run fn on torch tensors; if any argument is numpy: float32 numpy in, no autograd, float32 numpy out."""
    if not any(isinstance(a, np.ndarray) for a in args):
        return fn(*args)
    with torch.no_grad():
        return fn(*(_torch(a) for a in args)).numpy().astype(np.float32, copy=False)


def _alpha_column(alpha: AlphaLike, ref: torch.Tensor, name: str = "alpha (the text weight)") -> torch.Tensor:
    """Validate a weight in [0, 1] (scalar or per row) and shape it to broadcast against `ref`."""
    a = torch.as_tensor(alpha, dtype=ref.dtype, device=ref.device)
    if a.ndim > 1:
        raise ValueError(f"{name} must be a scalar or a (B,) vector, got shape {tuple(a.shape)}")
    if a.ndim == 1 and (ref.ndim != 2 or a.shape[0] != ref.shape[0]):
        raise ValueError(f"per-row {name} of length {a.shape[0]} does not match embeddings {tuple(ref.shape)}")
    if not bool(torch.all((a >= 0) & (a <= 1))):
        raise ValueError(f"{name} must lie in [0, 1]")
    return a.unsqueeze(-1) if a.ndim == 1 else a


def _orthogonal(v: torch.Tensor) -> torch.Tensor:
    """A unit vector orthogonal to each unit row of v, chosen deterministically."""
    basis = torch.zeros_like(v)
    basis.scatter_(-1, v.abs().argmin(dim=-1, keepdim=True), 1.0)
    return l2_normalize(basis - (basis * v).sum(-1, keepdim=True) * v)


def _check_pair(v: torch.Tensor, w: torch.Tensor, what: str) -> None:
    if v.shape != w.shape or v.ndim not in (1, 2):
        raise ValueError(f"{what} needs two inputs of equal shape (D,) or (B, D), got {tuple(v.shape)} and {tuple(w.shape)}")


def _great_circle(v: torch.Tensor, w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The point at a times the arc from unit v toward unit w (a may be < 0 or > 1: the circle goes on)."""
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


def slerp(v: torch.Tensor, w: torch.Tensor, alpha: AlphaLike) -> torch.Tensor:
    """Spherical interpolation from image v (alpha=0) to text w (alpha=1); unit rows, finite grads.

    v, w: (D,) or (B, D); alpha: float or (B,). Near-parallel inputs fall back to normalised
    linear interpolation; antipodal inputs rotate from v through a fixed orthogonal direction.
    """
    _check_pair(v, w, "slerp")
    v, w = l2_normalize(v), l2_normalize(w)
    return _great_circle(v, w, _alpha_column(alpha, v))


def _push(c: torch.Tensor, n: torch.Tensor, beta: AlphaLike) -> torch.Tensor:
    _check_pair(c, n, "negative")
    c, n = l2_normalize(c), l2_normalize(n)
    return _great_circle(c, n, -_alpha_column(beta, c, "beta (the negative weight)"))


def negative(c: ArrayLike, n: ArrayLike, beta: AlphaLike) -> ArrayLike:
    """Move query c away from negative n: slerp(c, n, -beta), the arc from n to c extended past c by beta.

    c, n: (D,) or (B, D); beta in [0, 1], a float or (B,); beta = 0 returns c. The safeguards are
    slerp's: c close to n moves (barely) along c - n; c opposite n turns through slerp's fixed
    orthogonal direction. An arc longer than pi / (1 + beta) runs on past the antipode of n (the
    great circle continues; CLIP-family embeddings sit well within 90 degrees of each other, so
    queries do not get there). numpy in gives float32 numpy out.
    """
    return _numpy_or_torch(_push, c, n, beta)


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
        return _numpy_or_torch(fn, np.asarray(v), np.asarray(w), alpha)
    return fn(v, w, alpha)


def _weight_rows(weights, x: torch.Tensor) -> torch.Tensor:
    """Validated weights for x (..., N, D), normalised to sum 1 per set, shaped (..., N, 1)."""
    n = x.shape[-2]
    if weights is None:
        return torch.full((*x.shape[:-1], 1), 1.0 / n, dtype=x.dtype, device=x.device)
    w = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
    if w.shape not in ((n,), x.shape[:-1]):
        raise ValueError(f"got {tuple(w.shape)} weights for {n} vectors; give one weight per vector")
    if not bool(torch.all(torch.isfinite(w) & (w >= 0))):
        raise ValueError("weights must be finite and >= 0")
    heaviest = w.amax(-1, keepdim=True)
    if not bool(torch.all(heaviest > 0)):
        raise ValueError("weights must not all be 0")
    # scaled to at most 1 first: a sum of huge float32 weights (3e38 + 3e38) would overflow to inf
    w = w / heaviest
    return (w / w.sum(-1, keepdim=True)).expand(x.shape[:-1]).unsqueeze(-1)


def check_weights(weights, count: int) -> None:
    """Raise ValueError unless `weights` are `count` finite, non-negative numbers, not all 0."""
    _weight_rows(weights, torch.zeros(count, 1, dtype=torch.float64))


def _log_map(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Tangent vectors at unit m toward unit rows x, as long as the arcs (an antipode: pi along a fixed direction)."""
    dot = (m * x).sum(-1, keepdim=True)
    residual = x - dot * m
    # the clamped square keeps the gradient finite where x == m
    res_norm = (residual * residual).sum(-1, keepdim=True).clamp_min(1e-300).sqrt()
    theta = torch.atan2(res_norm, dot)  # accurate at both ends, unlike acos
    antipode = (res_norm < 1e-12) & (dot < 0)
    return torch.where(antipode, torch.pi * _orthogonal(m.expand_as(x)), residual * (theta / res_norm))


def _exp_map(m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The unit point reached from m along tangent t (|t| radians)."""
    length = (t * t).sum(-1, keepdim=True).clamp_min(1e-300).sqrt()
    return l2_normalize(torch.cos(length) * m + torch.sinc(length / torch.pi) * t)


def _karcher(x: torch.Tensor, w: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    euclid = (w * x).sum(-2)
    norm = euclid.norm(dim=-1, keepdim=True)
    heaviest = torch.take_along_dim(x, w.argmax(-2, keepdim=True), dim=-2).squeeze(-2)
    m = torch.where(norm > DEGENERATE_NORM, euclid / norm.clamp_min(DEGENERATE_NORM), heaviest)
    # A set stops moving once its step is below tol, so a set's mean does not depend on its batch.
    done = torch.zeros_like(norm, dtype=torch.bool)
    for _ in range(max_iter):
        step = (w * _log_map(m.unsqueeze(-2), x)).sum(-2)
        done = done | (step.norm(dim=-1, keepdim=True) < tol)
        if bool(done.all()):
            break
        m = torch.where(done, m, _exp_map(m, step))
    return m


def spherical_mean(vectors: ArrayLike, weights=None, tol: float = MEAN_TOL, max_iter: int = MEAN_MAX_ITER) -> ArrayLike:
    """Weighted Karcher (Frechet) mean of unit vectors: (N, D) -> (D,), or (B, N, D) -> (B, D).

    Rows are L2-normalised; weights (N,) or (B, N), >= 0, default equal. It iterates the log/exp
    maps (in float64) from the normalised weighted Euclidean mean, or, when that vanishes (e.g.
    two opposite vectors of equal weight), from the heaviest vector; an antipode's direction is
    slerp's fixed orthogonal one, so the mean of two vectors is slerp between them. One vector
    is returned as l2_normalize gives it; numpy in gives float32 numpy out.
    """
    x = _torch(vectors)
    if x.ndim not in (2, 3) or x.shape[-2] < 1:
        raise ValueError(f"spherical_mean needs (N, D) or (B, N, D) vectors, got shape {tuple(x.shape)}")
    w = _weight_rows(_torch(weights) if isinstance(weights, np.ndarray) else weights, x)
    if x.shape[-2] == 1:
        out = l2_normalize(x[..., 0, :])
    else:
        out = _karcher(l2_normalize(x.double()), w.double(), tol, max_iter).to(x.dtype)
    return out.detach().numpy().astype(np.float32, copy=False) if isinstance(vectors, np.ndarray) else out


def _one_per_row(sets: ArrayLike, weights=None) -> ArrayLike:
    """(B, D) as given, or (B, N, D) reduced to (B, D): the only row, or the spherical mean."""
    if sets.ndim == 2:
        return sets
    return sets[:, 0] if sets.shape[1] == 1 else spherical_mean(sets, weights)


def compose(fusion: str, images: ArrayLike | None, texts: ArrayLike | None, alpha: AlphaLike,
            image_weights=None, negatives: ArrayLike | None = None,
            beta: AlphaLike = DEFAULT_NEGATIVE_WEIGHT) -> ArrayLike:
    """B composed queries: each query's references merged, fused with its text, pushed from its negatives.

    images: (B, D) or (B, N, D) (N references each, merged by `spherical_mean` with image_weights);
    texts: (B, D). One of the two may be None: the query is the other side alone. negatives:
    None, (B, D) or (B, K, D); several are merged by their spherical mean first, so beta means the
    same whatever their number and their order does not matter. One reference and no negatives
    is exactly `fuse(fusion, images, texts, alpha)`.
    """
    if images is None and texts is None:
        raise ValueError("a query needs an image or a text")
    v = None if images is None else _one_per_row(images, image_weights)
    v = texts if v is None else v
    c = fuse(fusion, v, v if texts is None else texts, alpha)
    if negatives is None:
        return c
    return negative(c, _one_per_row(negatives), beta)


# DEFAULT_ALPHA and FUSIONS live in cir.defaults (importable without torch) and are re-exported here.
__all__ = ["DEFAULT_ALPHA", "DEFAULT_NEGATIVE_WEIGHT", "FUSIONS", "PARALLEL_DOT", "check_weights", "compose", "fuse",
           "get_fusion", "image_only", "l2_normalize", "linear", "negative", "slerp", "spherical_mean", "text_only"]
