"""jgan.losses against closed forms in numpy (float64), at extremes, and against theory."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax
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
    # One-sided label smoothing (Salimans et al. 2016, §3.4), α = 0.9:
    # cross-entropy against the target α on real data, 0 on generated data.
    "minimax_discriminator_loss(real_label=0.9)": (
        functools.partial(L.minimax_discriminator_loss, real_label=0.9), 2,
        lambda r, f: -0.9 * _log_sigmoid(r) - 0.1 * _log_one_minus_sigmoid(r) - _log_one_minus_sigmoid(f)),
    "least_squares_discriminator_loss(real_label=0.9)": (
        functools.partial(L.least_squares_discriminator_loss, real_label=0.9), 2,
        lambda r, f: 0.5 * (r - 0.9) ** 2 + 0.5 * f**2),
    # Relativistic average losses (Jolicoeur-Martineau 2019), written from the
    # paper's formulas: the second argument's mean is the "average" compared with.
    "relativistic_average_discriminator_loss": (
        L.relativistic_average_discriminator_loss, 2,
        lambda r, f: -_log_sigmoid(r - f.mean()) - _log_one_minus_sigmoid(f - r.mean())),
    "relativistic_average_generator_loss": (
        L.relativistic_average_generator_loss, 2,
        lambda f, r: -_log_sigmoid(f - r.mean()) - _log_one_minus_sigmoid(r - f.mean())),
    "relativistic_average_least_squares_discriminator_loss": (
        L.relativistic_average_least_squares_discriminator_loss, 2,
        lambda r, f: (r - f.mean() - 1) ** 2 + (f - r.mean() + 1) ** 2),
    "relativistic_average_least_squares_generator_loss": (
        L.relativistic_average_least_squares_generator_loss, 2,
        lambda f, r: (f - r.mean() - 1) ** 2 + (r - f.mean() + 1) ** 2),
    "relativistic_average_hinge_discriminator_loss": (
        L.relativistic_average_hinge_discriminator_loss, 2,
        lambda r, f: np.maximum(0, 1 - (r - f.mean())) + np.maximum(0, 1 + (f - r.mean()))),
    "relativistic_average_hinge_generator_loss": (
        L.relativistic_average_hinge_generator_loss, 2,
        lambda f, r: np.maximum(0, 1 - (f - r.mean())) + np.maximum(0, 1 + (r - f.mean()))),
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
    lambda x: L.relativistic_average_discriminator_loss(x, x),
    lambda x: L.relativistic_average_generator_loss(x, x),
    lambda x: L.relativistic_average_least_squares_discriminator_loss(x, x),
    lambda x: L.relativistic_average_hinge_generator_loss(x, x),
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


# ---------------------------------------------------------------------------
# One-sided label smoothing (Salimans et al. 2016, §3.4).


@pytest.mark.parametrize("d_loss", [L.minimax_discriminator_loss, L.least_squares_discriminator_loss])
def test_real_label_one_is_the_plain_loss_bit_for_bit(d_loss):
    r = jnp.array([-1e4, -3.0, 0.0, 0.5, 7.0, 1e4], jnp.float32)
    f = r[::-1]
    for reduction in ("mean", "none"):
        plain = jax.value_and_grad(lambda r, f: jnp.sum(d_loss(r, f, reduction=reduction)), (0, 1))(r, f)
        one = jax.value_and_grad(
            lambda r, f: jnp.sum(d_loss(r, f, reduction=reduction, real_label=1.0)), (0, 1))(r, f)
        chex.assert_trees_all_equal(one, plain)
    # ... and 0.9 is not (the tests below could fail).
    assert float(d_loss(r[1:-1], f[1:-1], real_label=0.9)) != float(d_loss(r[1:-1], f[1:-1]))


def test_smoothed_cross_entropy_is_exact_far_in_the_tails():
    # −0.9 log σ(r) − 0.1 log(1 − σ(r)): 0.1·r for r ≫ 0, −0.9·r for r ≪ 0;
    # its derivative σ(r) − 0.9 (a naive log(sigmoid(x)) gives inf / NaN here).
    r = jnp.array([1e4, -1e4], jnp.float32)
    far = jnp.full(2, -1e4, jnp.float32)  # The fake term is then exactly 0.
    per_example = L.minimax_discriminator_loss(r, far, reduction="none", real_label=0.9)
    np.testing.assert_allclose(per_example, [1e3, 9e3], rtol=1e-6)
    grad = jax.grad(lambda r: jnp.sum(L.minimax_discriminator_loss(r, far, reduction="none", real_label=0.9)))(r)
    np.testing.assert_allclose(grad, [0.1, -0.9], rtol=1e-6)


class TestSmoothedOptimalDiscriminator:
    """The smoothed losses' minimiser is D*(x) = α·p(x) / (p(x) + q(x)) (Salimans et al. §3.4).

    Per grid point x the loss is p(x)·ℓ_real(s) + q(x)·ℓ_fake(s) in the
    discriminator's output s; it is minimised here over s by Newton's method.
    """

    grid = np.linspace(-10.0, 12.0, 4001)
    p = norm.pdf(grid, loc=0.0, scale=1.0)  # p_data
    q = norm.pdf(grid, loc=1.5, scale=2.0)  # p_g
    alpha = 0.9

    def minimise(self, d_loss):
        other = jnp.zeros_like(self.grid)  # A constant in the other slot: it does not move the minimiser.

        def objective(s):
            real = d_loss(s, other, reduction="none", real_label=self.alpha)
            fake = d_loss(other, s, reduction="none", real_label=self.alpha)
            return jnp.sum(self.p * real + self.q * fake)

        grad = jax.grad(objective)

        def newton(s, _):  # Separable and convex: a diagonal Newton step per point.
            g, h = jax.jvp(grad, (s,), (jnp.ones_like(s),))
            return s - g / h, None

        return jax.jit(lambda s: lax.scan(newton, s, None, length=30)[0])(jnp.zeros_like(self.grid))

    def test_cross_entropy_minimiser_is_alpha_p_over_p_plus_q(self, x64):
        d_star = jax.nn.sigmoid(self.minimise(L.minimax_discriminator_loss))
        expected = self.alpha * self.p / (self.p + self.q)
        np.testing.assert_allclose(d_star, expected, rtol=1e-9, atol=1e-12)
        assert float(jnp.max(d_star)) < self.alpha  # Never fully confident on real data.

    def test_least_squares_minimiser_is_alpha_p_over_p_plus_q(self, x64):
        # Mao et al. eq. 4 with a = 0, b = α: D* = α p / (p + q), in score space.
        d_star = self.minimise(L.least_squares_discriminator_loss)
        np.testing.assert_allclose(d_star, self.alpha * self.p / (self.p + self.q), rtol=1e-9, atol=1e-12)


SMOOTHABLE = {
    "minimax": L.minimax_discriminator_loss,
    "non_saturating": L.minimax_discriminator_loss,
    "maximum_likelihood": L.minimax_discriminator_loss,
    "least_squares": L.least_squares_discriminator_loss,
}


@pytest.mark.parametrize("name", sorted(SMOOTHABLE))
def test_one_sided_label_smoothing_smooths_only_the_discriminators_real_targets(name, x64):
    family = L.one_sided_label_smoothing(name, real_label=0.8)
    plain = L.LOSS_FAMILIES[name]
    assert family.g_loss is plain.g_loss
    assert family._replace(d_loss=None) == plain._replace(d_loss=None)  # The flags are kept.
    assert family == L.loss_family(family)
    rng = np.random.default_rng(2)
    r, f = rng.normal(scale=3.0, size=(2, 11))
    np.testing.assert_allclose(family.d_loss(r, f, reduction="none"),
                               SMOOTHABLE[name](r, f, reduction="none", real_label=0.8), rtol=1e-14)
    # One-sided: what smoothing adds depends on the real outputs only, never on the fake ones.
    added = family.d_loss(r, f, reduction="none") - plain.d_loss(r, f, reduction="none")
    np.testing.assert_allclose(added, family.d_loss(r, 5 * f, reduction="none") - plain.d_loss(r, 5 * f, reduction="none"),
                               atol=1e-12)
    assert np.all(np.abs(added) > 1e-6)


@pytest.mark.parametrize("loss, match", [
    ("wasserstein", "not probabilities"),
    ("hinge", "margin"),
    ("relativistic_average", "ordering"),
    ("relativistic_average_least_squares", "ordering"),
    ("relativistic_average_hinge", "ordering"),
    (L.LOSS_FAMILIES["hinge"], "margin"),
    (L.one_sided_label_smoothing(), "smoothed family"),
    (L.LossFamily(lambda r, f: L.minimax_discriminator_loss(r, f), L.non_saturating_generator_loss), "not minimax"),
    ("lsgan", "Unknown loss"),
])
def test_one_sided_label_smoothing_refuses_families_without_a_real_label(loss, match):
    with pytest.raises(ValueError, match=match):
        L.one_sided_label_smoothing(loss)


@pytest.mark.parametrize("real_label, error, match", [
    (0.0, ValueError, "> 0"), (-0.1, ValueError, "> 0"), (1.01, ValueError, r"\(0, 1\]"),
    (float("nan"), ValueError, "finite"), ("0.9", TypeError, "number"), (True, TypeError, "number"),
])
def test_real_label_must_be_in_zero_one(real_label, error, match):
    with pytest.raises(error, match=f"real_label.*{match}"):
        L.one_sided_label_smoothing(real_label=real_label)
    with pytest.raises(error, match=f"real_label.*{match}"):
        L.minimax_discriminator_loss(jnp.zeros(2), jnp.zeros(2), real_label=real_label)


def test_make_gan_trains_the_discriminator_on_the_smoothed_loss(x64):
    """One step of make_gan(loss=one_sided_label_smoothing()) with SGD against the update by hand."""
    from jgan import steps
    from nets import discriminator, generator

    rng = np.random.default_rng(3)

    def layer(n_in, n_out):
        return (jnp.asarray(rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)), jnp.asarray(rng.normal(size=n_out) * 0.1))

    g_params, d_params = [layer(2, 8), layer(8, 2)], [layer(2, 8), layer(8, 1)]
    z = jnp.asarray(rng.normal(size=(16, 2)))
    real = jnp.asarray(rng.normal(size=(16, 2)) + 1.0)
    lr = 0.1
    gan = steps.make_gan(generator=generator, discriminator=discriminator, g_optimizer=optax.sgd(lr),
                         d_optimizer=optax.sgd(lr), prior=lambda key, n: z[:n],
                         loss=L.one_sided_label_smoothing("non_saturating", real_label=0.9))
    # A tiny program compiled once: no LLVM optimisation passes (as in tests/test_unroll.py).
    step = jax.jit(gan.step, compiler_options={"xla_backend_optimization_level": 0})
    state, metrics = step(gan.init(jax.random.key(0), g_params, d_params), real)

    def smoothed(d):
        r, f = discriminator(d, real), discriminator(d, generator(g_params, z))
        # −0.9 log σ(r) − 0.1 log(1 − σ(r)) − log(1 − σ(f)), written out.
        return jnp.mean(-0.9 * jax.nn.log_sigmoid(r) - 0.1 * jax.nn.log_sigmoid(-r) - jax.nn.log_sigmoid(-f))

    expected = jax.tree.map(lambda p, g: p - lr * g, d_params, jax.grad(smoothed)(d_params))
    chex.assert_trees_all_close(state.d_params, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(metrics["d_loss"], smoothed(d_params), rtol=1e-10)
