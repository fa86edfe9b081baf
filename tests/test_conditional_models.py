"""Class-conditional networks: shapes, labels reaching both networks, the projection by hand, bad labels."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jgan import models, steps

LATENT = 8
CLASSES = 3
FEATURES = 4
BATCH = 4


@functools.cache
def _init(module, example_shape, seed=0):
    """Parameters and model state for inputs ``[1, *example_shape]`` with labels ``[1]``.

    ``rbg`` keys and a jitted init keep CPU compile times short (as in
    tests/test_models.py). Callers must not mutate the result.
    """
    init = jax.jit(functools.partial(models.init_model, module))
    return init(jax.random.key(seed, impl="rbg"), jnp.zeros((1, *example_shape)), jnp.zeros((1,), jnp.int32))


def _generator(size=28, channels=1):
    return models.ConditionalDCGANGenerator(image_size=size, num_classes=CLASSES, channels=channels, features=FEATURES)


def _discriminator():
    return models.ProjectionDiscriminator(num_classes=CLASSES, features=FEATURES)


def _latents(batch=BATCH):
    return jax.random.normal(jax.random.key(1), (batch, LATENT))


def _images(size=28, channels=1, batch=BATCH):
    return jax.random.uniform(jax.random.key(2), (batch, size, size, channels), minval=-1.0, maxval=1.0)


@pytest.mark.parametrize("size, channels", [(28, 1), (32, 3)])
def test_output_shapes(size, channels):
    labels = jnp.arange(BATCH, dtype=jnp.int32) % CLASSES
    generator = _generator(size, channels)
    g_params, g_state = _init(generator, (LATENT,))
    images, _ = models.make_apply(generator, stateful=True)(g_params, g_state, _latents(), labels)
    assert images.shape == (BATCH, size, size, channels)
    assert float(jnp.max(jnp.abs(images))) <= 1.0
    # Mirza & Osindero: the label's embedding is concatenated to z before the first layer.
    assert g_params["body"]["project"]["kernel"].shape[0] == LATENT + CLASSES
    assert g_params["label_embedding"].shape == (CLASSES, CLASSES)

    discriminator = _discriminator()
    d_params, d_state = _init(discriminator, (size, size, channels))
    logits, _ = models.make_apply(discriminator, stateful=True)(d_params, d_state, _images(size, channels), labels)
    assert logits.shape == (BATCH,)


def test_labels_reach_both_networks():
    z, x = _latents(), _images()
    generator, discriminator = _generator(), _discriminator()
    g_params, g_state = _init(generator, (LATENT,))
    d_params, d_state = _init(discriminator, (28, 28, 1))
    g_apply = models.make_apply(generator, stateful=True, train=False)
    d_apply = models.make_apply(discriminator, stateful=True, train=False)
    zeros, ones = jnp.zeros(BATCH, jnp.int32), jnp.ones(BATCH, jnp.int32)
    g0, _ = g_apply(g_params, g_state, z, zeros)
    g1, _ = g_apply(g_params, g_state, z, ones)
    d0, _ = d_apply(d_params, d_state, x, zeros)
    d1, _ = d_apply(d_params, d_state, x, ones)
    # Every example changes: the label is not ignored anywhere in the batch.
    assert np.all(np.abs(np.asarray(g0 - g1)).reshape(BATCH, -1).max(axis=1) > 1e-4)
    assert np.all(np.abs(np.asarray(d0 - d1)) > 1e-6)
    # Evaluation mode: each example depends only on its own label.
    mixed = jnp.array([0, 1, 0, 1], jnp.int32)
    gm, _ = g_apply(g_params, g_state, z, mixed)
    np.testing.assert_allclose(gm[0], g0[0], atol=1e-6)
    np.testing.assert_allclose(gm[1], g1[1], atol=1e-6)


def test_projection_logit_by_hand():
    """logit = ψ(φ(x)) + ⟨V[y], φ(x)⟩, with φ the sum-pooled features, computed from the parameters."""
    discriminator = _discriminator()
    d_params, d_state = _init(discriminator, (28, 28, 1))
    x = _images()
    labels = jnp.array([0, 1, 2, 1], jnp.int32)
    variables = {"params": d_params, **d_state}
    logits, collections = discriminator.apply(
        variables, x, labels, train=True, mutable=["batch_stats", "intermediates"]
    )
    (phi,) = collections["intermediates"]["features"]
    assert phi.shape == (BATCH, 2 * FEATURES)  # 28 -> 14 (f) -> 7 (2f), summed over space.

    # φ is the last feature map summed over space: recompute it by capturing that map.
    _, captured = discriminator.apply(
        variables, x, labels, train=True, mutable=["batch_stats", "intermediates"],
        capture_intermediates=lambda module, name: isinstance(module, nn.BatchNorm),
    )
    last_map = captured["intermediates"]["BatchNorm_0"]["__call__"][0]
    last_map = jnp.where(last_map >= 0, last_map, 0.2 * last_map)
    np.testing.assert_allclose(phi, last_map.sum(axis=(1, 2)), rtol=1e-5, atol=1e-5)

    phi_np = np.asarray(phi, np.float64)
    psi = phi_np @ np.asarray(d_params["psi"]["kernel"], np.float64)[:, 0] + float(d_params["psi"]["bias"][0])
    table = np.asarray(d_params["class_embedding"], np.float64)
    projection = np.array([table[y] @ phi_np[i] for i, y in enumerate(np.asarray(labels))])
    np.testing.assert_allclose(logits, psi + projection, rtol=1e-5, atol=1e-5)
    assert np.abs(projection).max() > 1e-3  # The projection term is not negligible.

    # The difference between two labels is the projection alone, ⟨V[y] − V[y'], φ(x)⟩.
    other, _ = discriminator.apply(variables, x, (labels + 1) % CLASSES, train=True, mutable=["batch_stats"])
    expected = np.array([(table[y] - table[(y + 1) % CLASSES]) @ phi_np[i] for i, y in enumerate(np.asarray(labels))])
    np.testing.assert_allclose(logits - other, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("labels, match", [
    (np.array([0, 1, 2, 3]), r"\[0, 3\)"),
    (np.array([0, -1, 2, 1]), r"\[0, 3\)"),
    (np.array([0.0, 1.0, 2.0, 1.0]), "integers"),
    (np.array([[0, 1, 2, 1]]), "shape"),
    (np.array([0, 1]), "shape"),
])
def test_bad_labels_raise_when_concrete(labels, match):
    generator, discriminator = _generator(), _discriminator()
    g_params, g_state = _init(generator, (LATENT,))
    d_params, d_state = _init(discriminator, (28, 28, 1))
    with pytest.raises(ValueError, match=match):
        models.make_apply(generator, stateful=True)(g_params, g_state, _latents(), jnp.asarray(labels))
    with pytest.raises(ValueError, match=match):
        models.make_apply(discriminator, stateful=True)(d_params, d_state, _images(), jnp.asarray(labels))
    with pytest.raises(ValueError, match=match):
        models.check_labels(labels, CLASSES, batch=BATCH)


def test_out_of_range_labels_under_jit_give_nan_never_a_clamp():
    """Traced labels cannot be checked: the bad example's output is NaN, the others are unaffected."""
    discriminator = _discriminator()
    d_params, d_state = _init(discriminator, (28, 28, 1))
    d_apply = jax.jit(models.make_apply(discriminator, stateful=True, train=False))
    good = jnp.array([0, 1, 2, 1], jnp.int32)
    expected, _ = d_apply(d_params, d_state, _images(), good)
    for bad_value in (CLASSES, -1):  # No clamp to CLASSES - 1, no wrap of -1 to the last class.
        labels = good.at[1].set(bad_value)
        logits, _ = d_apply(d_params, d_state, _images(), labels)
        assert np.isnan(logits[1])
        np.testing.assert_allclose(np.delete(logits, 1), np.delete(expected, 1), rtol=1e-6)
    assert models.check_labels(good, CLASSES) is not None


def test_one_train_step_with_the_conditional_flax_networks():
    generator, discriminator = _generator(), _discriminator()
    g_params, g_state = _init(generator, (LATENT,))
    d_params, d_state = _init(discriminator, (28, 28, 1))
    opt = optax.adam(1e-3)
    state = steps.init_state(jax.random.key(0), g_params, d_params, g_optimizer=opt, d_optimizer=opt,
                             g_model_state=g_state, d_model_state=d_state)
    step = steps.make_train_step(
        generator=models.make_apply(generator, stateful=True),
        discriminator=models.make_apply(discriminator, stateful=True),
        g_optimizer=opt, d_optimizer=opt, latent_dim=LATENT, g_stateful=True, d_stateful=True,
    )
    batch = {"x": _images(), "label": jnp.array([0, 1, 2, 0], jnp.int32)}
    new_state, metrics = jax.jit(step)(state, batch)
    assert float(metrics["nonfinite"]) == 0.0
    for name in ("g_params", "d_params", "g_model_state", "d_model_state"):
        before, after = getattr(state, name), getattr(new_state, name)
        moved = jax.tree.map(lambda u, v: bool(np.any(np.asarray(u) != np.asarray(v))), before, after)
        assert any(jax.tree.leaves(moved)), name
    # The label tables themselves got gradients.
    assert not np.allclose(new_state.g_params["label_embedding"], g_params["label_embedding"])
    assert not np.allclose(new_state.d_params["class_embedding"], d_params["class_embedding"])
