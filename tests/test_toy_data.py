"""Tests for jgan.data's mixture-of-Gaussians samplers."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jgan import data

N = 20_000


def _nearest(x, centers):
    x, centers = np.asarray(x, np.float64), np.asarray(centers, np.float64)
    d2 = ((x[:, None, :] - centers[None, :, :]) ** 2).sum(-1)
    return d2.argmin(1)


SAMPLERS = [
    pytest.param(data.ring, {}, lambda: data.ring_centers(), 0.02, id="ring"),
    pytest.param(
        data.ring,
        dict(modes=5, radius=1.0, std=0.01),
        lambda: data.ring_centers(modes=5, radius=1.0),
        0.01,
        id="ring5",
    ),
    pytest.param(data.grid, {}, lambda: data.grid_centers(), 0.05, id="grid"),
    pytest.param(
        data.grid,
        dict(side=3, spacing=1.0, std=0.1),
        lambda: data.grid_centers(side=3, spacing=1.0),
        0.1,
        id="grid3",
    ),
]


# ----------------------------------------------------------------- centres


def test_ring_centers_angles_are_exact_and_distinct():
    for modes in (1, 3, 8, 16):
        c = np.asarray(data.ring_centers(modes=modes, radius=2.0))
        angles = 2 * np.pi * np.arange(modes) / modes
        expected = 2.0 * np.stack([np.cos(angles), np.sin(angles)], -1)
        np.testing.assert_allclose(c, expected, atol=1e-6)
        chex.assert_shape(c, (modes, 2))
        # No duplicate centre (the 0 / 2 pi bug): all pairwise distances are
        # at least the chord between neighbours.
        if modes > 1:
            d = np.linalg.norm(c[:, None] - c[None], axis=-1)
            d = d[~np.eye(modes, dtype=bool)]
            chord = 2 * 2.0 * np.sin(np.pi / modes)
            assert d.min() == pytest.approx(chord, rel=1e-5)
    np.testing.assert_allclose(
        np.arctan2(*np.asarray(data.ring_centers())[:, ::-1].T) % (2 * np.pi),
        2 * np.pi * np.arange(8) / 8,
        atol=1e-6,
    )


def test_grid_centers_equal_meshgrid_set():
    c = np.asarray(data.grid_centers())
    chex.assert_shape(c, (25, 2))
    xx, yy = np.meshgrid([-4, -2, 0, 2, 4], [-4, -2, 0, 2, 4])
    expected = {(float(a), float(b)) for a, b in zip(xx.ravel(), yy.ravel())}
    assert {tuple(map(float, row)) for row in c} == expected
    c3 = np.asarray(data.grid_centers(side=4, spacing=1.0))
    coords = np.array([-1.5, -0.5, 0.5, 1.5])
    xx, yy = np.meshgrid(coords, coords, indexing="ij")
    np.testing.assert_array_equal(c3, np.stack([xx.ravel(), yy.ravel()], -1))


# ----------------------------------------------------------------- samplers


@pytest.mark.parametrize("sampler, kwargs, centers_fn, std", SAMPLERS)
def test_shape_dtype_uniform_modes_and_noise_std(sampler, kwargs, centers_fn, std):
    x = sampler(jax.random.key(0), N, **kwargs)
    chex.assert_shape(x, (N, 2))
    assert x.dtype == jnp.float32
    centers = np.asarray(centers_fn())
    m = len(centers)
    idx = _nearest(x, centers)
    # Uniform mode assignment: chi-square goodness of fit to uniform.
    counts = np.bincount(idx, minlength=m)
    assert stats.chisquare(counts).pvalue > 1e-3, counts
    # Isotropic noise of the requested std around the assigned centre.
    resid = np.asarray(x, np.float64) - centers[idx]
    np.testing.assert_allclose(resid.mean(0), 0.0, atol=4 * std / np.sqrt(N))
    np.testing.assert_allclose(resid.std(0), std, rtol=0.03)
    assert abs(np.corrcoef(resid.T)[0, 1]) < 0.03


def test_non_uniform_assignment_would_fail_chi_square():
    # The chi-square bound above has teeth: a 9-mode assignment folded onto
    # 8 modes (the duplicated 0 / 2 pi mode bug) is rejected.
    idx = np.random.default_rng(0).integers(0, 9, N) % 8
    assert stats.chisquare(np.bincount(idx, minlength=8)).pvalue < 1e-6


def test_zero_std_puts_samples_exactly_on_centres():
    x = data.ring(jax.random.key(1), N, std=0.0)
    c = np.asarray(data.ring_centers())
    np.testing.assert_array_equal(np.asarray(x), c[_nearest(x, c)])


@pytest.mark.parametrize("sampler", [data.ring, data.grid])
def test_determinism(sampler):
    a = sampler(jax.random.key(3), N)
    b = sampler(jax.random.key(3), N)
    c = sampler(jax.random.key(4), N)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))


@pytest.mark.parametrize(
    "sampler, static", [(data.ring, ("n", "modes")), (data.grid, ("n", "side"))]
)
def test_jit_matches_eager_and_traces_once(sampler, static):
    jitted = jax.jit(chex.assert_max_traces(sampler, n=1), static_argnames=static)
    key = jax.random.key(5)
    np.testing.assert_allclose(
        np.asarray(jitted(key, N, std=0.1)),
        np.asarray(sampler(key, N, std=0.1)),
        rtol=1e-6,
        atol=1e-6,
    )
    jitted(jax.random.key(6), N, std=0.2)  # traced std: no retrace


def test_partial_jit_and_traced_radius():
    f = jax.jit(functools.partial(data.ring, n=64, modes=4))
    x = f(jax.random.key(0), radius=jnp.float32(3.0), std=0.0)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(x), axis=1), 3.0, rtol=1e-6)


def test_float64(x64):
    x = data.grid(jax.random.key(0), 10, dtype=jnp.float64)
    assert x.dtype == jnp.float64
    assert data.ring_centers(dtype=jnp.float64).dtype == jnp.float64


# ----------------------------------------------------------------- presets


@pytest.mark.parametrize(
    "name, m, radius, std",
    [("ring", 8, 2.0, 0.02), ("ring_pacgan", 8, 1.0, 0.01), ("grid", 25, None, 0.05)],
)
def test_presets(name, m, radius, std):
    spec = data.mixture(name)
    assert spec.name == name and spec.std == std
    chex.assert_shape(spec.centers, (m, 2))
    if radius is not None:
        np.testing.assert_allclose(
            np.linalg.norm(np.asarray(spec.centers), axis=1), radius, rtol=1e-6
        )
    else:
        np.testing.assert_array_equal(spec.centers, data.grid_centers())
    x = data.sample_mixture(jax.random.key(0), N, spec)
    chex.assert_shape(x, (N, 2))
    resid = np.asarray(x) - np.asarray(spec.centers)[_nearest(x, spec.centers)]
    np.testing.assert_allclose(resid.std(0), std, rtol=0.03)


def test_mixture_overrides_and_sample_matches_ring():
    spec = data.mixture("ring", modes=5, radius=1.5, std=0.1)
    np.testing.assert_array_equal(spec.centers, data.ring_centers(modes=5, radius=1.5))
    assert spec.std == 0.1
    key = jax.random.key(9)
    expected = data.ring(key, N, modes=5, radius=1.5, std=0.1)
    np.testing.assert_array_equal(data.sample_mixture(key, N, spec), expected)
    f = jax.jit(functools.partial(data.sample_mixture, n=N, spec=spec))
    np.testing.assert_allclose(f(key), expected, atol=1e-6)


def test_mixture_unknown_name_lists_known():
    with pytest.raises(ValueError, match="grid.*ring.*ring_pacgan"):
        data.mixture("spiral")
    with pytest.raises(ValueError, match="unknown settings"):
        data.mixture("grid", radius=3.0)


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda k: data.ring(k, 0), "n must be >= 1"),
        (lambda k: data.ring(k, -3), "n must be >= 1"),
        (lambda k: data.ring(k, 10, modes=0), "modes must be >= 1"),
        (lambda k: data.ring(k, 10, std=-0.1), "std"),
        (lambda k: data.ring(k, 10, radius=0.0), "radius"),
        (lambda k: data.ring(k, 10, radius=-1.0), "radius"),
        (lambda k: data.ring(k, 10, std=float("nan")), "std"),
        (lambda k: data.grid(k, 0), "n must be >= 1"),
        (lambda k: data.grid(k, 10, side=0), "side must be >= 1"),
        (lambda k: data.grid(k, 10, spacing=0.0), "spacing"),
        (lambda k: data.grid(k, 10, std=-1.0), "std"),
        (lambda k: data.grid(k, 10, std=jnp.ones(2)), "std must be a scalar"),
        (lambda k: data.mixture("ring", std=-1.0), "std"),
        (lambda k: data.ring_centers(modes=0), "modes"),
        (lambda k: data.grid_centers(spacing=-2.0), "spacing"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call(jax.random.key(0))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda k: data.ring(k, 2.5), "n must be a Python int .*static"),
        (lambda k: data.ring(k, 10, modes=8.0), "modes must be a Python int"),
        (lambda k: data.grid(k, 10, side=True), "side must be a Python int"),
    ],
)
def test_non_int_count_raises_type_error(call, match):
    with pytest.raises(TypeError, match=match):
        call(jax.random.key(0))


def test_traced_count_raises_clear_error():
    with pytest.raises(TypeError, match="static"):
        jax.jit(data.ring)(jax.random.key(0), 10)
