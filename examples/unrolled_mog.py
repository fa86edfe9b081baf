"""Unrolled GANs on a mixture of Gaussians (Metz et al. 2016, Figure 1).

Trains an ordinary GAN (K = 0) and an unrolled GAN (K = ``--unroll-steps``)
from the same seed on a 2-D mixture of Gaussians, then writes to ``--out``:

- ``samples.npy``: 2,500 samples of the unrolled GAN's final generator, [2500, 2];
- ``metrics.json``: mode coverage of both GANs (DESIGN.md protocol: 2,500
  samples, high quality within 3 std), their progress, the config and the
  wall time;
- ``samples.png``: Figure 1 of Metz et al.: one row per K, one column per
  snapshot of training, generated samples over the mode centres;
- ``checkpoints/k<K>/``: orbax checkpoints; ``--resume`` continues from the
  latest one, bit for bit as if the run had not stopped.

Usage::

    python -m examples.unrolled_mog                     # ring, K = 10 vs K = 0
    python -m examples.unrolled_mog --dataset grid --unroll-steps 5 --out runs/grid
    python -m examples.unrolled_mog --resume            # after an interruption

The setting is Metz et al.'s appendix A: 8 modes on a ring of radius 2 with
std 0.02; generator and discriminator MLPs with two hidden layers of 128 ReLU
units; a 256-dimensional Gaussian latent; Adam with β1 = 0.5; the unrolled
generator is differentiated through all K updates of the discriminator.
Where the defaults differ from the paper (25,000 steps of batch 512, Adam
learning rate 1e-4), it is to finish in about three minutes on two CPU cores:
4,000 steps of batch 256, the generator's learning rate 1e-3 and the
discriminator's 1e-4 (the ratio of the public notebook of the experiment by
B. Poole, a co-author; quoted from memory), and the generator evaluated
through an EMA of its weights
(decay 0.99). Measured with these defaults (2 CPU cores, about 2.5 min):

    seed  K   modes  high quality  reverse KL  Sinkhorn divergence
    0     0   1/8     0.1 %        2.08        2.64
    0     10  7/8     7.1 %        0.39        0.62
    (two samples of the data: Sinkhorn divergence 0.07)

The unrolled GAN holds the modes where the ordinary GAN collapses and
drifts; precision is low with the paper's networks (the generator draws
streaks through the modes). A 2-D latent and wider MLPs fix that
(benchmarks/README.md, "What moves precision"): with ``--latent-dim 2
--hidden 256 256 256 --decay-fraction 0.5 --d-decay-fraction 0.5`` about
97 % of PacGAN2's samples are high quality on both rings.

The training core is importable: ``make_experiment(config)`` gives the
pure pieces (``init``, ``train_chunk``, ``sample``) that a benchmark can run
for many seeds, and ``train_and_evaluate(config, workdir)`` is the whole
program without its command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from jgan import checkpoint
from jgan import data
from jgan import loop as jgan_loop
from jgan import metrics as jgan_metrics
from jgan import models
from jgan import steps as jgan_steps

DATASETS = ("ring", "grid", "ring_pacgan")
EVAL_SAMPLES = 2500  # The DESIGN.md protocol.
SNAPSHOT_SAMPLES = 1000  # Points per panel of the figure.
HIGH_QUALITY_STD = 3.0
# The Sinkhorn divergence to the data (squared-Euclidean cost): ε in squared
# data units. √ε ≈ 0.22 lies between the modes' std (0.01–0.05) and their
# spacing (≥ 0.77), so the divergence sees how mass is spread over the modes
# and how far it strays from them.
SINKHORN_EPSILON = 0.05
ADAM_EPS_ROOT = 1e-16


class ConfigError(ValueError):
    """A configuration that cannot run (reported before any training)."""


@dataclasses.dataclass(frozen=True)
class Config:
    """The experiment's hyper-parameters; the defaults are the program's defaults.

    Attributes:
      dataset: the mixture, one of ``DATASETS``.
      unroll_steps: K of the unrolled GAN (trained beside a K = 0 baseline).
      steps: generator updates per GAN.
      seed: seeds initialisation, latents and data; both GANs share it.
      batch_size: real and generated samples per step.
      latent_dim: the dimension of the Gaussian latent.
      hidden: widths of the hidden layers of both MLPs.
      g_learning_rate / d_learning_rate: Adam's learning rates.
      beta1: Adam's β1 (both networks).
      decay_fraction: the generator's learning rate follows a cosine decay
        to 0 over this last fraction of ``steps`` (0: constant). The
        discriminator's follows ``d_decay_fraction``.
      d_decay_fraction: the same for the discriminator's learning rate
        (0: constant). Decaying it shrinks the unrolled look-ahead (K updates
        of size ~ its learning rate), so it is off by default.
      loss: the GAN loss family (``jgan.steps.LOSSES``).
      pack: PacGAN's m (1: no packing).
      unroll_first_order: stop gradients through the K updates (ablation).
      gradient_penalty: λ of WGAN-GP (0: none).
      d_steps: discriminator updates per generator update.
      ema_decay: EMA of the generator's weights, evaluated instead of the
        raw weights (``None``: no EMA).
      snapshots: columns of the figure (evenly spaced steps, 0 and the last
        included).
      eval_every: evaluate (and checkpoint) every this many steps besides the
        snapshots (``None``: only at the snapshots).
      chunk_steps: at most this many steps per compiled call (the progress
        bar's granularity; does not change results).
      baseline: also train the K = 0 GAN for comparison.
      max_to_keep: checkpoints kept per GAN.
    """

    dataset: str = "ring"
    unroll_steps: int = 10
    steps: int = 4000
    seed: int = 0
    batch_size: int = 256
    latent_dim: int = 256
    hidden: tuple[int, ...] = (128, 128)
    g_learning_rate: float = 1e-3
    d_learning_rate: float = 1e-4
    beta1: float = 0.5
    decay_fraction: float = 0.0
    d_decay_fraction: float = 0.0
    loss: str = "non_saturating"
    pack: int = 1
    unroll_first_order: bool = False
    gradient_penalty: float = 0.0
    d_steps: int = 1
    ema_decay: float | None = 0.99
    snapshots: int = 6
    eval_every: int | None = None
    chunk_steps: int = 100
    baseline: bool = True
    max_to_keep: int = 2

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(self.hidden))  # Hashable, JSON-stable.

    def validate(self) -> "Config":
        """Returns the config if it can run; raises :class:`ConfigError` naming the problem."""
        if self.dataset not in DATASETS:
            raise ConfigError(f"Unknown dataset {self.dataset!r}; known datasets: {', '.join(DATASETS)}.")
        for name in ("unroll_steps",):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be an integer >= 0, got {value!r}.")
        for name in ("steps", "batch_size", "latent_dim", "pack", "d_steps", "chunk_steps", "max_to_keep"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}.")
        if isinstance(self.snapshots, bool) or not isinstance(self.snapshots, int) or self.snapshots < 2:
            raise ConfigError(f"--snapshots must be an integer >= 2, got {self.snapshots!r}.")
        if self.eval_every is not None and (not isinstance(self.eval_every, int) or self.eval_every < 1):
            raise ConfigError(f"--eval-every must be an integer >= 1, got {self.eval_every!r}.")
        if self.batch_size % self.pack:
            raise ConfigError(f"--pack {self.pack} must divide --batch-size {self.batch_size}.")
        if self.loss not in jgan_steps.LOSSES:
            raise ConfigError(f"Unknown loss {self.loss!r}; known losses: {', '.join(sorted(jgan_steps.LOSSES))}.")
        for name in ("g_learning_rate", "d_learning_rate"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be > 0, got {value!r}.")
        for name in ("decay_fraction", "d_decay_fraction"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1], got {value!r}.")
        if not 0.0 <= self.beta1 < 1.0:
            raise ConfigError(f"--beta1 must be in [0, 1), got {self.beta1!r}.")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"--ema-decay must be in [0, 1), got {self.ema_decay!r}.")
        if not self.hidden or any(not isinstance(w, int) or w < 1 for w in self.hidden):
            raise ConfigError(f"--hidden must be positive integers, got {self.hidden!r}.")
        return self

    def decays(self) -> bool:
        """Whether a learning rate depends on ``steps`` (then a resume cannot change them)."""
        return self.decay_fraction > 0 or self.d_decay_fraction > 0

    def unroll_values(self) -> tuple[int, ...]:
        """The K of every GAN this config trains: the baseline 0 first."""
        if self.baseline and self.unroll_steps != 0:
            return (0, self.unroll_steps)
        return (self.unroll_steps,)

    def snapshot_steps(self) -> tuple[int, ...]:
        """The figure's columns: evenly spaced steps from 0 to ``steps``."""
        return tuple(sorted({round(i * self.steps / (self.snapshots - 1)) for i in range(self.snapshots)}))

    def event_steps(self) -> tuple[int, ...]:
        """Where training pauses to evaluate, snapshot and checkpoint."""
        events = set(self.snapshot_steps())
        if self.eval_every is not None:
            events.update(range(0, self.steps + 1, self.eval_every))
        events.add(self.steps)
        return tuple(sorted(events))

    def resume_key(self) -> dict[str, Any]:
        """The fields a resumed run must share with its checkpoint.

        All but the bookkeeping, and ``steps`` unless the learning rate decays
        over them: a run can be resumed with more ``--steps`` to extend it.
        """
        fields = dataclasses.asdict(self)
        for name in _BOOKKEEPING_FIELDS + (() if self.decays() else ("steps",)):
            fields.pop(name)
        fields["hidden"] = list(fields["hidden"])
        return fields


# Fields that change neither the trajectory of training nor the compiled programs.
_BOOKKEEPING_FIELDS = ("unroll_steps", "snapshots", "eval_every", "chunk_steps", "baseline", "max_to_keep")


# ---------------------------------------------------------------------------
# The training core: pure functions, importable by benchmarks.


class Experiment(NamedTuple):
    """The pure pieces of one GAN of the experiment.

    Attributes:
      init: ``key -> GANState``, the state at step 0.
      train_chunk: jitted ``(state, data_key, n) -> (state, metrics, info)``:
        ``n`` (static: one program per chunk size) generator updates by
        :func:`jgan.loop.run_steps`, the real batch of step ``s`` drawn from
        ``fold_in(data_key, s)``. It stops at a step that is not finite,
        keeping the last finite state; ``metrics`` are stacked ``[n]`` and
        ``info`` is the run's :class:`jgan.loop.RunInfo` (check it with
        ``jgan.loop.check_run``).
      sample: jitted ``(state, key, n) -> [n, 2]`` samples of the generator
        (its EMA weights when the config keeps an EMA).
      spec: the target mixture (centres, std) for ``mode_coverage``.
    """

    init: Callable[[jax.Array], jgan_steps.GANState]
    train_chunk: Callable[..., tuple[jgan_steps.GANState, dict[str, jax.Array], jgan_loop.RunInfo]]
    sample: Callable[[jgan_steps.GANState, jax.Array, int], jax.Array]
    spec: data.MixtureSpec


def make_experiment(config: Config, unroll_steps: int | None = None) -> Experiment:
    """Builds the GAN of ``config`` with ``unroll_steps`` (default ``config.unroll_steps``).

    Configs that differ only in their schedule or seed share one
    :class:`Experiment` (and its compiled functions), so running many seeds
    compiles once.

    Args:
      config: the experiment's hyper-parameters.
      unroll_steps: K; the baseline is ``make_experiment(config, 0)``.

    Returns:
      An :class:`Experiment`.
    """
    config.validate()
    k = config.unroll_steps if unroll_steps is None else unroll_steps
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ConfigError(f"unroll_steps must be an integer >= 0, got {k!r}.")
    # Configs that compile to the same programs share them: the seed enters as
    # keys, and ``steps`` only through a learning-rate decay.
    unused = _BOOKKEEPING_FIELDS + ("seed",) + (() if config.decays() else ("steps",))
    defaults = Config()
    program = dataclasses.replace(config, **{name: getattr(defaults, name) for name in unused})
    return _make_experiment(program, k)


@functools.lru_cache(maxsize=16)
def _make_experiment(config: Config, k: int) -> Experiment:
    spec = data.mixture(config.dataset)
    dim = spec.centers.shape[1]
    generator = models.MLPGenerator(out_features=dim, hidden=tuple(config.hidden))
    discriminator = models.MLPDiscriminator(hidden=tuple(config.hidden))
    g_apply = models.make_apply(generator, stateful=False)
    d_apply = models.make_apply(discriminator, stateful=False)
    # jgan differentiates Adam's root safely at 0 (jgan.unroll.safe_root_update), so
    # eps_root is not needed; the tiny one is kept so that the README's tables,
    # measured with it, stay reproducible to the bit.
    g_optimizer = optax.adam(_schedule(config.g_learning_rate, config.decay_fraction, config.steps), b1=config.beta1, eps_root=ADAM_EPS_ROOT)
    d_optimizer = optax.adam(_schedule(config.d_learning_rate, config.d_decay_fraction, config.steps), b1=config.beta1, eps_root=ADAM_EPS_ROOT)
    gan = jgan_steps.make_gan(
        generator=g_apply,
        discriminator=d_apply,
        g_optimizer=g_optimizer,
        d_optimizer=d_optimizer,
        prior=config.latent_dim,
        loss=config.loss,
        d_steps=config.d_steps,
        batches="sliced" if config.d_steps > 1 else "shared",
        d_regularizers=[jgan_steps.GradientPenalty(config.gradient_penalty)] if config.gradient_penalty else [],
        unroll=jgan_steps.Unrolled(k, first_order=config.unroll_first_order) if k else None,
        pack=config.pack,
        ema_decay=config.ema_decay,
    )
    sample_real = functools.partial(data.sample_mixture, n=config.batch_size, spec=spec)

    def init(key: jax.Array) -> jgan_steps.GANState:
        g_key, d_key, train_key = jax.random.split(key, 3)
        g_params, _ = models.init_model(generator, g_key, jnp.zeros((1, config.latent_dim)))
        d_params, _ = models.init_model(discriminator, d_key, jnp.zeros((1, dim * config.pack)))
        return gan.init(train_key, g_params, d_params)

    def real_batch(data_key, i):
        step_key = jax.random.fold_in(data_key, i)
        if config.d_steps == 1:
            return sample_real(step_key)
        return jax.vmap(sample_real)(jax.random.split(step_key, config.d_steps))  # One slice per D update.

    @functools.partial(jax.jit, static_argnames="n")
    def train_chunk(state, data_key, n):
        return jgan_loop.run_steps(
            gan.step, state, functools.partial(real_batch, data_key), n, on_nonfinite="stop", start=state.step
        )

    sample = jax.jit(gan.sample, static_argnums=2)

    return Experiment(init=init, train_chunk=train_chunk, sample=sample, spec=spec)


def _schedule(learning_rate: float, decay_fraction: float, steps: int) -> optax.Schedule | float:
    """Constant, then a cosine decay to 0 over the last ``decay_fraction`` of ``steps``."""
    decay_steps = round(decay_fraction * steps)
    if decay_steps == 0:
        return learning_rate
    return optax.join_schedules(
        [optax.constant_schedule(learning_rate), optax.cosine_decay_schedule(learning_rate, decay_steps)],
        [steps - decay_steps],
    )


def evaluate(experiment: Experiment, state: jgan_steps.GANState, key: jax.Array) -> dict[str, Any]:
    """Mode coverage of the generator on ``EVAL_SAMPLES`` samples (DESIGN.md protocol)."""
    samples = experiment.sample(state, key, EVAL_SAMPLES)
    result = jgan_metrics.mode_coverage(
        samples, experiment.spec.centers, std=experiment.spec.std, threshold=HIGH_QUALITY_STD
    )
    return {
        "modes": int(result.modes),
        "num_modes": int(experiment.spec.centers.shape[0]),
        "high_quality": float(result.high_quality),
        "reverse_kl": float(result.reverse_kl),
        "counts": [int(c) for c in np.asarray(result.counts)],
    }


class _Keys(NamedTuple):
    init: jax.Array
    data: jax.Array
    eval: jax.Array
    snapshot: jax.Array


def _keys(seed: int) -> _Keys:
    """The run's keys; the same for every K, so the GANs differ only in K."""
    return _Keys(*jax.random.split(jax.random.key(seed), 4))


# ---------------------------------------------------------------------------
# Running one GAN: the host loop between compiled chunks.


def _progress_path(workdir: str, k: int) -> str:
    return os.path.join(workdir, f"progress_k{k}.npz")


def _load_progress(path: str, up_to: int) -> dict[int, dict[str, Any]]:
    """The saved evaluations and snapshots of steps <= ``up_to``."""
    if not os.path.exists(path):
        return {}
    with np.load(path) as f:
        records = json.loads(str(f["records"]))
        samples = {int(name[len("samples_"):]): f[name] for name in f.files if name.startswith("samples_")}
    progress = {}
    for record in records:
        if record["step"] <= up_to:
            if record["step"] in samples:
                record["samples"] = samples[record["step"]]
            progress[record["step"]] = record
    return progress


def _save_progress(path: str, progress: dict[int, dict[str, Any]]) -> None:
    """Writes the progress atomically (a temporary file renamed over the old one)."""
    records = [{k: v for k, v in r.items() if k != "samples"} for _, r in sorted(progress.items())]
    arrays = {f"samples_{s}": r["samples"] for s, r in progress.items() if "samples" in r}
    tmp = path + ".tmp.npz"
    np.savez(tmp, records=json.dumps(records), **arrays)
    os.replace(tmp, path)


def _run_one(config: Config, k: int, workdir: str, *, resume: bool, show_progress: bool) -> dict[str, Any]:
    """Trains the GAN with K = ``k`` to ``config.steps``; returns its results."""
    experiment = make_experiment(config, k)
    keys = _keys(config.seed)
    ckpt_dir = os.path.join(workdir, "checkpoints", f"k{k}")
    progress_path = _progress_path(workdir, k)
    state = experiment.init(keys.init)
    start = 0
    if resume and checkpoint.latest_step(ckpt_dir) is not None:
        state, meta = checkpoint.restore(ckpt_dir, state)
        if meta.get("config") != config.resume_key() or meta.get("unroll_steps") != k:
            raise ConfigError(
                f"The checkpoint in {ckpt_dir} was written with another configuration"
                f" ({meta.get('config')}, K = {meta.get('unroll_steps')}); resume with the same"
                " settings (only --steps, unless the learning rate decays, --snapshots, --eval-every and"
                " --chunk-steps may change) or use a fresh --out."
            )
        start = int(state.step)
        if start > config.steps:
            raise ConfigError(f"The checkpoint in {ckpt_dir} is at step {start}, past --steps {config.steps}.")
        progress = _load_progress(progress_path, start)
    else:
        if os.path.exists(ckpt_dir):
            shutil.rmtree(ckpt_dir)  # A fresh run replaces the old run's checkpoints.
        progress = {}
    meta = {"config": config.resume_key(), "unroll_steps": k}
    snapshot_steps = set(config.snapshot_steps())

    def record(state):
        step = int(state.step)
        entry = {"step": step, **evaluate(experiment, state, keys.eval)}
        if step in snapshot_steps:
            entry["samples"] = np.asarray(experiment.sample(state, keys.snapshot, SNAPSHOT_SAMPLES))
        progress[step] = entry
        _save_progress(progress_path, progress)
        return entry

    bar = _progress_bar(config.steps, start, f"K={k:<2d}", show_progress)
    train_seconds = 0.0
    postfix = {}
    try:
        if start == 0 and 0 not in progress:
            record(state)
        for event in (s for s in config.event_steps() if s > start):
            while int(state.step) < event:
                n = min(config.chunk_steps, event - int(state.step))
                before = int(state.step)
                tic = time.perf_counter()
                state, step_metrics, info = experiment.train_chunk(state, keys.data, n)
                jax.block_until_ready(state)
                train_seconds += time.perf_counter() - tic
                jgan_loop.check_run(info)
                postfix.update(d_loss=f"{float(step_metrics['d_loss'][-1]):.3f}", g_loss=f"{float(step_metrics['g_loss'][-1]):.3f}")
                bar.set_postfix(postfix, refresh=False)
                bar.update(int(state.step) - before)
            entry = record(state)
            checkpoint.save(ckpt_dir, state, metadata=meta, max_to_keep=config.max_to_keep)
            postfix.update(modes=f"{entry['modes']}/{entry['num_modes']}", hq=f"{entry['high_quality']:.2f}", kl=f"{entry['reverse_kl']:.2f}")
            bar.set_postfix(postfix)
    finally:
        bar.close()
    if config.steps not in progress:  # Resumed at the end without its progress file.
        record(state)
    final = progress[config.steps]
    raw = None
    if state.g_ema_params is not None:  # How much the EMA buys.
        raw = evaluate(experiment, state._replace(g_ema_params=None), keys.eval)
    return {
        "unroll_steps": k,
        "step": int(state.step),
        "resumed_from": start,
        **{key: final[key] for key in ("modes", "num_modes", "high_quality", "reverse_kl", "counts")},
        "sinkhorn": None,  # Filled in by train_and_evaluate, against one data sample for every K.
        "without_ema": raw,
        "train_seconds": train_seconds,
        "history": [
            {key: r[key] for key in ("step", "modes", "high_quality", "reverse_kl")}
            for _, r in sorted(progress.items())
        ],
        "snapshots": {s: progress[s]["samples"] for s in sorted(snapshot_steps) if "samples" in progress.get(s, {})},
        "samples": np.asarray(experiment.sample(state, keys.eval, EVAL_SAMPLES)),
    }


def _progress_bar(total: int, initial: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not enabled, dynamic_ncols=True)


# ---------------------------------------------------------------------------
# The whole program.


def check_writable(workdir: str) -> None:
    """Raises :class:`ConfigError` unless ``workdir`` can be created and written."""
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_test_"):
            pass
    except OSError as error:
        raise ConfigError(f"Cannot write the output directory {workdir!r}: {error.strerror or error}.") from None


def train_and_evaluate(
    config: Config,
    workdir: str,
    *,
    resume: bool = False,
    show_progress: bool = False,
    command_line: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Trains the K = 0 and K = ``config.unroll_steps`` GANs and writes the outputs.

    Args:
      config: the experiment.
      workdir: the output directory (created).
      resume: continue each GAN from its latest checkpoint in ``workdir``.
      show_progress: show tqdm progress bars.
      command_line: the program's arguments, recorded in ``metrics.json``.

    Returns:
      The contents of ``metrics.json``.

    Raises:
      ConfigError: a bad config or an unwritable ``workdir``, before training.
      jgan.steps.NonFiniteError: training diverged (the message names the step).
    """
    tic = time.perf_counter()
    config.validate()
    workdir = os.path.abspath(workdir)
    check_writable(workdir)
    runs = {}
    for k in config.unroll_values():
        runs[k] = _run_one(config, k, workdir, resume=resume, show_progress=show_progress)
    reference, floor = _data_samples(config)
    for run in runs.values():
        run["sinkhorn"] = sinkhorn_to_data(run["samples"], reference)
    main_run = runs[config.unroll_steps]
    np.save(os.path.join(workdir, "samples.npy"), main_run["samples"])
    _plot(config, runs, os.path.join(workdir, "samples.png"))
    result = {
        "dataset": config.dataset,
        "unroll_steps": config.unroll_steps,
        "protocol": {"samples": EVAL_SAMPLES, "high_quality_std": HIGH_QUALITY_STD},
        "runs": {
            str(k): {key: v for key, v in run.items() if key not in ("snapshots", "samples")}
            for k, run in runs.items()
        },
        "sinkhorn": {
            "epsilon": SINKHORN_EPSILON,
            "cost": "sqeuclidean",
            "samples": EVAL_SAMPLES,
            "data_floor": sinkhorn_to_data(floor, reference),
        },
        "config": {**dataclasses.asdict(config), "hidden": list(config.hidden)},
        "command_line": None if command_line is None else list(command_line),
        "resumed": resume,
        "wall_time_s": None,
        "devices": [str(d) for d in jax.devices()[:1]],
    }
    result["wall_time_s"] = time.perf_counter() - tic
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def _data_samples(config: Config) -> tuple[jax.Array, jax.Array]:
    """Two independent data samples of ``EVAL_SAMPLES``, fixed by the seed."""
    spec = data.mixture(config.dataset)
    key = jax.random.fold_in(_keys(config.seed).eval, 1)
    first, second = jax.random.split(key)
    return data.sample_mixture(first, EVAL_SAMPLES, spec), data.sample_mixture(second, EVAL_SAMPLES, spec)


def sinkhorn_to_data(samples: jax.typing.ArrayLike, reference: jax.Array) -> dict[str, Any]:
    """The debiased Sinkhorn divergence and transport cost from samples to data.

    Args:
      samples: generated samples ``[n, 2]``.
      reference: data samples ``[m, 2]``.

    Returns:
      ``divergence`` (S_ε, 0 for identical clouds), ``transport_cost``
      (⟨P, C⟩ of the entropic plan between the two clouds) and whether the
      three Sinkhorn problems ``converged`` (marginal error ≤ 1e-3).
    """
    out = _sinkhorn_divergence(jnp.asarray(samples, jnp.float32), reference)
    return {
        "divergence": float(out.divergence),
        "transport_cost": float(out.xy.cost),
        "converged": bool(out.converged),
    }


@jax.jit
def _sinkhorn_divergence(samples, reference):
    return jgan_metrics.sinkhorn_divergence(samples, reference, epsilon=SINKHORN_EPSILON)


def _plot(config: Config, runs: dict[int, dict[str, Any]], path: str) -> None:
    """Metz et al.'s Figure 1: rows of K, columns of training steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = data.mixture(config.dataset)
    centers = np.asarray(spec.centers)
    margin = 0.5 * float(np.max(np.abs(centers))) + 0.5
    limit = float(np.max(np.abs(centers))) + margin
    columns = config.snapshot_steps()
    fig, axes = plt.subplots(
        len(runs), len(columns), figsize=(2.2 * len(columns), 2.3 * len(runs)), squeeze=False
    )
    for row, (k, run) in enumerate(runs.items()):
        for col, step in enumerate(columns):
            ax = axes[row, col]
            samples = run["snapshots"].get(step)
            if samples is not None:
                ax.scatter(samples[:, 0], samples[:, 1], s=1.5, alpha=0.35, color="tab:blue", linewidths=0)
            ax.scatter(centers[:, 0], centers[:, 1], s=12, marker="x", color="tab:red", linewidths=0.8)
            ax.set_xlim(-limit, limit)
            ax.set_ylim(-limit, limit)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"step {step}", fontsize=9)
            if col == 0:
                ax.set_ylabel(f"K = {k}" + (" (GAN)" if k == 0 else " (unrolled)"), fontsize=9)
        final = run["history"][-1] if run["history"] else None
        if final is not None:
            axes[row, -1].text(
                0.02, 0.02,
                f"{final['modes']}/{len(centers)} modes\nHQ {100 * final['high_quality']:.0f}%",
                transform=axes[row, -1].transAxes, fontsize=7, va="bottom",
            )
    fig.suptitle(f"{config.dataset}: GAN (K = 0) vs unrolled GAN (K = {config.unroll_steps}), seed {config.seed}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _parser() -> argparse.ArgumentParser:
    d = Config()
    p = argparse.ArgumentParser(
        description="Unrolled GAN vs GAN on a 2-D mixture of Gaussians (Metz et al. 2016, Figure 1).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", default=d.dataset, help=f"one of: {', '.join(DATASETS)}")
    p.add_argument("--unroll-steps", type=int, default=d.unroll_steps, help="K of the unrolled GAN")
    p.add_argument("--steps", type=int, default=d.steps, help="generator updates per GAN")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--latent-dim", type=int, default=d.latent_dim)
    p.add_argument("--hidden", type=int, nargs="+", default=list(d.hidden), help="hidden widths of both MLPs")
    p.add_argument("--g-lr", type=float, default=d.g_learning_rate, help="generator's Adam learning rate")
    p.add_argument("--d-lr", type=float, default=d.d_learning_rate, help="discriminator's Adam learning rate")
    p.add_argument("--beta1", type=float, default=d.beta1, help="Adam's beta1")
    p.add_argument("--decay-fraction", type=float, default=d.decay_fraction, help="cosine decay of G's learning rate to 0 over this last fraction of the steps")
    p.add_argument("--d-decay-fraction", type=float, default=d.d_decay_fraction, help="the same for D's learning rate")
    p.add_argument("--loss", default=d.loss, help=f"one of: {', '.join(sorted(jgan_steps.LOSSES))}")
    p.add_argument("--pack", type=int, default=d.pack, help="PacGAN's m")
    p.add_argument("--first-order", action="store_true", help="stop gradients through the unrolled updates (ablation)")
    p.add_argument("--gradient-penalty", type=float, default=d.gradient_penalty, help="WGAN-GP's λ")
    p.add_argument("--d-steps", type=int, default=d.d_steps, help="discriminator updates per generator update")
    p.add_argument("--ema-decay", type=float, default=d.ema_decay, help="EMA of G's weights; <= 0 turns it off")
    p.add_argument("--snapshots", type=int, default=d.snapshots, help="columns of the figure")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="extra evaluations/checkpoints every N steps")
    p.add_argument("--chunk-steps", type=int, default=d.chunk_steps, help="steps per compiled call")
    p.add_argument("--no-baseline", action="store_true", help="skip the K = 0 GAN")
    p.add_argument("--out", default="runs/unrolled_mog", help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoints in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = _parser()
    args = parser.parse_args(argv)
    config = Config(
        dataset=args.dataset,
        unroll_steps=args.unroll_steps,
        steps=args.steps,
        seed=args.seed,
        batch_size=args.batch_size,
        latent_dim=args.latent_dim,
        hidden=tuple(args.hidden),
        g_learning_rate=args.g_lr,
        d_learning_rate=args.d_lr,
        beta1=args.beta1,
        decay_fraction=args.decay_fraction,
        d_decay_fraction=args.d_decay_fraction,
        loss=args.loss,
        pack=args.pack,
        unroll_first_order=args.first_order,
        gradient_penalty=args.gradient_penalty,
        d_steps=args.d_steps,
        ema_decay=args.ema_decay if args.ema_decay is not None and args.ema_decay > 0 else None,
        snapshots=args.snapshots,
        eval_every=args.eval_every,
        chunk_steps=args.chunk_steps,
        baseline=not args.no_baseline,
    )
    try:
        config.validate()
        check_writable(args.out)
    except ConfigError as error:
        parser.error(str(error))
    try:
        result = train_and_evaluate(
            config,
            args.out,
            resume=args.resume,
            show_progress=not args.quiet,
            command_line=sys.argv[1:] if argv is None else argv,
        )
    except jgan_steps.NonFiniteError as error:
        print(f"error: training diverged: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except ConfigError as error:  # E.g. a checkpoint written with other settings.
        parser.error(str(error))
    for k, run in result["runs"].items():
        print(
            f"K = {k:>2}: {run['modes']}/{run['num_modes']} modes, {100 * run['high_quality']:.1f}% high quality,"
            f" reverse KL {run['reverse_kl']:.3f}"
        )
    print(f"Wrote {args.out}/samples.npy, metrics.json, samples.png in {result['wall_time_s']:.0f} s.")
    return result


if __name__ == "__main__":
    main()
