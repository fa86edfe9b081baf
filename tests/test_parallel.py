"""jgan.parallel in one process with 8 forced CPU devices (set in conftest.py).

The multi-process behaviour (2 processes on localhost) is tested in
tests/test_multiprocess.py and tests/test_multiprocess_programs.py.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jgan import parallel

DEVICES = 8

pytestmark = pytest.mark.skipif(
    jax.device_count() < DEVICES, reason="needs 8 (forced host) devices")


def test_batch_mesh_spans_every_device_on_one_auto_axis():
    mesh = parallel.batch_mesh()
    assert mesh.axis_names == ("batch",)
    assert mesh.shape["batch"] == jax.device_count()
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
    assert parallel.batch_mesh(jax.devices()[:2], axis="data").shape == {"data": 2}


def test_one_process_reads_every_row():
    assert parallel.process_rows(64, parallel.batch_mesh()) == slice(0, 64)


def test_global_batch_is_the_batch_sharded_over_the_mesh():
    mesh = parallel.batch_mesh()
    batch = {"x": np.arange(64 * 3, dtype=np.float32).reshape(64, 3), "y": np.arange(64)}
    out = parallel.global_batch(batch, mesh)
    for name in batch:
        np.testing.assert_array_equal(np.asarray(out[name]), batch[name])
        assert out[name].sharding.is_equivalent_to(NamedSharding(mesh, P("batch")), batch[name].ndim)
        # Each device holds its own 8 rows.
        shards = sorted(out[name].addressable_shards, key=lambda s: s.index[0].start)
        assert [s.data.shape[0] for s in shards] == [8] * DEVICES
        np.testing.assert_array_equal(np.asarray(shards[3].data), batch[name][24:32])


def test_replicate_puts_the_whole_tree_on_every_device_and_keeps_keys_typed():
    mesh = parallel.batch_mesh()
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "key": jax.random.key(7), "step": jnp.int32(3)}
    out = parallel.replicate(tree, mesh)
    for name in tree:
        assert out[name].sharding.is_fully_replicated
        assert len(out[name].sharding.device_set) == DEVICES
    assert jax.dtypes.issubdtype(out["key"].dtype, jax.dtypes.prng_key)
    chex.assert_trees_all_equal(jax.random.key_data(out["key"]), jax.random.key_data(tree["key"]))
    chex.assert_trees_all_equal(out["w"], tree["w"])
    # The replicated key draws what the original draws.
    np.testing.assert_array_equal(jax.random.normal(out["key"], (4,)), jax.random.normal(tree["key"], (4,)))


def test_to_host_returns_numpy_whatever_the_sharding():
    mesh = parallel.batch_mesh()
    sharded = parallel.global_batch(np.arange(16.0), mesh)
    out = parallel.to_host({"sharded": sharded, "replicated": parallel.replicate(jnp.ones(3), mesh),
                            "key": jax.random.key(1), "host": 1.5})
    assert all(isinstance(v, np.ndarray) for v in out.values())
    np.testing.assert_array_equal(out["sharded"], np.arange(16.0))
    np.testing.assert_array_equal(out["key"], jax.random.key_data(jax.random.key(1)))


def test_a_step_on_the_global_batch_equals_the_single_device_step():
    """The recipe of the module's docstring, on 8 devices of one process."""
    import optax

    from jgan import steps
    from nets import discriminator, generator, mlp_init

    key = jax.random.key(0)
    g = mlp_init(jax.random.fold_in(key, 1), [3, 16, 2])
    d = mlp_init(jax.random.fold_in(key, 2), [2, 16, 1])
    gan = steps.make_gan(generator=generator, discriminator=discriminator, g_optimizer=optax.adam(1e-2),
                         d_optimizer=optax.adam(1e-2), prior=3)
    batches = [np.asarray(jax.random.normal(jax.random.key(i), (64, 2))) for i in range(3)]
    single, single_step = gan.init(key, g, d), jax.jit(gan.step)
    mesh = parallel.batch_mesh()
    state = parallel.replicate(gan.init(key, g, d), mesh)
    step = jax.jit(gan.step, out_shardings=parallel.replicated(mesh))
    rows = parallel.process_rows(64, mesh)
    for batch in batches:
        single, expected = single_step(single, batch)
        state, metrics = step(state, parallel.global_batch(batch[rows], mesh))
    assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(state))
    chex.assert_trees_all_close(parallel.to_host(state), parallel.to_host(single), rtol=2e-5, atol=2e-6)
    chex.assert_trees_all_close(parallel.to_host(metrics), parallel.to_host(expected), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ bad input


def test_a_global_batch_that_does_not_divide_over_the_devices_is_refused():
    mesh = parallel.batch_mesh()
    with pytest.raises(ValueError, match=r"global batch of 12 rows cannot be split over the 8 devices of mesh axis 'batch'"):
        parallel.process_rows(12, mesh)
    with pytest.raises(ValueError, match=r"global batch of 12 rows \(12 on each of 1 processes\) cannot be split over the 8 devices"):
        parallel.global_batch(np.zeros((12, 2)), mesh)
    with pytest.raises(ValueError, match="scalar"):
        parallel.global_batch(np.float32(1.0), mesh)


def test_a_mesh_without_the_named_axis_is_refused():
    mesh = parallel.batch_mesh(axis="data")
    with pytest.raises(ValueError, match=r"no axis 'batch': its axes are \('data',\)"):
        parallel.global_batch(np.zeros((8, 2)), mesh)
    with pytest.raises(ValueError, match=r"no axis 'batch'"):
        parallel.process_rows(8, mesh)
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh, got str"):
        parallel.batch_sharding("batch")


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_processes=2), r"missing coordinator_address, process_id"),
    (dict(coordinator_address="localhost:1234", num_processes=2), r"missing process_id"),
    (dict(coordinator_address="localhost", num_processes=2, process_id=0), r"'host:port', got 'localhost'"),
    (dict(coordinator_address="localhost:1234", num_processes=2, process_id=2), r"below num_processes = 2, got 2"),
    (dict(coordinator_address="localhost:1234", num_processes=0, process_id=0), r"num_processes"),
])
def test_initialize_refuses_incomplete_or_inconsistent_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        parallel.initialize(**kwargs)


def test_initialize_without_arguments_is_one_process():
    parallel.initialize()
    assert jax.process_count() == 1 and parallel.is_main_process()
