"""Compiled GAN training: ``make_gan`` → ``GAN(init, step, sample)``.

``make_gan`` returns a :class:`GAN`, a NamedTuple of three pure functions
(optax's pattern): ``init`` builds the :class:`GANState`, ``step(state,
batch) -> (state, metrics)`` takes one training step, ``sample`` draws from
the generator. None is jitted: compile ``step`` with ``jax.jit`` (donating
the state if you like), run it data-parallel under ``jax.jit`` with sharded
inputs, or map it with ``jax.shard_map`` / ``jax.pmap`` under the
``axis_name`` it was built with; call it eagerly to debug.

One ``step`` is Goodfellow's Algorithm 1 for one generator update:

1. ``d_steps`` (k) discriminator updates in ``lax.scan``, each on a fresh
   latent batch and, with ``batches="sliced"``, a fresh slice of real data;
   the discriminator's loss is its loss family's plus its regularisers
   (``d_regularizers``: :class:`jgan.penalties.GradientPenalty`,
   :class:`~jgan.penalties.R1`, :class:`~jgan.penalties.R2`,
   :class:`~jgan.penalties.LazyR1`, :class:`~jgan.penalties.LeCam`, or your
   own; a regulariser's state lives in ``GANState.d_regularizer_state``).
   With ``augment`` (DiffAugment) the discriminator sees augmented real and
   generated batches, here and in the generator's update.
   WGAN's weight clipping is plain optax chaining on the discriminator's
   optimizer (``jgan.presets.wgan``).
2. one generator update on the sum of its objectives (``g_objectives``:
   :class:`jgan.objectives.Adversarial`, :class:`~jgan.objectives.SinkhornDivergence`,
   or your own). With ``unroll=Unrolled(K)`` the adversarial loss is Metz et
   al.'s surrogate on the discriminator after K differentiable updates
   (:class:`jgan.unroll.Unrolled`).

Options are parts, not flags: a new regulariser, objective or unrolling
strategy is a small frozen object passed to ``make_gan``.

Networks are plain apply functions, so any library works (see
``jgan.models`` for flax linen and nnx adapters):

- stateless: ``generator(g_params, z[, labels]) -> x`` and
  ``discriminator(d_params, x[, labels]) -> logits [batch]``;
- stateful (BatchNorm, ``g_stateful=True`` / ``d_stateful=True``):
  ``generator(g_params, g_model_state, z[, labels]) -> (x, g_model_state)``
  and the same for the discriminator, the model state living in the
  :class:`GANState`.

Randomness is a pure function of ``(state.key, state.step)``; under
``axis_name`` each device draws the global latent batch and keeps its own
slice, so a data-parallel step on a batch split across devices equals the
single-device step on the whole batch (up to float summation order).

``make_train_step`` and ``init_state`` are the earlier keyword interface, kept
as thin wrappers over ``make_gan`` (bit-identical results).
"""

from __future__ import annotations

from typing import Any, Callable, Literal, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jgan import losses as L
from jgan.augment import Augmentation
from jgan import penalties
from jgan._parallel import draw_local, finalize_metrics, mark_varying, pmean_floats, rows_like
from jgan._scan import unrolled_scan
from jgan._validate import (
    check_bool,
    check_callable,
    check_in_range,
    check_instance,
    check_int,
    check_key,
    check_mapped_axis,
    check_nonnegative,
    check_optimizer,
)
from jgan.cyclegan import CycleGANState, init_cyclegan_state, make_cyclegan_train_step
from jgan.losses import LossFamily
from jgan.objectives import Adversarial, GeneratorInputs, GeneratorObjective, SinkhornDivergence
from jgan.penalties import R1, R2, DiscriminatorRegularizer, GradientPenalty, LazyR1, LeCam, RegularizerInputs
from jgan.unroll import Unrolled

__all__ = [
    "GAN",
    "GANState",
    "make_gan",
    "skip_nonfinite",
    "sample_scale",
    "pack_samples",
    "check_finite",
    "NonFiniteError",
    # The parts, re-exported so that one import builds any GAN.
    "LossFamily",
    "GradientPenalty",
    "R1",
    "R2",
    "LazyR1",
    "LeCam",
    "Adversarial",
    "SinkhornDivergence",
    "Unrolled",
    # The earlier keyword interface.
    "init_state",
    "make_train_step",
    "LOSSES",
    # CycleGAN (jgan.cyclegan).
    "CycleGANState",
    "init_cyclegan_state",
    "make_cyclegan_train_step",
]

PyTree = Any
Batch = Any

# fold_in constants of the augmentation's keys, from an update's key (new
# constants: the draws of a GAN without augmentation are unchanged).
_AUGMENT_REAL = 0x61756772  # "augr"
_AUGMENT_FAKE = 0x61756766  # "augf"
Metrics = dict[str, jax.Array]
Prior = Callable[[jax.Array, int], jax.Array]

#: The named loss families (an alias of :data:`jgan.losses.LOSS_FAMILIES`).
LOSSES = L.LOSS_FAMILIES


class GANState(NamedTuple):
    """Everything a GAN train step reads and writes; a pytree.

    Attributes:
      step: ``[]`` int32, the number of generator updates taken.
      key: the PRNG key; the draws of step ``s`` derive from
        ``fold_in(key, s)``, so the key itself never changes.
      g_params: the generator's parameters.
      d_params: the discriminator's parameters.
      g_opt_state: the generator optimizer's state.
      d_opt_state: the discriminator optimizer's state.
      g_model_state: the generator's non-trainable state (BatchNorm
        statistics), ``None`` for a stateless generator.
      d_model_state: likewise for the discriminator.
      g_ema_params: exponential moving average of ``g_params``, or ``None``.
      d_regularizer_state: the discriminator regularisers' states, a tuple
        with one entry per regulariser (``None`` for a stateless one), or
        ``None`` when every regulariser is stateless.
    """

    step: jax.Array
    key: jax.Array
    g_params: PyTree
    d_params: PyTree
    g_opt_state: optax.OptState
    d_opt_state: optax.OptState
    g_model_state: PyTree = None
    d_model_state: PyTree = None
    g_ema_params: PyTree = None
    d_regularizer_state: PyTree = None


class GAN(NamedTuple):
    """A GAN as three pure functions, built by :func:`make_gan`.

    Attributes:
      init: ``init(key, g_params, d_params, *, g_model_state=None,
        d_model_state=None) -> GANState``; it knows the optimizers, the EMA
        and which networks keep a model state.
      step: ``step(state, batch) -> (state, metrics)``, one generator update
        and its k discriminator updates.
      sample: ``sample(state, key, n, *, labels=None) -> x [n, ...]``: n
        draws of the generator (its EMA weights when the state keeps them;
        ``sample_generator``, e.g. BatchNorm in inference mode, if given).
    """

    init: Callable[..., GANState]
    step: Callable[[GANState, Batch], tuple[GANState, Metrics]]
    sample: Callable[..., jax.Array]


def _initial_state(
    key, g_params, d_params, g_optimizer, d_optimizer, g_model_state, d_model_state, ema, regularizer_state=None
):
    return GANState(
        step=jnp.zeros((), jnp.int32),
        key=key,
        g_params=g_params,
        d_params=d_params,
        g_opt_state=g_optimizer.init(g_params),
        d_opt_state=d_optimizer.init(d_params),
        g_model_state=g_model_state,
        d_model_state=d_model_state,
        g_ema_params=jax.tree.map(jnp.array, g_params) if ema else None,
        d_regularizer_state=regularizer_state,
    )


def pack_samples(x: jax.Array, pack: int) -> jax.Array:
    """PacGAN packing: m consecutive samples become one input of the discriminator.

    The m samples are concatenated along the last (feature or channel) axis:
    ``[batch, d]`` becomes ``[batch/m, m·d]`` and ``[batch, h, w, c]``
    becomes ``[batch/m, h, w, m·c]``.

    Args:
      x: samples, ``[batch, ...]``.
      pack: m >= 1, which must divide ``batch``.

    Returns:
      The packed samples.

    References:
      Lin, Khetan, Fanti, Oh, "PacGAN: The power of two samples in generative
      adversarial networks", NeurIPS 2018, §3.
    """
    if not hasattr(x, "shape") or not hasattr(x, "reshape"):
        raise TypeError(f"x must be a jax or numpy array [batch, ...], got {type(x).__name__}.")
    if isinstance(pack, bool) or not isinstance(pack, int) or pack < 1:
        raise ValueError(f"pack must be an int >= 1, got {pack!r}.")
    if pack == 1:
        return x
    batch = x.shape[0]
    if batch % pack:
        raise ValueError(
            f"pack={pack} must divide the batch size, got a batch of {batch}"
            " (per device, under data parallelism)."
        )
    if x.ndim == 1:
        return x.reshape(batch // pack, pack)
    grouped = x.reshape(batch // pack, pack, *x.shape[1:])
    grouped = jnp.moveaxis(grouped, 1, -2)
    return grouped.reshape(batch // pack, *x.shape[1:-1], pack * x.shape[-1])


class NonFiniteError(FloatingPointError):
    """A train step produced a non-finite loss, gradient or state."""


def check_finite(metrics: dict[str, Any], *, step: int | None = None) -> None:
    """Raises :class:`NonFiniteError` if any metric of a step is not finite.

    Call it on the host on the metrics a step returned (it syncs with the
    device); every step's ``metrics["nonfinite"]`` is 1 when a loss, a
    gradient or any value of the new state was not finite.

    Args:
      metrics: the metrics dict of a train step.
      step: the step number, for the message.

    Raises:
      NonFiniteError: naming the offending metrics.
    """
    if not isinstance(metrics, dict):
        raise TypeError(f"metrics must be a dict of a step's metrics, got {type(metrics).__name__}.")
    values = {k: np.asarray(v) for k, v in metrics.items()}
    bad = sorted(k for k, v in values.items() if not np.all(np.isfinite(v)))
    if "nonfinite" in values and np.any(values["nonfinite"] > 0):
        bad.append("nonfinite (a loss, a gradient or the new state)")
    if bad:
        where = f" at step {step}" if step is not None else ""
        shown = {k: values[k].tolist() for k in values}
        raise NonFiniteError(
            f"Non-finite training{where}: {', '.join(bad)}. Metrics: {shown}. Lower"
            " the learning rates, add a gradient penalty, or check the data."
        )


def skip_nonfinite(
    step: Callable[[PyTree, Batch], tuple[PyTree, Metrics]],
) -> Callable[[PyTree, Batch], tuple[PyTree, Metrics]]:
    """Wraps a train step so that a non-finite update is skipped.

    When the step's ``metrics["nonfinite"]`` is 1 (a loss, a gradient or the
    new state is not finite), the wrapped step returns the old state
    unchanged (its ``step`` counter too, so a retry draws the same latents,
    with whatever batch comes next); ``metrics["skipped"]`` is 1.0 for a
    skipped update and 0.0 otherwise (sum it to count skips). Works for any step that reports
    ``nonfinite`` (the GAN and CycleGAN steps do), under ``jit`` and ``vmap``.

    Args:
      step: ``(state, batch) -> (state, metrics)``.

    Returns:
      The guarded step, with the same signature.
    """
    check_callable(step, "step", "(state, batch) -> (state, metrics)")

    def guarded(state, batch):
        new_state, metrics = step(state, batch)
        if "nonfinite" not in metrics:
            raise ValueError(
                "skip_nonfinite needs a step that reports metrics['nonfinite'];"
                f" this one reports {sorted(metrics)}."
            )
        bad = metrics["nonfinite"] > 0

        def keep(old, new):
            if jax.dtypes.issubdtype(jnp.result_type(new), jax.dtypes.prng_key):
                return new
            return jnp.where(bad, old, new)

        kept = jax.tree.map(keep, state, new_state)
        return kept, {**metrics, "skipped": bad.astype(jnp.float32)}

    return guarded


# ---------------------------------------------------------------------------
# make_gan


def sample_scale(fake: jax.Array, real: jax.Array, *, axis_name: str | None = None) -> jax.Array:
    """How far generated samples spread, in units of the real batch's spread: a divergence signal.

    The root-mean-square distance of the generated samples from the real
    batch's mean, divided by the real samples' own: about 1 when the
    scales match, and growing without bound when the generator diverges
    (while every value may still be finite). The step reports it as
    ``metrics["sample_scale"]``.

    Args:
      fake: generated samples, ``[batch, ...]``.
      real: real samples, ``[batch', ...]`` of the same trailing shape.
      axis_name: under ``shard_map`` / ``pmap``, the mapped axis: the means
        are over the global batch (equal-sized shards), as on one device.

    Returns:
      ``[]`` float32, no gradient.
    """
    if fake.shape[1:] != real.shape[1:]:
        raise ValueError(f"fake and real must have the same trailing shape, got {fake.shape} and {real.shape}.")
    if real.shape[0] == 0 or fake.shape[0] == 0:
        raise ValueError(f"real is empty or fake is empty (shapes {real.shape} and {fake.shape}).")
    fake = lax.stop_gradient(fake).reshape(fake.shape[0], -1).astype(jnp.float32)
    real = lax.stop_gradient(real).reshape(real.shape[0], -1).astype(jnp.float32)

    def mean(x, axis=None):  # Over the whole (global) batch under a mapped axis.
        return pmean_floats(jnp.mean(x, axis=axis), axis_name)

    center = mean(real, axis=0)
    spread = jnp.sqrt(mean(jnp.square(real - center)))
    # A constant real batch has no spread: measure against a floor instead.
    floor = 1e-6 * jnp.sqrt(jnp.mean(jnp.square(center))) + jnp.finfo(jnp.float32).tiny
    return jnp.sqrt(mean(jnp.square(fake - center))) / jnp.maximum(spread, floor)



def _stateful(fn: Callable, stateful: bool) -> Callable:
    """Brings an apply function to the stateful convention ``(p, s, x, *y) -> (out, s)``."""
    if stateful:
        return fn
    return lambda params, model_state, x, *labels: (fn(params, x, *labels), model_state)


def _make_prior(prior: Any) -> Prior:
    if isinstance(prior, (int, np.integer)) and not isinstance(prior, bool):
        dim = check_int(prior, "prior (a latent dimension)", minimum=1, static=True)

        def standard_normal(key, n):
            return jax.random.normal(key, (n, dim))

        return standard_normal
    if callable(prior):
        return prior
    raise TypeError(
        "prior must be an int (the dimension of a standard normal latent) or a"
        f" callable (key, n) -> z [n, ...], got {type(prior).__name__} {prior!r}."
    )


def _parts(values: Any, name: str, kind: type, example: str) -> tuple:
    if isinstance(values, (kind, str)) or not isinstance(values, Sequence):
        raise TypeError(
            f"{name} must be a list or tuple of {kind.__module__}.{kind.__name__}"
            f" (e.g. [{example}]), got {type(values).__name__} {values!r}."
        )
    for i, value in enumerate(values):
        if not isinstance(value, kind):
            raise TypeError(
                f"{name}[{i}] must be a {kind.__module__}.{kind.__name__} (e.g. {example}),"
                f" got {type(value).__name__} {value!r}."
            )
    return tuple(values)


def _split_batch(batch: Batch) -> tuple[jax.Array, jax.Array | None]:
    if batch is None or isinstance(batch, (str, bytes)):
        raise TypeError(
            "batch must be an array of real data or a dict with 'x' and optionally"
            f" 'label', got {type(batch).__name__}."
        )
    if isinstance(batch, dict):
        unknown = set(batch) - {"x", "label"}
        if "x" not in batch or unknown:
            raise ValueError(
                "A dict batch holds 'x' and optionally 'label'; got keys"
                f" {sorted(batch)}."
            )
        return jnp.asarray(batch["x"]), (
            None if batch.get("label") is None else jnp.asarray(batch["label"])
        )
    return jnp.asarray(batch), None


def _check_output(out, batch: int, what: str) -> jax.Array:
    out = L.as_logits(out, name=f"The discriminator's output on {what} samples")
    if out.shape[0] != batch:
        raise ValueError(
            f"The discriminator returned {out.shape[0]} outputs for {batch} {what} inputs."
        )
    return out


def _check_model_state(which: str, stateful: bool, model_state) -> None:
    if stateful and model_state is None:
        raise ValueError(
            f"{which}_stateful=True but the state has no {which}_model_state:"
            f" pass {which}_model_state to init_state or to the GAN's init."
        )
    if not stateful and model_state is not None:
        raise ValueError(
            f"The state holds a {which}_model_state but {which}_stateful=False:"
            f" build the step with {which}_stateful=True."
        )


def make_gan(
    *,
    generator: Callable,
    discriminator: Callable,
    g_optimizer: optax.GradientTransformation,
    d_optimizer: optax.GradientTransformation,
    prior: int | Prior,
    loss: str | LossFamily = "non_saturating",
    d_steps: int = 1,
    batches: Literal["shared", "sliced"] = "shared",
    d_regularizers: Sequence[DiscriminatorRegularizer] = (),
    g_objectives: Sequence[GeneratorObjective] = (Adversarial(),),
    unroll: Unrolled | None = None,
    augment: Augmentation | None = None,
    pack: int = 1,
    ema_decay: float | None = None,
    axis_name: str | None = None,
    g_stateful: bool = False,
    d_stateful: bool = False,
    sample_generator: Callable | None = None,
) -> GAN:
    """Builds a GAN: ``GAN(init, step, sample)``, three pure functions.

    Example::

        gan = steps.make_gan(
            generator=g_apply, discriminator=d_apply,
            g_optimizer=optax.adam(1e-3, b1=0.5), d_optimizer=optax.adam(1e-4, b1=0.5),
            prior=256, unroll=steps.Unrolled(5), pack=2)
        state = gan.init(key, g_params, d_params)
        step = jax.jit(gan.step)
        for x in batches:
            state, metrics = step(state, x)
        samples = gan.sample(state, key, 2500)

    Args:
      generator: ``(g_params, z[, labels]) -> x`` (stateless) or
        ``(g_params, g_model_state, z[, labels]) -> (x, g_model_state)``.
      discriminator: ``(d_params, x[, labels]) -> logits`` with logits of
        shape ``[batch]`` or ``[batch, 1]`` (stateless), or the stateful form.
      g_optimizer: the generator's optax transformation.
      d_optimizer: the discriminator's optax transformation (chain
        :func:`jgan.penalties.weight_clipping` for WGAN's clipping; it then
        applies after every update, the unrolled ones included).
      prior: the latent distribution: an int (the dimension of a standard
        normal) or a callable ``(key, n) -> z [n, ...]``.
      loss: a family name (``"minimax"``, ``"non_saturating"``,
        ``"maximum_likelihood"``, ``"wasserstein"``, ``"hinge"``,
        ``"least_squares"``) or a :class:`jgan.losses.LossFamily`.
      d_steps: k, discriminator updates per generator update (n_critic).
      batches: the layout of the real data in a step's batch, declared:
        ``"shared"`` for one batch ``[batch, ...]`` used by all k updates,
        ``"sliced"`` for k slices ``[d_steps, batch, ...]``, one per
        discriminator update (the generator's update uses the last).
      d_regularizers: :class:`jgan.penalties.DiscriminatorRegularizer` parts
        added to the discriminator's loss, e.g. ``[GradientPenalty(10.0)]``,
        ``[R1(1.0)]``, ``[LazyR1(10.0, every=16)]``, ``[LeCam(0.3)]``. They
        see the discriminator's (augmented, packed) inputs and its outputs
        on them; a regulariser's state (``init``) lives in the
        :class:`GANState`, which ``init`` fills.
      g_objectives: :class:`jgan.objectives.GeneratorObjective` parts whose
        sum the generator minimises; ``(Adversarial(),)`` by default, e.g.
        ``[Adversarial(), SinkhornDivergence(0.5)]``.
      unroll: ``Unrolled(K)`` for the unrolled GAN (Metz et al. 2016), or
        ``None``.
      augment: a :class:`jgan.augment.Augmentation` (e.g.
        ``jgan.augment.DiffAugment()``) applied to the real and the
        generated batches, independently drawn, before the discriminator
        (and before PacGAN's packing) in every discriminator update and in
        the generator's update, whose gradients flow through it; the
        regularisers see the augmented inputs. With ``unroll`` the K
        unrolled updates and the surrogate see the generator update's
        augmented batches (the same draws in every unrolled update). The
        generator objectives (``GeneratorInputs``) and ``sample_scale`` see
        the batches unaugmented. ``None``: no augmentation.
      pack: m of PacGAN: the discriminator sees m samples concatenated along
        the last axis (build it for m times the features or channels).
      ema_decay: keep ``g_ema ← decay·g_ema + (1 − decay)·g_params``, in
        [0, 1); ``sample`` then uses the average.
      axis_name: the mapped axis of ``shard_map`` / ``pmap``: gradients,
        model state and metrics are averaged across it. Not needed under
        ``jax.jit`` with sharded inputs.
      g_stateful: the generator uses the stateful convention.
      d_stateful: the discriminator uses the stateful convention.
      sample_generator: the generator as ``sample`` calls it, in the same
        convention (e.g. BatchNorm on running averages:
        ``jgan.models.make_apply(module, stateful=True, train=False)``);
        ``generator`` by default.

    Returns:
      A :class:`GAN`. ``step``'s ``batch`` is an array of real data or a
      dict with ``"x"`` and ``"label"`` (conditional GAN: the labels go to
      both networks, and the generated samples of a batch take the labels of
      its real samples). Its ``metrics`` is a flat dict of scalars:
      ``d_loss`` and ``g_loss`` (the adversarial losses; ``g_loss`` on D_K
      when unrolled), ``d_real`` and ``d_fake`` (mean D(x) and D(G(z));
      probabilities for families on logits, raw scores otherwise),
      ``d_grad_norm``, ``g_grad_norm``, ``wasserstein`` (E D(x) − E D(G(z))
      for a Wasserstein family), ``sample_scale`` (:func:`sample_scale`: the
      generated batch's spread in units of the real batch's; ≫ 1 when the
      generator diverges), the metrics of the regularisers and
      objectives, and ``nonfinite`` (1.0 if a metric or any value of the new
      state is not finite). Discriminator metrics are means over the k
      updates.

    Raises:
      TypeError / ValueError: here for bad options, each naming its
      argument; at trace time for a batch that does not fit the declared
      layout, a discriminator output that is not ``[batch]`` or
      ``[batch, 1]``, or a pack size that does not divide the batch.

    References:
      Goodfellow et al. 2014, Algorithm 1; Arjovsky et al. 2017, Algorithm 1;
      Gulrajani et al. 2017, Algorithm 1; Metz et al. 2016; Lin et al. 2018.
    """
    family = L.loss_family(loss)
    check_callable(generator, "generator", "(g_params, z[, labels]) -> x")
    check_callable(discriminator, "discriminator", "(d_params, x[, labels]) -> logits")
    check_optimizer(g_optimizer, "g_optimizer")
    check_optimizer(d_optimizer, "d_optimizer")
    check_bool(g_stateful, "g_stateful")
    check_bool(d_stateful, "d_stateful")
    if axis_name is not None and not isinstance(axis_name, str):
        raise TypeError(f"axis_name must be a str or None, got {type(axis_name).__name__} {axis_name!r}.")
    prior = _make_prior(prior)
    d_steps = check_int(d_steps, "d_steps", minimum=1, static=True)
    if batches not in ("shared", "sliced"):
        raise ValueError(
            "batches must be 'shared' (one real batch [batch, ...] for all d_steps updates)"
            f" or 'sliced' (one slice each, [d_steps, batch, ...]), got {batches!r}."
        )
    d_regularizers = _parts(d_regularizers, "d_regularizers", DiscriminatorRegularizer, "GradientPenalty(10.0)")
    g_objectives = _parts(g_objectives, "g_objectives", GeneratorObjective, "Adversarial()")
    if not g_objectives:
        raise ValueError("g_objectives is empty: the generator needs an objective, e.g. [Adversarial()].")
    if unroll is not None:
        check_instance(unroll, "unroll", Unrolled, "a jgan.unroll.Unrolled (e.g. Unrolled(5)) or None")
    if augment is not None:
        check_instance(
            augment, "augment", Augmentation, "a jgan.augment.Augmentation (e.g. DiffAugment()) or None"
        )
    relativistic = family.relativistic
    # A relativistic loss compares with the other batch's mean: under a mapped
    # axis, the mean over every device's rows (as on one device).
    batch_means = {"axis_name": axis_name} if relativistic and axis_name is not None else {}
    pack = check_int(pack, "pack", minimum=1, static=True)
    if ema_decay is not None:
        ema_decay = check_in_range(ema_decay, "ema_decay", 0.0, 1.0)
    if sample_generator is not None:
        check_callable(sample_generator, "sample_generator", "in the generator's convention")

    gen = _stateful(generator, g_stateful)
    sample_gen = gen if sample_generator is None else _stateful(sample_generator, g_stateful)
    disc = _stateful(discriminator, d_stateful)

    def draw(key, sampler, n):
        return draw_local(key, sampler, n, axis_name)

    def discriminate(d_params, d_mstate, x, y):
        try:
            return disc(d_params, d_mstate, x, *y)
        except Exception as err:
            if pack > 1:
                err.add_note(
                    f"jgan: with pack={pack} the discriminator sees {pack} samples"
                    f" concatenated along the last axis, inputs of shape {tuple(x.shape)}:"
                    f" build it for {x.shape[-1]} features or channels."
                )
            raise

    def augmented(x, key, which):
        """``x`` through the augmentation, its draws from ``fold_in(key, which)``; ``x`` without one."""
        if augment is None:
            return x
        out = augment(x, key=jax.random.fold_in(key, which), draw=draw)
        if not hasattr(out, "shape") or out.shape != x.shape:
            raise ValueError(
                f"augment ({type(augment).__name__}) must return its input's shape {x.shape},"
                f" got {getattr(out, 'shape', type(out).__name__)}."
            )
        return out

    def d_objective(d_params, d_mstate, real, fake, labels, key, update, reg_states):
        """The discriminator's loss (regularisers included), its metrics and the regularisers' new states.

        ``real`` and ``fake`` are the (augmented) batches, ``update`` the
        update's counter, ``reg_states`` a state per regulariser.
        """
        y = () if labels is None else (labels,)
        real_in, fake_in = pack_samples(real, pack), pack_samples(fake, pack)
        real_out, d_mstate = discriminate(d_params, d_mstate, real_in, y)
        fake_out, d_mstate = discriminate(d_params, d_mstate, fake_in, y)
        real_out = _check_output(real_out, real_in.shape[0], "real")
        fake_out = _check_output(fake_out, fake_in.shape[0], "generated")
        adversarial = family.d_loss(real_out, fake_out, **batch_means)
        metrics = {"d_loss": adversarial}
        if family.on_logits:
            metrics["d_real"] = jnp.mean(jax.nn.sigmoid(real_out))
            metrics["d_fake"] = jnp.mean(jax.nn.sigmoid(fake_out))
        else:
            metrics["d_real"] = jnp.mean(real_out)
            metrics["d_fake"] = jnp.mean(fake_out)
        if family.wasserstein:
            metrics["wasserstein"] = jnp.mean(real_out) - jnp.mean(fake_out)
        total = adversarial

        def critic(x):
            return disc(d_params, d_mstate, x, *y)[0]

        new_states = []
        for i, (regularizer, reg_state) in enumerate(zip(d_regularizers, reg_states)):
            # The first regulariser draws from the key itself, regulariser i from fold_in(key, i).
            reg_key = key if i == 0 else jax.random.fold_in(key, i)
            inputs = RegularizerInputs(
                critic_fn=critic, real=real_in, fake=fake_in, real_out=real_out, fake_out=fake_out,
                key=reg_key, draw=draw, update=update, state=reg_state, axis_name=axis_name,
            )
            term, reg_metrics, reg_state = regularizer.regularize(inputs)
            metrics.update(reg_metrics)
            new_states.append(reg_state)
            total = total + term
        return total, (d_mstate, metrics, tuple(new_states))

    def check_fake(fake, real):
        if fake.shape != real.shape:
            layout = (
                "one real batch [batch, ...]"
                if batches == "shared"
                else f"[d_steps={d_steps}, batch, ...] real slices"
            )
            raise ValueError(
                f"Generated samples {fake.shape} and real samples {real.shape} differ in"
                f" shape (batches={batches!r}: the step takes {layout})."
            )

    def d_update(carry, xs, g_params, fixed_real, fixed_labels):
        d_params, d_opt_state, d_mstate, g_mstate, reg_states = carry
        (key, update), real, labels = xs
        real = fixed_real if real is None else real
        labels = fixed_labels if labels is None else labels
        z_key, reg_key = jax.random.split(key)
        z = rows_like(draw(z_key, prior, real.shape[0]), real)
        y = () if labels is None else (labels,)
        fake, g_mstate = gen(g_params, g_mstate, z, *y)
        check_fake(fake, real)
        fake = lax.stop_gradient(fake)
        real, fake = augmented(real, key, _AUGMENT_REAL), augmented(fake, key, _AUGMENT_FAKE)
        # Differentiate per-device copies (see mark_varying), then average.
        grads, (d_mstate, metrics, new_reg_states) = jax.grad(d_objective, has_aux=True)(
            mark_varying(d_params, axis_name), d_mstate, real, fake, labels, reg_key, update, reg_states
        )
        grads = pmean_floats(grads, axis_name)
        if reg_state_shape is not None:  # Devices agree on the regularisers' states.
            reg_states = pmean_floats(new_reg_states, axis_name)
        updates, d_opt_state = d_optimizer.update(grads, d_opt_state, d_params)
        d_params = optax.apply_updates(d_params, updates)
        metrics["d_grad_norm"] = optax.tree.norm(grads)
        return (d_params, d_opt_state, d_mstate, g_mstate, reg_states), metrics

    def g_objective(
        g_params, g_mstate, d_params, d_opt_state, d_mstate, reg_states, z, real, labels, key, augment_key, update
    ):
        y = () if labels is None else (labels,)
        fake, g_mstate = gen(g_params, g_mstate, z, *y)
        check_fake(fake, real)
        # What the discriminator sees: the augmented batches (gradients flow through fake's).
        fake_d = augmented(fake, augment_key, _AUGMENT_FAKE)
        fake_in = pack_samples(fake_d, pack)
        if unroll is None:
            if relativistic:  # The generator's loss needs D on the real batch too.
                real_in = pack_samples(augmented(real, augment_key, _AUGMENT_REAL), pack)
                real_out, d_mstate = discriminate(d_params, d_mstate, real_in, y)
                real_out = _check_output(real_out, real_in.shape[0], "real")
            fake_out, d_mstate = discriminate(d_params, d_mstate, fake_in, y)
            fake_out = _check_output(fake_out, fake_in.shape[0], "generated")
            if relativistic:
                adversarial = g_loss = family.g_loss(fake_out, real_out, **batch_means)
            else:
                adversarial = g_loss = family.g_loss(fake_out)
        else:
            real_d = augmented(real, augment_key, _AUGMENT_REAL)
            # The unrolled passes run θ_D^K, not the stored discriminator:
            # its model state stays as it was.
            def d_at(params, x):
                out = discriminate(params, d_mstate, x, y)[0]
                return _check_output(out, x.shape[0], "unrolled")

            # The unrolled updates use the regularisers' states as the step's
            # discriminator updates left them (frozen, as the model state).
            adversarial, g_loss = unroll.generator_loss(
                family,
                d_at,
                pack_samples(real_d, pack),
                fake_in,
                d_params=d_params,
                d_opt_state=d_opt_state,
                d_loss=lambda params: d_objective(
                    params, d_mstate, real_d, fake_d, labels, key, update, reg_states
                )[0],
                optimizer=d_optimizer,
                axis_name=axis_name,
            )
        inputs = GeneratorInputs(fake=fake, real=real, adversarial=adversarial, axis_name=axis_name)
        objective, extra = None, {"sample_scale": sample_scale(fake, real, axis_name=axis_name)}
        for part in g_objectives:
            term, part_metrics = part(inputs)
            objective = term if objective is None else objective + term
            extra.update(part_metrics)
        return objective, (g_loss, g_mstate, d_mstate, extra)

    def init(
        key: jax.Array,
        g_params: PyTree,
        d_params: PyTree,
        *,
        g_model_state: PyTree = None,
        d_model_state: PyTree = None,
    ) -> GANState:
        """The state at step 0 (see :class:`GAN`)."""
        check_key(key)
        for name, stateful, value, net in (
            ("g_model_state", g_stateful, g_model_state, "generator"),
            ("d_model_state", d_stateful, d_model_state, "discriminator"),
        ):
            flag = name[0] + "_stateful"
            if value is not None and not stateful:
                raise ValueError(
                    f"{name} was given but the {net} is stateless ({flag}=False), so it"
                    f" would never be used: build the GAN with {flag}=True and a stateful"
                    f" {net}, or drop {name}."
                )
            if value is None and stateful:
                raise ValueError(
                    f"The {net} is stateful ({flag}=True): pass its {name} to init"
                    " (e.g. the model_state of jgan.models.init_model)."
                )
        return _initial_state(
            key, g_params, d_params, g_optimizer, d_optimizer, g_model_state, d_model_state,
            ema=ema_decay is not None, regularizer_state=initial_regularizer_state(),
        )

    def initial_regularizer_state():
        states = tuple(regularizer.init() for regularizer in d_regularizers)
        return None if all(state is None for state in states) else states

    # The regularisers' states' structure, shapes and dtypes (None: all stateless).
    reg_state_shape = jax.eval_shape(initial_regularizer_state)

    def check_regularizer_state(reg_states):
        if reg_state_shape is None:
            if reg_states is not None:
                raise ValueError(
                    "The state holds a d_regularizer_state but no regulariser of this GAN keeps"
                    " a state: build the state with this GAN's init."
                )
            return (None,) * len(d_regularizers)
        if reg_states is None:
            raise ValueError(
                "This GAN's regularisers keep a state ("
                + ", ".join(type(r).__name__ for r in d_regularizers)
                + ") but the state has no d_regularizer_state: build the state with this GAN's init."
            )
        if jax.tree.structure(reg_states) != jax.tree.structure(reg_state_shape):
            raise ValueError(
                "The state's d_regularizer_state does not fit this GAN's regularisers"
                f" ({', '.join(type(r).__name__ for r in d_regularizers)}): expected the structure"
                f" {jax.tree.structure(reg_state_shape)}, got {jax.tree.structure(reg_states)}."
                " Build the state with this GAN's init."
            )
        return reg_states

    def check_layout(real, labels):
        batch_axis = 1 if batches == "sliced" else 0
        if real.ndim > batch_axis and real.shape[batch_axis] == 0:
            raise ValueError(f"The real batch is empty (shape {real.shape}, batches={batches!r}).")
        if batches == "sliced":
            if real.ndim < 2 or real.shape[0] != d_steps:
                raise ValueError(
                    f"batches='sliced' takes real data [d_steps={d_steps}, batch, ...],"
                    f" got shape {real.shape}."
                )
            if labels is not None and labels.shape[:2] != real.shape[:2]:
                raise ValueError(
                    f"batches='sliced' takes labels [d_steps, batch, ...] like the data"
                    f" {real.shape[:2]}, got shape {labels.shape}."
                )
        elif labels is not None and labels.shape[:1] != real.shape[:1]:
            raise ValueError(
                f"The labels {labels.shape} and the real samples {real.shape} differ in batch size."
            )

    def step(state: GANState, batch: Batch) -> tuple[GANState, Metrics]:
        if not isinstance(state, GANState):
            raise TypeError(f"state must be a GANState, got {type(state).__name__}.")
        check_mapped_axis(axis_name, "The GAN's step")
        _check_model_state("g", g_stateful, state.g_model_state)
        _check_model_state("d", d_stateful, state.d_model_state)
        if ema_decay is not None and state.g_ema_params is None:
            raise ValueError(
                "ema_decay is set but the state has no g_ema_params: build the state"
                " with this GAN's init (or init_state(..., ema=True))."
            )
        if ema_decay is None and state.g_ema_params is not None:
            raise ValueError(
                "The state keeps g_ema_params but the step has no ema_decay, so they"
                " would never move: set ema_decay (or build the state without EMA)."
            )
        reg_states = check_regularizer_state(state.d_regularizer_state)
        real, labels = _split_batch(batch)
        if labels is not None and pack > 1:
            raise ValueError("pack > 1 is not supported with conditional labels.")
        check_layout(real, labels)

        keys = jax.random.split(jax.random.fold_in(state.key, state.step), d_steps + 1)
        # The discriminator updates' counters: step · d_steps + i.
        updates = state.step * d_steps + jnp.arange(d_steps, dtype=state.step.dtype)
        if batches == "sliced":
            xs = ((keys[:d_steps], updates), real, labels)
            fixed_real, fixed_labels = None, None
            last_real = real[-1]
            last_labels = None if labels is None else labels[-1]
        else:
            xs = ((keys[:d_steps], updates), None, None)
            fixed_real, fixed_labels = real, labels
            last_real, last_labels = real, labels

        carry = (state.d_params, state.d_opt_state, state.d_model_state, state.g_model_state, reg_states)
        # The d_steps updates run as straight-line code (a small static count;
        # see jgan._scan): inside a loop XLA:CPU runs the kernel derivative of a
        # strided convolution 15-35x slower (five DCGAN critic updates took
        # 1030 ms in lax.scan and 65 ms unrolled, benchmarks/conv_transpose.py).
        carry, d_metrics = unrolled_scan(
            lambda c, x: d_update(c, x, state.g_params, fixed_real, fixed_labels), carry, xs, d_steps
        )
        d_params, d_opt_state, d_mstate, g_mstate, reg_states = carry
        metrics = jax.tree.map(jnp.mean, d_metrics)

        z_key, unroll_key = jax.random.split(keys[d_steps])
        z = rows_like(draw(z_key, prior, last_real.shape[0]), last_real)
        # Unrolled updates look ahead: they see the next discriminator update's counter.
        next_update = (state.step + 1) * d_steps
        (_, (g_loss, g_mstate, d_mstate, g_extra)), g_grads = jax.value_and_grad(g_objective, has_aux=True)(
            mark_varying(state.g_params, axis_name), g_mstate, d_params, d_opt_state, d_mstate, reg_states,
            z, last_real, last_labels, unroll_key, keys[d_steps], next_update,
        )
        g_grads = pmean_floats(g_grads, axis_name)
        g_updates, g_opt_state = g_optimizer.update(g_grads, state.g_opt_state, state.g_params)
        g_params = optax.apply_updates(state.g_params, g_updates)
        g_ema = state.g_ema_params
        if ema_decay is not None:
            g_ema = optax.incremental_update(g_params, g_ema, 1.0 - ema_decay)

        metrics["g_loss"] = g_loss
        metrics.update(g_extra)
        metrics["g_grad_norm"] = optax.tree.norm(g_grads)
        new_state = GANState(
            step=state.step + 1,
            key=state.key,
            g_params=g_params,
            d_params=d_params,
            g_opt_state=g_opt_state,
            d_opt_state=d_opt_state,
            g_model_state=pmean_floats(g_mstate, axis_name),
            d_model_state=pmean_floats(d_mstate, axis_name),
            g_ema_params=g_ema,
            d_regularizer_state=None if reg_state_shape is None else reg_states,
        )
        return new_state, finalize_metrics(metrics, axis_name, new_state)

    def sample(state: GANState, key: jax.Array, n: int, *, labels: jax.Array | None = None) -> jax.Array:
        """``n`` samples of the generator (see :class:`GAN`)."""
        if not isinstance(state, GANState):
            raise TypeError(f"state must be a GANState, got {type(state).__name__}.")
        n = check_int(n, "n", minimum=1, static=True)
        params = state.g_params if state.g_ema_params is None else state.g_ema_params
        y = () if labels is None else (jnp.asarray(labels),)
        if y and y[0].shape[:1] != (n,):
            raise ValueError(f"labels must have n = {n} rows, got shape {y[0].shape}.")
        x, _ = sample_gen(params, state.g_model_state, prior(key, n), *y)
        return x

    return GAN(init=init, step=step, sample=sample)


# ---------------------------------------------------------------------------
# The earlier keyword interface, kept as thin wrappers over make_gan.


def init_state(
    key: jax.Array,
    g_params: PyTree,
    d_params: PyTree,
    *,
    g_optimizer: optax.GradientTransformation,
    d_optimizer: optax.GradientTransformation,
    g_model_state: PyTree = None,
    d_model_state: PyTree = None,
    ema: bool = False,
) -> GANState:
    """Builds the initial :class:`GANState` for :func:`make_train_step`.

    Prefer :func:`make_gan`, whose ``init`` knows the optimizers and the EMA.

    Args:
      key: PRNG key for every draw of training (latents, penalties).
      g_params: initial generator parameters.
      d_params: initial discriminator parameters.
      g_optimizer: the generator's optax transformation (the same object as
        given to :func:`make_train_step`).
      d_optimizer: the discriminator's optax transformation.
      g_model_state: the generator's model state (e.g. ``{"batch_stats": ...}``)
        if it is stateful.
      d_model_state: likewise for the discriminator.
      ema: keep an exponential moving average of the generator's weights,
        starting from ``g_params`` (set ``ema_decay`` in the step).

    Returns:
      The state at step 0.
    """
    check_optimizer(g_optimizer, "g_optimizer")
    check_optimizer(d_optimizer, "d_optimizer")
    check_bool(ema, "ema")
    return _initial_state(key, g_params, d_params, g_optimizer, d_optimizer, g_model_state, d_model_state, ema)


def make_train_step(
    *,
    generator: Callable,
    discriminator: Callable,
    g_optimizer: optax.GradientTransformation,
    d_optimizer: optax.GradientTransformation,
    latent_dim: int | None = None,
    loss: str | tuple[Callable, Callable] | LossFamily = "non_saturating",
    d_steps: int = 1,
    unroll_steps: int = 0,
    unroll_first_order: bool = False,
    unroll_remat: bool | Callable[..., bool] = False,
    gradient_penalty: float = 0.0,
    gradient_penalty_target: float = 1.0,
    gradient_penalty_one_sided: bool = False,
    r1: float = 0.0,
    r2: float = 0.0,
    weight_clip: float | None = None,
    pack: int = 1,
    ema_decay: float | None = None,
    axis_name: str | None = None,
    latent_sampler: Callable[[jax.Array, int], jax.Array] | None = None,
    g_stateful: bool = False,
    d_stateful: bool = False,
    adversarial_weight: float = 1.0,
    sinkhorn_weight: float = 0.0,
    sinkhorn_epsilon: float = 0.1,
    sinkhorn_iterations: int | None = 100,
) -> Callable[[GANState, Batch], tuple[GANState, Metrics]]:
    """The earlier keyword interface: a train step for :func:`init_state`'s state.

    Each keyword maps onto a part of :func:`make_gan`, which this wraps (the
    results are bit-identical): ``latent_dim`` / ``latent_sampler`` →
    ``prior``; ``gradient_penalty`` (with ``gradient_penalty_target`` and
    ``_one_sided``), ``r1``, ``r2`` → ``d_regularizers=[GradientPenalty(…),
    R1(…), R2(…)]``; ``adversarial_weight``, ``sinkhorn_*`` →
    ``g_objectives=[Adversarial(…), SinkhornDivergence(…)]``;
    ``unroll_steps``, ``unroll_first_order``, ``unroll_remat`` →
    ``unroll=Unrolled(…)``; ``weight_clip`` → ``weight_clipping`` chained on
    ``d_optimizer`` (the state keeps ``d_optimizer``'s own state); a pair
    ``(d_loss, g_loss)`` → ``LossFamily(d_loss, g_loss)``. The layout of the
    real data (``[batch, ...]`` or ``[d_steps, batch, ...]``) is inferred
    from the generator's sample shape; ``make_gan`` takes it declared.

    Returns:
      ``train_step(state, batch) -> (state, metrics)``, as ``make_gan(...).step``.
    """
    loss = L.loss_family(loss)
    unroll_steps = check_int(unroll_steps, "unroll_steps", minimum=0, static=True)
    check_bool(unroll_first_order, "unroll_first_order")
    check_bool(gradient_penalty_one_sided, "gradient_penalty_one_sided")
    check_nonnegative(gradient_penalty_target, "gradient_penalty_target")
    if sinkhorn_weight == 0:  # Unused then, but a typo should not pass.
        check_nonnegative(sinkhorn_epsilon, "sinkhorn_epsilon")
    regularizers = []
    if check_nonnegative(gradient_penalty, "gradient_penalty") > 0:
        regularizers.append(GradientPenalty(
            gradient_penalty, target=gradient_penalty_target, one_sided=gradient_penalty_one_sided))
    if check_nonnegative(r1, "r1") > 0:
        regularizers.append(R1(r1))
    if check_nonnegative(r2, "r2") > 0:
        regularizers.append(R2(r2))
    objectives = [Adversarial(check_nonnegative(adversarial_weight, "adversarial_weight"))]
    if check_nonnegative(sinkhorn_weight, "sinkhorn_weight") > 0:
        objectives.append(SinkhornDivergence(
            sinkhorn_weight, epsilon=sinkhorn_epsilon, iterations=sinkhorn_iterations))
    if weight_clip is not None:
        clip = penalties.weight_clipping(check_nonnegative(weight_clip, "weight_clip"))
        d_optimizer = optax.chain(d_optimizer, clip)
    if latent_sampler is None and latent_dim is None:
        raise ValueError("Give latent_dim (standard normal prior) or latent_sampler.")
    if latent_sampler is not None:
        check_callable(latent_sampler, "latent_sampler", "(key, n) -> z [n, ...]")
    common = dict(
        generator=generator,
        discriminator=discriminator,
        g_optimizer=g_optimizer,
        d_optimizer=d_optimizer,
        prior=latent_dim if latent_sampler is None else latent_sampler,
        loss=loss,
        d_steps=d_steps,
        d_regularizers=regularizers,
        g_objectives=objectives,
        unroll=Unrolled(unroll_steps, first_order=unroll_first_order, remat=unroll_remat) if unroll_steps else None,
        pack=pack,
        ema_decay=ema_decay,
        axis_name=axis_name,
        g_stateful=g_stateful,
        d_stateful=d_stateful,
    )
    shared = make_gan(**common, batches="shared")
    sliced = make_gan(**common, batches="sliced").step
    gen = _stateful(generator, g_stateful)
    prior = _make_prior(common["prior"])

    def train_step(state: GANState, batch: Batch) -> tuple[GANState, Metrics]:
        if not isinstance(state, GANState):
            raise TypeError(f"state must be a GANState, got {type(state).__name__}.")
        real, labels = _split_batch(batch)
        run = sliced if _infer_sliced(real, labels, state, gen, prior, d_steps) else shared.step
        if weight_clip is None:
            return run(state, batch)
        chained = state._replace(d_opt_state=(state.d_opt_state, penalties.WeightClippingState()))
        new_state, metrics = run(chained, batch)
        return new_state._replace(d_opt_state=new_state.d_opt_state[0]), metrics

    return train_step


def _infer_sliced(real, labels, state, gen, prior, d_steps) -> bool:
    """Whether ``real`` is one batch ``[batch, ...]`` or k slices ``[k, batch, ...]``.

    Decided (at trace time) by comparing with the shape of the generator's
    samples; a shape that fits neither is an error.
    """

    def sample_shape(lead):
        example = None
        if labels is not None:
            if labels.ndim < lead or labels.shape[:lead] != real.shape[:lead]:
                return None
            example = jax.ShapeDtypeStruct((1,) + labels.shape[lead:], labels.dtype)
        y = () if example is None else (example,)
        z = jax.eval_shape(lambda k: prior(k, 1), jax.random.key(0))
        try:
            out = jax.eval_shape(
                lambda p, s, zz, *yy: gen(p, s, zz, *yy)[0], state.g_params, state.g_model_state, z, *y
            )
        except (TypeError, ValueError):  # The generator rejects labels of this layout.
            return None
        return tuple(out.shape[1:])

    shape = sample_shape(1) if real.ndim >= 1 else None
    if shape is not None and tuple(real.shape[1:]) == shape:
        return False
    if real.ndim >= 2:
        slice_shape = shape if labels is None else sample_shape(2)
        if slice_shape is not None and tuple(real.shape[2:]) == slice_shape:
            if real.shape[0] != d_steps:
                raise ValueError(
                    f"A batch of real slices [k, batch, ...] needs k = d_steps = {d_steps},"
                    f" got k = {real.shape[0]}."
                )
            return True
    raise ValueError(
        f"Real samples of shape {real.shape} (labels {None if labels is None else labels.shape})"
        f" do not match the generator's samples of shape [batch, *{shape}], or"
        " [d_steps, batch, ...] for one real slice per discriminator update."
    )
