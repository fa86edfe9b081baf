"""Tests for jgan.metrics.sinkhorn and sinkhorn_divergence."""

import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
from jax.test_util import check_grads
from ott.geometry import pointcloud
from ott.solvers import linear
from ott.tools import sinkhorn_divergence as ott_divergence
from scipy import optimize
from scipy import special
from scipy.spatial import distance

from jgan.metrics import EpsilonScaling
from jgan.metrics import Overrelaxation
from jgan.metrics import SinkhornDivergenceOutput
from jgan.metrics import SinkhornNotConverged
from jgan.metrics import SinkhornOutput
from jgan.metrics import sinkhorn
from jgan.metrics import sinkhorn_divergence

TIGHT = dict(threshold=1e-10, max_iterations=20_000)


def _problem(seed, n=30, m=40, d=3, weights=True):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(m, d)) * 0.8 + 0.5
    a = rng.dirichlet(np.ones(n)) if weights else np.full(n, 1 / n)
    b = rng.dirichlet(np.ones(m)) if weights else np.full(m, 1 / m)
    return x, y, a, b


def _numpy_cost(x, y, cost):
    c = distance.cdist(x, y, "sqeuclidean")
    return c if cost == "sqeuclidean" else np.sqrt(c)


# ------------------------------------------------- independent references


@pytest.mark.parametrize(
    "seed, epsilon, cost", [(0, 0.1, "sqeuclidean"), (2, 0.05, "euclidean")]
)
def test_matches_pot_float64(seed, epsilon, cost, x64):
    x, y, a, b = _problem(seed)
    # POT's reg is our absolute epsilon: both solve min <P, M> - reg H(P).
    ref = ot.sinkhorn2(
        a, b, _numpy_cost(x, y, cost), epsilon, method="sinkhorn_log",
        numItermax=100_000, stopThr=1e-13,
    )
    out = sinkhorn(x, y, a=a, b=b, epsilon=epsilon, cost=cost, **TIGHT)
    assert isinstance(out, SinkhornOutput)
    assert bool(out.converged) and float(out.error) <= 1e-10
    np.testing.assert_allclose(out.cost, ref, rtol=1e-5)


@pytest.mark.parametrize("seed, epsilon", [(3, 0.1)])
def test_matches_ott_float64(seed, epsilon, x64):
    x, y, a, b = _problem(seed)
    geom = pointcloud.PointCloud(jnp.asarray(x), jnp.asarray(y), epsilon=epsilon)
    ref = linear.solve(geom, a=jnp.asarray(a), b=jnp.asarray(b), threshold=1e-11,
                       max_iterations=20_000)
    out = sinkhorn(x, y, a=a, b=b, epsilon=epsilon, return_plan=True, **TIGHT)
    c = _numpy_cost(x, y, "sqeuclidean")
    np.testing.assert_allclose(out.cost, np.sum(np.asarray(ref.matrix) * c), rtol=1e-5)
    np.testing.assert_allclose(out.regularized_cost, ref.reg_ot_cost, rtol=1e-5)
    np.testing.assert_allclose(out.plan, ref.matrix, rtol=1e-4, atol=1e-9)
    # OTT's potentials carry the weights: f_ott = f + eps log a, up to a gauge.
    f_ott = np.asarray(ref.f) - epsilon * np.log(a)
    g_ott = np.asarray(ref.g) - epsilon * np.log(b)
    shift = 0.5 * (a @ f_ott - b @ g_ott)
    np.testing.assert_allclose(out.f, f_ott - shift, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out.g, g_ott + shift, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(a @ np.asarray(out.f), b @ np.asarray(out.g), rtol=1e-9)


def _separable_start(x, y, a, b, epsilon):
    """POT's log-scalings ``(u, v)`` of sinkhorn's start ``f = s - eps log a``, ``g = t``.

    ``s_i + t_j`` is the separable part of ``|x_i - y_j|^2`` about the
    weighted means ``p``, ``q``: ``2 <p - q, x_i - p> + |p - q|^2 - 2 <p - q, y_j - q>``.
    """
    p, q = a @ x, b @ y
    delta = p - q
    s = 2 * (x - p) @ delta + delta @ delta
    t = -2 * (y - q) @ delta
    return s / epsilon, np.log(b) + t / epsilon


@pytest.mark.filterwarnings("ignore::jgan.metrics.SinkhornNotConverged")
def test_fixed_iterations_match_pot_iterate_for_iterate(x64):
    # Same start (POT warm-started at sinkhorn's: the scalings u = v = 1 of
    # the cost less its separable part), same order (g first): the same
    # iterates.
    x, y, a, b = _problem(5)
    for t in (1, 40):
        ref = ot.sinkhorn(
            a, b, _numpy_cost(x, y, "sqeuclidean"), 0.2, method="sinkhorn_log",
            numItermax=t, stopThr=0.0, warn=False,
            warmstart=_separable_start(x, y, a, b, 0.2),
        )
        out = sinkhorn(x, y, a=a, b=b, epsilon=0.2, num_iterations=t, return_plan=True)
        assert int(out.iterations) == t
        np.testing.assert_allclose(out.plan, ref, rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(out.error, np.abs(ref.sum(0) - b).sum(), rtol=1e-6)


def test_float32_close_to_float64_reference():
    x, y, a, b = _problem(6)
    ref = ot.sinkhorn2(a, b, _numpy_cost(x, y, "sqeuclidean"), 0.1,
                       method="sinkhorn_log", numItermax=100_000, stopThr=1e-12)
    out = sinkhorn(x.astype(np.float32), y.astype(np.float32), a=a.astype(np.float32),
                   b=b.astype(np.float32), epsilon=0.1, threshold=1e-5)
    assert out.cost.dtype == jnp.float32 and bool(out.converged)
    np.testing.assert_allclose(out.cost, ref, rtol=1e-4)


# --------------------------------------------------- theory: epsilon -> 0


def test_approaches_sorted_1d_transport_as_epsilon_vanishes(x64):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(50, 1))
    y = rng.normal(size=(50, 1)) * 0.5 + 2.0
    exact = np.mean((np.sort(x[:, 0]) - np.sort(y[:, 0])) ** 2)
    gaps = []
    for epsilon in (1.0, 0.1, 0.02, 0.01):
        out = sinkhorn(x, y, epsilon=epsilon, threshold=1e-7, max_iterations=20_000)
        assert bool(out.converged)
        gaps.append(abs(float(out.cost) - exact))
    assert gaps == sorted(gaps, reverse=True), gaps
    assert gaps[-1] < 1e-3 * exact, (gaps, exact)
    # The entropic bias of <P, C> shrinks about linearly in epsilon.
    assert gaps[-1] < 0.2 * gaps[1], gaps


def test_approaches_assignment_as_epsilon_vanishes(x64):
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(8, 2)), rng.normal(size=(8, 2))
    c = _numpy_cost(x, y, "sqeuclidean")
    rows, cols = optimize.linear_sum_assignment(c)
    exact = c[rows, cols].mean()
    # At epsilon = 1e-3 plain and over-relaxed Sinkhorn do not reach the
    # threshold in 50,000 iterations; epsilon-scaling does, in a few hundred.
    out = sinkhorn(x, y, epsilon=1e-3, threshold=1e-9, max_iterations=50_000,
                   epsilon_scaling=EpsilonScaling(), return_plan=True)
    assert bool(out.converged) and int(out.iterations) < 1000
    np.testing.assert_allclose(out.cost, exact, rtol=1e-3)
    # The plan is (nearly) the permutation scaled by 1 / n.
    np.testing.assert_allclose(np.asarray(out.plan)[rows, cols], 1 / 8, rtol=1e-2)


# ------------------------------------------------------- plan and modes


def test_plan_marginals_and_cost():
    x, y, a, b = _problem(9)
    x, y, a, b = (v.astype(np.float32) for v in (x, y, a, b))
    out = sinkhorn(x, y, a=a, b=b, epsilon=0.2, threshold=1e-4, return_plan=True)
    plan = np.asarray(out.plan, np.float64)
    assert plan.shape == (30, 40) and (plan >= 0).all()
    np.testing.assert_allclose(plan.sum(1), a, atol=1e-6)
    assert np.abs(plan.sum(0) - b).sum() <= 1e-4
    np.testing.assert_allclose(out.error, np.abs(plan.sum(0) - b).sum(), atol=1e-6)
    np.testing.assert_allclose(out.cost, np.sum(plan * _numpy_cost(x, y, "sqeuclidean")),
                               rtol=1e-5)
    assert sinkhorn(x, y, a=a, b=b, epsilon=0.2).plan is None


@pytest.mark.parametrize("acceleration", ["default", "plain"])
def test_convergence_flag_and_iteration_count(acceleration):
    x, y, _, _ = _problem(10)
    kwargs = dict(epsilon=0.05, threshold=1e-3, inner_iterations=5)
    if acceleration == "plain":
        kwargs.update(epsilon_scaling=None, overrelaxation=None)
    out = sinkhorn(x, y, **kwargs)
    assert bool(out.converged) and float(out.error) <= 1e-3
    assert int(out.iterations) % 5 == 0 and 0 < int(out.iterations) < 2000
    # Capped before that, the loop stops after exactly max_iterations, not
    # converged (and says so).
    with pytest.warns(SinkhornNotConverged, match="after 10 iterations"):
        capped = sinkhorn(x, y, max_iterations=10, **kwargs)
    assert not bool(capped.converged) and float(capped.error) > 1e-3
    assert int(capped.iterations) == 10


def test_fixed_mode_equals_convergence_mode(x64):
    # Without epsilon-scaling and over-relaxation, the convergence mode runs
    # the fixed mode's (plain) iterates.
    x, y, a, b = _problem(11)
    conv = sinkhorn(x, y, a=a, b=b, epsilon=0.1, epsilon_scaling=None, overrelaxation=None,
                    **dict(TIGHT, threshold=1e-6))
    fixed = sinkhorn(x, y, a=a, b=b, epsilon=0.1, num_iterations=int(conv.iterations),
                     threshold=1e-6)
    chex.assert_trees_all_close(fixed, conv, rtol=1e-10, atol=1e-14)


@pytest.mark.filterwarnings("ignore::jgan.metrics.SinkhornNotConverged")  # 20 fixed iterations
def test_small_epsilon_float32_is_finite_and_accurate():
    # C / eps reaches 1e4: exp(-C / eps) underflows everywhere, the
    # log-domain updates must not.
    rng = np.random.default_rng(12)
    x = rng.normal(size=(20, 2)).astype(np.float32)
    y = (rng.normal(size=(25, 2)) + 5).astype(np.float32)
    exact = ot.emd2(np.full(20, 1 / 20), np.full(25, 1 / 25),
                    _numpy_cost(x, y, "sqeuclidean").astype(np.float64))
    out = sinkhorn(x, y, epsilon=1e-2, threshold=1e-3, max_iterations=5000)
    chex.assert_tree_all_finite((out.cost, out.regularized_cost, out.f, out.g))
    assert bool(out.converged)
    np.testing.assert_allclose(out.cost, exact, rtol=1e-3)
    # Far beyond float32's resolution of C / eps (1e6): inaccurate, but finite.
    out = sinkhorn(x, y + 25, epsilon=1e-3, threshold=1e-3, max_iterations=5000)
    chex.assert_tree_all_finite((out.cost, out.regularized_cost, out.f, out.g))
    grad = jax.grad(lambda x: sinkhorn(x, y + 25, epsilon=1e-3, num_iterations=20).cost)(x)
    chex.assert_tree_all_finite(grad)


def test_translation_invariance_float32():
    x, y, _, _ = _problem(13)
    x, y = x.astype(np.float32), y.astype(np.float32)
    base = sinkhorn(x, y, epsilon=0.1, threshold=1e-5)
    shifted = sinkhorn(x + 1000.0, y + 1000.0, epsilon=0.1, threshold=1e-5)
    np.testing.assert_allclose(shifted.cost, base.cost, rtol=1e-3)


# threshold=1e-6 in float32 is at the rounding floor of the marginal error:
# converged can come out False (error ~1.3e-6), with a warning.
@pytest.mark.filterwarnings("ignore::jgan.metrics.SinkhornNotConverged")
def test_zero_weights_are_ignored_and_gradients_finite():
    x, y, a, b = _problem(14, weights=False)
    a = np.concatenate([a[:-5] * 30 / 25, np.zeros(5)])
    out = sinkhorn(x, y, a=a, epsilon=0.1, threshold=1e-6)
    ref = sinkhorn(x[:-5], y, epsilon=0.1, threshold=1e-6)
    np.testing.assert_allclose(out.cost, ref.cost, rtol=1e-5)
    grads = jax.grad(lambda x, a: sinkhorn(x, y, a=a, epsilon=0.1).cost, (0, 1))(x, a)
    chex.assert_tree_all_finite(grads)


# -------------------------------------------------------------- divergence


def _numpy_symmetric_potential(x, a, epsilon, num_iterations):
    """A numpy twin of the symmetric updates ``f <- (f + T(f)) / 2``."""
    c = _numpy_cost(x, x, "sqeuclidean")
    f = -epsilon * np.log(a)
    for _ in range(num_iterations):
        t = -epsilon * special.logsumexp((f[None, :] - c) / epsilon, b=a[None, :], axis=1)
        f = 0.5 * (f + t)
    return f


def test_divergence_matches_ott_and_symmetric_updates_converge_fast(x64):
    x, y, a, b = _problem(15)
    out = sinkhorn_divergence(x, y, a=a, b=b, epsilon=0.1, **TIGHT)
    assert isinstance(out, SinkhornDivergenceOutput) and bool(out.converged)
    # OTT-JAX by alternating updates throughout (its symmetric updates are
    # compared iterate for iterate in the fixed mode below).
    ref, _ = ott_divergence.sinkhorn_divergence(
        pointcloud.PointCloud, jnp.asarray(x), jnp.asarray(y), a=jnp.asarray(a),
        b=jnp.asarray(b), epsilon=0.1, symmetric_sinkhorn=False,
        solve_kwargs=dict(threshold=1e-11, max_iterations=20_000),
    )
    np.testing.assert_allclose(out.divergence, ref, rtol=1e-5)
    # The self-transport terms converge in a few dozen symmetric updates, to
    # the value alternating Sinkhorn creeps towards: on this problem (a
    # point of weight 1e-4 among them) it is still short of the threshold
    # after 20,000 iterations.
    with pytest.warns(SinkhornNotConverged, match="after 20000 iterations"):
        alternating = sinkhorn(x, x, a=a, b=a, epsilon=0.1, **TIGHT)
    assert not bool(alternating.converged) and int(out.xx.iterations) <= 50
    np.testing.assert_allclose(out.xx.regularized_cost, alternating.regularized_cost,
                               rtol=1e-7)
    for self_out, z, w in ((out.xx, x, a), (out.yy, y, b)):
        assert bool(self_out.converged) and float(self_out.error) <= 1e-10
        np.testing.assert_array_equal(self_out.f, self_out.g)
        # The plan of (f, f) has marginals w (independently of self_out.error).
        c = _numpy_cost(z, z, "sqeuclidean")
        f = np.asarray(self_out.f)
        plan = w[:, None] * w[None, :] * np.exp((f[:, None] + f[None, :] - c) / 0.1)
        np.testing.assert_allclose(plan.sum(0), w, rtol=1e-8)


@pytest.mark.filterwarnings("ignore::jgan.metrics.SinkhornNotConverged")  # 5 fixed iterations
def test_divergence_fixed_mode_symmetric_iterates(x64):
    # num_iterations symmetric updates: the iterates of a numpy twin and of
    # OTT-JAX's symmetric_sinkhorn (parallel updates, momentum 1/2).
    x, y, a, b = _problem(24)
    t = 5
    out = sinkhorn_divergence(x, y, a=a, b=b, epsilon=0.2, num_iterations=t)
    assert int(out.xx.iterations) == t and int(out.yy.iterations) == t
    np.testing.assert_allclose(out.xx.f, _numpy_symmetric_potential(x, a, 0.2, t),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out.yy.f, _numpy_symmetric_potential(y, b, 0.2, t),
                               rtol=1e-12, atol=1e-14)
    _, ref = ott_divergence.sinkhorn_divergence(
        pointcloud.PointCloud, jnp.asarray(x), jnp.asarray(y), a=jnp.asarray(a),
        b=jnp.asarray(b), epsilon=0.2,
        solve_kwargs=dict(min_iterations=t, max_iterations=t, inner_iterations=1),
    )
    # OTT's potentials carry the weights: f_ott = f + eps log a.
    np.testing.assert_allclose(out.xx.f, np.asarray(ref.potentials[1][0]) - 0.2 * np.log(a),
                               rtol=1e-12, atol=1e-14)
    # The xy problem is sinkhorn's.
    chex.assert_trees_all_close(
        out.xy, sinkhorn(x, y, a=a, b=b, epsilon=0.2, num_iterations=t), rtol=1e-12
    )


def test_divergence_properties():
    x, y, _, _ = _problem(16)
    self_div = sinkhorn_divergence(x, x, epsilon=0.1, threshold=1e-5).divergence
    assert abs(float(self_div)) < 1e-6
    xy = sinkhorn_divergence(x, y, epsilon=0.1, threshold=1e-5).divergence
    yx = sinkhorn_divergence(y, x, epsilon=0.1, threshold=1e-5).divergence
    assert float(xy) > 0.1
    np.testing.assert_allclose(xy, yx, rtol=1e-4)
    # OT_eps(x, y) itself is biased: it is > 0 between a cloud and itself.
    assert float(sinkhorn(x, x, epsilon=0.1, threshold=1e-5).regularized_cost) > 0.01
    # Moving y towards x decreases the divergence.
    closer = sinkhorn_divergence(x, 0.5 * (x + y[:30]), epsilon=0.1,
                                 threshold=1e-5).divergence
    assert 0 < float(closer) < float(xy)


# --------------------------------------------------------------- gradients


@pytest.mark.filterwarnings("ignore::jgan.metrics.SinkhornNotConverged")  # 60 fixed iterations
@pytest.mark.parametrize("num_iterations", [None, 60])
def test_gradients_match_finite_differences(num_iterations, x64):
    # One objective touching every differentiable output and input: the
    # transport cost (of div.xy, sinkhorn's), the regularised cost under the
    # euclidean cost, the
    # divergence and, through its self-transport terms, their cost and
    # potential (implicit differentiation of f = T(f), or the unrolled
    # symmetric updates). Its gradient in (x, y, a, b, epsilon) is checked
    # along random directions (on the simplex for a and b) by central
    # differences.
    x, y, a, b = _problem(17)
    kwargs = dict(threshold=1e-12, max_iterations=20_000, num_iterations=num_iterations)
    weights = np.linspace(-1.0, 1.0, y.shape[0])

    def objective(x, y, a, b, epsilon):
        eu = sinkhorn(x, y, a=a, b=b, epsilon=epsilon, cost="euclidean", **kwargs)
        div = sinkhorn_divergence(x, y, a=a, b=b, epsilon=epsilon, **kwargs)
        return (div.xy.cost + eu.regularized_cost + div.divergence + 0.5 * div.xx.cost
                + jnp.vdot(weights, div.yy.f))

    primals = (x, y, a, b, 0.3)
    grads = jax.grad(objective, range(5))(*primals)
    rng = np.random.default_rng(0)
    for _ in range(2):
        tangents = [rng.normal(size=np.shape(p)) for p in primals]
        tangents[2] -= tangents[2].mean()
        tangents[3] -= tangents[3].mean()
        h = 1e-6
        plus = objective(*(p + h * t for p, t in zip(primals, tangents)))
        minus = objective(*(p - h * t for p, t in zip(primals, tangents)))
        directional = sum(np.vdot(g, t) for g, t in zip(grads, tangents))
        np.testing.assert_allclose(directional, (plus - minus) / (2 * h), rtol=1e-6)


def test_implicit_gradient_is_not_the_frozen_potential_gradient(x64):
    # A wrong backward pass that treats f, g as constants gives d<P, C>/dC = P
    # + (terms from P's C-dependence at fixed f, g); the two differ.
    x, y, _, _ = _problem(18)
    grad = jax.grad(lambda x: sinkhorn(x, y, epsilon=0.5, **TIGHT).cost)(x)

    def frozen(x):
        out = sinkhorn(x, y, epsilon=0.5, **TIGHT)
        f, g = jax.lax.stop_gradient((out.f, out.g))
        c = jnp.sum((x[:, None] - y[None]) ** 2, -1)
        p = jnp.exp((f[:, None] + g[None] - c) / 0.5) / (x.shape[0] * y.shape[0])
        return jnp.sum(p * c)

    assert np.abs(np.asarray(grad) - np.asarray(jax.grad(frozen)(x))).max() > 1e-3


@pytest.mark.filterwarnings("ignore::jgan.metrics.SinkhornNotConverged")
def test_divergence_gradient_vanishes_at_equality(x64):
    # Near convergence: OT_eps(x, y) by alternating updates between identical
    # clouds is slow (marginal error ~3e-8, not the threshold 1e-12, after
    # 20,000 iterations: it warns), OT_eps(x, x) by symmetric ones is not.
    # (With a fixed number of iterations S(x, x) and its gradient are only
    # near 0.)
    x, _, _, _ = _problem(19)
    grad = jax.grad(lambda y: sinkhorn_divergence(
        x, y, epsilon=0.2, **dict(TIGHT, threshold=1e-12)
    ).divergence)(x)
    np.testing.assert_allclose(grad, 0, atol=1e-8)


# ------------------------------------------------------------ jit and vmap


@pytest.mark.filterwarnings("ignore::jgan.metrics.SinkhornNotConverged")  # 50 fixed iterations
def test_vmap_fixed_mode_equals_python_loop():
    rng = np.random.default_rng(20)
    xs = rng.normal(size=(4, 16, 2)).astype(np.float32)
    ys = rng.normal(size=(4, 20, 2)).astype(np.float32) + 1
    eps = np.float32([0.05, 0.1, 0.2, 0.5])

    @jax.jit
    @chex.assert_max_traces(n=1)
    def batched(xs, ys, eps):
        return jax.vmap(lambda x, y, e: sinkhorn(x, y, epsilon=e, num_iterations=50))(
            xs, ys, eps
        )

    out = batched(xs, ys, eps)
    batched(xs + 1, ys, eps)  # no retrace
    for i in range(4):
        ref = sinkhorn(xs[i], ys[i], epsilon=float(eps[i]), num_iterations=50)
        chex.assert_trees_all_close(jax.tree.map(lambda v: v[i], out), ref, rtol=1e-5,
                                    atol=1e-6)


def test_vmap_convergence_mode_and_gradient():
    rng = np.random.default_rng(21)
    xs = rng.normal(size=(3, 12, 2)).astype(np.float32)
    y = rng.normal(size=(14, 2)).astype(np.float32)
    loss = lambda x: sinkhorn(x, y, epsilon=0.1, threshold=1e-5).cost  # noqa: E731
    grads = jax.vmap(jax.grad(loss))(xs)
    for i in range(3):
        np.testing.assert_allclose(grads[i], jax.grad(loss)(xs[i]), rtol=1e-4, atol=1e-6)


def test_traced_epsilon_and_threshold_do_not_retrace():
    x, y, _, _ = _problem(22)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(eps, threshold):
        return sinkhorn(x, y, epsilon=eps, threshold=threshold).cost

    for eps, thr in ((0.1, 1e-3), (0.3, 1e-4)):
        np.testing.assert_allclose(
            f(jnp.float32(eps), jnp.float32(thr)),
            sinkhorn(x, y, epsilon=eps, threshold=thr).cost, rtol=1e-5,
        )


class SinkhornJitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_matches_reference(self):
        x, y, a, b = _problem(23)
        x, y, a, b = (v.astype(np.float32) for v in (x, y, a, b))
        fn = self.variant(lambda x, y, a, b: sinkhorn(x, y, a=a, b=b, epsilon=0.2,
                                                      threshold=1e-5))
        ref = ot.sinkhorn2(a.astype(np.float64), b.astype(np.float64),
                           _numpy_cost(x, y, "sqeuclidean").astype(np.float64), 0.2,
                           method="sinkhorn_log", stopThr=1e-10, numItermax=10_000)
        np.testing.assert_allclose(fn(x, y, a, b).cost, ref, rtol=1e-4)


# --------------------------------------------------------------- bad input

_X = np.zeros((4, 2))
_Y = np.ones((5, 2))


@pytest.mark.parametrize(
    "x, y, kwargs, match",
    [
        (np.zeros(4), _Y, {}, "x must be"),
        (_X, np.zeros((5, 2, 1)), {}, "y must be"),
        (np.zeros((0, 2)), _Y, {}, "at least one point"),
        (_X, np.zeros((0, 2)), {}, "at least one point"),
        (_X, np.ones((5, 3)), {}, "same dimension"),
        (_X, _Y, dict(epsilon=0.0), "epsilon"),
        (_X, _Y, dict(epsilon=-1.0), "epsilon"),
        (_X, _Y, dict(epsilon=float("nan")), "epsilon"),
        (_X, _Y, dict(epsilon=np.ones(2)), "epsilon must be a scalar"),
        (_X, _Y, dict(a=np.full(3, 1 / 3)), "a must have shape"),
        (_X, _Y, dict(b=np.full((5, 1), 0.2)), "b must have shape"),
        (_X, _Y, dict(a=np.array([0.5, 0.5, 0.5, -0.5])), "non-negative"),
        (_X, _Y, dict(b=np.full(5, 0.25)), "sum to 1"),
        (_X, _Y, dict(cost="cosine"), "cost must be one of"),
        (_X, _Y, dict(threshold=0.0), "threshold"),
        (_X, _Y, dict(max_iterations=0), "max_iterations"),
        (_X, _Y, dict(num_iterations=0), "num_iterations"),
        (np.array([[0.0, np.nan], [1.0, 1.0]]), _Y, {}, "x holds 1 non-finite"),
        (_X, np.full((5, 2), np.inf), {}, "y holds 10 non-finite"),
    ],
)
def test_bad_input_raises(x, y, kwargs, match):
    kwargs = dict(dict(epsilon=0.1), **kwargs)
    with pytest.raises(ValueError, match=match):
        sinkhorn(x, y, **kwargs)
    if "a" not in kwargs and "b" not in kwargs:
        with pytest.raises(ValueError, match=match):
            sinkhorn_divergence(x, y, **kwargs)


@pytest.mark.parametrize("name", ["max_iterations", "inner_iterations", "num_iterations"])
@pytest.mark.parametrize("value", [2.5, True, np.float32(3)])
def test_non_int_iteration_count_raises_type_error(name, value):
    for solver in (sinkhorn, sinkhorn_divergence):
        with pytest.raises(TypeError, match=f"{name} must be a Python int.*got"):
            solver(_X, _Y, epsilon=0.1, **{name: value})


def test_bad_input_raises_under_jit_for_static_properties():
    with pytest.raises(ValueError, match="same dimension"):
        jax.jit(lambda x, y: sinkhorn(x, y, epsilon=0.1))(_X, np.ones((5, 3)))


def test_return_plan_must_be_a_bool():
    with pytest.raises(TypeError, match="return_plan must be a bool"):
        sinkhorn(_X, _Y, epsilon=0.1, return_plan="no")


def test_hyper_parameters_are_keyword_only():
    with pytest.raises(TypeError):
        sinkhorn(_X, _Y, 0.1)  # positional epsilon


# ------------------------------------------------------------ at any scale


def _two_clouds(seed=0, n=64):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)), rng.normal(size=(n, 2))


def _float64_references(x, y, epsilon):
    """``(S, <P, C>, OT_eps)`` of ``x`` to ``y`` in float64: OTT-JAX and POT.

    Within ~1e-5 of the values (POT's plain iterations converge slowly at
    epsilon 0.05: 20,000 of them leave 4e-6 of 0.3214): enough for the 1e-3
    asked of float32.
    """
    n, m = len(x), len(y)
    with jax.enable_x64(True):
        divergence, _ = ott_divergence.sinkhorn_divergence(
            pointcloud.PointCloud, jnp.asarray(x), jnp.asarray(y), epsilon=epsilon,
            solve_kwargs=dict(threshold=1e-7, max_iterations=50_000),
        )
        reg = linear.solve(pointcloud.PointCloud(jnp.asarray(x), jnp.asarray(y),
                                                 epsilon=epsilon),
                           threshold=1e-7, max_iterations=50_000).reg_ot_cost
        divergence, reg = float(divergence), float(reg)
    transport = ot.sinkhorn2(np.full(n, 1 / n), np.full(m, 1 / m),
                             _numpy_cost(x, y, "sqeuclidean"), epsilon,
                             method="sinkhorn_log", numItermax=20_000, stopThr=1e-8, warn=False)
    return divergence, float(transport), reg


@pytest.mark.parametrize("epsilon", [0.05, 0.1])
def test_translation_identity_float32_at_any_offset(epsilon):
    # |x - y - c|^2 = |x - y|^2 - 2 <c, x - y> + |c|^2: the plan is unchanged
    # and S, <P, C> and OT_eps all gain exactly |c|^2 - 2 <c, x_bar - y_bar>.
    # Before, y + 3e3 at epsilon 0.05 gave S = -2.59e13 and 1e4 and 1e6
    # gave -inf, marked converged.
    x, y = _two_clouds()
    references = _float64_references(x, y, epsilon)
    for offset in (0.0, 1e2, 3e3, 1e4, 1e6):
        c = offset * np.array([0.6, 0.8])  # |c| = offset
        shift = c @ c - 2 * c @ (x.mean(0) - y.mean(0))
        x32, y32 = x.astype(np.float32), (y + c).astype(np.float32)
        div = sinkhorn_divergence(x32, y32, epsilon=epsilon)
        out = sinkhorn(x32, y32, epsilon=epsilon)
        assert bool(div.converged) and bool(out.converged), offset
        values = (div.divergence, out.cost, out.regularized_cost)
        for name, value, reference in zip(("S", "cost", "OT_eps"), values, references):
            assert value.dtype == jnp.float32
            np.testing.assert_allclose(value, reference + shift, rtol=1e-3,
                                       err_msg=f"{name} at offset {offset}")


@pytest.mark.filterwarnings("ignore::jgan.metrics.SinkhornNotConverged")  # 7 fixed iterations
def test_fixed_iterations_do_not_depend_on_translation(x64):
    # The start removes the separable part of the cost: the iterates of
    # (x, y + c) are those of (x, y), potentials shifted.
    x, y, a, b = _problem(25)
    c = np.array([30.0, -50.0, 7.0])
    base = sinkhorn(x, y, a=a, b=b, epsilon=0.1, num_iterations=7, return_plan=True)
    moved = sinkhorn(x, y + c, a=a, b=b, epsilon=0.1, num_iterations=7, return_plan=True)
    np.testing.assert_allclose(moved.plan, base.plan, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(moved.error, base.error, rtol=1e-9)


def test_divergence_gradient_translates_float32():
    # d S(x, z) / dz at z = y + c is that at y plus 2 b c: exact at any offset.
    x, y = _two_clouds(1, n=32)
    x, y = x.astype(np.float32), y.astype(np.float32)
    grad = jax.grad(lambda z: sinkhorn_divergence(x, z, epsilon=0.1,
                                                  threshold=1e-5).divergence)
    base = np.asarray(grad(y), np.float64)
    for offset in (1e3, 1e6):
        c = offset * np.array([0.6, 0.8])
        moved = np.asarray(grad((y + c).astype(np.float32)), np.float64)
        np.testing.assert_allclose(moved, base + 2 * c / len(y), rtol=1e-3,
                                   atol=1e-3 * np.abs(2 * c / len(y)).max())


# ----------------------------------------------------------- not converged


def test_not_converged_warns_in_eager_use_and_is_flagged_under_jit():
    x, y, _, _ = _problem(26)
    x, y = x.astype(np.float32), y.astype(np.float32)
    with pytest.warns(SinkhornNotConverged) as record:
        out = sinkhorn(x, y, epsilon=0.01, max_iterations=20, overrelaxation=None)
    assert not bool(out.converged) and float(out.error) > 1e-3
    message = str(record[0].message)
    for fragment in ("after 20 iterations", "marginal error", "raise max_iterations",
                     "use epsilon_scaling=EpsilonScaling()"):
        assert fragment in message, message
    with pytest.warns(SinkhornNotConverged, match="raise num_iterations"):
        sinkhorn(x, y, epsilon=0.01, num_iterations=3)
    with pytest.warns(SinkhornNotConverged, match="xy: marginal error"):
        div = sinkhorn_divergence(x, y, epsilon=0.01, max_iterations=20)
    assert not bool(div.converged) and not bool(div.xy.converged)
    # Under jit nothing can warn: converged says it.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        traced = jax.jit(lambda x, y: sinkhorn(x, y, epsilon=0.01, max_iterations=20))(x, y)
        jax.jit(lambda x: sinkhorn(x, y, epsilon=0.01, threshold=1e-3))(x)
    assert not bool(traced.converged)


def test_never_converged_with_a_non_finite_value():
    x, y, _, _ = _problem(27)
    # |x|^2 overflows float32: the cost is not finite, and not "converged".
    big = (x * 1e20).astype(np.float32)
    with pytest.warns(SinkhornNotConverged, match="not finite"):
        out = sinkhorn(big, y.astype(np.float32), epsilon=0.1)
    assert not bool(out.converged)
    # NaN inputs under jit (eager calls may refuse them): not converged, and
    # the loop stops at the first check instead of running max_iterations.
    nan_x = x.astype(np.float32).copy()
    nan_x[3, 1] = np.nan
    out = jax.jit(lambda x: sinkhorn(x, y, epsilon=0.1))(nan_x)
    assert not bool(out.converged) and int(out.iterations) <= 10
    div = jax.jit(lambda x: sinkhorn_divergence(x, y, epsilon=0.1))(nan_x)
    assert not bool(div.converged)


# ------------------------------------- epsilon-scaling and over-relaxation


def test_ring_samples_converge_with_acceleration():
    # Two 2,500-point samples of the ring (8 modes of std 0.02) at epsilon
    # 0.05: plain Sinkhorn needs 6,700 iterations (30 s on 2 CPU cores;
    # before this solver, 10,000 were not enough). Measured: 810 with the
    # default over-relaxation (3 s), 560 with epsilon-scaling too (2 s).
    from jgan.data import ring

    x, y = ring(jax.random.key(0), 2500), ring(jax.random.key(1), 2500)
    default = sinkhorn(x, y, epsilon=0.05)
    scaled = sinkhorn(x, y, epsilon=0.05, epsilon_scaling=EpsilonScaling())
    for out in (default, scaled):
        assert bool(out.converged) and float(out.error) <= 1e-3
    assert int(default.iterations) <= 1200 and int(scaled.iterations) <= 900
    np.testing.assert_allclose(scaled.regularized_cost, default.regularized_cost, rtol=2e-3)


@pytest.mark.parametrize(
    "scaling, relaxation",
    [(EpsilonScaling(), None), (None, Overrelaxation()), (EpsilonScaling(0.5), Overrelaxation())],
)
def test_acceleration_reaches_the_same_fixed_point_and_gradient(scaling, relaxation, x64):
    x, y, a, b = _problem(28)
    kwargs = dict(a=a, b=b, epsilon=0.05, threshold=1e-12, max_iterations=20_000)
    plain = sinkhorn(x, y, epsilon_scaling=None, overrelaxation=None, **kwargs)
    out = sinkhorn(x, y, epsilon_scaling=scaling, overrelaxation=relaxation, **kwargs)
    assert bool(plain.converged) and bool(out.converged)
    assert int(out.iterations) < int(plain.iterations)
    for field in ("cost", "regularized_cost", "f", "g"):
        np.testing.assert_allclose(getattr(out, field), getattr(plain, field), rtol=1e-8,
                                   atol=1e-10, err_msg=field)

    # The implicit gradient at the fixed point, against central differences.
    def objective(x, epsilon):
        return sinkhorn(x, y, **dict(kwargs, epsilon=epsilon), epsilon_scaling=scaling,
                        overrelaxation=relaxation).cost

    gx, geps = jax.grad(objective, (0, 1))(x, 0.05)
    plain_gx = jax.grad(lambda x: sinkhorn(x, y, epsilon_scaling=None, overrelaxation=None,
                                           **kwargs).cost)(x)
    np.testing.assert_allclose(gx, plain_gx, rtol=1e-7, atol=1e-12)
    direction = np.random.default_rng(0).normal(size=x.shape)
    h = 1e-5  # Values converged to ~1e-12: h = 1e-6 would be noise, 1e-4 truncation.
    numeric = (objective(x + h * direction, 0.05 + h)
               - objective(x - h * direction, 0.05 - h)) / (2 * h)
    np.testing.assert_allclose(np.vdot(gx, direction) + geps, numeric, rtol=1e-6)


def test_epsilon_scaling_and_overrelaxation_arguments():
    assert EpsilonScaling().decay == 0.25 and Overrelaxation().max_omega == 1.9
    for bad, match in [(dict(decay=0.0), "decay"), (dict(decay=1.0), "decay"),
                       (dict(initial=-1.0), "initial"), (dict(threshold=0.0), "threshold")]:
        with pytest.raises(ValueError, match=f"EpsilonScaling {match}"):
            EpsilonScaling(**bad)
    with pytest.raises(TypeError, match="EpsilonScaling decay"):
        EpsilonScaling(decay="0.5")
    with pytest.raises(ValueError, match="Overrelaxation max_omega"):
        Overrelaxation(max_omega=2.0)
    with pytest.raises(TypeError, match="epsilon_scaling must be an EpsilonScaling"):
        sinkhorn(_X, _Y, epsilon=0.1, epsilon_scaling=0.5)
    with pytest.raises(TypeError, match="overrelaxation must be an Overrelaxation"):
        sinkhorn_divergence(_X, _Y, epsilon=0.1, overrelaxation=True)
    # An explicit first epsilon: the same fixed point.
    x, y, _, _ = _problem(29)
    ref = sinkhorn(x, y, epsilon=0.1, threshold=1e-5)
    out = sinkhorn(x, y, epsilon=0.1, threshold=1e-5,
                   epsilon_scaling=EpsilonScaling(decay=0.5, initial=50.0))
    assert bool(out.converged)
    np.testing.assert_allclose(out.regularized_cost, ref.regularized_cost, rtol=1e-4)


# ---------------------------------------------------------- euclidean cost


def test_euclidean_cost_is_exactly_zero_on_identical_points():
    # Before: |x|^2 + |y|^2 - 2 x.y then a square root, 2.4e-4 for a point
    # to itself in float32, and S(x, x) = 1.8e-5.
    rng = np.random.default_rng(30)
    x = (rng.normal(size=(20, 2)) * 3 + 100).astype(np.float32)
    assert float(sinkhorn(x[:1], x[:1], epsilon=0.1, cost="euclidean").cost) == 0.0
    out = sinkhorn(x, x, epsilon=1e-3, cost="euclidean", return_plan=True)
    # A near-diagonal plan pays nothing on its diagonal.
    assert float(out.cost) < 1e-3 * float(np.diag(np.asarray(out.plan)).sum() > 0.99)
    assert float(sinkhorn_divergence(x, x, epsilon=0.1, cost="euclidean").divergence) == 0.0
    # Between an equal copy, to the solver's accuracy.
    copy = sinkhorn_divergence(x, x.copy(), epsilon=0.1, cost="euclidean", threshold=1e-5)
    assert abs(float(copy.divergence)) < 1e-6
    # High dimension (differences reduced over d, not the expansion).
    z = rng.normal(size=(10, 40)).astype(np.float32)
    assert float(sinkhorn(z[:1], z[:1], epsilon=0.1, cost="euclidean").cost) == 0.0
    assert abs(float(sinkhorn_divergence(z, z.copy(), epsilon=0.1, cost="euclidean",
                                         threshold=1e-5).divergence)) < 1e-5


@pytest.mark.parametrize("epsilon", [0.1, 0.5])
def test_euclidean_divergence_matches_ott_float32(epsilon):
    from ott.geometry import costs

    rng = np.random.default_rng(31)
    x = rng.normal(size=(20, 2)).astype(np.float32)
    y = (rng.normal(size=(25, 2)) + 0.5).astype(np.float32)
    out = sinkhorn_divergence(x, y, epsilon=epsilon, cost="euclidean", threshold=1e-6)
    ref, _ = ott_divergence.sinkhorn_divergence(
        pointcloud.PointCloud, jnp.asarray(x), jnp.asarray(y), cost_fn=costs.Euclidean(),
        epsilon=epsilon, solve_kwargs=dict(threshold=1e-6, max_iterations=20_000),
    )
    assert bool(out.converged)
    np.testing.assert_allclose(out.divergence, ref, rtol=0, atol=1e-6)


def test_euclidean_far_clouds_float32():
    # The tangent plane of the norm at x_bar - y_bar is removed before the
    # iterations: clouds 1e4 apart give the float64 value to float32 accuracy.
    x, y = _two_clouds(2, n=32)
    c = np.array([6e3, 8e3])
    with jax.enable_x64(True):
        ref = sinkhorn(x, y + c, epsilon=0.1, cost="euclidean", threshold=1e-9,
                       max_iterations=20_000)
    out = sinkhorn(x.astype(np.float32), (y + c).astype(np.float32), epsilon=0.1,
                   cost="euclidean")
    assert bool(out.converged)
    np.testing.assert_allclose(out.cost, ref.cost, rtol=1e-6)
    np.testing.assert_allclose(out.regularized_cost, ref.regularized_cost, rtol=1e-6)


def test_concrete_clouds_closed_over_by_jit():
    # A concrete array captured by a jitted function is checked at trace time
    # (it used to stage the check into the trace and fail with
    # TracerBoolConversionError); a NaN there is refused like an eager one.
    x, y, _, _ = _problem(11, weights=False)
    x32, y32 = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    value = jax.jit(lambda x: sinkhorn(x, y32, epsilon=0.5).cost)(x32)
    np.testing.assert_allclose(value, sinkhorn(x32, y32, epsilon=0.5).cost, rtol=1e-6)
    bad = y32.at[0, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="y"):
        jax.jit(lambda x: sinkhorn(x, bad, epsilon=0.5).cost)(x32)
