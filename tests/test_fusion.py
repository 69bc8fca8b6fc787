"""Slerp and its baselines against an independent reference and at the degenerate angles."""

import numpy as np
import pytest
import torch
from scipy.spatial import geometric_slerp

from cir.fusion import PARALLEL_DOT, fuse, get_fusion, l2_normalize, linear, slerp


def _unit(rng, shape):
    x = rng.standard_normal(shape)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 0.8, 0.9, 1.0])
def test_matches_scipy_geometric_slerp(alpha):
    rng = np.random.default_rng(0)
    v, w = _unit(rng, (16, 64)), _unit(rng, (16, 64))
    got = slerp(torch.from_numpy(v), torch.from_numpy(w), alpha).numpy()
    want = np.stack([geometric_slerp(v[i], w[i], alpha) for i in range(16)])
    np.testing.assert_allclose(got, want, atol=1e-10)


def test_endpoints_and_unit_norm_for_unnormalised_inputs():
    rng = np.random.default_rng(1)
    v = torch.from_numpy(rng.standard_normal((8, 32)) * 5)
    w = torch.from_numpy(rng.standard_normal((8, 32)) * 0.1)
    torch.testing.assert_close(slerp(v, w, 0.0), l2_normalize(v))
    torch.testing.assert_close(slerp(v, w, 1.0), l2_normalize(w))
    out = slerp(v, w, 0.37)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(8, dtype=out.dtype))


def test_batched_equals_row_by_row_with_per_row_alpha():
    rng = np.random.default_rng(2)
    v, w = torch.from_numpy(_unit(rng, (10, 16))), torch.from_numpy(_unit(rng, (10, 16)))
    alpha = torch.linspace(0, 1, 10, dtype=v.dtype)
    batched = slerp(v, w, alpha)
    for i in range(10):
        torch.testing.assert_close(batched[i], slerp(v[i], w[i], float(alpha[i])))


def _grads(v, w, alpha):
    v = v.clone().requires_grad_()
    w = w.clone().requires_grad_()
    out = slerp(v, w, alpha)
    (out * torch.arange(out.shape[-1], dtype=out.dtype)).sum().backward()
    return out, v.grad, w.grad


@pytest.mark.parametrize("case", ["identical", "nearly_identical", "opposite", "nearly_opposite"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_degenerate_angles_are_finite_in_value_and_gradient(case, dtype):
    gen = torch.Generator().manual_seed(3)
    v = l2_normalize(torch.randn(4, 32, generator=gen, dtype=dtype))
    noise = 1e-4 * torch.randn(4, 32, generator=gen, dtype=dtype)
    w = {"identical": v.clone(), "nearly_identical": v + noise,
         "opposite": -v, "nearly_opposite": -v + noise}[case]
    for alpha in (0.0, 0.5, 0.8, 1.0):
        out, gv, gw = _grads(v, w, alpha)
        assert torch.isfinite(out).all() and torch.isfinite(gv).all() and torch.isfinite(gw).all()
        torch.testing.assert_close(out.norm(dim=-1), torch.ones(4, dtype=dtype))


def test_identical_inputs_return_that_vector():
    v = l2_normalize(torch.randn(3, 16))
    torch.testing.assert_close(slerp(v, v.clone(), 0.8), v)


def test_antipodal_path_is_a_half_turn_through_an_orthogonal_direction():
    v = l2_normalize(torch.randn(5, 16, dtype=torch.float64))
    mid = slerp(v, -v, 0.5)
    torch.testing.assert_close((mid * v).sum(-1), torch.zeros(5, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(slerp(v, -v, 1.0), -v)
    # at a quarter of the way the angle to v is a quarter of pi
    quarter = (slerp(v, -v, 0.25) * v).sum(-1)
    torch.testing.assert_close(quarter, torch.full((5,), np.cos(np.pi / 4), dtype=torch.float64))


def test_parallel_cutoff_is_continuous():
    # just inside and just outside the cutoff give nearly the same fused vector
    v = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    for dot in (PARALLEL_DOT - 1e-6, PARALLEL_DOT + 1e-6):
        w = torch.tensor([dot, np.sqrt(1 - dot**2), 0.0], dtype=torch.float64)
        expected = torch.tensor([np.cos(0.8 * np.arccos(dot)), np.sin(0.8 * np.arccos(dot)), 0.0],
                                dtype=torch.float64)
        torch.testing.assert_close(slerp(v, w, 0.8), expected, atol=1e-6, rtol=0)


def test_linear_baseline_and_named_fusions():
    rng = np.random.default_rng(4)
    v, w = _unit(rng, (6, 8)).astype(np.float32), _unit(rng, (6, 8)).astype(np.float32)
    want = (0.3 * v + 0.7 * w) / np.linalg.norm(0.3 * v + 0.7 * w, axis=1, keepdims=True)
    np.testing.assert_allclose(fuse("linear", v, w, 0.7), want, atol=1e-6)
    np.testing.assert_allclose(fuse("image", v, w, 0.7), v, atol=1e-6)
    np.testing.assert_allclose(fuse("text", v, w, 0.7), w, atol=1e-6)
    assert fuse("slerp", v, w, 0.7).dtype == np.float32
    assert get_fusion("linear") is linear


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_alpha_out_of_range_is_rejected(bad):
    v = torch.randn(2, 4)
    with pytest.raises(ValueError, match="alpha"):
        slerp(v, v, bad)


def test_bad_shapes_and_names_are_rejected():
    with pytest.raises(ValueError):
        slerp(torch.randn(3, 4), torch.randn(2, 4), 0.5)
    with pytest.raises(ValueError, match="per-row alpha"):
        slerp(torch.randn(3, 4), torch.randn(3, 4), torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="unknown fusion"):
        get_fusion("average")


def test_numpy_l2_normalize_keeps_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]])
