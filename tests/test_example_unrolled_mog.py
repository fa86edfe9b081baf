"""End-to-end tests of examples.unrolled_mog (the program) and examples.mog (the experiment) in a tiny configuration."""

import dataclasses
import json
import os
import re
import shutil
import signal

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest

from examples import _harness as harness
from examples import mog
from examples import unrolled_mog as um
from jgan import checkpoint
from jgan import data
from jgan.metrics import mode_coverage, sliced_wasserstein

STEPS = 12
TINY = [
    "--steps", str(STEPS),
    "--unroll-steps", "2",
    "--hidden", "8",
    "--latent-dim", "4",
    "--batch-size", "16",
    "--snapshots", "3",
    "--chunk-steps", "4",
    "--decay-fraction", "0",
    "--d-decay-fraction", "0",
    "--quiet",
]  # fmt: skip


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """An uninterrupted tiny run: (output directory, metrics)."""
    out = tmp_path_factory.mktemp("straight")
    result = um.main([*TINY, "--out", str(out)])
    return out, result


def test_outputs_exist_and_parse(straight_run):
    out, result = straight_run
    samples = np.load(out / "samples.npy")
    assert samples.shape == (2500, 2)
    assert np.all(np.isfinite(samples))

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result))
    assert set(metrics["runs"]) == {"0", "2"}
    for k, run in metrics["runs"].items():
        assert run["unroll_steps"] == int(k)
        assert run["step"] == STEPS
        assert 0 <= run["modes"] <= run["num_modes"] == 8
        assert 0.0 <= run["high_quality"] <= 1.0
        assert 0.0 <= run["reverse_kl"] <= np.log(8) + 1e-6
        assert sum(run["counts"]) == round(run["high_quality"] * 2500)
        assert run["sinkhorn"]["divergence"] >= metrics["sinkhorn"]["data_floor"]["divergence"] >= 0
        assert run["sinkhorn"]["transport_cost"] > 0
        assert np.isfinite(run["sliced_wasserstein"])
        assert run["sliced_wasserstein"] > metrics["sliced_wasserstein"]["data_floor"] > 0
        assert [h["step"] for h in run["history"]] == [0, 6, 12]
        assert run["diverged"] is False and 0 < run["sample_scale"] < mog.DIVERGED_SCALE
    assert metrics["sinkhorn"]["epsilon"] == mog.SINKHORN_EPSILON
    assert metrics["sliced_wasserstein"] == {
        "p": 2, "num_projections": 200, "samples": 2500, "data_floor": metrics["sliced_wasserstein"]["data_floor"]
    }  # fmt: skip
    assert metrics["config"]["steps"] == STEPS and metrics["config"]["unroll_steps"] == 2
    assert metrics["command_line"][:2] == ["--steps", "12"]
    assert metrics["wall_time_s"] > 0

    image = matplotlib.image.imread(out / "samples.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300

    for k in (0, 2):
        assert checkpoint.latest_step(out / "checkpoints" / f"k{k}") == STEPS

    # The reported numbers are those of samples.npy (the DESIGN.md protocol).
    spec = data.mixture("ring")
    coverage = mode_coverage(samples, spec.centers, std=spec.std, threshold=3.0)
    assert metrics["runs"]["2"]["counts"] == np.asarray(coverage.counts).tolist()
    assert metrics["runs"]["2"]["high_quality"] == pytest.approx(float(coverage.high_quality))
    config = mog.Config(**_tiny_config())
    reference, _ = mog.data_samples(config)
    directions_key = jax.random.fold_in(mog.keys(config.seed).eval, 2)
    recomputed = sliced_wasserstein(samples, reference, key=directions_key, num_projections=200, p=2)
    assert metrics["runs"]["2"]["sliced_wasserstein"] == pytest.approx(float(recomputed), rel=1e-6)


def test_sliced_wasserstein_to_data_ranks_data_below_a_collapsed_generator():
    config = mog.Config(**_tiny_config())
    reference, floor = mog.data_samples(config)
    key = mog.sliced_wasserstein_key(config)
    spec = data.mixture(config.dataset)
    # All the mass on one mode of the ring (radius 2): measured SW_2 2.0.
    collapsed = spec.centers[0] + spec.std * jax.random.normal(jax.random.key(3), floor.shape)
    on_data, on_one_mode = (mog.sliced_wasserstein_to_data(x, reference, key=key) for x in (floor, collapsed))
    # Two samples of the data differ by sampling noise: mode weights off by ~1/sqrt(2,500 / 8) (measured 0.13).
    assert 0 < on_data < 0.25 and on_one_mode > 1.5
    # A fixed key: the same number every time, and for the same directions whatever is compared.
    assert mog.sliced_wasserstein_to_data(floor, reference, key=key) == on_data
    assert mog.sliced_wasserstein_to_data(reference, reference, key=key) == 0.0


def test_same_seed_same_result(straight_run, tmp_path, capsys):
    """Another run of the same seed reproduces the result (progress bars on)."""
    out, result = straight_run
    loud = [arg for arg in TINY if arg != "--quiet"]
    again = um.main([*loud, "--out", str(tmp_path), "--no-baseline"])
    assert "K=2" in capsys.readouterr().err  # The tqdm bar.
    np.testing.assert_array_equal(np.load(tmp_path / "samples.npy"), np.load(out / "samples.npy"))
    assert again["runs"]["2"]["counts"] == result["runs"]["2"]["counts"]
    assert list(again["runs"]) == ["2"]


def test_resume_continues_exactly(straight_run, tmp_path, monkeypatch, capsys):
    out, result = straight_run
    real_save = harness.Checkpoints.save
    sent = []

    def save_then_interrupt(self, state):
        real_save(self, state)
        if self.directory.endswith("k2") and int(state.step) == 6 and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C right after the checkpoint at step 6.

    monkeypatch.setattr(harness.Checkpoints, "save", save_then_interrupt)
    with pytest.raises(SystemExit) as raised:
        um.main([*TINY, "--out", str(tmp_path)])
    monkeypatch.undo()
    assert raised.value.code == 130
    assert capsys.readouterr().err.strip().startswith("interrupted by SIGINT at step 6")
    assert checkpoint.latest_step(tmp_path / "checkpoints" / "k2") == 6
    assert not (tmp_path / "metrics.json").exists()

    resumed = um.main([*TINY, "--out", str(tmp_path), "--resume"])
    assert resumed["runs"]["0"]["resumed_from"] == STEPS  # Finished before the interruption.
    assert resumed["runs"]["2"]["resumed_from"] == 6
    for k in ("0", "2"):
        run, ref = resumed["runs"][k], result["runs"][k]
        assert run["step"] == STEPS
        assert run["history"] == ref["history"]
        for key in ("modes", "high_quality", "reverse_kl", "counts"):
            assert run[key] == ref[key]
    np.testing.assert_array_equal(np.load(tmp_path / "samples.npy"), np.load(out / "samples.npy"))
    # The metrics log is the uninterrupted run's.
    assert (tmp_path / "metrics.jsonl").read_text() == (out / "metrics.jsonl").read_text()

    template = mog.make_experiment(mog.Config(**_tiny_config()), 2).init(jax.random.key(0))
    a, _ = checkpoint.restore(out / "checkpoints" / "k2", template)
    b, _ = checkpoint.restore(tmp_path / "checkpoints" / "k2", template)
    assert int(b.step) == STEPS
    for x, y in zip(jax.tree.leaves(a.g_params), jax.tree.leaves(b.g_params), strict=True):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(jax.tree.leaves(a.d_opt_state), jax.tree.leaves(b.d_opt_state), strict=True):
        np.testing.assert_array_equal(x, y)

    # Resuming with other hyper-parameters is refused.
    with pytest.raises(SystemExit) as raised:
        um.main([*TINY, "--out", str(tmp_path), "--resume", "--d-learning-rate", "0.5"])
    assert raised.value.code == 2
    assert "--d-learning-rate 0.0001 (now 0.5)" in capsys.readouterr().err


def test_resume_with_more_steps_extends_the_run(straight_run, tmp_path):
    out, _ = straight_run
    extended = tmp_path / "extended"
    shutil.copytree(out, extended)
    longer = [*TINY, "--steps", str(2 * STEPS), "--no-baseline"]  # The last --steps wins.
    result = um.main([*longer, "--out", str(extended), "--resume"])
    assert result["runs"]["2"]["resumed_from"] == STEPS
    assert [h["step"] for h in result["runs"]["2"]["history"]] == [0, 6, 12, 24]
    um.main([*longer, "--out", str(tmp_path / "straight")])
    np.testing.assert_array_equal(
        np.load(extended / "samples.npy"), np.load(tmp_path / "straight" / "samples.npy")
    )


def test_learning_rate_schedules():
    # Constant, then a cosine to 0 over the last fraction: value by value.
    schedule = mog.schedule(1e-3, 0.5, 100)
    for step in (0, 25, 50):
        np.testing.assert_allclose(schedule(step), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(schedule(75), 0.5e-3, rtol=1e-6)  # Half-way down the cosine.
    np.testing.assert_allclose(schedule(100), 0.0, atol=1e-12)
    assert mog.schedule(1e-3, 0.0, 100) == 1e-3


def test_discriminator_decay_changes_training_and_pins_steps():
    base = mog.Config(**_tiny_config())
    decayed = dataclasses.replace(base, d_decay_fraction=1.0)
    assert not base.decays() and decayed.decays()
    assert "steps" not in base.resume_key() and decayed.resume_key()["steps"] == STEPS
    finals = []
    for config in (base, decayed):
        experiment = mog.make_experiment(config)
        state = experiment.init(jax.random.key(0))
        state, _, _ = experiment.train_chunk(state, jax.random.key(1), STEPS)
        finals.append(state.d_params)
    differences = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), *finals))
    assert max(differences) > 0  # The discriminator's updates shrank.


def _tiny_config():
    return dict(
        steps=STEPS, unroll_steps=2, hidden=(8,), latent_dim=4, batch_size=16, snapshots=3, chunk_steps=4,
        decay_fraction=0.0, d_decay_fraction=0.0,
    )  # fmt: skip


def test_defaults_are_the_measured_main_job():
    # The README's "What `make run` gives" is measured with these; the grid has its own step count.
    config = mog.Config()
    assert (config.dataset, config.unroll_steps, config.steps, config.latent_dim) == ("ring", 5, 4000, 2)
    assert config.hidden == (256, 256, 256) and config.decay_fraction == config.d_decay_fraction == 0.5
    assert (mog.Config().pack, mog.Config(dataset="ring_pacgan").pack) == (1, 1)
    grid = mog.Config(dataset="grid")
    assert (grid.steps, grid.pack, grid.decay_fraction, grid.d_decay_fraction) == (20000, 2, 0.5, 0.0)
    # The flags leave them to the dataset too: `--dataset grid` is the grid's defaults.
    parsed, _ = harness.parse_config(mog.Config, ["--dataset", "grid", "--out", "x"], description="", out="runs/x")
    assert parsed == grid
    parsed, _ = harness.parse_config(mog.Config, ["--dataset", "grid", "--pack", "1"], description="", out="runs/x")
    assert (parsed.pack, parsed.steps) == (1, 20000)
    assert (mog.Config(dataset="grid", steps=7, pack=1).steps, mog.Config(dataset="grid", pack=1).pack) == (7, 1)


def test_unrolling_beats_the_gan_in_a_short_run():
    # The main job's claim at a small cost: the same seed and settings (the
    # defaults with 2x64 MLPs, batch 128, 600 steps), K = 10 against K = 0 on
    # the Metz ring. Measured: K = 0 1 mode, 0.3 % high quality; K = 10 6
    # modes, 1.1 % (seeds 1 and 2: 1 vs 5 and 1 vs 4 modes).
    config = mog.Config(steps=600, hidden=(64, 64), batch_size=128, baseline=False)
    keys = mog.keys(config.seed)
    results = {}
    for k in (0, 10):
        experiment = mog.make_experiment(config, k)
        state, _, info = experiment.train_chunk(experiment.init(keys.init), keys.data, config.steps)
        assert int(info.updates) == config.steps and int(info.nonfinite) == 0
        results[k] = mog.evaluate(experiment, state, keys.eval)
    assert results[10]["modes"] >= results[0]["modes"] + 3
    assert results[10]["high_quality"] > 2 * results[0]["high_quality"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "moons"], r"Unknown dataset 'moons'; known datasets: ring, grid, ring_pacgan"),
        (["--unroll-steps", "-1"], r"--unroll-steps must be an integer >= 0, got -1"),
        (["--pack", "3"], r"--pack 3 must divide --batch-size 16"),
        (["--d-decay-fraction", "1.5"], r"--d-decay-fraction must be in \[0, 1\], got 1.5"),
    ],
)
def test_bad_arguments(args, message, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        um.main([*TINY, *args, "--out", str(out)])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()  # Nothing was written, nothing trained.


def test_unwritable_output_directory(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(SystemExit) as exit_info:
        um.main([*TINY, "--out", str(blocker / "out")])
    assert exit_info.value.code == 2
    assert "Cannot write the output directory" in capsys.readouterr().err
    with pytest.raises(harness.UsageError, match="Cannot write"):
        um.train_and_evaluate(mog.Config(**_tiny_config()), str(blocker / "out"))


def test_divergence_stops_with_a_clear_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        um.main([*TINY, "--no-baseline", "--d-learning-rate", "1e35", "--g-learning-rate", "1e35", "--out", str(tmp_path)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "training diverged" in err and re.search(r"Non-finite training.*the first at step 0", err)
    assert not (tmp_path / "metrics.json").exists()
