"""Data parallelism on 8 forced CPU devices (set in conftest.py before JAX starts).

The step under ``pmap`` / ``shard_map`` on a batch split across devices must
equal the single-device step on the whole batch: each device draws the
global latent batch and keeps its slice, and gradients are ``pmean``'d.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from jgan import steps

from nets import discriminator, generator, mlp_init

DEVICES = 8
LATENT = 3

pytestmark = pytest.mark.skipif(
    jax.device_count() < DEVICES, reason="needs 8 (forced host) devices")


CONFIGS = {
    "non_saturating": dict(loss="non_saturating"),
    "wgan_gp_k2": dict(loss="wasserstein", gradient_penalty=10.0, d_steps=2),
    "unrolled_k3_pack2": dict(loss="non_saturating", unroll_steps=3, pack=2),
    "hinge_r1_ema": dict(loss="hinge", r1=1.0, ema_decay=0.9),
}


def _build(axis_name, **kwargs):
    key = jax.random.key(0)
    pack = kwargs.get("pack", 1)
    g_params = mlp_init(jax.random.fold_in(key, 1), [LATENT, 16, 2])
    d_params = mlp_init(jax.random.fold_in(key, 2), [2 * pack, 16, 1])
    g_opt, d_opt = optax.adam(1e-2), optax.adam(1e-2)
    state = steps.init_state(key, g_params, d_params, g_optimizer=g_opt, d_optimizer=d_opt,
                             ema="ema_decay" in kwargs)
    step = steps.make_train_step(generator=generator, discriminator=discriminator,
                                 g_optimizer=g_opt, d_optimizer=d_opt, latent_dim=LATENT,
                                 axis_name=axis_name, **kwargs)
    return state, step


def _replicate(tree):
    """One copy per device along a new leading axis, for pmap."""
    return jax.tree.map(lambda x: jnp.stack([x] * DEVICES), tree)


def _batch(n=64):
    return jax.random.normal(jax.random.key(5), (n, 2)) * 0.5 + 1.0


def _single_device(config, n_steps):
    state, step = _build(None, **config)
    step = jax.jit(step)
    metrics = None
    for _ in range(n_steps):
        state, metrics = step(state, _batch())
    return state, metrics


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_pmap_equals_single_device_on_the_whole_batch(name):
    config = CONFIGS[name]
    expected, expected_metrics = _single_device(config, n_steps=3)

    state, step = _build("batch", **config)
    replicated = _replicate(state)
    mapped = jax.pmap(step, axis_name="batch")
    sharded_batch = _batch().reshape(DEVICES, -1, 2)
    for _ in range(3):
        replicated, metrics = mapped(replicated, sharded_batch)

    # Every device holds the same state, and it is the single-device one.
    for leaf in jax.tree.leaves(replicated):
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            np.testing.assert_array_equal(leaf, jnp.broadcast_to(leaf[0], leaf.shape))
    result = jax.tree.map(lambda x: x[0], replicated)
    chex.assert_trees_all_close(result.g_params, expected.g_params, rtol=2e-5, atol=2e-6)
    chex.assert_trees_all_close(result.d_params, expected.d_params, rtol=2e-5, atol=2e-6)
    chex.assert_trees_all_close(result.g_ema_params, expected.g_ema_params, rtol=2e-5, atol=2e-6)
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[0], metrics), expected_metrics,
                                rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_shard_map_equals_single_device(name):
    """shard_map with its default varying-axis checks: the whole state and the metrics.

    Under check_vma the gradient with respect to a replicated input comes back
    summed over devices; the step must still average (Adam's moments and the
    gradient-norm metrics would show a sum).
    """
    config = CONFIGS[name]
    expected, expected_metrics = _single_device(config, n_steps=2)
    state, step = _build("batch", **config)
    mesh = Mesh(np.array(jax.devices()[:DEVICES]), ("batch",))
    mapped = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P("batch")),
                                   out_specs=(P(), P())))
    for _ in range(2):
        state, metrics = mapped(state, _batch())
    chex.assert_trees_all_close(
        (state.g_params, state.d_params, state.g_opt_state, state.d_opt_state, state.g_ema_params),
        (expected.g_params, expected.d_params, expected.g_opt_state, expected.d_opt_state,
         expected.g_ema_params),
        rtol=2e-5, atol=2e-6)
    chex.assert_trees_all_close(metrics, expected_metrics, rtol=1e-4, atol=1e-5)


def test_without_pmean_the_devices_would_disagree():
    """Control: a step built without axis_name trains each device on its own shard."""
    state, step = _build(None)
    replicated = _replicate(state)
    out, _ = jax.pmap(step, axis_name="batch")(replicated, _batch().reshape(DEVICES, -1, 2))
    first_layer = out.d_params[0][0]
    assert not np.allclose(first_layer[0], first_layer[1])


def test_pack_must_divide_the_per_device_batch():
    state, step = _build("batch", pack=4)
    replicated = _replicate(state)
    with pytest.raises(ValueError, match="per device"):
        jax.pmap(step, axis_name="batch")(replicated, _batch(n=48).reshape(DEVICES, -1, 2))
