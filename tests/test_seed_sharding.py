"""benchmarks._cells.shard_seeds: the tables' seeds split over devices give every seed the result it has on one.

The pytest process has 8 CPU devices (conftest.py). stacked_table's seeds,
sharded the same way, are checked in tests/test_stacked_table.py (on the
programs that file compiles anyway: a convolutional GAN compiles slowly).
"""

import dataclasses
import re

import jax
import numpy as np
import pytest

from benchmarks import _cells as cells
from benchmarks import mog_table

DEVICES = jax.local_devices()


@pytest.mark.parametrize("seeds, devices, per_device, used, padded", [
    (8, 8, 1, 8, 8), (10, 8, 2, 5, 10), (8, 3, 3, 3, 9), (3, 2, 2, 2, 4), (3, 8, 1, 3, 3), (5, 1, 5, 1, 5),
])
def test_layout_takes_the_fewest_rounds_and_the_least_padding(seeds, devices, per_device, used, padded):
    shards = cells.shard_seeds(seeds, DEVICES[:devices])
    assert (shards.per_device, shards.devices, shards.padded) == (per_device, used, padded)
    assert padded - seeds < per_device  # The padding only fills the last device.
    indices = shards.indices()
    np.testing.assert_array_equal(indices, np.arange(padded))
    assert indices.sharding.device_set == set(DEVICES[:used])
    assert [s.data.size for s in indices.addressable_shards] == [per_device] * used


def test_layout_defaults_to_the_local_devices_and_checks_its_arguments():
    assert cells.shard_seeds(16).sharding.device_set == set(DEVICES)
    with pytest.raises(ValueError, match="seeds >= 1"):
        cells.shard_seeds(0)
    with pytest.raises(ValueError, match="a device"):
        cells.shard_seeds(2, [])


def test_device_label():
    assert cells.device_label({"device": "cpu", "devices": 8}) == "cpu × 8"
    assert cells.device_label({"device": "cpu", "devices": 1}) == "cpu"
    assert cells.device_label({"device": "cpu"}) == "cpu"  # Cells measured before the seeds were sharded.


def _tiny_mog():
    return dataclasses.replace(mog_table.row_config("ring", "gan", settings="metz", steps=4),
                               hidden=(8,), latent_dim=4, batch_size=16)


def test_mog_row_is_the_same_on_any_device_count():
    config = _tiny_mog()
    alone, finished, _ = mog_table.train_seeds(config, seeds=8, devices=DEVICES[:1])
    assert alone.shape == (8, 2500, 2) and finished.all()
    for n in (8, 3):  # 1 seed on each of 8 devices; 3 on each of 3, seed 8 computed and dropped.
        samples, finished, _ = mog_table.train_seeds(config, seeds=8, devices=DEVICES[:n])
        assert samples.shape == (8, 2500, 2) and finished.all()
        # No data crosses devices, but XLA:CPU compiles the per-device program a little differently
        # for another layout: float32 roundoff, not bit for bit (measured: <= 6e-11 on samples up to 7.7).
        np.testing.assert_allclose(samples, alone, rtol=1e-6, atol=1e-9)
    assert not np.allclose(alone[0], alone[1])  # Seeds differ.


def test_mog_programs_are_spread_and_do_not_communicate():
    config = _tiny_mog()
    shards = cells.shard_seeds(8, DEVICES)
    experiment = mog_table.mog.make_experiment(config)
    init, train, sample, seed_keys = mog_table._programs(
        experiment.init, experiment.train_chunk, experiment.sample, shards)
    init_keys, data_keys, eval_keys = seed_keys(shards.indices())
    states = init(init_keys)
    trained, metrics, _ = train(states, data_keys, config.steps)
    samples = sample(trained, eval_keys, 16)
    for leaf in jax.tree.leaves((init_keys, states, trained, metrics, samples)):
        assert leaf.sharding.device_set == set(DEVICES) and leaf.shape[0] == 8
        assert {s.data.shape[0] for s in leaf.addressable_shards} == {1}  # One seed per device.
    hlo = train.lower(states, data_keys, config.steps).compile().as_text()
    assert "num_partitions=8" in hlo
    assert not re.search(r"all-reduce|all-gather|all-to-all|collective-permute|reduce-scatter", hlo)

