"""Tests for jgan.metrics.sliced_wasserstein against POT and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from jgan.metrics import sliced_wasserstein, sliced_wasserstein_projections

_SETTINGS = settings(deadline=None, max_examples=15, derandomize=True)


def _clouds(seed, n, m, d):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(m, d)) * rng.uniform(0.5, 2.0, size=d) + 0.7
    a = rng.uniform(0.1, 1.0, size=n)
    b = rng.uniform(0.1, 1.0, size=m)
    return x, y, a / a.sum(), b / b.sum()


@pytest.mark.parametrize("p", [1, 2, 1.5])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("n, m, d", [(30, 17, 4), (8, 25, 1), (40, 40, 10)])
def test_matches_pot_with_the_same_projections_float64(p, weighted, n, m, d, x64):
    x, y, a, b = _clouds(n + m + d, n, m, d)
    if not weighted:
        a = b = None
    key = jax.random.key(n * m)
    projections = sliced_wasserstein_projections(key, d, num_projections=20, dtype=jnp.float64)
    ours = sliced_wasserstein(x, y, key=key, num_projections=20, p=p, a=a, b=b)
    pot = ot.sliced_wasserstein_distance(x, y, a, b, projections=np.asarray(projections), p=p)
    assert ours.dtype == jnp.float64 and ours.shape == ()
    np.testing.assert_allclose(ours, pot, rtol=1e-13)


def test_matches_pot_float32():
    x, y, a, b = _clouds(1, 50, 37, 6)
    x, y, a, b = (v.astype(np.float32) for v in (x, y, a, b))
    key = jax.random.key(3)
    projections = np.asarray(sliced_wasserstein_projections(key, 6, num_projections=30), np.float64)
    ours = sliced_wasserstein(x, y, key=key, num_projections=30, a=a, b=b)
    assert ours.dtype == jnp.float32
    pot = ot.sliced_wasserstein_distance(
        *(v.astype(np.float64) for v in (x, y, a, b)), projections=projections, p=2
    )
    np.testing.assert_allclose(ours, pot, rtol=2e-5)


def test_one_dimension_is_the_exact_wasserstein_distance(x64):
    # In 1-D every direction is +1 or -1: SW_1 is W_1 (scipy, weighted).
    x, y, a, b = _clouds(2, 23, 14, 1)
    ours = sliced_wasserstein(x, y, key=jax.random.key(0), num_projections=5, p=1, a=a, b=b)
    reference = scipy.stats.wasserstein_distance(x[:, 0], y[:, 0], a, b)
    np.testing.assert_allclose(ours, reference, rtol=1e-13)


def test_projections_are_unit_columns_and_the_same_in_every_dtype(x64):
    key = jax.random.key(7)
    p32 = sliced_wasserstein_projections(key, 5, num_projections=40)
    p64 = sliced_wasserstein_projections(key, 5, num_projections=40, dtype=jnp.float64)
    assert p32.shape == p64.shape == (5, 40)
    assert p32.dtype == jnp.float32 and p64.dtype == jnp.float64
    np.testing.assert_allclose(np.linalg.norm(p64, axis=0), 1.0, rtol=1e-15)
    np.testing.assert_allclose(p32, p64, rtol=1e-6, atol=1e-7)
    other = sliced_wasserstein_projections(jax.random.key(8), 5, num_projections=40)
    assert not np.allclose(other, p32)


def test_zero_between_a_set_and_its_permutation():
    x, _, a, _ = _clouds(3, 31, 2, 7)
    x, a = x.astype(np.float32), a.astype(np.float32)
    order = np.random.default_rng(0).permutation(31)
    key = jax.random.key(1)
    assert sliced_wasserstein(x, x[order], key=key) == 0.0
    assert sliced_wasserstein(x, x[order], key=key, a=a, b=a[order], p=1) == 0.0


def test_jit_with_traced_p_and_weights_gives_the_eager_value():
    x, y, a, b = (v.astype(np.float32) for v in _clouds(4, 20, 15, 3))
    key = jax.random.key(2)
    jitted = jax.jit(sliced_wasserstein, static_argnames="num_projections")
    for p in (1.0, 2.0):
        np.testing.assert_allclose(
            jitted(x, y, key=key, num_projections=16, p=p, a=a, b=b),
            sliced_wasserstein(x, y, key=key, num_projections=16, p=p, a=a, b=b),
            rtol=1e-6,
        )


def test_gradient_matches_finite_differences(x64):
    x, y, a, b = _clouds(5, 9, 7, 3)
    key = jax.random.key(4)
    check_grads(
        jax.jit(lambda x, y: sliced_wasserstein(x, y, key=key, num_projections=8, a=a, b=b)),
        (x, y), order=1, modes=["rev"], eps=1e-6,
    )


# ------------------------------------------------------------- properties


_seeds = st.integers(0, 2**32 - 1)


@_SETTINGS
@given(seed=_seeds, d=st.sampled_from([1, 3]), p=st.sampled_from([1.0, 2.0, 3.0]),
       weighted=st.booleans())
def test_symmetric_and_a_shared_translation_changes_nothing(seed, d, p, weighted):
    x, y, a, b = _clouds(seed, 12, 9, d)
    if not weighted:
        a = b = None
    shift = np.random.default_rng(seed).normal(size=d) * 10
    key = jax.random.key(seed % 1000)
    with jax.enable_x64(True):
        forward = sliced_wasserstein(x, y, key=key, num_projections=10, p=p, a=a, b=b)
        backward = sliced_wasserstein(y, x, key=key, num_projections=10, p=p, a=b, b=a)
        moved = sliced_wasserstein(x + shift, y + shift, key=key, num_projections=10, p=p, a=a, b=b)
    np.testing.assert_allclose(backward, forward, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(moved, forward, rtol=1e-9, atol=1e-12)


@_SETTINGS
@given(seed=_seeds, d=st.sampled_from([1, 3]), p=st.sampled_from([1.0, 2.0, 3.0]))
def test_translating_one_set_by_t_gives_the_projected_shift(seed, d, p):
    # Along direction theta the translate's quantiles move by <theta, t>, so
    # SW_p(x, x + t) = (mean_l |<theta_l, t>|^p)^(1/p) exactly.
    x, _, a, _ = _clouds(seed, 12, 2, d)
    t = np.random.default_rng(seed + 1).normal(size=d)
    key = jax.random.key(seed % 1000)
    with jax.enable_x64(True):
        ours = sliced_wasserstein(x, x + t, key=key, num_projections=10, p=p, a=a, b=a)
        theta = sliced_wasserstein_projections(key, d, num_projections=10, dtype=jnp.float64)
    expected = np.mean(np.abs(t @ np.asarray(theta)) ** p) ** (1 / p)
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------- bad input


_X = np.arange(12.0, dtype=np.float32).reshape(4, 3)
_Y = _X[:3] + 0.5
_KEY = jax.random.key(0)


def _with(a, index, value):
    a = a.copy()
    a[index] = value
    return a


@pytest.mark.parametrize(
    "x, y, kwargs, match",
    [
        (_X[:, 0], _Y, {}, r"x must be \[n, d\], got shape \(4,\)"),
        (_X, _Y[None], {}, r"y must be \[m, d\], got shape \(1, 3, 3\)"),
        (_X[:0], _Y, {}, r"x must hold at least one point of dimension d >= 1, got shape \(0, 3\)"),
        (_X, _Y[:, :2], {}, r"same dimension d, got x \(4, 3\) and y \(3, 2\)"),
        (_X, _Y, {"num_projections": 0}, r"num_projections must be >= 1, got 0"),
        (_X, _Y, {"p": 0.5}, r"p must be >= 1 .*got 0.5"),
        (_X, _Y, {"p": np.inf}, r"p must be finite"),
        (_X, _Y, {"a": np.ones(3) / 3},
         r"a must have shape \[4\] \(one weight per point of x\), got \(3,\)"),
        (_X, _Y, {"b": np.array([1.5, -0.5, 0.0])},
         r"b must be finite and non-negative, got min -0.5"),
        (_X, _Y, {"a": np.ones(4)}, r"a must sum to 1, got 4.0"),
        (_with(_X, (2, 1), np.nan), _Y, {}, r"x holds 1 non-finite value \(1 NaN.*\(2, 1\)"),
        (_X, _with(_Y, (0, 0), -np.inf), {}, r"y holds 1 non-finite value \(0 NaN, 1 inf"),
        (_X.astype(np.complex64), _Y, {}, r"x must be real"),
    ],
)
def test_bad_input_raises_naming_the_argument(x, y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sliced_wasserstein(x, y, key=_KEY, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"key": 0}, r"key must be a PRNG key"),
        ({"key": _KEY, "num_projections": 5.0}, r"num_projections must be a Python int"),
        ({"key": _KEY, "p": True}, r"p must be a real number"),
        ({"key": _KEY, "p": "2"}, r"p must be a real number"),
    ],
)
def test_bad_types_raise_type_errors(kwargs, match):
    with pytest.raises(TypeError, match=match):
        sliced_wasserstein(_X, _Y, **kwargs)


def test_projections_helper_refuses_bad_arguments():
    with pytest.raises(ValueError, match=r"dim must be >= 1, got 0"):
        sliced_wasserstein_projections(_KEY, 0)
    with pytest.raises(ValueError, match=r"num_projections must be >= 1, got 0"):
        sliced_wasserstein_projections(_KEY, 3, num_projections=0)
    with pytest.raises(TypeError, match=r"dtype must be a float dtype"):
        sliced_wasserstein_projections(_KEY, 3, dtype=jnp.int32)
    with pytest.raises(TypeError, match=r"key must be a PRNG key"):
        sliced_wasserstein_projections(None, 3)
