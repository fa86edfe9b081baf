"""The CycleGAN step data-parallel on 8 forced CPU devices (set in conftest.py).

Under ``pmap`` / ``shard_map`` on batches split across devices, the step must
equal the single-device step on the whole batches: gradients and metrics are
``pmean``'d, and the image pools hold the global batch's images (gathered and
queried identically on every device).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from test_cyclegan import (  # The hand-written networks of the single-device tests.
    _batch,
    _setup,
)

DEVICES = 8
PER_DEVICE = 2

pytestmark = pytest.mark.skipif(
    jax.device_count() < DEVICES, reason="needs 8 (forced host) devices")

CONFIGS = {
    "least_squares": dict(),
    "identity_pool": dict(identity_weight=5.0, pool_size=20),
    "non_saturating_pool": dict(loss="non_saturating", pool_size=3),
}
STEPS = 3


def _replicate(tree):
    return jax.tree.map(lambda x: jnp.stack([x] * DEVICES), tree)


def _split(batch):
    return jax.tree.map(lambda x: x.reshape(DEVICES, -1, *x.shape[1:]), batch)


def _batches():
    return [_batch(batch_a=DEVICES * PER_DEVICE, batch_b=DEVICES * PER_DEVICE, key=10 + i) for i in range(STEPS)]


def _single_device(config):
    state, step = _setup(**config)
    step = jax.jit(step)
    metrics = None
    for batch in _batches():
        state, metrics = step(state, batch)
    return state, metrics


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_pmap_equals_single_device_on_the_whole_batch(name):
    config = CONFIGS[name]
    expected, expected_metrics = _single_device(config)
    state, step = _setup(axis_name="batch", **config)
    replicated = _replicate(state)
    mapped = jax.pmap(step, axis_name="batch")
    for batch in _batches():
        replicated, metrics = mapped(replicated, _split(batch))
    # Every device holds the same state (pools included), and it is the single-device one.
    for leaf in jax.tree.leaves(replicated):
        if jnp.issubdtype(leaf.dtype, jnp.inexact) or jnp.issubdtype(leaf.dtype, jnp.integer):
            np.testing.assert_array_equal(leaf, jnp.broadcast_to(leaf[0], leaf.shape))
    result = jax.tree.map(lambda x: x[0], replicated)
    chex.assert_trees_all_close(result._replace(key=None), expected._replace(key=None), rtol=2e-5, atol=2e-6)
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[0], metrics), expected_metrics, rtol=1e-4, atol=1e-5)
    if config.get("pool_size"):
        assert int(result.pool_a_count) == min(config["pool_size"], STEPS * DEVICES * PER_DEVICE)


def test_shard_map_equals_single_device():
    config = CONFIGS["identity_pool"]
    expected, _ = _single_device(config)
    state, step = _setup(axis_name="batch", **config)
    mesh = Mesh(np.array(jax.devices()[:DEVICES]), ("batch",))
    mapped = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P("batch")), out_specs=(P(), P())))
    for batch in _batches():
        state, metrics = mapped(state, batch)
    chex.assert_trees_all_close(state._replace(key=None), expected._replace(key=None), rtol=2e-5, atol=2e-6)
    chex.assert_tree_all_finite(metrics)


def test_without_axis_name_the_devices_would_disagree():
    """Control: a step built without axis_name trains each device on its own shard."""
    state, step = _setup()
    out, _ = jax.pmap(step, axis_name="batch")(_replicate(state), _split(_batches()[0]))
    assert not np.allclose(out.d_b_params["u"][0], out.d_b_params["u"][1])
