"""End-to-end tests of examples/cyclegan.py in a tiny configuration (16x16 digits, 4-wide networks)."""

import json
import os
import shutil
import signal

import chex
import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest

from examples import _harness as harness
from examples import cyclegan as cg
from jgan import checkpoint
from jgan import data
from jgan import models

N = 2  # steps before the interruption; the straight run takes 2N
SIZE = 16
BATCH = 4
POOL = 6  # fills during step 2, so later steps draw from it
TINY = [
    "--image-size", str(SIZE),
    "--features", "4",
    "--n-blocks", "1",
    "--d-features", "4",
    "--d-layers", "2",
    "--batch-size", str(BATCH),
    "--pool-size", str(POOL),
    "--log-every", str(N),
    "--sample-every", str(N),
    "--checkpoint-every", str(N),
    "--quiet",
]  # fmt: skip


def _config():
    """The tiny runs' config."""
    config, _ = harness.parse_config(cg.Config, [*TINY, "--out", "unused"], description="")
    return config


def _raw(tree):
    """The tree with typed PRNG keys replaced by their key data (comparable by chex)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, tree)


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """2N steps in one go: (output directory, what main returned)."""
    out = tmp_path_factory.mktemp("straight")
    return out, cg.main([*TINY, "--steps", str(2 * N), "--out", str(out)])


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """A 2N-step run interrupted by SIGINT at step N, then --resume: (output directory, what the second main returned)."""
    out = tmp_path_factory.mktemp("resumed")
    save_grid = cg.program_lib.save_grid

    def save_grid_then_interrupt(path, images, columns):
        save_grid(path, images, columns)
        if path.endswith(f"step_{N:06d}.png"):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during step N's samples grid.

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cg.program_lib, "save_grid", save_grid_then_interrupt)
        with pytest.raises(SystemExit) as raised:
            cg.main([*TINY, "--steps", str(2 * N), "--out", str(out)])
    assert raised.value.code == 130
    assert checkpoint.all_steps(out / "checkpoints") == [N]
    return out, cg.main([*TINY, "--steps", str(2 * N), "--out", str(out), "--resume"])


def test_outputs_exist_and_parse(straight_run):
    out, result = straight_run
    assert result["example"] == "cyclegan" and result["resumed_from"] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 * N and summary["config"]["dataset"] == "digits_inverted"

    records = _records(out)
    assert [r["step"] for r in records] == [1, N, 2 * N]  # The first, every log_every and the last.
    for record in records:
        for name in ("g_loss", "cycle_loss", "d_a_loss", "d_b_loss", "translation_error_ab", "translation_error_ba"):
            assert np.isfinite(record[name]), (name, record)
        assert record["translation_error_ab"] > 0 and record["translation_error_ba"] > 0  # Computed where logged.
        assert record["nonfinite"] == 0.0
    assert {"step": 2 * N, **summary["final_metrics"]} == records[-1]

    assert checkpoint.all_steps(out / "checkpoints") == [N, 2 * N]
    # 8 rows of (a, G(a), F(G(a)), b, F(b), G(F(b))), one grey pixel between cells.
    grid = matplotlib.image.imread(out / "samples.png")
    cells = (8 * (SIZE + 1) + 1, 6 * (SIZE + 1) + 1)
    scale = max(1, 256 // cells[0])
    assert grid.shape[:2] == (cells[0] * scale, cells[1] * scale)
    for step in (N, 2 * N):
        assert (out / "samples" / f"step_{step:06d}.png").is_file()


def test_all_four_networks_and_the_pools_changed(straight_run):
    _, result = straight_run
    config = _config()
    before = cg.build(config).init(jax.random.key(config.seed))
    after = result["state"]
    assert int(after.step) == 2 * N
    for name in ("g_ab_params", "g_ba_params", "d_a_params", "d_b_params"):
        changed = jax.tree.map(lambda x, y: bool(jnp.any(x != y)), getattr(before, name), getattr(after, name))
        assert all(jax.tree.leaves(changed)), (name, changed)
        chex.assert_tree_all_finite(getattr(after, name))
    # The two generators start from different draws and stay different.
    assert not np.allclose(after.g_ab_params["c7s1"]["kernel"], after.g_ba_params["c7s1"]["kernel"])
    assert int(after.pool_a_count) == int(after.pool_b_count) == POOL
    for pool in (after.pool_a, after.pool_b):  # every entry holds a generated image
        assert bool(jnp.all(jnp.abs(pool).max(axis=(1, 2, 3)) > 0))


def test_resume_gives_the_uninterrupted_run(straight_run, resumed_run):
    straight_out, straight = straight_run
    resumed_out, resumed = resumed_run
    assert resumed["resumed_from"] == N
    chex.assert_trees_all_equal(_raw(resumed["state"]), _raw(straight["state"]))
    # The log is the uninterrupted run's, the first half from before the interruption.
    assert _records(resumed_out) == _records(straight_out)
    # And the checkpoint on disk restores to the same state.
    template = cg.build(_config()).init(jax.random.key(0))
    restored, meta = checkpoint.restore(resumed_out / "checkpoints", template)
    assert meta["program"] == "cyclegan"
    chex.assert_trees_all_equal(_raw(restored), _raw(straight["state"]))


def test_translation_error_is_that_of_the_final_generators(straight_run):
    _, result = straight_run
    state = result["state"]
    images, _ = data.digits(split="test", image_size=SIZE)  # held-out, independent of the example's helpers
    a, b = images[0::2][: cg.TRANSLATION_EVAL_IMAGES], -images[1::2][: cg.TRANSLATION_EVAL_IMAGES]
    generator = models.make_apply(models.ResnetGenerator(channels=1, features=4, n_blocks=1), stateful=False)
    expected_ab = np.mean(np.abs(np.asarray(generator(state.g_ab_params, a)) - (-a)))
    expected_ba = np.mean(np.abs(np.asarray(generator(state.g_ba_params, b)) - (-b)))
    final = result["final_metrics"]
    np.testing.assert_allclose(final["translation_error_ab"], expected_ab, rtol=1e-5)
    np.testing.assert_allclose(final["translation_error_ba"], expected_ba, rtol=1e-5)
    assert expected_ab > 0 and expected_ba > 0


def test_samples_grid_rows(straight_run):
    _, result = straight_run
    state = result["state"]
    program = cg.build(_config())
    images, columns = program.sample_grid(state)
    assert columns == 6 and images.shape == (48, SIZE, SIZE, 1)
    test_images, _ = data.digits(split="test", image_size=SIZE)
    a, b = test_images[0::2][:8], -test_images[1::2][:8]
    generator = models.make_apply(models.ResnetGenerator(channels=1, features=4, n_blocks=1), stateful=False)
    g, f = (lambda x: generator(state.g_ab_params, x)), (lambda x: generator(state.g_ba_params, x))
    expected = [a, g(a), f(g(a)), b, f(b), g(f(b))]
    for column, want in enumerate(expected):
        np.testing.assert_allclose(images[column::6], want, atol=1e-5, err_msg=f"column {column}")
    # The same images at every call (fixed test images, no randomness).
    np.testing.assert_array_equal(program.sample_grid(state)[0], images)


def test_offline_domains_are_disjoint_inverted_digits():
    images, _ = data.digits(split="train", image_size=SIZE)
    a, b = cg.offline_domains("train", SIZE)
    assert a.shape == b.shape == (719, SIZE, SIZE, 1)
    np.testing.assert_array_equal(a, images[0::2])
    np.testing.assert_array_equal(b, -images[1::2])
    assert a.mean() < -0.3 < 0.3 < b.mean()  # white on black, black on white
    assert not {x.tobytes() for x in a} & {(-y).tobytes() for y in b}  # no digit in both domains

    config = _config()
    stream = cg.offline_batches(config, 0)
    first = [next(stream) for _ in range(4)]
    for batch in first:
        assert batch["a"].shape == batch["b"].shape == (BATCH, SIZE, SIZE, 1)
    rows_a = [np.flatnonzero((a == x).all(axis=(1, 2, 3)))[0] for x in first[0]["a"]]
    rows_b = [np.flatnonzero((b == y).all(axis=(1, 2, 3)))[0] for y in first[0]["b"]]
    assert rows_a != rows_b  # the domains are shuffled independently
    resumed = next(cg.offline_batches(config, 3))  # a resume at step 3 sees batch 3
    chex.assert_trees_all_equal(resumed, first[3])


def test_resume_refuses_other_steps_under_the_decay(straight_run, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(straight_run[0], out)
    with pytest.raises(SystemExit) as raised:  # The learning rate decays over --steps: 3N would change it.
        cg.main([*TINY, "--steps", str(3 * N), "--out", str(out), "--resume"])
    assert raised.value.code == 2
    assert f"--steps {2 * N} (now {3 * N})" in capsys.readouterr().err


def test_learning_rate_schedule():
    config = cg.Config(steps=100, learning_rate=1e-3)
    schedule = cg.learning_rate_schedule(config)
    np.testing.assert_allclose([schedule(s) for s in (0, 49, 50, 75, 100)], [1e-3, 1e-3, 1e-3, 5e-4, 0.0], atol=1e-9)
    constant = cg.learning_rate_schedule(cg.Config(steps=100, learning_rate=1e-3, linear_decay=False))
    np.testing.assert_allclose(constant(100), 1e-3)


@pytest.mark.parametrize(
    "argv",
    [
        ["--dataset", "horse2zebra"],  # not a known name
        ["--dataset", "mnist"],  # an image dataset, but not an unpaired one
        ["--image-size", "18"],  # not a multiple of 4
        ["--d-layers", "3"],  # 16x16 is too small for three stride-2 layers
        ["--pool-size", "-1"],
        ["--steps", "0"],
    ],
)
def test_bad_settings_are_usage_errors(tmp_path, argv, capsys):
    with pytest.raises(SystemExit) as raised:
        cg.main([*TINY, "--out", str(tmp_path), *argv])
    assert raised.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()


def test_existing_checkpoints_need_resume(straight_run, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(straight_run[0], out)
    before = (out / "metrics.jsonl").read_text()
    with pytest.raises(SystemExit) as raised:
        cg.main([*TINY, "--steps", str(2 * N), "--out", str(out)])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "--resume" in err and len(err.strip().splitlines()) == 1
    assert (out / "metrics.jsonl").read_text() == before  # Nothing overwritten.


def test_resume_refuses_another_examples_checkpoint(tmp_path, capsys):
    config = _config()
    # Another model's state: its leaves do not match CycleGAN's.
    other = tmp_path / "other_model"
    state = {"step": jnp.zeros((), jnp.int32), "g_params": {"w": jnp.ones((3, 3))}}
    checkpoint.save(other / "checkpoints", state, step=1, metadata={"program": "dcgan"})
    with pytest.raises(SystemExit) as raised:
        cg.main([*TINY, "--steps", "1", "--out", str(other), "--resume"])
    assert raised.value.code == 2 and "does not match" in capsys.readouterr().err
    # A state of the same shapes, saved by another example.
    renamed = tmp_path / "other_example"
    checkpoint.save(renamed / "checkpoints", cg.build(config).init(jax.random.key(0)), metadata={"program": "wgan_gp"})
    with pytest.raises(SystemExit) as raised:
        cg.main([*TINY, "--steps", "1", "--out", str(renamed), "--resume"])
    assert raised.value.code == 2 and "'wgan_gp' run, not 'cyclegan'" in capsys.readouterr().err


def test_tfds_cycle_gan_dataset(tmp_path):
    """One step on mock ``cycle_gan/horse2zebra`` data (RGB, random jitter): the tfds branch runs."""
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=10):
        result = cg.main([*TINY, "--dataset", "cycle_gan/horse2zebra", "--steps", "1", "--out", str(tmp_path)])
    assert result["state"].g_ab_params["output"]["kernel"].shape[-1] == 3
    assert np.isfinite(result["final_metrics"]["g_loss"])
    assert "translation_error_ab" not in result["final_metrics"]  # no ground truth for real sets
    assert (tmp_path / "samples.png").is_file()


def test_runs_and_resumes_without_an_image_pool(tmp_path):
    """pool_size 0 keeps empty [0, h, w, c] pools in the state; they checkpoint and resume."""
    # A constant learning rate: with the linear decay, --steps (over which it decays) cannot change on resume.
    no_pool = [*(arg if arg != str(POOL) else "0" for arg in TINY), "--no-linear-decay"]
    first = cg.main([*no_pool, "--steps", "2", "--out", str(tmp_path)])
    resumed = cg.main([*no_pool, "--steps", "4", "--out", str(tmp_path), "--resume"])
    assert first["state"].pool_a.shape[0] == 0 and int(resumed["state"].step) == 4


# ---------------------------------------------------------------------------
# --shared-encoder: the seed notes' variant, one encoder and a decoder per domain.


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    """N steps of the shared-encoder translator: (output directory, what main returned)."""
    out = tmp_path_factory.mktemp("shared")
    return out, cg.main([*TINY, "--shared-encoder", "--steps", str(N), "--out", str(out)])


def _resnet_params(params, decoder):
    """The translator's G (decoder_b) or F (decoder_a) as ResnetGenerator parameters (no learned norms here)."""
    return {**params["encoder"], **params[decoder]}


def test_shared_encoder_run(shared_run):
    out, result = shared_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["shared_encoder"] is True
    assert [r["step"] for r in _records(out)] == [1, N]
    state = result["state"]
    assert state.g_ba_params is None and set(state.g_ab_params) == {"encoder", "decoder_a", "decoder_b"}
    config, _ = harness.parse_config(cg.Config, [*TINY, "--shared-encoder", "--out", "unused"], description="")
    before = cg.build(config).init(jax.random.key(config.seed))
    for name in ("g_ab_params", "d_a_params", "d_b_params"):  # every leaf, the shared encoder's included
        changed = jax.tree.map(lambda x, y: bool(jnp.any(x != y)), getattr(before, name), getattr(state, name))
        assert all(jax.tree.leaves(changed)), (name, changed)
        chex.assert_tree_all_finite(getattr(state, name))

    # The logged translation errors are those of two ResnetGenerators holding the one encoder.
    images, _ = data.digits(split="test", image_size=SIZE)
    a, b = images[0::2][: cg.TRANSLATION_EVAL_IMAGES], -images[1::2][: cg.TRANSLATION_EVAL_IMAGES]
    generator = models.make_apply(models.ResnetGenerator(channels=1, features=4, n_blocks=1), stateful=False)
    g_params, f_params = _resnet_params(state.g_ab_params, "decoder_b"), _resnet_params(state.g_ab_params, "decoder_a")
    final = result["final_metrics"]
    np.testing.assert_allclose(final["translation_error_ab"], np.mean(np.abs(generator(g_params, a) + a)), rtol=1e-5)
    np.testing.assert_allclose(final["translation_error_ba"], np.mean(np.abs(generator(f_params, b) + b)), rtol=1e-5)

    # The checkpoint (g_ba_params None) restores to the final state.
    restored, meta = checkpoint.restore(out / "checkpoints", before)
    chex.assert_trees_all_equal(_raw(restored), _raw(state))
    assert meta["settings"]["shared_encoder"] is True  # a resume must use the same form


def test_shared_encoder_cannot_resume_a_standard_run(straight_run, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(straight_run[0], out)
    with pytest.raises(SystemExit) as raised:
        cg.main([*TINY, "--shared-encoder", "--steps", str(2 * N), "--out", str(out), "--resume"])
    assert raised.value.code == 2
    assert "error:" in capsys.readouterr().err
