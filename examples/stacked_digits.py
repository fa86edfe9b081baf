"""Mode collapse beyond 2-D: one GAN on stacked digits (1,000 modes), and its mode count.

Trains one GAN on ``jgan.data.stacked_digits`` (three independent offline
digits as the channels of a 28x28 image: 1,000 modes) and writes to ``--out``:

- ``samples.png``: a grid of 64 samples (``samples/step_XXXXXX.png`` during
  training), from fixed latents;
- ``modes.png``: the mode histogram: the number of evaluated samples of each
  of the 1,000 digit triples, sorted, with the uniform line;
- ``samples.npy``: the evaluated samples, ``[eval_samples, 28, 28, 3]``
  float32 in [-1, 1];
- ``metrics.json``: modes (distinct predicted triples), KL of the triple
  histogram to uniform, the classifier's mean confidence per channel, steps,
  wall times, the config;
- ``metrics.jsonl`` (the train step's metrics) and ``checkpoints/``.

Modes are counted as Metz et al. count them on Stacked MNIST: a digit
classifier labels each channel of every sample (``python -m
examples.train_digits_classifier --image-size 28 --steps 3000 --out
runs/digits_classifier_28`` trains it, 98.6-98.9 % test accuracy). The data are an
offline analogue of Stacked MNIST (scikit-learn's 8x8 digits upsampled), not
the same data: numbers here are not the papers' numbers.

Usage::

    python -m examples.train_digits_classifier --image-size 28 --steps 3000 --out runs/digits_classifier_28  # once
    python -m examples.stacked_digits --out runs/stacked_digits
    python -m examples.stacked_digits --out runs/stacked_digits --resume      # after an interruption
    python -m examples.stacked_digits --out runs/k5 --pack 1 --unroll-steps 5 # an unrolled GAN instead

The defaults are the VEEGAN/PacGAN protocol's DCGAN setting
(``jgan.models.DCGANGenerator(image_size=28, channels=3, features=16)`` and
``DCGANDiscriminator(features=16)``; Adam 2e-4 with β = (0.5, 0.999) for
both; batch 64; a 100-dimensional latent) with PacGAN's packing (m = 4) and
an EMA of the generator's weights (decay 0.99): the ``best`` row of
``benchmarks.stacked_table``'s ``veegan`` protocol, 3,000 steps. Metz et
al.'s networks are ``--networks metz_quarter`` / ``metz_half`` (with their
``--latent-dim 256 --batch-size 128 --g-learning-rate 1e-4 --beta2 0.99``);
their generator's gradient costs four times the DCGAN one's here (190 ms
against 48 ms at batch 128) and after 3,000 steps (21 minutes) it drew
coloured blobs, not digits. Measured with the defaults (2 CPU cores shared
with other jobs, load average 12 to 16; 25,600 evaluated samples):

    steps   modes (of 1,000)  KL    mean confidence  training  evaluation
    3,000   993               0.52  0.76             227 s     70 s
    8,000   986               0.73  0.77             1,155 s   123 s
    (real stacked digits: 1,000 modes, KL 0.02, confidence 0.97)

The samples are blurred digit-like strokes, not yet sharp digits: the
classifier labels them with a mean confidence of 0.76 (0.97 on real data),
so many counted triples are guesses on unclear strokes; read the modes
beside the confidence. More steps did not help within these budgets.
Counting only samples whose three channels are all classified with
probability >= 0.9: 4.4 % of the 3,000-step samples qualify and cover 419
triples (real test-split stacked digits: 79 %, all 1,000).

The experiment (config, training core, evaluation) is importable:
``benchmarks.stacked_table`` trains its rows with :func:`make_experiment` and
:func:`evaluate`, many seeds under ``jax.vmap``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples import _harness as harness
from examples._image_gan import save_grid
from jgan import data
from jgan import loop as jgan_loop
from jgan import metrics as jgan_metrics
from jgan import models
from jgan import steps as jgan_steps
from jgan import unroll as jgan_unroll

PROGRAM = "stacked_digits"
NETWORKS = ("metz_quarter", "metz_half", "dcgan")
IMAGE_SIZE = 28
NUM_MODES = 1000
DEFAULT_CLASSIFIER = os.path.join("runs", "digits_classifier_28", "classifier.msgpack")
CLASSIFIER_COMMAND = "python -m examples.train_digits_classifier --image-size 28 --steps 3000 --out runs/digits_classifier_28"
# Samples generated (and classified) per compiled call of the evaluation.
EVAL_CHUNK = 1280
GRID_SAMPLES = 64


class ConfigError(harness.UsageError):
    """A configuration that cannot run (reported before any training; exit code 2 in a program)."""


@dataclasses.dataclass(frozen=True)
class Config:
    """The experiment's hyper-parameters; the defaults are the program's.

    Attributes:
      networks: metz_quarter or metz_half (Metz et al.'s small networks with
        D = ¼ G or ½ G: jgan.models.StackedGenerator / StackedDiscriminator),
        or dcgan (jgan.models.DCGANGenerator / DCGANDiscriminator at 28x28
        with --dcgan-features).
      dcgan_features: the DCGAN networks' first width (networks dcgan only).
      latent_dim: the dimension of the Gaussian latent.
      batch_size: real and generated samples per step (a multiple of --pack).
      g_learning_rate: the generator's Adam learning rate.
      d_learning_rate: the discriminator's Adam learning rate.
      beta1: Adam's β1 (both networks).
      beta2: Adam's β2 (both networks).
      unroll_steps: K of the unrolled GAN (0: none).
      unroll_first_order: stop gradients through the K updates (ablation).
      pack: PacGAN's m (1: no packing).
      ema_decay: evaluate an EMA of the generator's weights with this decay
        (none: the raw weights).
      steps: generator updates.
      seed: seeds initialisation, data, the evaluated samples and the grid.
      eval_samples: generated samples whose modes are counted (Metz et al.:
        25,600; VEEGAN: 26,000).
      classifier: the digit classifier that counts modes (28x28, one channel).
      sample_every: write the samples grid every this many steps (and at the last).
      checkpoint_every: save a checkpoint every this many steps (and at the last).
      log_every: log the train step's metrics every this many steps (the
        first and the last step are always logged).
      max_to_keep: checkpoints kept.
    """

    networks: str = "dcgan"
    dcgan_features: int = 16
    latent_dim: int = 100
    batch_size: int = 64
    g_learning_rate: float = 2e-4
    d_learning_rate: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    unroll_steps: int = 0
    unroll_first_order: bool = False
    pack: int = 4
    ema_decay: float | None = 0.99
    steps: int = 3000
    seed: int = 0
    eval_samples: int = 25_600
    classifier: str = DEFAULT_CLASSIFIER
    sample_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 100
    max_to_keep: int = 2

    def validate(self) -> "Config":
        """Returns the config if it can run; raises :class:`ConfigError` naming the problem."""
        if self.networks not in NETWORKS:
            raise ConfigError(f"Unknown networks {self.networks!r}; known: {', '.join(NETWORKS)}.")
        for name, minimum in (("unroll_steps", 0), ("dcgan_features", 1), ("latent_dim", 1), ("batch_size", 1),
                              ("pack", 1), ("steps", 1), ("eval_samples", 1), ("sample_every", 1),
                              ("checkpoint_every", 1), ("log_every", 1), ("max_to_keep", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"--{name.replace('_', '-')} must be an integer >= {minimum}, got {value!r}.")
        if self.batch_size % self.pack:
            raise ConfigError(f"--pack {self.pack} must divide --batch-size {self.batch_size}.")
        for name in ("g_learning_rate", "d_learning_rate"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be > 0, got {value!r}.")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"--{name} must be in [0, 1), got {getattr(self, name)!r}.")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"--ema-decay must be in [0, 1) or none, got {self.ema_decay!r}.")
        return self


# Fields that change neither what training computes nor the compiled programs.
_BOOKKEEPING_FIELDS = ("classifier", "sample_every", "checkpoint_every", "log_every", "max_to_keep")
# What a resumed run may change besides the bookkeeping: how long it trains and what it evaluates.
_RESUMABLE_FIELDS = _BOOKKEEPING_FIELDS + ("steps", "eval_samples")


def training_fields(config: Config) -> dict[str, Any]:
    """The fields that decide what training and evaluation compute (all but the bookkeeping), as JSON."""
    return harness.settings_of(config, _BOOKKEEPING_FIELDS)


# ---------------------------------------------------------------------------
# The unrolled updates as straight-line code.


@dataclasses.dataclass(frozen=True)
class StraightLineUnrolled(jgan_unroll.Unrolled):
    """``Unrolled(K)`` whose K updates are traced one after another instead of in ``lax.scan``.

    The same surrogate and the same derivatives (Metz et al.'s, second-order
    terms included; Adam's roots through ``jgan.unroll.safe_root_update``);
    only the form of the program differs. XLA:CPU runs a strided
    convolution's kernel derivative more slowly inside a loop: on these
    convolutional discriminators (D = ¼ G, batch 128, a loaded 2-core CPU)
    the step with K = 5 took 271 ms straight-line and 379 ms in the scan,
    for a compile of 34 s instead of 20 s (K = 10: 453 ms, 53 s). The
    program grows with K, so keep K small (the table's largest is 10).
    Stores every update's values (no ``remat``).
    """

    def unroll(self, d_params, d_opt_state, *, loss_fn, optimizer, axis_name=None):
        if axis_name is not None:
            raise ValueError("StraightLineUnrolled is for one device; use Unrolled under a mapped axis.")
        update = optimizer.update if self.first_order else jgan_unroll.safe_root_update(optimizer.update)
        for _ in range(self.steps):
            grads = jax.grad(loss_fn)(d_params)
            updates, d_opt_state = update(grads, d_opt_state, d_params)
            if self.first_order:
                updates, d_opt_state = jax.lax.stop_gradient((updates, d_opt_state))
            d_params = optax.apply_updates(d_params, updates)
        return d_params, d_opt_state


# ---------------------------------------------------------------------------
# The training core: pure functions, importable by benchmarks.


class Experiment(NamedTuple):
    """The pure pieces of one GAN of the experiment.

    Attributes:
      init: jitted ``key -> GANState``, the state at step 0.
      train_step: jitted ``(state, data_key) -> (state, metrics, info)``: one
        generator update by :func:`jgan.loop.run_steps` (straight-line code:
        the fast form for convolutions on a CPU) on the real batch
        ``stacked_digits(fold_in(data_key, state.step), batch_size)``. A
        non-finite update is not applied (the state keeps its step, so the
        run goes no further); ``info`` is its :class:`jgan.loop.RunInfo`.
      sample: jitted ``(state, key, n) -> images [n, 28, 28, 3]`` in [-1, 1]
        (the EMA weights when kept; BatchNorm on its running averages).
    """

    init: Callable[[jax.Array], jgan_steps.GANState]
    train_step: Callable[..., tuple[jgan_steps.GANState, dict[str, jax.Array], jgan_loop.RunInfo]]
    sample: Callable[[jgan_steps.GANState, jax.Array, int], jax.Array]


def networks(config: Config) -> tuple[Any, Any]:
    """The flax generator and discriminator of ``config.networks``."""
    if config.networks == "dcgan":
        return (models.DCGANGenerator(image_size=IMAGE_SIZE, channels=3, features=config.dcgan_features),
                models.DCGANDiscriminator(features=config.dcgan_features))
    features = models.METZ_QUARTER_FEATURES if config.networks == "metz_quarter" else models.METZ_HALF_FEATURES
    return models.StackedGenerator(channels=3), models.StackedDiscriminator(features=features)


def make_experiment(config: Config) -> Experiment:
    """Builds the GAN of ``config``; configs that differ only in seed, steps or bookkeeping share one.

    Returns:
      An :class:`Experiment`.
    """
    config.validate()
    unused = _BOOKKEEPING_FIELDS + ("seed", "steps", "eval_samples")
    defaults = Config()
    return _make_experiment(dataclasses.replace(config, **{name: getattr(defaults, name) for name in unused}))


@functools.lru_cache(maxsize=16)
def _make_experiment(config: Config) -> Experiment:
    generator, discriminator = networks(config)
    k = config.unroll_steps
    gan = jgan_steps.make_gan(
        generator=models.make_apply(generator, stateful=True),
        discriminator=models.make_apply(discriminator, stateful=True),
        g_optimizer=optax.adam(config.g_learning_rate, b1=config.beta1, b2=config.beta2),
        d_optimizer=optax.adam(config.d_learning_rate, b1=config.beta1, b2=config.beta2),
        prior=config.latent_dim,
        g_stateful=True,
        d_stateful=True,
        sample_generator=models.make_apply(generator, stateful=True, train=False),
        unroll=StraightLineUnrolled(k, first_order=config.unroll_first_order) if k else None,
        pack=config.pack,
        ema_decay=config.ema_decay,
    )
    real_batch = functools.partial(data.stacked_digits, n=config.batch_size, image_size=IMAGE_SIZE)

    @jax.jit
    def init(key: jax.Array) -> jgan_steps.GANState:
        return harness.init_gan(
            gan, key, generator, discriminator, (jnp.zeros((1, config.latent_dim)),),
            (jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3 * config.pack)),), g_stateful=True, d_stateful=True,
        )  # fmt: skip

    @jax.jit
    def train_step(state, data_key):
        batch = lambda i: real_batch(jax.random.fold_in(data_key, i))[0]  # noqa: E731
        return jgan_loop.run_steps(gan.step, state, batch, 1, on_nonfinite="stop", start=state.step)

    return Experiment(init=init, train_step=train_step, sample=jax.jit(gan.sample, static_argnums=2))


class Keys(NamedTuple):
    """The keys of one seed's run: initialisation, training data, evaluated samples."""

    init: jax.Array
    data: jax.Array
    eval: jax.Array


def keys(seed: int | jax.Array) -> Keys:
    """The run's keys (``jax.random.split(jax.random.key(seed), 3)``)."""
    return Keys(*jax.random.split(jax.random.key(seed), 3))


# ---------------------------------------------------------------------------
# Evaluation: modes and KL of the classified triples.


def load_classify(path: str) -> Callable[[jax.Array], jax.Array]:
    """The mode-counting classifier ``x [m, 28, 28, 1] -> probabilities [m, 10]``.

    Raises:
      harness.UsageError: no classifier at ``path`` (the message names the
        command that trains it), or one for other images.
    """
    if not os.path.isfile(path):
        raise harness.UsageError(f"no digit classifier at {path!r}; train it with: {CLASSIFIER_COMMAND}")
    module, params, config = models.load_classifier(path)
    if (config["image_size"], config["channels"]) != (IMAGE_SIZE, 1):
        raise harness.UsageError(
            f"the classifier at {path!r} takes {config['image_size']}x{config['image_size']}x{config['channels']}"
            f" images, not {IMAGE_SIZE}x{IMAGE_SIZE}x1; train one with: {CLASSIFIER_COMMAND}")
    classify = models.make_classifier_fn(module, params, batch_size=EVAL_CHUNK)
    return lambda x: classify(x)[1]


class Evaluation(NamedTuple):
    """The modes of ``n`` generated samples.

    Attributes:
      modes: distinct predicted digit triples (of 1,000).
      kl: KL(triple histogram ‖ uniform over 1,000), natural log.
      histogram: ``[1000]`` samples per triple.
      confidence: ``[3]`` the classifier's mean top probability per channel.
      samples: the samples ``[n, 28, 28, 3]`` (numpy float32), or ``None``
        when not kept.
    """

    modes: int
    kl: float
    histogram: np.ndarray
    confidence: np.ndarray
    samples: np.ndarray | None


def evaluate(experiment: Experiment, state: jgan_steps.GANState, key: jax.Array, n: int,
             classify: Callable[[jax.Array], jax.Array], *, keep_samples: bool = False) -> Evaluation:
    """Counts the modes of ``n`` samples of the generator (chunk ``i`` drawn from ``fold_in(key, i)``).

    Args:
      experiment: the experiment of ``state``.
      state: one GAN's state.
      key: the evaluation key.
      n: the number of samples (Metz et al.: 25,600).
      classify: ``x [m, 28, 28, 1] -> probabilities [m, 10]`` (:func:`load_classify`).
      keep_samples: return the samples too.
    """
    predictions, confidence, kept = [], [], []
    chunk = min(n, EVAL_CHUNK)
    for i in range(-(-n // chunk)):
        images = experiment.sample(state, jax.random.fold_in(key, i), chunk)[: n - i * chunk]
        p, c = jgan_metrics.classify_channels(classify, images)
        predictions.append(np.asarray(p))
        confidence.append(np.asarray(c))
        if keep_samples:
            kept.append(np.asarray(images, np.float32))
    predictions, confidence = np.concatenate(predictions), np.concatenate(confidence)
    result = jgan_metrics.stacked_mode_coverage(predictions)
    return Evaluation(
        modes=int(result.modes), kl=float(result.kl), histogram=np.asarray(result.histogram),
        confidence=confidence.mean(axis=0), samples=np.concatenate(kept) if keep_samples else None,
    )  # fmt: skip


def histogram_figure(histogram: np.ndarray, *, title: str) -> Any:
    """The mode histogram: samples per digit triple, sorted, with the uniform line (a matplotlib figure)."""
    plt = harness.pyplot()
    counts = np.sort(np.asarray(histogram))[::-1]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(np.arange(counts.size), counts, width=1.0, color="tab:blue")
    ax.axhline(counts.sum() / counts.size, color="tab:red", lw=1, label=f"uniform ({counts.sum() / counts.size:.1f})")
    ax.set(xlim=(0, counts.size), xlabel="digit triple (sorted by count)", ylabel="samples", yscale="symlog")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# The program.


def train_and_evaluate(config: Config, workdir: str, *, resume: bool = False, show_progress: bool = True,
                       stop: harness.StopRequest | None = None) -> dict[str, Any]:
    """The whole program without its command line: trains, evaluates, writes the outputs; returns ``metrics.json``."""
    config.validate()
    classify = load_classify(config.classifier)  # Refused before any training.
    workdir = harness.prepare_run_dir(workdir, resume=resume)
    experiment = make_experiment(config)
    run_keys = keys(config.seed)
    checkpoints = harness.Checkpoints(
        os.path.join(workdir, "checkpoints"), program=PROGRAM,
        settings=harness.settings_of(config, _RESUMABLE_FIELDS), max_to_keep=config.max_to_keep,
    )  # fmt: skip
    state, start = checkpoints.restore_or_init(experiment.init(run_keys.init), resume=resume)
    if start > config.steps:
        raise harness.UsageError(f"The checkpoint in {workdir} is at step {start}, past --steps {config.steps}.")
    log = harness.MetricsLog(os.path.join(workdir, "metrics.jsonl"), resume_step=start)
    grid_key = jax.random.fold_in(run_keys.eval, 1 << 30)  # Apart from the evaluation chunks' keys.
    sample_steps = set(range(config.sample_every, config.steps + 1, config.sample_every)) | {config.steps}
    train_seconds = 0.0

    def advance(state, step, n):
        nonlocal train_seconds
        assert n == 1
        tic = time.perf_counter()
        state, step_metrics, info = experiment.train_step(state, run_keys.data)
        jgan_loop.check_run(info)
        train_seconds += time.perf_counter() - tic
        return state, step_metrics

    def on_event(state, step):
        images = np.asarray(experiment.sample(state, grid_key, GRID_SAMPLES))
        save_grid(os.path.join(workdir, "samples", f"step_{step:06d}.png"), images, 8)
        save_grid(os.path.join(workdir, "samples.png"), images, 8)
        return {}

    bar = harness.progress_bar(config.steps, start, PROGRAM, show_progress)
    try:
        state = harness.train(
            state, start=start, steps=config.steps, advance=advance, log=log, log_every=config.log_every,
            stop=stop or harness.StopRequest(), checkpoints=checkpoints,
            checkpoint_steps=range(config.checkpoint_every, config.steps + 1, config.checkpoint_every),
            events=sample_steps, on_event=on_event, bar=bar,
        )  # fmt: skip
    finally:
        bar.close()
    tic = time.perf_counter()
    result = evaluate(experiment, state, run_keys.eval, config.eval_samples, classify, keep_samples=True)
    eval_seconds = time.perf_counter() - tic
    harness.save_npy(os.path.join(workdir, "samples.npy"), result.samples)
    title = (f"{result.modes} of {NUM_MODES} modes, KL {result.kl:.2f}, {config.eval_samples:,} samples"
             f" (offline stacked digits, step {config.steps:,})")
    harness.save_figure(os.path.join(workdir, "modes.png"), histogram_figure(result.histogram, title=title), dpi=110)
    summary = {
        "modes": result.modes,
        "kl": result.kl,
        "confidence": [float(c) for c in result.confidence],
        "mean_confidence": float(np.mean(result.confidence)),
        "eval_samples": config.eval_samples,
        "steps": config.steps,
        "resumed_from": start,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "device": jax.devices()[0].device_kind,
        "data": "jgan.data.stacked_digits: an offline analogue of Stacked MNIST (scikit-learn digits), not MNIST",
        "config": dataclasses.asdict(config),
    }
    harness.write_json(os.path.join(workdir, "metrics.json"), summary)
    if show_progress:
        print(f"{PROGRAM}: {title}; mean confidence {summary['mean_confidence']:.3f}")
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The command line (``python -m examples.stacked_digits --help`` lists the flags)."""

    def program(config, args, stop):
        return train_and_evaluate(config.validate(), args.out, resume=args.resume, show_progress=not args.quiet,
                                  stop=stop)

    return harness.main(Config, program, argv=argv, doc=__doc__, prog=f"python -m examples.{PROGRAM}")


if __name__ == "__main__":
    main()
