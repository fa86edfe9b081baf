"""The online mode of jgan.metrics.sinkhorn: the dense solver's results without the [n, m] matrix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgan.metrics import EpsilonScaling
from jgan.metrics import Online
from jgan.metrics import Overrelaxation
from jgan.metrics import sinkhorn
from jgan.metrics import sinkhorn_divergence
from jgan.metrics import _sinkhorn
from test_sinkhorn import _problem as sinkhorn_problem

# The fixed-iteration comparisons stop short of convergence on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::jgan.metrics.SinkhornNotConverged")

TIGHT = dict(threshold=1e-10, max_iterations=20_000)


def _problem(seed, n=37, m=53, d=3, weights=True):
    # test_sinkhorn's clouds, at sizes that no block divides.
    return sinkhorn_problem(seed, n=n, m=m, d=d, weights=weights)


def _rows(rows, m):
    """An ``Online`` whose blocks hold ``rows`` rows of an ``[n, m]`` float64 cost."""
    return Online(block_bytes=rows * m * 8)


def _same(got, want, rtol=1e-9, atol=1e-12):
    for name in ("cost", "regularized_cost", "f", "g", "error"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=rtol, atol=atol,
                                   err_msg=name)
    assert int(got.iterations) == int(want.iterations)
    assert bool(got.converged) == bool(want.converged)


# Blocks of 1 row, of rows that do not divide n = 37 (10 -> 4 blocks, the last
# padded), and one block holding every row.
@pytest.mark.parametrize("rows", [1, 10, 37])
@pytest.mark.parametrize("cost, d", [("sqeuclidean", 3), ("sqeuclidean", 12), ("euclidean", 3),
                                     ("euclidean", 12)])
def test_online_equals_dense_in_the_convergence_mode(rows, cost, d, x64):
    x, y, a, b = _problem(0, d=d)
    epsilon = 0.1 * d
    dense = sinkhorn(x, y, a=a, b=b, epsilon=epsilon, cost=cost, online=None, **TIGHT)
    online = sinkhorn(x, y, a=a, b=b, epsilon=epsilon, cost=cost, online=_rows(rows, 53), **TIGHT)
    assert bool(dense.converged)
    _same(online, dense)


@pytest.mark.parametrize("scaling, relaxation", [(EpsilonScaling(), None),
                                                 (EpsilonScaling(), Overrelaxation()),
                                                 (None, None)])
def test_online_equals_dense_with_scaling_and_relaxation(scaling, relaxation, x64):
    x, y, a, b = _problem(1)
    kwargs = dict(a=a, b=b, epsilon=0.02, epsilon_scaling=scaling, overrelaxation=relaxation,
                  threshold=1e-8, max_iterations=20_000)
    _same(sinkhorn(x, y, online=_rows(8, 53), **kwargs), sinkhorn(x, y, online=None, **kwargs))


def test_online_equals_dense_in_the_fixed_mode(x64):
    # The online log-sum-exp is the exact two-pass one, the dense one is
    # shifted by the last iterate: the same iterates up to rounding.
    x, y, a, b = _problem(2)
    kwargs = dict(a=a, b=b, epsilon=0.1, num_iterations=25)
    _same(sinkhorn(x, y, online=_rows(6, 53), **kwargs), sinkhorn(x, y, online=None, **kwargs))


@pytest.mark.parametrize("num_iterations", [None, 15])
@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean"])
def test_online_gradients_equal_dense(num_iterations, cost, x64):
    x, y, a, b = _problem(3, n=17, m=23)

    def loss(online):
        def value(x, y, a, b, epsilon):
            out = sinkhorn(x, y, a=a, b=b, epsilon=epsilon, cost=cost, online=online,
                           num_iterations=num_iterations, threshold=1e-11, max_iterations=20_000)
            return out.regularized_cost + 0.3 * out.cost + jnp.sum(jnp.sin(out.f)) * 0.1
        return jax.grad(value, argnums=(0, 1, 2, 3, 4))(x, y, a, b, 0.2)

    for got, want in zip(loss(_rows(5, 23)), loss(None)):
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-10)


def test_online_divergence_equals_dense(x64):
    x, y, a, b = _problem(4)
    kwargs = dict(a=a, b=b, epsilon=0.1, threshold=1e-10, max_iterations=20_000)
    dense = sinkhorn_divergence(x, y, online=None, **kwargs)
    online = sinkhorn_divergence(x, y, online=Online(block_bytes=9 * 37 * 8), **kwargs)
    np.testing.assert_allclose(online.divergence, dense.divergence, rtol=1e-9, atol=1e-13)
    for part in ("xy", "xx", "yy"):
        _same(getattr(online, part), getattr(dense, part))
    grad = jax.grad(lambda x, online: sinkhorn_divergence(x, y, online=online, **kwargs).divergence)
    np.testing.assert_allclose(grad(x, Online(block_bytes=9 * 53 * 8)), grad(x, None), rtol=1e-7,
                               atol=1e-11)


def test_auto_goes_online_above_the_budget(monkeypatch):
    x, y, a, b = _problem(5)
    n, m = x.shape[0], y.shape[0]
    assert _sinkhorn._block("auto", n, m, jnp.float32) is None
    monkeypatch.setattr(_sinkhorn, "AUTO_ONLINE_BYTES", n * m * 4 - 1)
    assert _sinkhorn._block("auto", n, m, jnp.float32) == n  # Online(): one 4 MiB block holds every row
    with pytest.raises(ValueError, match="online"):  # the plan is refused once online
        sinkhorn(x, y, epsilon=0.1, return_plan=True)
    want = sinkhorn(x, y, epsilon=0.1, online=None)
    got = sinkhorn(x, y, epsilon=0.1)
    np.testing.assert_allclose(got.cost, want.cost, rtol=1e-5)


def _temp_bytes(n, m, online, d=2, num_iterations=None, gradient=False):
    x = jax.ShapeDtypeStruct((n, d), jnp.float32)
    y = jax.ShapeDtypeStruct((m, d), jnp.float32)

    def value(x, y):
        return sinkhorn(x, y, epsilon=0.1, online=online,
                        num_iterations=num_iterations).regularized_cost

    analysis = jax.jit(jax.grad(value) if gradient else value).lower(x, y).compile()
    analysis = analysis.memory_analysis()
    if analysis is None:
        pytest.skip("this backend gives no memory analysis")
    return analysis.temp_size_in_bytes


# The value and the gradient in both modes. (Before Points.iteration put the
# fixed mode's scan body under jax.checkpoint, its gradient kept 213 MiB of
# temporaries at n = 2,048, m = 8,192: 3.3 times the matrix.)
@pytest.mark.parametrize("num_iterations, gradient",
                         [(None, False), (10, False), (None, True), (10, True)])
def test_online_memory_does_not_grow_with_the_matrix(num_iterations, gradient):
    # The dense solver's temporaries hold [n, m] arrays; the online one's a
    # block of about block_bytes plus vectors, whatever m.
    n, block_bytes = 2048, 2**20
    online = Online(block_bytes=block_bytes)
    kwargs = dict(num_iterations=num_iterations, gradient=gradient)
    small = _temp_bytes(n, 1024, online, **kwargs)
    large = _temp_bytes(n, 16384, online, **kwargs)
    dense = _temp_bytes(n, 16384, None, **kwargs)
    matrix = n * 16384 * 4  # 128 MiB
    assert dense > matrix
    assert large < matrix / 8
    # Growth from m = 1,024 to 16,384: vectors over m, a few blocks, never the matrix.
    assert large - small < 8 * block_bytes + 64 * (16384 - 1024) * 4


def test_bad_online_arguments():
    x, y, _, _ = _problem(6)
    with pytest.raises(TypeError, match="online must be"):
        sinkhorn(x, y, epsilon=0.1, online="yes")
    with pytest.raises(ValueError, match="block_bytes"):
        Online(block_bytes=0)
    with pytest.raises(ValueError, match="return_plan"):
        sinkhorn(x, y, epsilon=0.1, online=Online(), return_plan=True)
