"""jgan.presets: each preset's optimizer takes its paper's first update, in closed form."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgan import penalties, presets, steps


def _first_update(tx, grad):
    params = jnp.zeros_like(grad)
    updates, _ = tx.update(grad, tx.init(params), params)
    return np.asarray(updates)


GRAD = jnp.array([0.5, -2.0, 1e-3])


def test_wgan_is_rmsprop_5e5_as_in_pytorch_with_clip_and_five_critic_steps():
    p = presets.wgan()
    # PyTorch RMSprop (α = 0.99, ε outside the root): v = 0.01 g², u = −lr g / (√v + ε).
    expected = -5e-5 * np.asarray(GRAD) / (np.sqrt(0.01 * np.asarray(GRAD) ** 2) + 1e-8)
    for tx in (p.g_optimizer, p.d_optimizer):
        np.testing.assert_allclose(_first_update(tx, GRAD), expected, rtol=1e-5)
    assert (p.loss, p.d_steps, p.d_regularizers, p.batch_size) == ("wasserstein", 5, (), 64)
    # The discriminator's optimizer clips: any update lands in [−0.01, 0.01].
    params = jnp.array([1.0, -1.0, 0.005])
    updates, _ = p.d_optimizer.update(GRAD, p.d_optimizer.init(params), params)
    np.testing.assert_allclose(params + updates, [0.01, -0.01, 0.005 + expected[2]], atol=1e-7)


@pytest.mark.parametrize("preset, lr, b1, b2, loss, d_steps, regularizers, batch", [
    (presets.wgan_gp, 1e-4, 0.0, 0.9, "wasserstein", 5, (penalties.GradientPenalty(10.0),), 64),
    (presets.dcgan, 2e-4, 0.5, 0.999, "non_saturating", 1, (), 128),
])
def test_adam_presets(preset, lr, b1, b2, loss, d_steps, regularizers, batch):
    p = preset()
    g = np.asarray(GRAD)
    # Two Adam updates from zero state with gradients g then 2g, bias-corrected.
    m1, v1 = (1 - b1) * g, (1 - b2) * g**2
    m2, v2 = b1 * m1 + (1 - b1) * 2 * g, b2 * v1 + (1 - b2) * (2 * g) ** 2
    m_hat, v_hat = m2 / (1 - b1**2), v2 / (1 - b2**2)
    expected = -lr * m_hat / (np.sqrt(v_hat) + 1e-8)
    for tx in (p.g_optimizer, p.d_optimizer):
        params = jnp.zeros_like(GRAD)
        state = tx.init(params)
        _, state = tx.update(GRAD, state, params)
        updates, _ = tx.update(2 * GRAD, state, params)
        np.testing.assert_allclose(updates, expected, rtol=1e-5)
    assert (p.loss, p.d_steps, p.d_regularizers, p.batch_size) == (loss, d_steps, regularizers, batch)


@pytest.mark.parametrize("preset", [presets.wgan, presets.wgan_gp, presets.dcgan])
def test_gan_kwargs_and_step_kwargs_build_the_same_step(preset):
    """make_gan(**gan_kwargs()) and make_train_step(**step_kwargs()) take the same step."""
    def gen(p, z):
        return z * p["scale"]

    def disc(p, x):
        return x @ p["w"]

    g_params, d_params = {"scale": jnp.ones(2)}, {"w": jnp.array([0.3, -0.2])}
    key, real = jax.random.key(0), jnp.ones((8, 2))
    p = preset()
    gan = steps.make_gan(generator=gen, discriminator=disc, prior=2, **p.gan_kwargs())
    a, _ = gan.step(gan.init(key, g_params, d_params), real)
    legacy = steps.make_train_step(generator=gen, discriminator=disc, latent_dim=2, **p.step_kwargs())
    b, _ = legacy(steps.init_state(key, g_params, d_params, g_optimizer=p.g_optimizer,
                                   d_optimizer=p.d_optimizer), real)
    chex.assert_trees_all_equal(a, b)
    assert not np.allclose(a.d_params["w"], d_params["w"])
