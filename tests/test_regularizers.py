"""Regularisers with a state and a counter (LazyR1, LeCam) and augmentation in make_gan.

The references are independent of the code under test: ``penalties.r1_penalty``
called directly, numpy twins of LeCam's moving averages, a Python-loop twin
of a state threaded through a step's discriminator updates, the augmented
batch rebuilt outside the step, and a hand-written generator loss through the
augmentation differentiated with ``jax.grad``.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jgan import penalties, steps
from jgan.augment import Augmentation
from jgan.penalties import DiscriminatorRegularizer, LazyR1, LeCam, LeCamState, R1, RegularizerInputs
from jgan.unroll import Unrolled

from nets import discriminator, generator, mlp_init

LATENT = 3
BATCH = 8
SIDE = 4  # Images [batch, 4, 4, 1] for the augmentation tests.
UNROLLED = Unrolled(1, remat=False)  # One unrolled update: the path, compiled quickly.


# ---------------------------------------------------------------------------
# Test parts.


@dataclasses.dataclass(frozen=True)
class Recorded(DiscriminatorRegularizer):
    """Runs ``inner`` and records, at the index of the update's counter, what it saw and returned.

    Its state holds ``inner``'s and arrays of ``length`` slots: the term, R1 on
    the real inputs (``penalties.r1_penalty``, computed here), the means of
    the outputs it was given and of ``critic_fn`` on the real inputs, and how
    many times each counter was seen.
    """

    inner: DiscriminatorRegularizer
    length: int

    def init(self):
        slots = jnp.zeros(self.length)
        return {"inner": self.inner.init(), "term": slots, "r1": slots, "real_out": slots,
                "fake_out": slots, "critic_real": slots, "seen": slots}

    def regularize(self, inputs):
        state = inputs.state
        term, metrics, inner = self.inner.regularize(inputs._replace(state=state["inner"]))
        u = inputs.update
        record = {
            "term": term,
            "r1": penalties.r1_penalty(inputs.critic_fn, inputs.real),
            "real_out": jnp.mean(inputs.real_out),
            "fake_out": jnp.mean(inputs.fake_out),
            "critic_real": jnp.mean(inputs.critic_fn(inputs.real)),
        }
        new = {name: state[name].at[u].set(jax.lax.stop_gradient(value)) for name, value in record.items()}
        new["seen"] = state["seen"].at[u].add(1.0)
        new["inner"] = inner
        return term, metrics, new


@dataclasses.dataclass(frozen=True)
class Tally(DiscriminatorRegularizer):
    """A stateful part with a closed-form history: counts updates, sums counters, and adds nothing to the loss."""

    def init(self):
        return {"count": jnp.zeros((), jnp.int32), "sum": jnp.zeros((), jnp.int32), "squares": jnp.zeros(())}

    def regularize(self, inputs):
        s, u = inputs.state, inputs.update
        new = {"count": s["count"] + 1, "sum": s["sum"] + u, "squares": s["squares"] + jnp.square(u.astype(jnp.float32))}
        return jnp.zeros(()), {}, new


@dataclasses.dataclass(frozen=True)
class Offset(Augmentation):
    """x + δ with δ ~ N(0, scale²) drawn per example (through ``draw``, as a data-parallel step needs)."""

    scale: float = 1.0

    def __call__(self, x, *, key, draw):
        delta = draw(key, lambda k, n: self.scale * jax.random.normal(k, (n,)), x.shape[0])
        return x + delta.reshape((-1,) + (1,) * (x.ndim - 1))


@dataclasses.dataclass(frozen=True)
class Identity(Augmentation):
    def __call__(self, x, *, key, draw):
        return x


@dataclasses.dataclass(frozen=True)
class Blackout(Augmentation):
    """Every input becomes 0: the discriminator then sees nothing of the generator."""

    def __call__(self, x, *, key, draw):
        return jnp.zeros_like(x)


# ---------------------------------------------------------------------------
# Networks and GANs.


def _points_gan(d_regularizers, *, d_steps=1, optimizer=optax.adam(1e-2), **kw):
    """A GAN on 2-D points: MLPs 3-8-2 and 2-8-1."""
    key = jax.random.key(0)
    g_params = mlp_init(jax.random.key(1), [LATENT, 8, 2])
    d_params = mlp_init(jax.random.key(2), [2, 8, 1])
    gan = steps.make_gan(generator=generator, discriminator=discriminator, g_optimizer=optimizer,
                         d_optimizer=optimizer, prior=LATENT, d_steps=d_steps,
                         d_regularizers=d_regularizers, **kw)
    return gan, gan.init(key, g_params, d_params)


def _points(i, n=BATCH):
    return jax.random.normal(jax.random.fold_in(jax.random.key(7), i), (n, 2)) * 0.5 + 1.0


def _image_generator(params, z):
    return jnp.tanh(generator(params, z)).reshape(z.shape[0], SIDE, SIDE, 1)


def _image_gan(*, g_optimizer=optax.adam(1e-2), **kw):
    """A GAN on 4×4×1 images: MLPs 3-8-16 (tanh) and 16-8-1 (the discriminator flattens)."""
    g_params = mlp_init(jax.random.key(1), [LATENT, 8, SIDE * SIDE])
    d_params = mlp_init(jax.random.key(2), [SIDE * SIDE, 8, 1])
    gan = steps.make_gan(generator=_image_generator, discriminator=discriminator, g_optimizer=g_optimizer,
                         d_optimizer=optax.adam(1e-2), prior=LATENT, **kw)
    return gan, gan.init(jax.random.key(0), g_params, d_params)


def _images(i):
    return jnp.tanh(jax.random.normal(jax.random.fold_in(jax.random.key(8), i), (BATCH, SIDE, SIDE, 1)))


def _run(gan, state, batches):
    step = jax.jit(gan.step)
    history = []
    for batch in batches:
        state, metrics = step(state, batch)
        history.append(metrics)
    return state, history


def _step_keys(state, d_steps):
    """The keys of a step's updates, as make_gan derives them: ``split(fold_in(key, step), d_steps + 1)``."""
    return jax.random.split(jax.random.fold_in(state.key, state.step), d_steps + 1)


def _draw(key, sampler, n):
    return sampler(key, n)


# ---------------------------------------------------------------------------
# LazyR1


N_STEPS = 4


@pytest.mark.parametrize("d_steps, every", [(1, 2), (2, 3)])
def test_lazy_r1_is_r1_times_every_on_its_updates_and_zero_elsewhere(d_steps, every):
    """Inside the step, over consecutive updates: term = every · γ/2 · r1_penalty(D, x) where counter % every == 0, else 0.

    ``Recorded`` stores, per discriminator update, the term LazyR1 returned
    and ``penalties.r1_penalty`` on the same inputs; every counter
    ``step · d_steps + i`` occurs exactly once.
    """
    gamma, length = 2.0, N_STEPS * d_steps
    gan, state = _points_gan([Recorded(LazyR1(gamma, every=every), length)], d_steps=d_steps)
    state, history = _run(gan, state, [_points(i) for i in range(N_STEPS)])
    record = jax.tree.map(np.asarray, state.d_regularizer_state[0])
    np.testing.assert_array_equal(record["seen"], np.ones(length))
    on = np.arange(length) % every == 0
    assert record["r1"].min() > 0
    np.testing.assert_allclose(record["term"][on], every * gamma / 2 * record["r1"][on], rtol=1e-6)
    np.testing.assert_array_equal(record["term"][~on], 0.0)
    # The metric: the raw penalty where computed, 0 elsewhere, averaged over the step's updates.
    raw = np.where(on, record["r1"], 0.0).reshape(N_STEPS, d_steps).mean(1)
    np.testing.assert_allclose([float(m["r1"]) for m in history], raw, rtol=1e-6)


def test_lazy_r1_alone_matches_r1_directly_at_each_counter():
    """The part on its own: ``regularize`` at counters 0..5 against ``r1_penalty`` and R1's own term."""
    params = mlp_init(jax.random.key(3), [2, 8, 1])
    critic = lambda x: discriminator(params, x)  # noqa: E731
    real, fake = _points(0), _points(1) - 2.0
    raw = float(penalties.r1_penalty(critic, real))
    r1_term = float(R1(1.5)(critic, real, fake, key=jax.random.key(0), draw=_draw)[0])
    lazy = LazyR1(1.5, every=4)

    @jax.jit
    def term(update):
        inputs = RegularizerInputs(critic, real, fake, critic(real), critic(fake), jax.random.key(0),
                                   _draw, update, None)
        return lazy.regularize(inputs)

    for u in range(6):
        value, metrics, state = term(jnp.int32(u))
        assert state is None
        if u % 4 == 0:
            np.testing.assert_allclose(float(value), 4 * r1_term, rtol=1e-6)
            np.testing.assert_allclose(float(metrics["r1"]), raw, rtol=1e-6)
        else:
            assert float(value) == 0.0 and float(metrics["r1"]) == 0.0


def test_lazy_r1_every_one_is_r1():
    """``every=1`` takes the R1 step exactly (the same program: no cond, weight γ/2)."""
    gan, state = _points_gan([R1(1.0)])
    lazy_gan, lazy_state = _points_gan([LazyR1(1.0, every=1)])
    expected, _ = _run(gan, state, [_points(i) for i in range(2)])
    got, _ = _run(lazy_gan, lazy_state, [_points(i) for i in range(2)])
    jax.tree.map(np.testing.assert_array_equal, jax.tree.leaves(got.d_params), jax.tree.leaves(expected.d_params))


# ---------------------------------------------------------------------------
# LeCam


def _lecam_twin(real_means, fake_means, decay):
    """Anchors after each update by a Python loop: debiased EMAs of the means, updated before use."""
    ema_real = ema_fake = weight = 0.0
    anchors = []
    for r, f in zip(real_means, fake_means):
        ema_real = decay * ema_real + (1 - decay) * r
        ema_fake = decay * ema_fake + (1 - decay) * f
        weight = decay * weight + (1 - decay)
        anchors.append((ema_real / weight, ema_fake / weight, (ema_real, ema_fake, weight)))
    return anchors


@pytest.mark.parametrize("one_sided", [False, True])
def test_lecam_against_its_formula_over_several_updates(one_sided):
    """Term, metrics and state of five updates against numpy: R = E(D(x) − α_F)² + E(D(G(z)) − α_R)².

    (With ``one_sided`` the authors' code's relu on the differences.)
    """
    lecam = LeCam(0.3, decay=0.9, one_sided=one_sided)
    rng = np.random.default_rng(0)
    outputs = [(rng.normal(0.5, 1.0, BATCH).astype(np.float32), rng.normal(-0.5, 1.0, BATCH).astype(np.float32))
               for _ in range(5)]
    twin = _lecam_twin([r.mean() for r, _ in outputs], [f.mean() for _, f in outputs], 0.9)
    call = jax.jit(lambda real_out, fake_out, state: lecam.regularize(RegularizerInputs(
        None, None, None, real_out, fake_out, None, None, jnp.int32(0), state)))
    state = lecam.init()
    assert isinstance(state, LeCamState)
    for (real_out, fake_out), (anchor_real, anchor_fake, ema) in zip(outputs, twin):
        term, metrics, state = call(real_out, fake_out, state)
        above, below = real_out - anchor_fake, anchor_real - fake_out
        if one_sided:
            above, below = np.maximum(above, 0), np.maximum(below, 0)
        value = np.mean(above**2) + np.mean(below**2)
        np.testing.assert_allclose(float(metrics["lecam"]), value, rtol=1e-5)
        np.testing.assert_allclose(float(term), 0.3 * value, rtol=1e-5)
        np.testing.assert_allclose(float(metrics["lecam_anchor_real"]), anchor_real, rtol=1e-5)
        np.testing.assert_allclose(float(metrics["lecam_anchor_fake"]), anchor_fake, rtol=1e-5)
        np.testing.assert_allclose(np.array(state), np.array(ema), rtol=1e-5)
    # The first update's anchors are its own means (debiased), not 0.
    np.testing.assert_allclose(twin[0][:2], [outputs[0][0].mean(), outputs[0][1].mean()], rtol=1e-5)


def test_lecam_gradient_flows_through_the_outputs_not_the_anchors():
    """d term / d D(x) = 2λ (D(x) − α_F) / n: the anchors are constants (a finite difference would move them)."""
    lecam = LeCam(0.5, decay=0.0)  # decay 0: the anchors are this update's means.
    real_out, fake_out = jnp.array([1.0, 2.0, 4.0]), jnp.array([-1.0, 0.0, 0.5])

    def term(r):
        return lecam.regularize(RegularizerInputs(None, None, None, r, fake_out, None, None, 0, lecam.init()))[0]

    grad = jax.grad(term)(real_out)
    np.testing.assert_allclose(grad, 2 * 0.5 * (real_out - fake_out.mean()) / 3, rtol=1e-6)


# ---------------------------------------------------------------------------
# A state threaded through the step's updates.


def test_a_state_after_steps_of_three_updates_equals_a_python_loop_twin():
    """d_steps = 3, three steps: Tally's counters (closed form) and LeCam's anchors from the recorded outputs.

    ``Recorded`` stores, per update, the mean outputs LeCam was given (and
    D on the real inputs recomputed, which they must equal: no second
    forward pass is needed); a numpy loop over them gives LeCam's state.
    """
    d_steps, n_steps = 3, 3
    length = d_steps * n_steps
    gan, state = _points_gan([Tally(), Recorded(LeCam(0.3, decay=0.8), length)], d_steps=d_steps)
    assert state.d_regularizer_state[0]["count"] == 0
    state, history = _run(gan, state, [_points(i) for i in range(n_steps)])
    tally, record = jax.tree.map(np.asarray, state.d_regularizer_state)
    counters = np.arange(length)
    assert tally["count"] == length and tally["sum"] == counters.sum()
    np.testing.assert_allclose(tally["squares"], np.sum(counters.astype(np.float64) ** 2))
    np.testing.assert_array_equal(record["seen"], np.ones(length))
    np.testing.assert_allclose(record["real_out"], record["critic_real"], rtol=1e-6, atol=1e-7)
    twin = _lecam_twin(record["real_out"], record["fake_out"], 0.8)
    np.testing.assert_allclose(np.array(record["inner"]), np.array(twin[-1][2]), rtol=1e-5)
    last_step = twin[-d_steps:]
    np.testing.assert_allclose(float(history[-1]["lecam_anchor_real"]), np.mean([a[0] for a in last_step]), rtol=1e-5)


def test_stateless_regularizers_keep_the_state_field_empty_and_subclasses_work_unchanged():
    """A user subclass with the old ``__call__`` signature; the state has no regulariser state."""

    @dataclasses.dataclass(frozen=True)
    class Old(DiscriminatorRegularizer):
        def __call__(self, critic_fn, real, fake, *, key, draw):
            value = jnp.mean(jnp.square(critic_fn(real)))
            return 0.1 * value, {"old": value}

    gan, state = _points_gan([Old(), R1(1.0)])
    assert state.d_regularizer_state is None
    state, history = _run(gan, state, [_points(0)])
    assert state.d_regularizer_state is None and "old" in history[0] and "r1" in history[0]


def test_unrolled_updates_use_the_state_without_updating_it():
    """With Unrolled the state moves once per discriminator update only (Tally counts d_steps per step)."""
    gan, state = _points_gan([Tally(), LeCam(0.3)], d_steps=2, unroll=UNROLLED)
    state, _ = _run(gan, state, [_points(i) for i in range(2)])
    tally = state.d_regularizer_state[0]
    assert int(tally["count"]) == 4 and int(tally["sum"]) == 0 + 1 + 2 + 3


# ---------------------------------------------------------------------------
# Augmentation


@pytest.mark.parametrize("parts", [
    dict(d_steps=2, d_regularizers=[penalties.GradientPenalty(1.0), LeCam(0.3)]),
    dict(d_regularizers=[LeCam(0.3)], unroll=UNROLLED),
], ids=["gradient_penalty_lecam_k2", "unrolled_lecam"])
def test_an_identity_augmentation_gives_the_step_without_augmentation_bit_for_bit(parts):
    gan, state = _image_gan(**parts)
    augmented_gan, augmented_state = _image_gan(augment=Identity(), **parts)
    both = jax.jit(lambda a, b, batch: (gan.step(a, batch), augmented_gan.step(b, batch)))
    expected, got, history, expected_history = state, augmented_state, [], []
    for i in range(2):
        (expected, expected_metrics), (got, metrics) = both(expected, got, _images(i))
        expected_history.append(expected_metrics)
        history.append(metrics)
    for x, y in zip(jax.tree.leaves(jax.random.key_data(got.key)) + jax.tree.leaves(got._replace(key=None)),
                    jax.tree.leaves(jax.random.key_data(expected.key)) + jax.tree.leaves(expected._replace(key=None))):
        np.testing.assert_array_equal(x, y)
    jax.tree.map(np.testing.assert_array_equal, history, expected_history)


def test_the_regularizers_see_the_augmented_batch():
    """R1's metric equals r1_penalty on the real batch augmented as the step draws it (and not on the plain batch)."""
    augment = Offset(0.5)
    gan, state = _image_gan(augment=augment, d_regularizers=[R1(1.0)])
    real = _images(0)
    _, metrics = jax.jit(gan.step)(state, real)
    key = _step_keys(state, 1)[0]
    augmented = augment(real, key=jax.random.fold_in(key, steps._AUGMENT_REAL), draw=_draw)
    critic = lambda x: discriminator(state.d_params, x)  # noqa: E731
    expected = float(penalties.r1_penalty(critic, augmented))
    np.testing.assert_allclose(float(metrics["r1"]), expected, rtol=1e-5)
    assert abs(float(penalties.r1_penalty(critic, real)) - expected) > 1e-3 * expected


def test_the_generator_gradient_flows_through_the_augmentation():
    """SGD's generator update equals −lr · ∇ of the loss on D(aug(G(z))), written out by hand."""
    augment, lr = Offset(0.5), 0.1
    gan, state = _image_gan(augment=augment, g_optimizer=optax.sgd(lr))
    new_state, metrics = jax.jit(gan.step)(state, _images(0))
    g_key = _step_keys(state, 1)[1]
    z = jax.random.normal(jax.random.split(g_key)[0], (BATCH, LATENT))
    fake_key = jax.random.fold_in(g_key, steps._AUGMENT_FAKE)

    def g_loss(g_params):
        fake = augment(_image_generator(g_params, z), key=fake_key, draw=_draw)
        return jnp.mean(jax.nn.softplus(-discriminator(new_state.d_params, fake)))  # non-saturating

    loss, grads = jax.value_and_grad(g_loss)(state.g_params)
    np.testing.assert_allclose(float(metrics["g_loss"]), float(loss), rtol=1e-5)
    expected = jax.tree.map(lambda p, g: p - lr * g, state.g_params, grads)
    for x, y in zip(jax.tree.leaves(new_state.g_params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
    assert float(metrics["g_grad_norm"]) > 0


@pytest.mark.parametrize("extra", [{}, {"unroll": UNROLLED}], ids=["plain", "unrolled"])
def test_a_blackout_augmentation_cuts_the_generator_off(extra):
    """Every discriminator input 0: the generator's gradient is exactly 0 (with Unrolled too: the
    unrolled losses and the surrogate see the augmented batches); the identity gives a non-zero one."""
    gan, state = _image_gan(augment=Blackout(), **extra)
    _, metrics = jax.jit(gan.step)(state, _images(0))
    assert float(metrics["g_grad_norm"]) == 0.0
    gan, state = _image_gan(augment=Identity(), **extra)
    _, metrics = jax.jit(gan.step)(state, _images(0))
    assert float(metrics["g_grad_norm"]) > 1e-4


def test_a_relativistic_generator_loss_gets_the_outputs_on_the_augmented_real_batch():
    """``LossFamily(relativistic=True)``: the step calls ``g_loss(D(aug(G(z))), D(aug(x)))``, rebuilt here by hand."""
    from jgan.losses import LossFamily

    def d_loss(real_out, fake_out):
        return jnp.mean(fake_out) - jnp.mean(real_out)

    def g_loss(fake_out, real_out):
        return jnp.mean(jax.nn.softplus(jnp.mean(real_out) - fake_out))

    augment = Offset(0.5)
    gan, state = _image_gan(augment=augment, loss=LossFamily(d_loss, g_loss, relativistic=True))
    real = _images(0)
    new_state, metrics = jax.jit(gan.step)(state, real)
    g_key = _step_keys(state, 1)[1]
    z = jax.random.normal(jax.random.split(g_key)[0], (BATCH, LATENT))
    fake = augment(_image_generator(state.g_params, z), key=jax.random.fold_in(g_key, steps._AUGMENT_FAKE), draw=_draw)
    real_aug = augment(real, key=jax.random.fold_in(g_key, steps._AUGMENT_REAL), draw=_draw)
    d = lambda x: discriminator(new_state.d_params, x)  # noqa: E731
    expected = float(g_loss(d(fake), d(real_aug)))
    np.testing.assert_allclose(float(metrics["g_loss"]), expected, rtol=1e-5)
    assert abs(float(g_loss(d(fake), d(real))) - expected) > 1e-4
