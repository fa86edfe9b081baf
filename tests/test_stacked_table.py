"""benchmarks.stacked_table: seeds vmapped and sharded over devices equal separate runs; results stored, reused, tabled."""

import dataclasses
import json
import re

import jax
import matplotlib.image
import numpy as np
import pytest

from benchmarks import _cells as cells
from benchmarks import stacked_table as st
from examples import stacked_digits as sd

TINY = dict(batch_size=8, latent_dim=16)


@pytest.fixture
def tiny_protocols(monkeypatch):
    for name in st.PROTOCOLS:
        monkeypatch.setitem(st.PROTOCOLS, name, {**st.PROTOCOLS[name], **TINY})


def test_vmapped_seeds_equal_separate_runs(tiny_protocols):
    config = st.row_config("metz_quarter", "gan", steps=3, eval_samples=16)  # The table test's cell: compiled once.
    experiment, states, finished, timing = st.train_seeds(config, seeds=2)
    assert finished.tolist() == [True, True] and timing["step_ms"] > 0
    # Over the 8 devices (conftest.py) the seed axis is split, one seed on each of two.
    assert timing["devices"] == 2
    for leaf in jax.tree.leaves(states):
        assert leaf.shape[0] == 2 and leaf.sharding.device_set == set(jax.local_devices()[:2])
    shards = cells.shard_seeds(2)
    _, step, seed_keys = st._vmapped(experiment, shards)  # The programs train_seeds ran: compiled already.
    hlo = step.lower(states, seed_keys(shards.indices()).data).compile().as_text()
    assert "num_partitions=2" in hlo  # Partitioned over the seeds, with no cross-seed traffic:
    assert not re.search(r"all-reduce|all-gather|all-to-all|collective-permute|reduce-scatter", hlo)
    for seed in range(2):  # The Python-loop twin of the vmap, on one device.
        keys = sd.keys(seed)
        state = experiment.init(keys.init)
        for _ in range(config.steps):
            state, _, _ = experiment.train_step(state, keys.data)
        vmapped = jax.tree.map(lambda x: x[seed], states)
        np.testing.assert_allclose(experiment.sample(vmapped, keys.eval, 16), experiment.sample(state, keys.eval, 16),
                                   rtol=1e-4, atol=1e-5)
    assert not np.allclose(*(jax.tree.leaves(states.g_params)[0]))  # Seeds differ.


def test_rows_differ_only_in_the_method():
    gan, pac3, best = (st.row_config("veegan", r, steps=10) for r in ("gan", "pacgan3", "best"))
    assert dataclasses.replace(pac3, pack=1, batch_size=64) == gan and pac3.batch_size == 63
    assert (gan.networks, gan.latent_dim, gan.eval_samples, gan.ema_decay) == ("dcgan", 100, 26_000, None)
    assert (best.pack, best.ema_decay) == (4, 0.99)
    quarter = st.row_config("metz_quarter", "unrolled10_first_order", steps=10, eval_samples=99)
    assert (quarter.unroll_steps, quarter.unroll_first_order, quarter.eval_samples) == (10, True, 99)
    assert (quarter.batch_size, quarter.beta2, quarter.networks) == (128, 0.99, "metz_quarter")
    assert set(st.PUBLISHED) == set(st.PROTOCOLS) == set(st.STEPS)


def test_table_from_results_and_reuse(tmp_path, classifier, tiny_protocols, capsys):
    args = ["--protocols", "metz_quarter", "--rows", "gan", "--seeds", "2", "--steps", "2",
            "--eval-samples", "16", "--classifier", classifier, "--out", str(tmp_path)]
    first = st.main(args)
    result = first["metz_quarter"]["gan"]
    assert len(result["modes"]) == 2 and all(1 <= m <= 16 for m in result["modes"])
    assert result["device"] == jax.devices()[0].device_kind and result["seeds"] == 2
    assert result["config"]["steps"] == 2 and result["config"]["eval_samples"] == 16
    histograms = np.load(tmp_path / "results" / "metz_quarter__gan.npy")
    assert histograms.shape == (2, 1000) and histograms.sum(axis=1).tolist() == [16, 16]
    assert [int((h > 0).sum()) for h in histograms] == result["modes"]
    table = (tmp_path / "table.md").read_text()
    assert "| jgan gan | 2 | 2 | 16 |" in table
    assert "| PacDCGAN4 (PacGAN Table 3) | | | | 667.4 | 1.81 |" in table
    assert "not Stacked MNIST" in table
    reference = json.loads((tmp_path / "results" / "real_data__16.json").read_text())
    assert reference["eval_samples"] == 16 and 1 <= reference["modes"] <= 16
    assert f"| real data (offline stacked digits) | | | 16 | {reference['modes']} |" in table
    assert matplotlib.image.imread(tmp_path / "table.png").ndim == 3
    stored = json.loads((tmp_path / "results" / "metz_quarter__gan.json").read_text())
    assert stored == json.loads(json.dumps(result))
    capsys.readouterr()
    second = st.main(args)  # Same settings: reused, not retrained.
    assert "reused" in capsys.readouterr().out and second == first
    (tmp_path / "table.md").unlink()
    rebuilt = st.main([*args, "--table-only", "--seeds", "7", "--classifier", str(tmp_path / "none")])
    assert rebuilt == second and (tmp_path / "table.md").read_text() == table  # Trained nothing.


def test_a_missing_classifier_names_the_command(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        st.main(["--rows", "gan", "--classifier", str(tmp_path / "none.msgpack"), "--out", str(tmp_path)])
    assert raised.value.code == 2 and sd.CLASSIFIER_COMMAND in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        st.main(["--seeds", "0", "--out", str(tmp_path)])
    assert raised.value.code == 2 and "must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as raised:
        st.main(["--protocols", "mnist", "--out", str(tmp_path)])
    assert raised.value.code == 2 and "invalid choice: 'mnist'" in capsys.readouterr().err
