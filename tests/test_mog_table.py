"""benchmarks.mog_table: vmapped seeds equal separate runs; results are reused; it trains examples.mog."""

import dataclasses
import json

import jax
import matplotlib.image
import numpy as np
import pytest

from benchmarks import mog_table
from examples import mog
from jgan import data
from jgan.metrics import mode_coverage

TINY = dict(hidden=(8,), latent_dim=4, batch_size=16)


def _tiny(row, steps=6, dataset="ring"):
    return dataclasses.replace(mog_table.row_config(dataset, row, settings="metz", steps=steps), **TINY)


@pytest.mark.parametrize("row", ["gan", "unrolled1", "wgan_gp"])
def test_vmapped_seeds_equal_separate_runs(row):
    config = _tiny(row)
    samples, finished, _ = mog_table.train_seeds(config, seeds=2)
    assert samples.shape == (2, mog.EVAL_SAMPLES, 2) and finished.tolist() == [True, True]
    experiment = mog.make_experiment(config)
    for seed in range(2):  # The Python-loop twin of the vmap.
        init_key, data_key, eval_key = jax.random.split(jax.random.key(seed), 3)
        state, _, _ = experiment.train_chunk(experiment.init(init_key), data_key, config.steps)
        alone = experiment.sample(state, eval_key, mog.EVAL_SAMPLES)
        np.testing.assert_allclose(samples[seed], alone, rtol=1e-4, atol=1e-5)
    assert not np.allclose(samples[0], samples[1])  # Seeds differ.


def test_the_benchmark_trains_the_experiment_module():
    assert mog_table.mog is mog  # The experiment imported as a module, not a copy or a path hack.
    config = mog_table.row_config("ring", "unrolled10", settings="tuned", steps=7)
    assert type(config) is mog.Config
    # The tuned settings are the example's defaults (the main job: K = 5, 4,000 steps).
    assert dataclasses.replace(config, unroll_steps=5, steps=4000, baseline=True) == mog.Config()
    metz = mog_table.row_config("ring", "gan", settings="metz", steps=7)
    assert (metz.latent_dim, metz.hidden, metz.decay_fraction, metz.d_decay_fraction) == (256, (128, 128), 0.0, 0.0)


def test_rows_differ_only_in_the_method():
    gan, pac = (mog_table.row_config("grid", r, settings="tuned", steps=100) for r in ("gan", "pacgan4"))
    assert dataclasses.replace(pac, pack=1) == gan and gan.pack == 1  # Not the example's packed grid default.
    assert gan.latent_dim == 2 and gan.hidden == (256, 256, 256) and gan.d_decay_fraction == 0.5
    assert mog_table.row_config("ring", "unrolled10_first_order", settings="metz", steps=5).unroll_first_order


def test_table_from_results_and_reuse(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(mog_table.SETTINGS, "metz", TINY)
    args = ["--datasets", "ring_pacgan", "--rows", "gan", "pacgan2", "--seeds", "2", "--steps", "4",
            "--settings", "metz", "--out", str(tmp_path)]
    first = mog_table.main(args)
    result = first["ring_pacgan"]["gan"]
    # The stored numbers are the protocol's, recomputed here from the samples.
    samples, _, _ = mog_table.train_seeds(
        mog_table.row_config("ring_pacgan", "gan", settings="metz", steps=4), seeds=2)
    spec = data.mixture("ring_pacgan")
    for seed in range(2):
        r = mode_coverage(samples[seed], spec.centers, std=spec.std, threshold=3.0)
        assert result["modes"][seed] == int(r.modes)
        assert result["high_quality"][seed] == pytest.approx(100 * float(r.high_quality), abs=0.05)
    table = (tmp_path / "table.md").read_text()
    device = jax.devices()[0].device_kind
    assert result["device"] == device and result["devices"] == 2  # 2 seeds, one on each of 2 of the 8 devices.
    assert "| jgan gan | 2 | 4 |" in table and "| jgan pacgan2 | 2 | 4 |" in table  # seeds, steps
    assert all(line.endswith(f"| {device} × 2 |") for line in table.splitlines() if line.startswith("| jgan"))
    assert "PacGAN2 (PacGAN Table 1)" in table
    # The divergence check, per seed, from the samples' spread against the data's.
    assert result["diverged"] == [not mog.sample_scale(s, spec) <= mog.DIVERGED_SCALE for s in samples]
    assert f"| {sum(result['diverged'])} | {result['seconds']:.0f} |" in table
    saved = np.load(tmp_path / "results" / "ring_pacgan__gan.npy")
    np.testing.assert_array_equal(saved, samples)
    assert matplotlib.image.imread(tmp_path / "table.png").ndim == 3
    capsys.readouterr()
    second = mog_table.main(args)  # Same settings: reused, not retrained.
    assert "reused" in capsys.readouterr().out
    assert second["ring_pacgan"]["gan"]["seconds"] == result["seconds"]
    (tmp_path / "table.md").unlink()
    rebuilt = mog_table.main([*args, "--table-only", "--seeds", "7"])  # Trains nothing.
    assert rebuilt == second and (tmp_path / "table.md").read_text() == table
    mog_table.main([*args[:6], "3", *args[7:]])  # Other seeds: recomputed.
    stored = json.loads((tmp_path / "results" / "ring_pacgan__gan.json").read_text())
    assert stored["seeds"] == 3 and len(stored["modes"]) == 3


def test_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        mog_table.main(["--seeds", "0", "--out", str(tmp_path)])
    assert raised.value.code == 2 and "--seeds and --steps must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as raised:
        mog_table.main(["--datasets", "moons", "--out", str(tmp_path)])
    assert raised.value.code == 2 and "invalid choice: 'moons'" in capsys.readouterr().err


def test_overrides():
    overrides = mog_table.parse_overrides(["latent_dim=256", "hidden=[128, 128]", "d_learning_rate=1e-3"])
    assert overrides == {"latent_dim": 256, "hidden": (128, 128), "d_learning_rate": 1e-3}
    config = mog_table.row_config("ring", "pacgan2", settings="tuned", steps=10, overrides=overrides)
    assert (config.latent_dim, config.hidden, config.pack, config.decay_fraction) == (256, (128, 128), 2, 0.5)
    for bad, message in [("width=3", "field of examples.mog.Config"), ("steps=3", "other than"),
                         ("latent_dim", "NAME=VALUE"), ("hidden=[1,", "must be JSON")]:
        with pytest.raises(ValueError, match=message):
            mog_table.parse_overrides([bad])


def test_bad_override_stops_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        mog_table.main(["--set", "pack=3", "--out", str(tmp_path)])  # 3 does not divide the batch.
    assert raised.value.code == 2
    assert "--pack 3 must divide --batch-size 256" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_sample_scale_flags_a_diverged_generator():
    """Finite samples far from the data count as diverged; data-like samples do not."""
    spec = data.mixture("ring")
    real_like = data.sample_mixture(jax.random.key(1), mog.EVAL_SAMPLES, spec)
    assert mog.sample_scale(real_like, spec) == pytest.approx(1.0, abs=0.1)
    far = 1e4 * real_like
    assert np.all(np.isfinite(far)) and mog.sample_scale(far, spec) > 100 * mog.DIVERGED_SCALE
    results = {"gan": {"seeds": 2, "config": {"steps": 4}, "modes": [8, 8], "high_quality": [90.0, 91.0],
                       "reverse_kl": [0.0, 0.0], "finished": [True, True], "diverged": [True, False],
                       "seconds": 1.0, "device": "cpu"},
               "old": {"seeds": 2, "config": {"steps": 4}, "modes": [8, 8], "high_quality": [90.0, 91.0],
                       "reverse_kl": [0.0, 0.0], "finished": [True, True], "seconds": 1.0, "device": "cpu"}}
    table = mog_table.format_table("ring", results)
    assert "| diverged seeds |" in table
    assert "| True | 1 | 1 | cpu |" in table and "| True | — | 1 | cpu |" in table


def test_a_signal_stops_before_the_next_cell(tmp_path, capsys):
    # SIGTERM during a long table: no further cell trains; the table of the
    # cells done is written and the exit code is 128 + the signal.
    import signal
    import types

    args = mog_table.Settings(datasets=("ring",), rows=("gan",), seeds=1, steps=2, out=str(tmp_path))
    stop = types.SimpleNamespace(requested=True, signum=signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_info:
        mog_table._table(args, None, stop)
    assert exit_info.value.code == 128 + signal.SIGTERM
    assert "stopped by a signal before ring gan" in capsys.readouterr().err
    assert not (tmp_path / "results").exists() and (tmp_path / "table.md").exists()
