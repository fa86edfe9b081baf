"""jgan.losses against closed forms in numpy (float64), at extremes, and against theory."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import norm

from jgan import losses as L


def _log_sigmoid(x):  # numpy float64 reference; fine for |x| < 30.
    return -np.log1p(np.exp(-x))


def _log_one_minus_sigmoid(x):
    return -np.log1p(np.exp(x))


# name -> (function, number of logit arguments, numpy per-example reference)
CLOSED_FORMS = {
    "minimax_discriminator_loss": (
        L.minimax_discriminator_loss, 2, lambda r, f: -_log_sigmoid(r) - _log_one_minus_sigmoid(f)),
    "minimax_generator_loss": (
        L.minimax_generator_loss, 1, lambda f: _log_one_minus_sigmoid(f)),
    "non_saturating_generator_loss": (
        L.non_saturating_generator_loss, 1, lambda f: -_log_sigmoid(f)),
    "maximum_likelihood_generator_loss": (
        L.maximum_likelihood_generator_loss, 1, lambda f: -0.5 * np.exp(f)),
    "wasserstein_discriminator_loss": (
        L.wasserstein_discriminator_loss, 2, lambda r, f: f - r),
    "wasserstein_generator_loss": (L.wasserstein_generator_loss, 1, lambda f: -f),
    "hinge_discriminator_loss": (
        L.hinge_discriminator_loss, 2, lambda r, f: np.maximum(0, 1 - r) + np.maximum(0, 1 + f)),
    "hinge_generator_loss": (L.hinge_generator_loss, 1, lambda f: -f),
    "least_squares_discriminator_loss": (
        L.least_squares_discriminator_loss, 2, lambda r, f: 0.5 * (r - 1) ** 2 + 0.5 * f**2),
    "least_squares_generator_loss": (
        L.least_squares_generator_loss, 1, lambda f: 0.5 * (f - 1) ** 2),
}


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_loss_equals_closed_form_in_float64(name, x64):
    fn, arity, reference = CLOSED_FORMS[name]
    rng = np.random.default_rng(0)
    args = [rng.normal(scale=4.0, size=37) for _ in range(arity)]
    expected = reference(*args)
    per_example = fn(*[jnp.asarray(a) for a in args], reduction="none")
    assert per_example.dtype == jnp.float64
    np.testing.assert_allclose(per_example, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fn(*args), expected.mean(), rtol=1e-12)


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_batch_by_one_equals_flat(name):
    fn, arity, _ = CLOSED_FORMS[name]
    args = [jax.random.normal(jax.random.key(i), (9,)) for i in range(arity)]
    np.testing.assert_allclose(fn(*[a[:, None] for a in args]), fn(*args), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
@pytest.mark.parametrize("magnitude", [1e4, -1e4])
def test_finite_values_and_gradients_at_extreme_logits(name, magnitude):
    fn, arity, _ = CLOSED_FORMS[name]
    logits = jnp.array([magnitude, -magnitude, magnitude, 0.0], jnp.float32)
    value, grads = jax.value_and_grad(lambda *a: fn(*a), argnums=tuple(range(arity)))(
        *([logits] * arity)
    )
    chex.assert_tree_all_finite((value, grads))


def test_stable_losses_are_exact_far_in_the_tails():
    # log σ(−1e4) = −1e4 exactly in float32; a naive log(sigmoid(x)) gives −inf.
    f = jnp.array([1e4], jnp.float32)
    np.testing.assert_allclose(L.non_saturating_generator_loss(-f), 1e4, rtol=1e-6)
    np.testing.assert_allclose(L.minimax_generator_loss(f), -1e4, rtol=1e-6)
    np.testing.assert_allclose(L.minimax_discriminator_loss(-f, f), 2e4, rtol=1e-6)
    # Saturation: the minimax generator's gradient vanishes where D rejects
    # the samples; the non-saturating one's does not.
    g_sat = jax.grad(lambda x: L.minimax_generator_loss(x))(-f)
    g_ns = jax.grad(lambda x: L.non_saturating_generator_loss(x))(-f)
    assert abs(float(g_sat[0])) < 1e-30 and abs(float(g_ns[0]) + 1.0) < 1e-6


def test_maximum_likelihood_clamp_and_unclamped_form(x64):
    f = jnp.array([40.0, 1.0])
    np.testing.assert_allclose(
        L.maximum_likelihood_generator_loss(f, reduction="none"),
        [-0.5 * np.exp(30.0), -0.5 * np.e], rtol=1e-12)
    np.testing.assert_allclose(
        L.maximum_likelihood_generator_loss(f, reduction="none", max_logit=None),
        -0.5 * np.exp([40.0, 1.0]), rtol=1e-12)


def test_maximum_likelihood_gradient_is_the_kl_direction():
    # At the optimal discriminator exp(f) = p/q, so d/dθ of the loss weights
    # each sample by the density ratio: check dL/df = −½ exp(f) / batch.
    f = jnp.array([-1.0, 0.0, 2.0])
    np.testing.assert_allclose(
        jax.grad(lambda x: L.maximum_likelihood_generator_loss(x))(f),
        -0.5 * np.exp(f) / 3, rtol=1e-6)


def test_cycle_consistency_is_per_example_mean_absolute_error(x64):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(2, 5, 4, 4, 3))
    expected = np.abs(x - y).reshape(5, -1).mean(axis=1)
    np.testing.assert_allclose(L.cycle_consistency_loss(x, y, reduction="none"), expected, rtol=1e-12)
    np.testing.assert_allclose(L.cycle_consistency_loss(x, y), expected.mean(), rtol=1e-12)
    assert float(L.cycle_consistency_loss(x, x)) == 0.0


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_wrong_shapes_are_errors(name):
    fn, arity, _ = CLOSED_FORMS[name]
    with pytest.raises(ValueError, match=r"\[batch\] or \[batch, 1\]"):
        fn(*([jnp.zeros((4, 2))] * arity))
    with pytest.raises(ValueError, match=r"\[batch\] or \[batch, 1\]"):
        fn(*([jnp.zeros((2, 2, 1))] * arity))
    with pytest.raises(ValueError, match="reduction"):
        fn(*([jnp.zeros(4)] * arity), reduction="sum")


def test_per_example_pairs_need_equal_batches():
    with pytest.raises(ValueError, match="same size"):
        L.minimax_discriminator_loss(jnp.zeros(4), jnp.zeros(3), reduction="none")
    # Unequal batches are fine for the mean.
    np.testing.assert_allclose(
        L.minimax_discriminator_loss(jnp.zeros(4), jnp.zeros(3)), 2 * np.log(2), rtol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        L.cycle_consistency_loss(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


class TestOptimalDiscriminator:
    """Goodfellow et al. 2014, Prop. 1 and Thm. 1 on a 1-D grid."""

    grid = np.linspace(-12.0, 14.0, 20001)
    dx = grid[1] - grid[0]
    p = norm.pdf(grid, loc=0.0, scale=1.0)  # p_data
    q = norm.pdf(grid, loc=1.5, scale=2.0)  # p_g

    def objective(self, logits):
        """−V(D, G) of eq. 1 as a quadrature, built from the library's loss.

        minimax_discriminator_loss(r, f) per example is −log σ(r) − log(1 − σ(f));
        a logit of ∓1e4 makes the other term exactly 0, isolating each term.
        """
        far = jnp.full_like(logits, 1e4)
        real_term = L.minimax_discriminator_loss(logits, -far, reduction="none")
        fake_term = L.minimax_discriminator_loss(far, logits, reduction="none")
        return jnp.sum(self.dx * (self.p * real_term + self.q * fake_term))

    def test_maximiser_is_p_over_p_plus_q_and_value_is_jsd(self, x64):
        logits = jnp.zeros_like(self.grid)
        grad = jax.grad(self.objective)
        for _ in range(40):  # Newton: the objective is separable and convex.
            g, h = jax.jvp(grad, (logits,), (jnp.ones_like(logits),))
            logits = logits - g / h
        d_star = jax.nn.sigmoid(logits)
        np.testing.assert_allclose(d_star, self.p / (self.p + self.q), rtol=1e-9, atol=1e-12)

        value = -float(self.objective(logits))  # V(D*, G)
        p_mass, q_mass = self.p * self.dx, self.q * self.dx
        jsd = jensenshannon(p_mass, q_mass) ** 2  # scipy: sqrt of JSD, natural log.
        assert jsd > 0.05  # The densities differ: the check below is not 0 = 0.
        np.testing.assert_allclose(value, -np.log(4.0) + 2.0 * jsd, rtol=1e-6)

    def test_value_is_minus_log_4_when_the_generator_is_perfect(self, x64):
        # p_g = p_data: D* = 1/2 everywhere and V = −log 4 (Theorem 1).
        self.q = self.p
        value = -float(self.objective(jnp.zeros_like(self.grid)))
        np.testing.assert_allclose(value, -np.log(4.0), rtol=1e-6)


@pytest.mark.parametrize("loss", [
    lambda x: L.minimax_discriminator_loss(x, x), L.minimax_generator_loss, L.non_saturating_generator_loss,
    L.maximum_likelihood_generator_loss, lambda x: L.wasserstein_discriminator_loss(x, x),
    L.wasserstein_generator_loss, lambda x: L.hinge_discriminator_loss(x, x), L.hinge_generator_loss,
    lambda x: L.least_squares_discriminator_loss(x, x), L.least_squares_generator_loss,
    lambda x: L.cycle_consistency_loss(x, x),
])
def test_empty_batches_are_errors(loss):
    with pytest.raises(ValueError, match="empty"):
        jax.jit(loss)(jnp.zeros((0,)))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.float32, jnp.float64])
def test_maximum_likelihood_loss_is_finite_at_any_logit_in_every_dtype(dtype, x64):
    logits = jnp.array([-1e4, -30.0, 0.0, 5.0, 30.0, 1e4], dtype)
    value, grad = jax.value_and_grad(lambda f: L.maximum_likelihood_generator_loss(f).astype(jnp.float32))(logits)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad, np.float64)))
    # Unclamped where exp fits the dtype: −½·exp(f)/n and its derivative.
    np.testing.assert_allclose(grad[2], -0.5 / 6, rtol=1e-3)
