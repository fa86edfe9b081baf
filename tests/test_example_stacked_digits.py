"""examples.stacked_digits: a few steps write every output; the straight-line unroll equals the scan."""

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import optax
import pytest

from examples import stacked_digits as sd
from jgan import metrics, models, unroll

TINY = dict(batch_size=8, steps=3, eval_samples=20, sample_every=2, checkpoint_every=2, log_every=1, latent_dim=16)


def test_a_few_steps_write_every_output(tmp_path, classifier):
    out = tmp_path / "run"
    args = ["--out", str(out), "--classifier", classifier, "--quiet",
            *[a for k, v in TINY.items() for a in (f"--{k.replace('_', '-')}", str(v))]]
    summary = sd.main(args)
    written = json.loads((out / "metrics.json").read_text())
    assert written == json.loads(json.dumps(summary))
    assert written["steps"] == 3 and written["eval_samples"] == 20 and written["config"]["pack"] == 4
    assert 1 <= written["modes"] <= 20 and 0 <= written["kl"] <= np.log(1000) + 1e-5
    assert len(written["confidence"]) == 3 and all(0.1 <= c <= 1 for c in written["confidence"])
    samples = np.load(out / "samples.npy")
    assert samples.shape == (20, 28, 28, 3) and samples.dtype == np.float32
    assert np.all(np.abs(samples) <= 1) and samples.std() > 0
    # The recorded numbers are those of the saved samples.
    classify = sd.load_classify(classifier)
    predictions, confidence = metrics.classify_channels(classify, samples)
    counted = metrics.stacked_mode_coverage(predictions)
    assert written["modes"] == int(counted.modes) and written["kl"] == pytest.approx(float(counted.kl), abs=1e-6)
    np.testing.assert_allclose(written["confidence"], np.mean(confidence, axis=0), rtol=1e-5)
    for name in ("samples.png", "modes.png", "samples/step_000002.png"):
        assert matplotlib.image.imread(out / name).ndim == 3
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    # --resume with more steps continues from the last checkpoint.
    resumed = sd.main([*args[:-6], "--steps", "4", *args[-4:], "--resume"])
    assert resumed["resumed_from"] == 3 and resumed["steps"] == 4


def test_a_missing_classifier_names_the_command(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        sd.main(["--out", str(tmp_path / "run"), "--classifier", str(tmp_path / "none.msgpack")])
    assert raised.value.code == 2
    assert sd.CLASSIFIER_COMMAND in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # Refused before anything is written.


def test_bad_config_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        sd.main(["--out", str(tmp_path), "--pack", "3"])
    assert raised.value.code == 2 and "--pack 3 must divide --batch-size 64" in capsys.readouterr().err


@pytest.mark.parametrize("first_order", [False, True])
def test_straight_line_unroll_equals_the_scan(first_order):
    """The generator's surrogate gradient is the same whether the K updates are a scan or traced one by one."""
    d = models.StackedDiscriminator()
    d_apply = models.make_apply(d, stateful=True)
    d_params, d_state = models.init_model(d, jax.random.key(0), jnp.zeros((1, 28, 28, 3)))
    optimizer = optax.adam(2e-4, b1=0.5, b2=0.99)
    real = jax.random.uniform(jax.random.key(1), (8, 28, 28, 3), minval=-1, maxval=1)

    def surrogate(part, fake):
        def d_loss(params):
            r = d_apply(params, d_state, real)[0]
            f = d_apply(params, d_state, fake)[0]
            return jnp.mean(jax.nn.softplus(-r)) + jnp.mean(jax.nn.softplus(f))

        params_k, _ = part.unroll(d_params, optimizer.init(d_params), loss_fn=d_loss, optimizer=optimizer)
        return jnp.mean(d_apply(params_k, d_state, fake)[0])

    fake = jax.random.uniform(jax.random.key(2), (8, 28, 28, 3), minval=-1, maxval=1)
    parts = (unroll.Unrolled(2, first_order=first_order, remat=False),
             sd.StraightLineUnrolled(2, first_order=first_order))
    scan, loop = (jax.grad(functools.partial(surrogate, part))(fake) for part in parts)  # Eager: compiles faster.
    np.testing.assert_allclose(loop, scan, rtol=1e-4, atol=1e-7)
    assert np.abs(scan).max() > 0


def test_experiment_is_shared_across_seeds_and_steps():
    config = dataclasses.replace(sd.Config(), **TINY)
    assert sd.make_experiment(config) is sd.make_experiment(dataclasses.replace(config, seed=3, steps=9))
    assert sd.make_experiment(config) is not sd.make_experiment(dataclasses.replace(config, pack=2))
