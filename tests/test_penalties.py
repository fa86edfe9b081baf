"""jgan.penalties: exact values on linear critics, finite differences, nested grad, clipping."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from jgan import penalties


def _linear_critic(w):
    return lambda x: x.reshape(x.shape[0], -1) @ w


def _tanh_critic(params):
    w1, b1, w2 = params
    return lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w1 + b1) @ w2


def _tanh_params(key, d, h=8, dtype=jnp.float32):
    k1, k2, k3 = jax.random.split(key, 3)
    return (jax.random.normal(k1, (d, h), dtype), jax.random.normal(k2, (h,), dtype),
            jax.random.normal(k3, (h,), dtype))


@pytest.mark.parametrize("norm_w, one_sided, expected", [
    (5.0, False, 16.0), (0.5, False, 0.25), (5.0, True, 16.0), (0.5, True, 0.0)])
def test_gradient_penalty_is_exact_on_a_linear_critic(norm_w, one_sided, expected):
    # ∇ₓ(w·x) = w everywhere, so the penalty is (‖w‖ − 1)² for any interpolate.
    w = jnp.array([0.6, 0.0, -0.8, 0.0]) * norm_w
    real = jax.random.normal(jax.random.key(0), (11, 2, 2))
    fake = jax.random.normal(jax.random.key(1), (11, 2, 2))
    gp = penalties.gradient_penalty(_linear_critic(w), real, fake, jax.random.key(2), one_sided=one_sided)
    np.testing.assert_allclose(gp, expected, rtol=1e-6)


def test_gradient_penalty_target():
    w = jnp.array([3.0, 4.0])
    gp = penalties.gradient_penalty(_linear_critic(w), jnp.ones((3, 2)), jnp.zeros((3, 2)),
                                    jax.random.key(0), target=2.0)
    np.testing.assert_allclose(gp, 9.0, rtol=1e-6)


def test_interpolates_lie_on_segments_with_one_t_per_example():
    real = jax.random.normal(jax.random.key(0), (64, 3))
    fake = jax.random.normal(jax.random.key(1), (64, 3))
    x_hat = penalties.interpolate(real, fake, jax.random.key(2))
    t = (x_hat - fake) / (real - fake)  # Same t on every coordinate of an example.
    np.testing.assert_allclose(t, jnp.broadcast_to(t[:, :1], t.shape), rtol=1e-4, atol=1e-4)
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert float(t.std()) > 0.2  # Uniform on [0, 1] has std 0.29.


def test_gradient_penalty_matches_finite_differences(x64):
    d = 5
    params = _tanh_params(jax.random.key(0), d, dtype=jnp.float64)
    critic = _tanh_critic(params)
    real = jax.random.normal(jax.random.key(1), (6, d), jnp.float64)
    fake = jax.random.normal(jax.random.key(2), (6, d), jnp.float64)
    key = jax.random.key(3)
    x_hat = np.asarray(penalties.interpolate(real, fake, key))
    eps = 1e-6
    fd = np.zeros_like(x_hat)
    for j in range(d):  # Central differences of the critic, coordinate by coordinate.
        e = np.zeros(d)
        e[j] = eps
        fd[:, j] = (np.asarray(critic(x_hat + e)) - np.asarray(critic(x_hat - e))) / (2 * eps)
    expected = np.mean((np.linalg.norm(fd, axis=1) - 1.0) ** 2)
    np.testing.assert_allclose(penalties.gradient_penalty(critic, real, fake, key), expected, rtol=1e-7)


def test_gradient_penalty_nested_grad_wrt_critic_parameters(x64):
    d = 3
    params = _tanh_params(jax.random.key(0), d, dtype=jnp.float64)
    real = jax.random.normal(jax.random.key(1), (4, d), jnp.float64)
    fake = jax.random.normal(jax.random.key(2), (4, d), jnp.float64)

    def penalty(p):
        return penalties.gradient_penalty(_tanh_critic(p), real, fake, jax.random.key(3))

    check_grads(penalty, (params,), order=1, modes=("rev",), eps=1e-6, atol=1e-6, rtol=1e-6)
    # And the gradient is not trivially zero.
    assert float(optax.tree.norm(jax.grad(penalty)(params))) > 1e-3


def test_r1_penalty_closed_forms(x64):
    x = jax.random.normal(jax.random.key(0), (7, 4), jnp.float64)
    w = jnp.array([1.0, -2.0, 0.5, 3.0], jnp.float64)
    np.testing.assert_allclose(penalties.r1_penalty(_linear_critic(w), x), float(w @ w), rtol=1e-12)
    # critic(x) = ½‖x‖² has ∇ = x, so the penalty is E‖x‖².
    quadratic = lambda x: 0.5 * jnp.sum(x**2, axis=-1)  # noqa: E731
    np.testing.assert_allclose(penalties.r1_penalty(quadratic, x),
                               np.mean(np.sum(np.asarray(x) ** 2, axis=1)), rtol=1e-12)


def test_penalties_are_finite_where_the_gradient_is_zero():
    # ‖∇‖ = 0 is where sqrt has an infinite derivative; the penalty's gradient must stay finite.
    zero_critic = lambda w: (lambda x: x @ w)  # noqa: E731
    g = jax.grad(lambda w: penalties.gradient_penalty(
        zero_critic(w), jnp.ones((3, 2)), jnp.zeros((3, 2)), jax.random.key(0)))(jnp.zeros(2))
    chex.assert_tree_all_finite(g)


def test_penalty_bad_input():
    critic = _linear_critic(jnp.ones(2))
    with pytest.raises(ValueError, match="same shape"):
        penalties.gradient_penalty(critic, jnp.ones((3, 2)), jnp.ones((4, 2)), jax.random.key(0))
    with pytest.raises(ValueError, match=r"\[batch\] or \[batch, 1\]"):
        penalties.r1_penalty(lambda x: jnp.stack([x[:, 0], x[:, 1]], 1), jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="scores for a batch"):
        penalties.r1_penalty(lambda x: jnp.sum(x, axis=0), jnp.ones((3, 4)))


@pytest.mark.parametrize("c", [0.01, 0.5])
def test_weight_clipping_keeps_parameters_in_the_box_after_every_update(c):
    key = jax.random.key(0)
    params = {"w": jax.random.normal(key, (64, 32)), "b": jnp.linspace(-3, 3, 32)}
    tx = optax.chain(optax.rmsprop(5e-2), penalties.weight_clipping(c))
    state = tx.init(params)
    for i in range(50):
        grads = jax.tree.map(
            lambda p, k=jax.random.fold_in(key, i): jax.random.normal(k, p.shape) * 10, params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        for leaf in jax.tree.leaves(params):
            assert float(jnp.max(jnp.abs(leaf))) <= c, f"update {i}: {float(jnp.max(jnp.abs(leaf)))} > {c}"
    # The box is reached from both sides.
    assert float(params["w"].max()) == pytest.approx(c) and float(params["w"].min()) == pytest.approx(-c)


def test_weight_clipping_leaves_updates_inside_the_box_alone():
    params = jnp.array([0.0, 0.001, -0.002])
    updates = jnp.array([0.001, -0.002, 0.003])
    clipped, _ = penalties.weight_clipping(0.01).update(updates, penalties.WeightClippingState(), params)
    np.testing.assert_allclose(clipped, updates, rtol=1e-6, atol=1e-9)


def test_weight_clipping_bad_input():
    with pytest.raises(ValueError, match="c must be >= 0"):
        penalties.weight_clipping(-0.1)
    tx = penalties.weight_clipping(0.1)
    with pytest.raises(ValueError, match="needs params"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


def test_weight_clipping_differentiates_as_the_plain_clip():
    """d(p + u')/du is 1 inside the box and 0 outside; the ulp correction is a constant."""
    tx = penalties.weight_clipping(0.5)
    params = jnp.array([0.0, 0.4, -0.4, 0.45])
    u = jnp.array([0.1, 0.3, -0.3, 0.0])

    def clipped(u):
        updates, _ = tx.update(u, tx.init(params), params)
        return optax.apply_updates(params, updates)

    np.testing.assert_array_equal(clipped(u), params + jnp.array([0.1, 0.1, -0.1, 0.0]))
    np.testing.assert_array_equal(jnp.diag(jax.jacobian(clipped)(u)), [1.0, 0.0, 0.0, 1.0])


def test_weight_clipping_lands_in_a_tiny_box():
    """The one-ulp correction is a subnormal here (found by tests/test_properties.py's search):
    it must not be flushed to zero on its way into the update."""
    c = 1.6504763483161617e-37
    params = {"b": np.full(2, 8.106369e-36, np.float32)}
    tx = penalties.weight_clipping(c)
    updates, _ = tx.update({"b": np.zeros(2, np.float32)}, tx.init(params), params)
    new = np.asarray(optax.apply_updates(params, updates)["b"])
    assert np.all(np.abs(new) <= np.float32(c)), new
    assert np.all(new > 0.999 * c)
