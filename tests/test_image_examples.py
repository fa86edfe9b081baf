"""End-to-end tests of the image-GAN examples on the offline digits (flax's train_test habit).

Each example runs a few steps at a tiny width; the outputs must exist and
parse, training must be finite, and a run that stops and resumes must give
exactly the parameters of an uninterrupted one.
"""

import json
import os
import re

import chex
import jax
import numpy as np
import pytest

from examples import _harness as harness
from examples import _image_gan as program_lib
from examples import conditional_gan, dcgan, train_digits_classifier, wgan_gp

TINY = ["--features", "8", "--batch-size", "16", "--log-every", "1", "--sample-every", "2",
        "--eval-every", "2", "--eval-samples", "64", "--checkpoint-every", "2", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A (barely trained) domain classifier, so the FID/IS path runs too."""
    out = tmp_path_factory.mktemp("classifier")
    train_digits_classifier.main(["--out", str(out), "--steps", "5", "--image-size", "32", "--quiet"])
    return str(out / "classifier.msgpack")


def _learned(state):
    return (state.g_params, state.d_params, state.g_opt_state, state.d_opt_state,
            state.g_model_state, state.d_model_state)


@pytest.mark.parametrize("example, extra", [
    # The training aids ride along (README "Training aids"): each run checks its parts below.
    (dcgan, ["--diff-augment"]),
    (wgan_gp, ["--n-critic", "2", "--spectral-norm"]),
    (conditional_gan, ["--ema-decay", "0.5", "--spectral-norm", "--loss", "hinge", "--lecam", "0.1"]),
])
def test_example_runs_and_writes_its_outputs(tmp_path, classifier, example, extra):
    out = tmp_path / "run"
    # --log-every 50 > --steps: the first and the last step are logged all the same.
    result = example.main(["--out", str(out), "--steps", "2", "--classifier", classifier, *TINY, *extra,
                           "--log-every", "50"])  # fmt: skip
    assert int(result["state"].step) == 2
    for name in ("samples.png", "summary.json", "metrics.jsonl", "samples/step_000002.png"):
        assert (out / name).is_file(), name
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    assert all(line["nonfinite"] == 0.0 for line in lines)
    scores = {"fid", "kid", "inception_score", "precision", "recall", "density", "coverage"}
    assert scores <= set(lines[-1])  # evaluated at step 2
    assert all(np.isfinite(lines[-1][name]) for name in scores)
    assert lines[-1]["fid"] > 0 and lines[-1]["inception_score"] >= 1.0 - 1e-5
    assert all(0 <= lines[-1][name] <= 1 for name in ("precision", "recall", "coverage"))
    assert lines[-1]["density"] >= 0  # A mean count of balls / k: may exceed 1.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["classifier"] == classifier
    assert "classifier's features" in summary["units"]["kid"]  # KID's scale is stated.
    assert summary["neighbours"] == {"precision_recall_k": 3, "density_coverage_k": 5}
    assert scores <= set(summary["final_metrics"])
    assert sorted(os.listdir(out / "checkpoints")) == ["2"]
    state = result["state"]
    if "--spectral-norm" in extra:  # The power-iteration vectors are the discriminator's model state.
        leaves = jax.tree_util.tree_leaves_with_path(state.d_model_state)
        u = [path for path, _ in leaves if str(path[-1].key).split("/")[-1] == "u"]
        assert u, state.d_model_state
    if "--lecam" in extra:  # LeCam's anchors live in the state and its term is logged.
        assert state.d_regularizer_state is not None and "lecam" in lines[-1]
    if example is conditional_gan:  # One row per class in the grid: 10 rows of 8.
        import matplotlib.image

        grid = matplotlib.image.imread(out / "samples.png")
        assert grid.shape[0] / grid.shape[1] == pytest.approx(10 / 8, rel=0.05)
        # With --ema-decay the grid is drawn with the EMA weights, not the raw ones.
        state = result["state"]
        assert state.g_ema_params is not None
        config, _ = harness.parse_config(conditional_gan.Config, ["--out", "x", *TINY, *extra], description="")
        program = conditional_gan.build(config)
        with_ema = np.asarray(program.sample_grid(state)[0])
        as_raw = state._replace(g_params=state.g_ema_params, g_ema_params=None)
        np.testing.assert_array_equal(with_ema, np.asarray(program.sample_grid(as_raw)[0]))
        assert not np.allclose(with_ema, np.asarray(program.sample_grid(state._replace(g_ema_params=None))[0]))


def test_training_aids_become_parts():
    from jgan import augment, penalties, presets

    recipe = presets.wgan_gp().gan_kwargs()
    config = wgan_gp.Config(loss="relativistic_average_hinge", diff_augment=True, lecam=0.3)
    kwargs = program_lib.with_training_aids(config, recipe)
    assert kwargs["loss"] == "relativistic_average_hinge" and recipe["loss"] == "wasserstein"
    assert kwargs["augment"] == augment.DiffAugment()
    assert kwargs["d_regularizers"] == (*recipe["d_regularizers"], penalties.LeCam(0.3))
    assert program_lib.with_training_aids(wgan_gp.Config(), recipe) == recipe  # Off by default.
    with pytest.raises(ValueError, match="--lecam must be >= 0"):
        wgan_gp.Config(lecam=-1.0).validate()


def test_evaluator_on_real_images(classifier):
    """Real images as the generated set: each lies in its own real ball, so precision is 1 and so on."""
    reference = program_lib.reference_images(dcgan.Config())
    evaluator = program_lib.Evaluator(classifier, reference, reference.shape[1:])
    assert evaluator.available
    subset = reference[::7]  # 206 of the 1,438 training digits.
    record = evaluator(subset, jax.random.key(0))
    assert record["precision"] == 1.0  # Every generated point is a real ball's centre.
    # The balls centred on the subset hold a generated point: at least their share of the balls.
    assert len(subset) / len(reference) <= record["coverage"] <= 1.0
    assert record["density"] >= 1 / program_lib.DENSITY_COVERAGE_K  # Each point is in its own ball at least.
    assert 0 < record["recall"] <= 1.0
    line = program_lib.scores_line(record)
    assert "precision 1.000" in line and "(k = 3)" in line and "(k = 5)" in line
    # A record of a log written before these metrics (a resumed older run) still prints.
    older = {name: record[name] for name in ("fid", "kid", "inception_score")}
    assert program_lib.scores_line(older) == line.split(", precision")[0]


def test_dcgan_resume_continues_exactly(tmp_path):
    args = ["--classifier", str(tmp_path / "none"), *TINY]
    straight = dcgan.main(["--out", str(tmp_path / "straight"), "--steps", "4", *args])
    first = dcgan.main(["--out", str(tmp_path / "split"), "--steps", "2", *args])
    resumed = dcgan.main(["--out", str(tmp_path / "split"), "--steps", "4", "--resume", *args])
    assert resumed["resumed_from"] == 2 and int(resumed["state"].step) == 4
    chex.assert_trees_all_equal(_learned(resumed["state"]), _learned(straight["state"]))
    assert not np.allclose(first["state"].g_params["project"]["kernel"],
                           straight["state"].g_params["project"]["kernel"])
    # The metrics log has each step once, as the straight run's.
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def _exit_code(capsys, main, argv):
    """Runs ``main(argv)``; returns its exit code and its one line on stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as raised:
        main(argv)
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err  # One line, no traceback.
    return raised.value.code, err


def test_bad_runs_are_refused(tmp_path, capsys):
    args = ["--classifier", str(tmp_path / "none"), *TINY]
    # An unknown dataset: a usage error before anything runs.
    code, err = _exit_code(capsys, dcgan.main, ["--out", str(tmp_path / "x"), "--dataset", "imagenet", *args])
    assert code == 2 and "Unknown dataset 'imagenet'" in err
    # An unknown loss family.
    code, err = _exit_code(capsys, dcgan.main, ["--out", str(tmp_path / "x"), "--loss", "nonsense", *args])
    assert code == 2 and "--loss must be one of" in err
    # Too few generated images for precision and recall's k = 3 neighbours.
    code, err = _exit_code(capsys, dcgan.main, ["--out", str(tmp_path / "x"), *args, "--eval-samples", "3"])
    assert code == 2 and "--eval-samples must be >= 4" in err
    # No single image stream to model.
    code, err = _exit_code(capsys, dcgan.main, ["--out", str(tmp_path / "x"), "--dataset", "cycle_gan/horse2zebra", *args])
    assert code == 2 and "unpaired" in err
    dcgan.main(["--out", str(tmp_path / "run"), "--steps", "2", *args])
    # Without --resume a run directory is never overwritten.
    code, err = _exit_code(capsys, dcgan.main, ["--out", str(tmp_path / "run"), "--steps", "2", *args])
    assert code == 2 and "--resume" in err
    # Another model's checkpoints (a different width).
    code, err = _exit_code(capsys, dcgan.main, ["--out", str(tmp_path / "run"), "--steps", "4", "--resume", *args, "--features", "16"])
    assert code == 2 and "another model" in err
    # Other settings (the learning rate) are refused by name.
    code, err = _exit_code(capsys, dcgan.main, ["--out", str(tmp_path / "run"), "--steps", "4", "--resume", *args, "--learning-rate", "0.1"])
    assert code == 2 and "--learning-rate 0.0002 (now 0.1)" in err
    # Another example's checkpoints.
    code, err = _exit_code(capsys, conditional_gan.main, ["--out", str(tmp_path / "run"), "--steps", "4", "--resume", *args])
    assert code == 2 and re.search("another model|dcgan", err)


def test_dcgan_on_mock_lsun_at_64_writes_its_files_and_skips_the_digit_scores(tmp_path, capsys):
    """``--dataset lsun/church_outdoor --image-size 64`` on tfds' mock LSUN (random photos, no labels, offline)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    out = tmp_path / "lsun"
    args = ["--out", str(out), "--dataset", "lsun/church_outdoor", "--image-size", "64", "--steps", "2",
            "--classifier", str(tmp_path / "none"), *TINY]  # fmt: skip
    args.remove("--quiet")  # the note on the skipped scores is printed
    with tfds.testing.mock_data(num_examples=24):
        result = dcgan.main(args)
    assert int(result["state"].step) == 2
    for name in ("samples.png", "summary.json", "metrics.jsonl", "samples/step_000002.png"):
        assert (out / name).is_file(), name
    assert sorted(os.listdir(out / "checkpoints")) == ["2"]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    assert all(line["nonfinite"] == 0.0 for line in lines)
    assert not {"fid", "kid", "inception_score"} & set(lines[-1])  # not reported: meaningless on churches
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classifier"] is None and summary["units"] == {}
    assert "skipped" in summary["evaluation"] and "'lsun/church_outdoor'" in summary["evaluation"]
    assert "trained on the offline digits" in capsys.readouterr().out
    # The 64x64 networks: the grid is 8 x 8 cells of 64 pixels with one-pixel borders.
    import matplotlib.image

    assert matplotlib.image.imread(out / "samples.png").shape[:2] == (8 * 65 + 1, 8 * 65 + 1)
