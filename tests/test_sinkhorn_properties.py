"""Property tests (hypothesis) of the Sinkhorn divergence: non-negative up to
the solver's tolerance, and the exact translation identity of the squared
Euclidean cost at offsets up to 1e6 in float32."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from jgan.metrics import sinkhorn, sinkhorn_divergence

# Few examples: each draws a new problem for a solver run (the shapes are
# fixed per dimension, so it compiles once per d).
_SETTINGS = settings(deadline=None, max_examples=12, derandomize=True)

_seeds = st.integers(0, 2**32 - 1)
_dims = st.sampled_from([1, 2, 3])
_epsilons = st.sampled_from([0.05, 0.2, 1.0])


def _clouds(seed, d):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(16, d)) * rng.uniform(0.2, 3.0)
    y = rng.normal(size=(12, d)) * rng.uniform(0.2, 3.0) + rng.normal(size=d)
    return x.astype(np.float32), y.astype(np.float32), rng


@_SETTINGS
@given(seed=_seeds, d=_dims, epsilon=_epsilons, cost=st.sampled_from(["sqeuclidean", "euclidean"]))
def test_divergence_is_nonnegative_up_to_the_tolerance(seed, d, epsilon, cost):
    x, y, _ = _clouds(seed, d)
    out = sinkhorn_divergence(x, y, epsilon=epsilon, cost=cost, threshold=1e-4)
    assert bool(out.converged)
    # S >= 0 at the fixed points; float32 and the threshold leave an error
    # of order 1e-5 of the regularised costs it is the difference of.
    scale = abs(float(out.xy.regularized_cost)) + abs(float(out.xx.regularized_cost))
    assert float(out.divergence) >= -1e-5 * (1 + scale), (float(out.divergence), scale)


@_SETTINGS
@given(seed=_seeds, d=_dims, epsilon=_epsilons, exponent=st.floats(-1.0, 6.0))
def test_translation_identity_float32(seed, d, epsilon, exponent):
    # S(x, y + c) = S(x, y) + |c|^2 - 2 <c, x_bar - y_bar>, and likewise the
    # transport cost <P, C> of sinkhorn, for a random c with |c| = 10^exponent.
    x, y, rng = _clouds(seed, d)
    direction = rng.normal(size=d)
    c = direction / np.linalg.norm(direction) * 10.0**exponent
    moved = (y + c).astype(np.float32)
    # The identity for the points as float32 stores them: y + c rounded.
    back = moved.astype(np.float64) - c
    shift = c @ c - 2 * c @ (x.mean(0) - back.mean(0))
    base = sinkhorn_divergence(x, y, epsilon=epsilon, threshold=1e-4)
    out = sinkhorn_divergence(x, moved, epsilon=epsilon, threshold=1e-4)
    assert bool(base.converged) and bool(out.converged)
    # The identity is exact; both sides are float32 solves (threshold 1e-4)
    # and y's rounding moves S by about |grad S| ulp(|c|).
    tolerance = 1e-3 * (abs(float(base.divergence)) + abs(shift)) + 1e-6
    assert abs(float(out.divergence) - (float(base.divergence) + shift)) <= tolerance
    cost = sinkhorn(x, moved, epsilon=epsilon, threshold=1e-4).cost
    base_cost = sinkhorn(x, y, epsilon=epsilon, threshold=1e-4).cost
    assert abs(float(cost) - (float(base_cost) + shift)) <= (
        1e-3 * (abs(float(base_cost)) + abs(shift)) + 1e-6)
