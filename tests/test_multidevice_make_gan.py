"""make_gan on 8 forced CPU devices (set in conftest.py before JAX starts).

Under ``shard_map`` the composed step must equal the frozen pre-rewrite step
(tests/legacy_steps.py) under the same ``shard_map``, bit for bit. Its
configurations (``PARTS``) under ``jax.jit`` on a sharded batch, ``shard_map``
and ``pmap`` against the single-device step: tests/test_multidevice_forms.py.
"""

import chex
import jax
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, PartitionSpec as P

import legacy_steps
from jgan import steps
from jgan.penalties import R1, GradientPenalty
from jgan.unroll import Unrolled

from nets import discriminator, generator, mlp_init
from tree_checks import assert_close_to_roundoff
from test_multidevice import CONFIGS

DEVICES = 8
LATENT = 3
N_STEPS = 3

pytestmark = pytest.mark.skipif(
    jax.device_count() < DEVICES, reason="needs 8 (forced host) devices")

# tests/test_multidevice.py's configurations as parts of make_gan.
PARTS = {
    "non_saturating": dict(loss="non_saturating"),
    "wgan_gp_k2": dict(loss="wasserstein", d_regularizers=[GradientPenalty(10.0)], d_steps=2),
    "unrolled_k3_pack2": dict(loss="non_saturating", unroll=Unrolled(3), pack=2),
    "hinge_r1_ema": dict(loss="hinge", d_regularizers=[R1(1.0)], ema_decay=0.9),
}


def test_the_parts_cover_the_multidevice_configurations():
    assert set(PARTS) == set(CONFIGS)


def _params(config):
    key = jax.random.key(0)
    pack = config.get("pack", 1)
    g_params = mlp_init(jax.random.fold_in(key, 1), [LATENT, 16, 2])
    d_params = mlp_init(jax.random.fold_in(key, 2), [2 * pack, 16, 1])
    return key, g_params, d_params


def _legacy(name, axis_name):
    config = CONFIGS[name]
    key, g_params, d_params = _params(config)
    opt = optax.adam(1e-2)
    state = legacy_steps.init_state(key, g_params, d_params, g_optimizer=opt, d_optimizer=opt,
                                    ema="ema_decay" in config)
    step = legacy_steps.make_train_step(generator=generator, discriminator=discriminator,
                                        g_optimizer=opt, d_optimizer=opt, latent_dim=LATENT,
                                        axis_name=axis_name, **config)
    return state, step


def _composed(name, axis_name, opt=None):
    key, g_params, d_params = _params(CONFIGS[name])
    opt = opt or optax.adam(1e-2)
    gan = steps.make_gan(generator=generator, discriminator=discriminator, g_optimizer=opt,
                         d_optimizer=opt, prior=LATENT, axis_name=axis_name, **PARTS[name])
    return gan.init(key, g_params, d_params), gan.step


def _batch(step, n=64):
    return jax.random.normal(jax.random.fold_in(jax.random.key(5), step), (n, 2)) * 0.5 + 1.0




def _run(state, step):
    history = []
    for i in range(N_STEPS):
        state, metrics = step(state, _batch(i))
        history.append(metrics)
    return state, history


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_shard_mapped_make_gan_equals_the_shard_mapped_frozen_step(name):
    mesh = Mesh(np.array(jax.devices()[:DEVICES]), ("batch",))

    def shard_mapped(step):
        return jax.shard_map(step, mesh=mesh, in_specs=(P(), P("batch")), out_specs=(P(), P()))

    legacy_state, legacy_step = _legacy(name, "batch")
    state, step = _composed(name, "batch")
    legacy_step, step = shard_mapped(legacy_step), shard_mapped(step)
    # Both in one program (it compiles in about half the time of two).
    both = jax.jit(lambda a, b, batch: (legacy_step(a, batch), step(b, batch)))
    # Exact with one critic update; with d_steps > 1 make_gan now writes the updates
    # out as straight-line code (the frozen step looped), which XLA fuses differently.
    same = chex.assert_trees_all_equal if PARTS[name].get("d_steps", 1) == 1 else assert_close_to_roundoff
    for i in range(N_STEPS):
        (legacy_state, expected_metrics), (state, metrics) = both(legacy_state, state, _batch(i))
        same(state, steps.GANState(*legacy_state))
        same({k: metrics[k] for k in expected_metrics}, expected_metrics)
    assert int(state.step) == N_STEPS
