"""The mixture-of-Gaussians experiment of Metz et al. (2016), as an importable module.

The experiment of ``python -m examples.unrolled_mog`` (the program) and of
``python -m benchmarks.mog_table`` (many seeds under ``jax.vmap``):

- :class:`Config`: the hyper-parameters (the program's flags), validated by
  ``Config.validate`` (:class:`ConfigError`);
- :func:`make_experiment` -> :class:`Experiment`: the GAN built with
  ``jgan.steps.make_gan`` and trained by ``jgan.loop.run_steps`` in compiled
  chunks (pure pieces: ``init``, ``train_chunk``, ``sample``);
- :func:`evaluate`: mode coverage under DESIGN.md's protocol (2,500 samples,
  high quality within 3 std);
- :func:`sinkhorn_to_data`: the debiased Sinkhorn divergence to a data
  sample (:func:`data_samples`), and :func:`sliced_wasserstein_to_data`:
  the sliced 2-Wasserstein distance to it;
- :func:`scatter_mixture` and :func:`figure`: Metz et al.'s Figure 1.

The setting is Metz et al.'s appendix A: 8 modes on a ring of radius 2 with
std 0.02; Adam with β1 = 0.5; the unrolled generator is differentiated
through all K updates of the discriminator. The paper's networks (MLPs with
two hidden layers of 128 ReLU units, a 256-dimensional latent) are
``SETTINGS["metz"]`` of ``benchmarks/mog_table.py``; the defaults use the
networks of the precision study (a 2-D latent, 3×256 MLPs, decayed learning
rates), as explained in ``examples/unrolled_mog.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from examples import _harness as harness
from jgan import data
from jgan import loop as jgan_loop
from jgan import metrics as jgan_metrics
from jgan import models
from jgan import parallel
from jgan import steps as jgan_steps

DATASETS = ("ring", "grid", "ring_pacgan")
# The fields whose default depends on the dataset (a field left at None takes
# its dataset's value). The 25-mode grid needs more steps than the rings to
# place its samples precisely (benchmarks/README.md, "What moves precision").
# There, unrolled alone, the generator lost modes as it trained (25 of 25 at
# step 2,000, 17 at 8,000), so the unrolled discriminator is packed (PacGAN2);
# and its learning rate stays constant: decayed to 0 with the generator's, the
# look-ahead vanished and precision fell from 94 % at step 16,000 to 65 % at
# 20,000 (README, "What `make run` gives").
DATASET_DEFAULTS = {
    "ring": dict(steps=4000, pack=1, d_decay_fraction=0.5),
    "ring_pacgan": dict(steps=4000, pack=1, d_decay_fraction=0.5),
    "grid": dict(steps=20000, pack=2, d_decay_fraction=0.0),
}
DEFAULT_STEPS = {name: defaults["steps"] for name, defaults in DATASET_DEFAULTS.items()}
EVAL_SAMPLES = 2500  # The DESIGN.md protocol.
SNAPSHOT_SAMPLES = 1000  # Points per panel of the figure.
HIGH_QUALITY_STD = 3.0
# A generator whose samples spread more than this many times the data's is
# reported as diverged (jgan.steps.sample_scale), finite values or not.
DIVERGED_SCALE = 10.0
# The Sinkhorn divergence to the data (squared-Euclidean cost): ε in squared
# data units. √ε ≈ 0.22 lies between the modes' std (0.01–0.05) and their
# spacing (≥ 0.77), so the divergence sees how mass is spread over the modes
# and how far it strays from them.
SINKHORN_EPSILON = 0.05
# The sliced 2-Wasserstein distance to the data: 200 directions of the plane
# (the Monte-Carlo error of their mean is small for 2-D data; the key is
# :func:`sliced_wasserstein_key`'s, fixed by the seed, so every K and the
# data floor are measured along the same directions).
SLICED_PROJECTIONS = 200
SLICED_P = 2
ADAM_EPS_ROOT = 1e-16


class ConfigError(harness.UsageError):
    """A configuration that cannot run (reported before any training; exit code 2 in a program)."""


@dataclasses.dataclass(frozen=True)
class Config:
    """The experiment's hyper-parameters; the defaults are the program's defaults.

    Attributes:
      dataset: the mixture: ring (Metz et al.), ring_pacgan (PacGAN's) or
        grid (25 modes).
      unroll_steps: K of the unrolled GAN (trained beside a K = 0 baseline).
      steps: generator updates per GAN (none: the dataset's default,
        4,000 on the rings and 20,000 on the grid).
      seed: seeds initialisation, latents and data; both GANs share it.
      batch_size: real and generated samples per step.
      latent_dim: the dimension of the Gaussian latent.
      hidden: widths of the hidden layers of both MLPs.
      g_learning_rate: the generator's Adam learning rate.
      d_learning_rate: the discriminator's Adam learning rate.
      beta1: Adam's β1 (both networks).
      decay_fraction: the generator's learning rate follows a cosine decay
        to 0 over this last fraction of the steps (0: constant).
      d_decay_fraction: the same for the discriminator's learning rate
        (0: constant; none: the dataset's default, 0.5 on the rings and 0 on
        the grid). Decaying it shrinks the unrolled look-ahead (K updates of
        size ~ its learning rate) to nothing at the end.
      loss: the GAN loss family (``jgan.steps.LOSSES``): non_saturating,
        minimax, maximum_likelihood, wasserstein, hinge or least_squares.
      pack: PacGAN's m (1: no packing; none: the dataset's default, 1 on
        the rings and 2 on the grid).
      unroll_first_order: stop gradients through the K updates (ablation).
      gradient_penalty: λ of WGAN-GP (0: none).
      d_steps: discriminator updates per generator update.
      ema_decay: the decay of an EMA of the generator's weights, evaluated
        instead of the raw weights (none: no EMA).
      snapshots: columns of the figure (evenly spaced steps, 0 and the last
        included).
      eval_every: evaluate (and checkpoint) every this many steps besides the
        snapshots (none: only at the snapshots).
      chunk_steps: at most this many steps per compiled call (the progress
        bar's granularity; does not change results).
      baseline: also train the K = 0 GAN for comparison.
      max_to_keep: checkpoints kept per GAN.
      log_every: log the train step's metrics every this many steps (the
        first and the last step are always logged).
    """

    dataset: str = "ring"
    unroll_steps: int = 5
    steps: int | None = None
    seed: int = 0
    batch_size: int = 256
    latent_dim: int = 2
    hidden: tuple[int, ...] = (256, 256, 256)
    g_learning_rate: float = 1e-3
    d_learning_rate: float = 1e-4
    beta1: float = 0.5
    decay_fraction: float = 0.5
    d_decay_fraction: float | None = None
    loss: str = "non_saturating"
    pack: int | None = None
    unroll_first_order: bool = False
    gradient_penalty: float = 0.0
    d_steps: int = 1
    ema_decay: float | None = 0.99
    snapshots: int = 6
    eval_every: int | None = None
    chunk_steps: int = 100
    baseline: bool = True
    max_to_keep: int = 2
    log_every: int = 100

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(self.hidden))  # Hashable, JSON-stable.
        # The dataset's defaults (an unknown dataset is reported by validate).
        for name, default in DATASET_DEFAULTS.get(self.dataset, DATASET_DEFAULTS["ring"]).items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)

    def validate(self) -> "Config":
        """Returns the config if it can run; raises :class:`ConfigError` naming the problem."""
        if self.dataset not in DATASETS:
            raise ConfigError(f"Unknown dataset {self.dataset!r}; known datasets: {', '.join(DATASETS)}.")
        for name in ("unroll_steps",):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be an integer >= 0, got {value!r}.")
        for name in ("steps", "batch_size", "latent_dim", "pack", "d_steps", "chunk_steps", "max_to_keep", "log_every"):
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
_BOOKKEEPING_FIELDS = ("unroll_steps", "snapshots", "eval_every", "chunk_steps", "baseline", "max_to_keep", "log_every")


def training_fields(config: Config) -> dict[str, Any]:
    """The fields that decide what training computes (all but the bookkeeping), as JSON."""
    fields = harness.settings_of(config, _BOOKKEEPING_FIELDS)
    fields["unroll_steps"] = config.unroll_steps
    return fields


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


def make_experiment(config: Config, unroll_steps: int | None = None, *, mesh: Mesh | None = None) -> Experiment:
    """Builds the GAN of ``config`` with ``unroll_steps`` (default ``config.unroll_steps``).

    Configs that differ only in their schedule or seed share one
    :class:`Experiment` (and its compiled functions), so running many seeds
    compiles once.

    Args:
      config: the experiment's hyper-parameters.
      unroll_steps: K; the baseline is ``make_experiment(config, 0)``.
      mesh: train data-parallel over this mesh's ``"batch"`` axis
        (``jgan.parallel.batch_mesh()``: every device of every process), or
        on one device (None). The state is replicated and each step's real
        batch sharded over the devices: each device draws only its rows
        (the random bits are partitionable), and the result is the one
        device's up to float summation order. ``init`` and the outputs of
        ``train_chunk`` and ``sample`` are replicated arrays.

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
    return _make_experiment(program, k, mesh)


@functools.lru_cache(maxsize=16)
def _make_experiment(config: Config, k: int, mesh: Mesh | None) -> Experiment:
    spec = data.mixture(config.dataset)
    dim = spec.centers.shape[1]
    generator = models.MLPGenerator(out_features=dim, hidden=tuple(config.hidden))
    discriminator = models.MLPDiscriminator(hidden=tuple(config.hidden))
    g_apply = models.make_apply(generator, stateful=False)
    d_apply = models.make_apply(discriminator, stateful=False)
    # jgan differentiates Adam's root safely at 0 (jgan.unroll.safe_root_update), so
    # eps_root is not needed; the tiny one is kept so that the README's tables,
    # measured with it, stay reproducible to the bit.
    g_optimizer = optax.adam(schedule(config.g_learning_rate, config.decay_fraction, config.steps), b1=config.beta1, eps_root=ADAM_EPS_ROOT)
    d_optimizer = optax.adam(schedule(config.d_learning_rate, config.d_decay_fraction, config.steps), b1=config.beta1, eps_root=ADAM_EPS_ROOT)
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
        state = harness.init_gan(
            gan, key, generator, discriminator, (jnp.zeros((1, config.latent_dim)),), (jnp.zeros((1, dim * config.pack)),)
        )
        return state if mesh is None else parallel.replicate(state, mesh)

    def real_batch(data_key, i):
        step_key = jax.random.fold_in(data_key, i)
        if config.d_steps == 1:
            batch = sample_real(step_key)
        else:
            batch = jax.vmap(sample_real)(jax.random.split(step_key, config.d_steps))  # One slice per D update.
        if mesh is None:
            return batch
        spec = P(parallel.AXIS) if config.d_steps == 1 else P(None, parallel.AXIS)
        return jax.lax.with_sharding_constraint(batch, NamedSharding(mesh, spec))

    # Replicated outputs on a mesh; on one device, wherever jit puts them.
    placed = {} if mesh is None else {"out_shardings": parallel.replicated(mesh)}

    @functools.partial(jax.jit, static_argnames="n", **placed)
    def train_chunk(state, data_key, n):
        return jgan_loop.run_steps(
            gan.step, state, functools.partial(real_batch, data_key), n, on_nonfinite="stop", start=state.step
        )

    sample = jax.jit(gan.sample, static_argnums=2, **placed)

    return Experiment(init=init, train_chunk=train_chunk, sample=sample, spec=spec)


def schedule(learning_rate: float, decay_fraction: float, steps: int) -> optax.Schedule | float:
    """Constant, then a cosine decay to 0 over the last ``decay_fraction`` of ``steps``."""
    decay_steps = round(decay_fraction * steps)
    if decay_steps == 0:
        return learning_rate
    return optax.join_schedules(
        [optax.constant_schedule(learning_rate), optax.cosine_decay_schedule(learning_rate, decay_steps)],
        [steps - decay_steps],
    )


def evaluate(experiment: Experiment, state: jgan_steps.GANState, key: jax.Array) -> dict[str, Any]:
    """Mode coverage of the generator on ``EVAL_SAMPLES`` samples (DESIGN.md protocol), and divergence."""
    samples = parallel.to_host(experiment.sample(state, key, EVAL_SAMPLES))
    result = jgan_metrics.mode_coverage(
        samples, experiment.spec.centers, std=experiment.spec.std, threshold=HIGH_QUALITY_STD
    )
    scale = sample_scale(samples, experiment.spec)
    return {
        "modes": int(result.modes),
        "num_modes": int(experiment.spec.centers.shape[0]),
        "high_quality": float(result.high_quality),
        "reverse_kl": float(result.reverse_kl),
        "counts": [int(c) for c in np.asarray(result.counts)],
        "sample_scale": scale,
        "diverged": not scale <= DIVERGED_SCALE,  # NaN counts as diverged.
    }


def sample_scale(samples: jax.Array, spec: data.MixtureSpec) -> float:
    """The samples' spread in units of the mixture's (``jgan.steps.sample_scale`` against a fixed data sample)."""
    reference = data.sample_mixture(jax.random.key(0), EVAL_SAMPLES, spec)
    return float(jgan_steps.sample_scale(jnp.asarray(samples), reference))


class Keys(NamedTuple):
    """The keys of one seed's run: initialisation, training data, evaluation samples, figure snapshots."""

    init: jax.Array
    data: jax.Array
    eval: jax.Array
    snapshot: jax.Array


def keys(seed: int) -> Keys:
    """The run's keys; the same for every K, so the GANs differ only in K."""
    return Keys(*jax.random.split(jax.random.key(seed), 4))


# ---------------------------------------------------------------------------
# Running one GAN: the host loop between compiled chunks.


def data_samples(config: Config) -> tuple[jax.Array, jax.Array]:
    """Two independent data samples of ``EVAL_SAMPLES``, fixed by the seed (the reference and the floor)."""
    spec = data.mixture(config.dataset)
    key = jax.random.fold_in(keys(config.seed).eval, 1)
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


def sliced_wasserstein_key(config: Config) -> jax.Array:
    """The key of the sliced Wasserstein directions: fixed by the seed, apart from :func:`data_samples`' keys."""
    return jax.random.fold_in(keys(config.seed).eval, 2)


def sliced_wasserstein_to_data(samples: jax.typing.ArrayLike, reference: jax.Array, *, key: jax.Array) -> float:
    """The sliced 2-Wasserstein distance from samples to data, in data units.

    Args:
      samples: generated samples ``[n, 2]``.
      reference: data samples ``[m, 2]``.
      key: the key of the ``SLICED_PROJECTIONS`` directions
        (:func:`sliced_wasserstein_key`: the same for every run compared).

    Returns:
      ``SW_2`` (``jgan.metrics.sliced_wasserstein`` with ``p = SLICED_P``), a float ``>= 0``.
    """
    return float(
        jgan_metrics.sliced_wasserstein(
            jnp.asarray(samples, jnp.float32), reference, key=key, num_projections=SLICED_PROJECTIONS, p=SLICED_P
        )
    )


def scatter_mixture(ax: Any, samples: np.ndarray | None, spec: data.MixtureSpec, *, title: str | None = None) -> None:
    """One panel: ``samples [n, 2]`` (blue) over the mixture's modes (red crosses), square, no ticks."""
    centers = np.asarray(spec.centers)
    extent = float(np.max(np.abs(centers)))
    limit = 1.5 * extent + 0.5
    if samples is not None:
        ax.scatter(samples[:, 0], samples[:, 1], s=1.5, alpha=0.35, color="tab:blue", linewidths=0)
    ax.scatter(centers[:, 0], centers[:, 1], s=12, marker="x", color="tab:red", linewidths=0.8)
    ax.set(xlim=(-limit, limit), ylim=(-limit, limit), xticks=[], yticks=[], aspect="equal")
    if title is not None:
        ax.set_title(title, fontsize=8)


def method_name(unroll_steps: int, pack: int) -> str:
    """The method's name in figures: GAN, unrolled GAN, PacGAN2, unrolled PacGAN2, ..."""
    name = f"PacGAN{pack}" if pack > 1 else "GAN"
    return f"unrolled {name}" if unroll_steps else name


def figure(config: Config, runs: dict[int, dict[str, Any]]) -> Any:
    """Metz et al.'s Figure 1: rows of K, columns of training steps.

    Args:
      config: the experiment (its dataset, seed and snapshot steps).
      runs: for each K, ``{"snapshots": {step: samples [n, 2]}, "history":
        [{"modes", "high_quality", ...}, ...]}``.

    Returns:
      A matplotlib figure (save it with ``harness.save_figure``).
    """
    plt = harness.pyplot()
    spec = data.mixture(config.dataset)
    columns = config.snapshot_steps()
    fig, axes = plt.subplots(len(runs), len(columns), figsize=(2.2 * len(columns), 2.3 * len(runs)), squeeze=False)
    for row, (k, run) in enumerate(runs.items()):
        for col, step in enumerate(columns):
            ax = axes[row, col]
            scatter_mixture(ax, run["snapshots"].get(step), spec, title=f"step {step}" if row == 0 else None)
            if col == 0:
                ax.set_ylabel(f"K = {k} ({method_name(k, config.pack)})", fontsize=9)
        if run["history"]:
            final = run["history"][-1]
            axes[row, -1].text(
                0.02, 0.02, f"{final['modes']}/{len(spec.centers)} modes\nHQ {100 * final['high_quality']:.0f}%",
                transform=axes[row, -1].transAxes, fontsize=7, va="bottom",
            )  # fmt: skip
    fig.suptitle(
        f"{config.dataset}: {method_name(0, config.pack)} (K = 0) vs {method_name(config.unroll_steps, config.pack)}"
        f" (K = {config.unroll_steps}), seed {config.seed}", fontsize=10,
    )  # fmt: skip
    fig.tight_layout()
    return fig
