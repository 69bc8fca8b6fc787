"""Several references (spherical mean), the negative push and `compose`, against direct formulas."""

import numpy as np
import pytest
import torch

from cir.fusion import (check_weights, compose, fuse, l2_normalize, negative, slerp, spherical_mean)


def _unit(rng, shape, dtype=np.float64):
    x = rng.standard_normal(shape)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(dtype)


def _arc(a, b):
    return np.arccos(np.clip(np.sum(a * b, -1), -1, 1))


def _frechet(m, x, w):
    return float(np.sum(w * _arc(m[None], x) ** 2))


# --- spherical_mean -------------------------------------------------------------------

@pytest.mark.parametrize("a", [0.0, 0.2, 0.5, 0.9])
def test_mean_of_two_is_slerp_between_them(a):
    rng = np.random.default_rng(0)
    v, w = _unit(rng, (8, 32)), _unit(rng, (8, 32))
    got = spherical_mean(torch.from_numpy(np.stack([v, w], 1)), torch.tensor([1 - a, a], dtype=torch.float64))
    torch.testing.assert_close(got, slerp(torch.from_numpy(v), torch.from_numpy(w), a), atol=1e-9, rtol=0)


@pytest.mark.parametrize("a", [0.5, 0.3, 0.7])
def test_mean_of_opposite_vectors_is_slerps_half_turn(a):
    v = l2_normalize(torch.randn(4, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    got = spherical_mean(torch.stack([v, -v], 1), torch.tensor([1 - a, a], dtype=torch.float64))
    torch.testing.assert_close(got, slerp(v, -v, a), atol=1e-9, rtol=0)
    torch.testing.assert_close(spherical_mean(torch.stack([v, -v], 1), torch.tensor([1 - a, a], dtype=torch.float64)), got)


def test_mean_satisfies_the_karcher_condition_and_minimises_the_frechet_function():
    rng = np.random.default_rng(2)
    centre = _unit(rng, (24,))
    x = l2_normalize(centre + 0.6 * rng.standard_normal((7, 24)))
    w = rng.uniform(0.1, 2.0, 7)
    m = spherical_mean(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    assert abs(np.linalg.norm(m) - 1) < 1e-12
    # independent log maps: the weighted sum of the tangent vectors toward the points vanishes
    theta = _arc(m[None], x)[:, None]
    logs = theta * (x - np.cos(theta) * m) / np.sin(theta)
    assert np.linalg.norm((w[:, None] * logs).sum(0)) < 1e-8
    best = _frechet(m, x, w)
    for _ in range(50):
        other = l2_normalize(m + 1e-3 * rng.standard_normal(24))
        assert _frechet(other, x, w) > best
    # not the Euclidean mean (the points are spread), but close to it
    euclid = l2_normalize((w[:, None] * x).sum(0))
    assert 1e-6 < _arc(m, euclid) < 0.1


def test_one_vector_and_copies_of_one_vector():
    rng = np.random.default_rng(3)
    v = torch.from_numpy(_unit(rng, (5, 64), np.float32))
    assert torch.equal(spherical_mean(v[:1]), l2_normalize(v[0]))
    for n in (2, 3, 8):
        copies = v[0].expand(n, 64)
        torch.testing.assert_close(spherical_mean(copies), v[0], atol=1e-7, rtol=0)
        torch.testing.assert_close(spherical_mean(copies, torch.arange(1.0, n + 1)), v[0], atol=1e-7, rtol=0)


def test_weights_scale_free_order_free_and_batched_equals_per_set():
    rng = np.random.default_rng(4)
    x = torch.from_numpy(_unit(rng, (6, 4, 16)))
    w = torch.from_numpy(rng.uniform(0.0, 3.0, (6, 4)))
    batched = spherical_mean(x, w)
    for i in range(6):
        torch.testing.assert_close(batched[i], spherical_mean(x[i], w[i]), atol=1e-15, rtol=0)
        perm = torch.from_numpy(rng.permutation(4))
        torch.testing.assert_close(spherical_mean(x[i][perm], 10 * w[i][perm]), batched[i], atol=1e-10, rtol=0)
    # a shared (N,) weight vector applies to every set; a zero weight drops that vector
    shared = spherical_mean(x, torch.tensor([1.0, 1.0, 0.0, 2.0]))
    torch.testing.assert_close(shared[2], spherical_mean(x[2][[0, 1, 3]], torch.tensor([1.0, 1.0, 2.0])),
                               atol=1e-10, rtol=0)


def test_numpy_in_float32_numpy_out():
    rng = np.random.default_rng(5)
    x = _unit(rng, (3, 8), np.float32)
    out = spherical_mean(x, np.array([1, 2, 3]))
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (8,)
    np.testing.assert_allclose(out, spherical_mean(torch.from_numpy(x).double(), [1, 2, 3]).numpy(), atol=1e-6)


@pytest.mark.parametrize("case", ["random", "copies", "near_copies", "opposite"])
def test_mean_values_and_gradients_are_finite(case):
    gen = torch.Generator().manual_seed(6)
    v = l2_normalize(torch.randn(16, generator=gen))
    x = {"random": torch.randn(4, 16, generator=gen), "copies": v.expand(4, 16).clone(),
         "near_copies": v + 1e-6 * torch.randn(4, 16, generator=gen), "opposite": torch.stack([v, -v])}[case]
    x.requires_grad_()
    out = spherical_mean(x)
    (out * torch.arange(16.0)).sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    torch.testing.assert_close(out.norm(), torch.tensor(1.0))


@pytest.mark.parametrize("weights, match", [([1.0, -1.0], ">= 0"), ([0.0, 0.0], "all be 0"),
                                            ([1.0, float("nan")], "finite"), ([1.0, 2.0, 3.0], "one weight")])
def test_bad_weights_are_rejected(weights, match):
    x = torch.randn(2, 8)
    with pytest.raises(ValueError, match=match):
        spherical_mean(x, weights)
    with pytest.raises(ValueError, match=match):
        check_weights(weights, 2)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="spherical_mean"):
        spherical_mean(torch.randn(8))
    with pytest.raises(ValueError, match="spherical_mean"):
        spherical_mean(torch.randn(2, 0, 8))


# --- negative -------------------------------------------------------------------------

def _direct(c, n, beta):
    """Rotate from n toward c by (1 + beta) times their angle, in the plane of n and c."""
    theta = _arc(c, n)[:, None]
    u = c - np.cos(theta) * n
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    phi = (1 + np.asarray(beta, dtype=np.float64).reshape(-1, 1)) * theta
    return np.cos(phi) * n + np.sin(phi) * u


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.3, 0.6, 1.0])
def test_negative_matches_the_direct_rotation(beta):
    rng = np.random.default_rng(7)
    c = _unit(rng, (16, 32))
    spread = np.linspace(0.05, 3.0, 16)[:, None]  # from close pairs to nearly orthogonal ones
    n = l2_normalize(c + spread * rng.standard_normal((16, 32)) / np.sqrt(32))
    got = negative(torch.from_numpy(c), torch.from_numpy(n), beta).numpy()
    np.testing.assert_allclose(got, _direct(c, n, beta), atol=1e-10)
    # the arc from n grows by beta times its length (while it stays short of the antipode), and c
    # moves by exactly that
    short = (1 + beta) * _arc(c, n) < np.pi
    assert short.sum() >= 8
    np.testing.assert_allclose(_arc(got, n)[short], (1 + beta) * _arc(c, n)[short], atol=1e-9)
    np.testing.assert_allclose(_arc(got, c), beta * _arc(c, n), atol=1e-6)


def test_negative_per_row_beta_numpy_and_zero_beta():
    rng = np.random.default_rng(8)
    c, n = _unit(rng, (5, 16), np.float32), _unit(rng, (5, 16), np.float32)
    beta = np.linspace(0, 1, 5)
    got = negative(c, n, beta)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_allclose(got, _direct(c.astype(np.float64), n.astype(np.float64), beta), atol=2e-6)
    np.testing.assert_allclose(negative(c, n, 0.0), c, atol=1e-6)
    assert np.all(np.sum(got[1:] * n[1:], -1) < np.sum(c[1:] * n[1:], -1))  # further from the negative


@pytest.mark.parametrize("case", ["identical", "nearly_identical", "opposite", "nearly_opposite"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_negative_at_degenerate_angles_is_finite_in_value_and_gradient(case, dtype):
    gen = torch.Generator().manual_seed(9)
    c = l2_normalize(torch.randn(4, 32, generator=gen, dtype=dtype))
    noise = 1e-4 * torch.randn(4, 32, generator=gen, dtype=dtype)
    n = {"identical": c.clone(), "nearly_identical": c + noise, "opposite": -c, "nearly_opposite": -c + noise}[case]
    for beta in (0.0, 0.3, 1.0):
        cc, nn = c.clone().requires_grad_(), n.clone().requires_grad_()
        out = negative(cc, nn, beta)
        (out * torch.arange(32, dtype=dtype)).sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(cc.grad).all() and torch.isfinite(nn.grad).all()
        torch.testing.assert_close(out.norm(dim=-1), torch.ones(4, dtype=dtype))
    if case == "identical":  # nothing to move away from: the query stays
        torch.testing.assert_close(negative(c, n, 0.5), c)
    if case == "opposite":  # already as far as it gets: it turns on through slerp's fixed direction
        turned = negative(c, n, 0.5)
        torch.testing.assert_close((turned * c).sum(-1), torch.zeros(4, dtype=dtype), atol=1e-6, rtol=0)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_negative_beta_out_of_range_is_rejected(bad):
    v = torch.randn(2, 4)
    with pytest.raises(ValueError, match="beta"):
        negative(v, v, bad)
    with pytest.raises(ValueError, match="negative"):
        negative(torch.randn(2, 4), torch.randn(3, 4), 0.3)


# --- compose --------------------------------------------------------------------------

def _query_parts(seed=10, b=6, d=32):
    rng = np.random.default_rng(seed)
    return rng, _unit(rng, (b, d), np.float32), _unit(rng, (b, d), np.float32)


@pytest.mark.parametrize("fusion", ["slerp", "linear", "image", "text"])
def test_one_reference_without_negatives_is_exactly_fuse(fusion):
    _, v, w = _query_parts()
    want = fuse(fusion, v, w, 0.7)
    assert np.array_equal(compose(fusion, v, w, 0.7), want)
    assert np.array_equal(compose(fusion, v[:, None], w, 0.7), want)
    assert np.array_equal(compose(fusion, v[:1], w[:1], 0.7)[0], fuse(fusion, v[0][None], w[0][None], 0.7)[0])


def test_several_references_and_negatives_compose_in_order():
    rng, v, w = _query_parts()
    refs = _unit(rng, (6, 3, 32), np.float32)
    weights = np.array([1.0, 2.0, 0.5])
    negs = _unit(rng, (6, 2, 32), np.float32)
    mean = spherical_mean(refs, weights)
    fused = fuse("slerp", mean, w, 0.8)
    np.testing.assert_array_equal(compose("slerp", refs, w, 0.8, weights), fused)
    want = negative(fused, spherical_mean(negs), 0.3)
    np.testing.assert_array_equal(compose("slerp", refs, w, 0.8, weights, negs, 0.3), want)
    np.testing.assert_allclose(compose("slerp", refs, w, 0.8, weights, negs[:, ::-1], 0.3), want, atol=1e-6)
    np.testing.assert_array_equal(compose("slerp", refs, w, 0.8, weights, negs[:, :1], 0.3),
                                  negative(fused, negs[:, 0], 0.3))


def test_one_sided_queries_and_torch_in_torch_out():
    _, v, w = _query_parts()
    np.testing.assert_array_equal(compose("text", None, w, 0.8), fuse("text", w, w, 0.8))
    np.testing.assert_array_equal(compose("image", v, None, 0.8), fuse("image", v, v, 0.8))
    out = compose("slerp", torch.from_numpy(v), torch.from_numpy(w), 0.8, negatives=torch.from_numpy(w), beta=0.2)
    assert isinstance(out, torch.Tensor)
    with pytest.raises(ValueError, match="image or a text"):
        compose("slerp", None, None, 0.8)
