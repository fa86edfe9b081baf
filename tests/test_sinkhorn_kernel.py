"""The kernel-domain fixed mode of jgan.metrics.sinkhorn: the log domain's iterates without its exponentials."""

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest

from jgan.metrics import KernelDomain
from jgan.metrics import Online
from jgan.metrics import sinkhorn
from test_sinkhorn import _numpy_cost
from test_sinkhorn import _problem
from test_sinkhorn import _separable_start

# The fixed-iteration comparisons stop short of convergence on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::jgan.metrics.SinkhornNotConverged")

FIELDS = ("cost", "regularized_cost", "f", "g", "error")


def _same(got, want, rtol, atol):
    for name in FIELDS:
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=rtol, atol=atol,
                                   err_msg=name)
    assert int(got.iterations) == int(want.iterations)


def test_kernel_iterates_match_pot_sinkhorn_knopp(x64):
    # An independent reference: POT's kernel-domain Sinkhorn (u = a / K v,
    # v = b / K^T u, no log domain), warm-started at jgan's start, gives the
    # same plan after t iterations.
    x, y, a, b = _problem(5)
    for t in (1, 40):
        ref = ot.sinkhorn(a, b, _numpy_cost(x, y, "sqeuclidean"), 0.2, method="sinkhorn",
                          numItermax=t, stopThr=0.0, warn=False,
                          warmstart=_separable_start(x, y, a, b, 0.2))
        out = sinkhorn(x, y, a=a, b=b, epsilon=0.2, num_iterations=t, kernel=KernelDomain(),
                       return_plan=True)
        np.testing.assert_allclose(out.plan, ref, rtol=1e-9, atol=1e-15)


# Small epsilons: the scalings leave the band at almost every iteration at
# 1e-3 (absorption, and columns of the first kernel that underflow entirely:
# exp(-c / eps) with c / eps up to ~3e4), never at 1.
@pytest.mark.parametrize("epsilon", [1.0, 0.05, 1e-3])
@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean"])
def test_kernel_equals_log_domain_float64(epsilon, cost, x64):
    x, y, a, b = _problem(1, n=37, m=53)
    for t in (1, 7, 60):
        kwargs = dict(a=a, b=b, epsilon=epsilon, cost=cost, num_iterations=t)
        _same(sinkhorn(x, y, kernel=KernelDomain(), **kwargs), sinkhorn(x, y, **kwargs),
              rtol=1e-9, atol=1e-12)


def test_absorb_threshold_does_not_change_the_iterates(x64):
    # A band of 1.5 absorbs nearly every iteration, 1e30 almost never: the
    # same iterates either way (what absorption is for is float range).
    x, y, a, b = _problem(2)
    kwargs = dict(a=a, b=b, epsilon=0.1, num_iterations=30)
    want = sinkhorn(x, y, **kwargs)
    for band in (1.5, 1e3, 1e30):
        _same(sinkhorn(x, y, kernel=KernelDomain(absorb_threshold=band), **kwargs), want,
              rtol=1e-9, atol=1e-12)


def test_kernel_float32_close_to_float64():
    x, y, a, b = _problem(3, n=200, m=150)
    kwargs = dict(epsilon=0.05, num_iterations=200)
    f32 = [v.astype(np.float32) for v in (x, y, a, b)]
    got = sinkhorn(f32[0], f32[1], a=f32[2], b=f32[3], kernel=KernelDomain(), **kwargs)
    with jax.enable_x64(True):
        want = sinkhorn(x, y, a=a, b=b, **kwargs)
    assert got.cost.dtype == jnp.float32
    np.testing.assert_allclose(got.cost, want.cost, rtol=1e-5)
    np.testing.assert_allclose(got.regularized_cost, want.regularized_cost, rtol=1e-5)
    assert abs(float(got.error) - float(want.error)) < 2e-6


def test_far_outlier_row_falls_back_to_the_log_domain(x64):
    # One point 30 units away: its row of exp(-c / eps) is exactly 0, so the
    # kernel update divides by zero and must be redone in the log domain.
    x, y, a, b = _problem(4)
    x = x.copy()
    x[0] += 30.0
    kwargs = dict(a=a, b=b, epsilon=0.05, num_iterations=25)
    got = sinkhorn(x, y, kernel=KernelDomain(), **kwargs)
    assert np.all(np.isfinite(got.f)) and np.all(np.isfinite(got.g))
    _same(got, sinkhorn(x, y, **kwargs), rtol=1e-9, atol=1e-9)


def test_gradients_are_the_implicit_ones_at_the_returned_potentials(x64):
    # Converged iterations: the kernel mode's (implicit) gradient equals the
    # convergence mode's, and a central finite difference.
    x, y, a, b = _problem(6, n=12, m=15)

    def value(x, y, **kwargs):
        return sinkhorn(x, y, a=a, b=b, epsilon=0.5, **kwargs).regularized_cost

    kernel = jax.grad(lambda x, y: value(x, y, num_iterations=400, kernel=KernelDomain()),
                      argnums=(0, 1))(x, y)
    converged = jax.grad(lambda x, y: value(x, y, threshold=1e-12, max_iterations=20_000),
                         argnums=(0, 1))(x, y)
    for got, want in zip(kernel, converged):
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-10)
    h = 1e-6
    direction = np.random.default_rng(0).normal(size=x.shape)
    fd = (value(x + h * direction, y, threshold=1e-12, max_iterations=20_000)
          - value(x - h * direction, y, threshold=1e-12, max_iterations=20_000)) / (2 * h)
    np.testing.assert_allclose(np.sum(kernel[0] * direction), fd, rtol=1e-6)


def test_kernel_mode_jits_and_vmaps(x64):
    x, y, _, _ = _problem(7, n=20, m=20, weights=False)
    batch = np.stack([x, x + 1.0, 2 * x])
    solve = jax.jit(jax.vmap(lambda x: sinkhorn(x, y, epsilon=0.01, num_iterations=30,
                                                kernel=KernelDomain()).cost))
    want = [sinkhorn(xi, y, epsilon=0.01, num_iterations=30).cost for xi in batch]
    np.testing.assert_allclose(solve(batch), want, rtol=1e-9)


def test_kernel_above_the_auto_budget_is_refused():
    # Shapes only (eval_shape allocates nothing): 12,000 points per cloud
    # would store two 550 MiB matrices.
    shape = jax.ShapeDtypeStruct((12_000, 2), jnp.float32)
    with pytest.raises(ValueError, match="online='auto''s 512 MiB budget"):
        jax.eval_shape(lambda x, y: sinkhorn(x, y, epsilon=1.0, num_iterations=2,
                                             kernel=KernelDomain()), shape, shape)


@pytest.mark.parametrize("call, error, match", [
    (lambda x, y: sinkhorn(x, y, epsilon=1.0, kernel=KernelDomain()), ValueError,
     "fixed-iteration mode only: pass num_iterations=T"),
    (lambda x, y: sinkhorn(x, y, epsilon=1.0, num_iterations=3, kernel=1e3), TypeError,
     "kernel must be a KernelDomain or None, got float"),
    (lambda x, y: sinkhorn(x, y, epsilon=1.0, num_iterations=3, kernel=KernelDomain(),
                           online=Online()), ValueError, "never does: use one or the other"),
    (lambda x, y: KernelDomain(absorb_threshold=1.0), ValueError,
     "KernelDomain absorb_threshold must be > 1, got 1.0"),
    (lambda x, y: KernelDomain(absorb_threshold=float("inf")), ValueError,
     "KernelDomain absorb_threshold must be > 0 and finite, got inf"),
    (lambda x, y: KernelDomain(absorb_threshold="1e3"), TypeError,
     "KernelDomain absorb_threshold must be a"),
])
def test_bad_kernel_arguments(call, error, match):
    x, y, _, _ = _problem(0)
    with pytest.raises(error, match=match):
        call(x, y)
