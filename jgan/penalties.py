"""Regularisers of the discriminator: gradient penalties and weight clipping.

The gradient penalties differentiate the critic with respect to its *input*
(``jax.grad`` inside), and the result is itself differentiable with respect to
whatever ``critic_fn`` closes over (the critic's parameters): the step then
takes a gradient of a gradient (nested ``jax.grad``), which is exact.

Regularisers may keep a state in the GAN's state (:class:`LeCam`'s moving
averages) and know which discriminator update they are in (:class:`LazyR1`):
see :class:`DiscriminatorRegularizer` and :class:`RegularizerInputs`.

References:
  Gulrajani et al., "Improved Training of Wasserstein GANs", 2017 (Algorithm 1).
  Mescheder, Geiger, Nowozin, "Which Training Methods for GANs do actually
  Converge?", 2018 (R1 and R2, eq. 9 and 10).
  Arjovsky, Chintala, Bottou, "Wasserstein GAN", 2017 (Algorithm 1, clipping).
  Karras et al., "Analyzing and Improving the Image Quality of StyleGAN",
  CVPR 2020, §B (lazy regularisation).
  Tseng, Jiang, Liu, Yang, Yang, "Regularizing Generative Adversarial
  Networks under Limited Data", CVPR 2021, eq. 3 (LeCam).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.typing import ArrayLike

from jgan._parallel import mark_varying, pmean_floats
from jgan._validate import check_bool, check_callable, check_in_range, check_int, check_nonnegative
from jgan.losses import as_logits

__all__ = [
    "gradient_penalty",
    "interpolate",
    "gradient_norm_penalty",
    "r1_penalty",
    "weight_clipping",
    "WeightClippingState",
    "DiscriminatorRegularizer",
    "RegularizerInputs",
    "GradientPenalty",
    "R1",
    "R2",
    "LazyR1",
    "LeCam",
    "LeCamState",
]

CriticFn = Callable[[jax.Array], jax.Array]


def _per_example_sq_norm(grads: jax.Array) -> jax.Array:
    return jnp.sum(jnp.square(grads).reshape(grads.shape[0], -1), axis=-1)


def _safe_sqrt(x: jax.Array) -> jax.Array:
    """sqrt with a zero (not NaN) derivative at 0."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def _input_gradients(critic_fn: CriticFn, x: jax.Array) -> jax.Array:
    """∇ₓ critic(x) per example, ``[batch, ...]``.

    Uses the gradient of the summed scores, which equals the per-example
    gradients when the critic treats examples independently (no BatchNorm
    across the batch, as WGAN-GP requires).
    """

    def total_score(inputs):
        scores = as_logits(critic_fn(inputs), name="critic_fn(x)")
        if scores.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"critic_fn returned {scores.shape[0]} scores for a batch of"
                f" {inputs.shape[0]}."
            )
        return jnp.sum(scores)

    return jax.grad(total_score)(x)


def interpolate(real: ArrayLike, fake: ArrayLike, key: jax.Array) -> jax.Array:
    """x̂ = t·real + (1 − t)·fake with t ~ U[0, 1] drawn once per example.

    Args:
      real: real samples, ``[batch, ...]``.
      fake: generated samples, the same shape as ``real``.
      key: PRNG key for t.

    Returns:
      The interpolates, ``[batch, ...]``.
    """
    real = jnp.asarray(real)
    fake = jnp.asarray(fake)
    if real.shape != fake.shape:
        raise ValueError(
            f"real and fake must have the same shape, got {real.shape} and {fake.shape}."
        )
    if real.ndim < 1:
        raise ValueError("real and fake need a leading batch axis.")
    t_shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    t = jax.random.uniform(key, t_shape, dtype=real.dtype)
    return t * real + (1.0 - t) * fake


def gradient_norm_penalty(
    critic_fn: CriticFn,
    x: ArrayLike,
    *,
    target: float = 1.0,
    one_sided: bool = False,
) -> jax.Array:
    """E[(‖∇ₓ critic(x)‖₂ − target)²] at given points ``x``.

    The building block of :func:`gradient_penalty`, for callers that choose
    the points themselves (e.g. a data-parallel step that slices a global draw).

    Args:
      critic_fn: ``x [batch, ...] -> scores [batch]`` (or ``[batch, 1]``).
      x: points, ``[batch, ...]``.
      target: the norm the penalty pulls towards (1 for WGAN-GP).
      one_sided: penalise only norms above ``target``: E[relu(‖∇‖ − target)²].

    Returns:
      The scalar penalty.
    """
    check_callable(critic_fn, "critic_fn", "x [batch, ...] -> scores [batch]")
    target = check_nonnegative(target, "target")
    one_sided = check_bool(one_sided, "one_sided")
    x = jnp.asarray(x)
    norms = _safe_sqrt(_per_example_sq_norm(_input_gradients(critic_fn, x)))
    excess = norms - target
    if one_sided:
        excess = jax.nn.relu(excess)
    return jnp.mean(jnp.square(excess))


def gradient_penalty(
    critic_fn: CriticFn,
    real: ArrayLike,
    fake: ArrayLike,
    key: jax.Array,
    *,
    target: float = 1.0,
    one_sided: bool = False,
) -> jax.Array:
    """The WGAN-GP penalty E[(‖∇ₓ̂ critic(x̂)‖₂ − target)²] on interpolates.

    x̂ = t·real + (1 − t)·fake with t ~ U[0, 1] per example. The result is
    differentiable with respect to whatever ``critic_fn`` closes over.

    Args:
      critic_fn: ``x [batch, ...] -> scores [batch]`` (or ``[batch, 1]``); it
        must treat examples independently (no BatchNorm in a WGAN-GP critic).
      real: real samples, ``[batch, ...]``.
      fake: generated samples, the same shape as ``real``.
      key: PRNG key for the interpolation coefficients.
      target: the gradient norm the penalty pulls towards.
      one_sided: penalise only norms above ``target`` (Gulrajani et al. §A).

    Returns:
      The scalar penalty (not yet multiplied by λ).

    References:
      Gulrajani et al. 2017, Algorithm 1 (λ = 10 there).
    """
    return gradient_norm_penalty(
        critic_fn, interpolate(real, fake, key), target=target, one_sided=one_sided
    )


def r1_penalty(critic_fn: CriticFn, x: ArrayLike) -> jax.Array:
    """E‖∇ₓ critic(x)‖²: R1 when ``x`` is real data, R2 when it is generated.

    Mescheder et al. weight it by γ/2; this function returns the bare
    expectation.

    Args:
      critic_fn: ``x [batch, ...] -> scores [batch]`` (or ``[batch, 1]``).
      x: points, ``[batch, ...]``.

    Returns:
      The scalar penalty.

    References:
      Mescheder et al. 2018, eq. 9 (R1) and 10 (R2).
    """
    x = jnp.asarray(x)
    return jnp.mean(_per_example_sq_norm(_input_gradients(critic_fn, x)))


class WeightClippingState(NamedTuple):
    """``weight_clipping`` is stateless."""


def _clip_into_box(params, updates, c):
    """Updates u' such that ``params + u'`` (in the params' dtype) is in [−c, c].

    The plain u' = clip(p + u) − p can round to just outside the box; each
    pass moves u' by one ulp back towards the box where that happens. That
    correction is a constant to differentiation (``nextafter`` has no
    derivative), so u' differentiates as clip(p + u) − p: an unrolled
    discriminator can chain the clipping.
    """

    def leaf(p, u):
        target = jnp.clip(p + u, -c, c)
        plain = (target - p).astype(u.dtype)
        new_u = lax.stop_gradient(plain)
        for _ in range(2):
            result = (p + new_u).astype(p.dtype)
            new_u = jnp.where(
                result > c,
                jnp.nextafter(new_u, jnp.array(-jnp.inf, new_u.dtype)),
                jnp.where(
                    result < -c,
                    jnp.nextafter(new_u, jnp.array(jnp.inf, new_u.dtype)),
                    new_u,
                ),
            )
        # new_u's value with plain's derivative. (Not plain + (new_u − plain): that
        # difference can be one ulp of a tiny update, a subnormal the CPU flushes to 0.)
        return lax.stop_gradient(new_u) + (plain - lax.stop_gradient(plain))

    return jax.tree.map(leaf, params, updates)


def weight_clipping(c: float) -> optax.GradientTransformation:
    """Keeps every parameter in [−c, c] after the update (WGAN's clipping).

    Chain it last, after the optimizer: ``optax.chain(optax.rmsprop(5e-5),
    weight_clipping(0.01))``. Its ``update`` needs ``params``. The returned
    updates are such that ``optax.apply_updates(params, updates)`` lies in
    [−c, c] exactly, rounding included.

    Args:
      c: the clipping bound, ``c >= 0``.

    Returns:
      An ``optax.GradientTransformation``.

    References:
      Arjovsky et al. 2017, Algorithm 1 (c = 0.01).
    """
    c = check_nonnegative(c, "weight_clipping c")

    def init_fn(params):
        del params
        return WeightClippingState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "weight_clipping needs params: call update(updates, state, params)."
            )
        return _clip_into_box(params, updates, c), state

    return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------------
# Regularisers as parts of a GAN: ``make_gan(d_regularizers=[...])``.

Draw = Callable[[jax.Array, Callable[[jax.Array, int], jax.Array], int], jax.Array]


class RegularizerInputs(NamedTuple):
    """What a discriminator regulariser sees in one discriminator update.

    Attributes:
      critic_fn: ``x [batch, ...] -> scores [batch]``, the discriminator at
        the parameters being differentiated.
      real: the discriminator's real inputs, ``[batch, ...]`` (augmented and
        packed for PacGAN, as the discriminator saw them).
      fake: its generated inputs (constants here), the same shape.
      real_out: ``[batch]``, the discriminator's outputs on ``real`` (from
        the update's own forward pass, differentiable with respect to its
        parameters).
      fake_out: ``[batch]``, its outputs on ``fake``.
      key: a PRNG key for this regulariser's draws.
      draw: ``draw(key, sampler, n)`` returns this device's ``n`` rows of
        ``sampler(key, n · devices)`` (just ``sampler(key, n)`` on one
        device): draw through it, so that a data-parallel step equals the
        single-device step.
      update: ``[]`` int32, the discriminator update's counter:
        ``step · d_steps + i`` for the i-th of a step's ``d_steps`` updates
        (0, 1, 2, ... over training). Inside an unrolled generator objective
        (``Unrolled``) it is the next update's, ``(step + 1) · d_steps``.
      state: this regulariser's state (what its ``init`` returned, as the
        previous update left it), ``None`` for a stateless one.
      axis_name: the mapped axis under ``shard_map`` / ``pmap``, where the
        inputs are this device's rows of the global batch (means over the
        global batch need ``lax.pmean``); ``None`` on one device and under
        ``jax.jit`` with sharded inputs.
    """

    critic_fn: CriticFn
    real: jax.Array
    fake: jax.Array
    real_out: jax.Array
    fake_out: jax.Array
    key: jax.Array
    draw: Draw
    update: jax.Array
    state: Any = None
    axis_name: str | None = None


class DiscriminatorRegularizer(abc.ABC):
    """A term added to the discriminator's loss: subclass it for your own.

    ``make_gan(d_regularizers=[...])`` calls each regulariser in every
    discriminator update (the unrolled ones included) on the inputs the
    discriminator saw there, augmented and packed for PacGAN, and adds the
    returned term to the discriminator's loss, in the order given.

    Implement one of two methods:

    - ``__call__(critic_fn, real, fake, *, key, draw) -> (term, metrics)``
      for a stateless term of the inputs alone (:class:`GradientPenalty`,
      :class:`R1`, :class:`R2`);
    - ``regularize(inputs) -> (term, metrics, state)`` on the whole
      :class:`RegularizerInputs` (the discriminator's outputs, the update's
      counter, a state), with ``init() -> state`` for the state's initial
      value (:class:`LazyR1`, :class:`LeCam`).

    The step calls ``regularize``, which by default calls ``__call__`` and
    keeps the state. A state is a pytree of arrays in
    ``GANState.d_regularizer_state`` (one entry per regulariser); it is
    carried through the step's discriminator updates and, under
    ``axis_name``, its floating leaves are averaged over the devices after
    each update (so compute it from global means, and the devices agree).
    The unrolled updates of ``Unrolled`` use the state as the step's
    discriminator updates left it, and do not update it.
    """

    def __new__(cls, *args, **kwargs):
        del args, kwargs
        base = DiscriminatorRegularizer
        if cls.__call__ is base.__call__ and cls.regularize is base.regularize:
            raise TypeError(
                f"Can't instantiate {cls.__name__}: a DiscriminatorRegularizer implements"
                " __call__(critic_fn, real, fake, *, key, draw) -> (term, metrics) or"
                " regularize(inputs) -> (term, metrics, state)."
            )
        return super().__new__(cls)

    def init(self) -> Any:
        """The initial state: a pytree of arrays, or ``None`` (the default) for a stateless regulariser."""
        return None

    def regularize(self, inputs: RegularizerInputs) -> tuple[jax.Array, dict[str, jax.Array], Any]:
        """Returns ``(weighted term, metrics, new state)`` for one update's :class:`RegularizerInputs`.

        The default calls ``__call__`` on the inputs and keeps the state.
        """
        term, metrics = self(inputs.critic_fn, inputs.real, inputs.fake, key=inputs.key, draw=inputs.draw)
        return term, metrics, inputs.state

    def __call__(
        self, critic_fn: CriticFn, real: jax.Array, fake: jax.Array, *, key: jax.Array, draw: Draw
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Returns ``(weighted term, metrics)``.

        Args:
          critic_fn: ``x [batch, ...] -> scores [batch]``, the discriminator
            at the parameters being differentiated.
          real: the discriminator's real inputs, ``[batch, ...]``.
          fake: its generated inputs (constants here), the same shape.
          key: a PRNG key for this regulariser's draws.
          draw: ``draw(key, sampler, n)`` returns this device's ``n`` rows of
            ``sampler(key, n · devices)`` (just ``sampler(key, n)`` on one
            device): draw through it, so that a data-parallel step equals
            the single-device step.

        Returns:
          The term to add to the loss (weight applied) and the metrics to
          report (scalars, the raw penalty under its name).
        """
        raise TypeError(
            f"{type(self).__name__} is called through regularize(RegularizerInputs(...)): it"
            " needs the discriminator's outputs, the update's counter or its state."
        )
@dataclasses.dataclass(frozen=True)
class GradientPenalty(DiscriminatorRegularizer):
    """WGAN-GP: ``weight · E[(‖∇ₓ̂ D(x̂)‖₂ − target)²]`` on interpolates of real and generated data.

    x̂ = t·real + (1 − t)·fake, with t ~ U[0, 1] per example. Reported as
    ``gradient_penalty`` (without the weight).

    Attributes:
      weight: λ (10 in Gulrajani et al.).
      target: the gradient norm the penalty pulls towards.
      one_sided: penalise only norms above ``target``.

    References:
      Gulrajani et al. 2017, Algorithm 1 and §A.
    """

    weight: float
    target: float = dataclasses.field(default=1.0, kw_only=True)
    one_sided: bool = dataclasses.field(default=False, kw_only=True)

    def __post_init__(self):
        check_nonnegative(self.weight, "GradientPenalty weight")
        check_nonnegative(self.target, "GradientPenalty target")
        check_bool(self.one_sided, "GradientPenalty one_sided")

    def __call__(self, critic_fn, real, fake, *, key, draw):
        t = draw(key, lambda k, n: jax.random.uniform(k, (n,), real.dtype), real.shape[0])
        t = t.reshape((-1,) + (1,) * (real.ndim - 1))
        value = gradient_norm_penalty(
            critic_fn, t * real + (1 - t) * fake, target=self.target, one_sided=self.one_sided
        )
        return self.weight * value, {"gradient_penalty": value}


@dataclasses.dataclass(frozen=True)
class _SquaredInputGradient(DiscriminatorRegularizer):
    """``(γ/2) · E‖∇ₓ D(x)‖²`` on real (R1) or generated (R2) inputs."""

    gamma: float
    _name = ""  # The metric's name; also which inputs ("r1": real, "r2": generated).

    def __post_init__(self):
        check_nonnegative(self.gamma, f"{type(self).__name__} gamma")

    def __call__(self, critic_fn, real, fake, *, key, draw):
        value = r1_penalty(critic_fn, real if self._name == "r1" else fake)
        return 0.5 * self.gamma * value, {self._name: value}


@dataclasses.dataclass(frozen=True)
class R1(_SquaredInputGradient):
    """``(γ/2) · E‖∇ₓ D(x)‖²`` on real data; reported as ``r1`` (without γ/2).

    References:
      Mescheder, Geiger, Nowozin 2018, eq. 9.
    """

    _name = "r1"


@dataclasses.dataclass(frozen=True)
class R2(_SquaredInputGradient):
    """``(γ/2) · E‖∇ₓ D(G(z))‖²`` on generated data; reported as ``r2`` (without γ/2).

    References:
      Mescheder, Geiger, Nowozin 2018, eq. 10.
    """

    _name = "r2"


@dataclasses.dataclass(frozen=True)
class LazyR1(DiscriminatorRegularizer):
    """R1 computed on one discriminator update in ``every``, weighted ``every · γ/2`` there.

    StyleGAN2's lazy regularisation: the penalty ``(γ/2) · E‖∇ₓ D(x)‖²`` on
    real data is computed only on the discriminator updates whose counter
    (:attr:`RegularizerInputs.update`: ``step · d_steps + i``) is a multiple
    of ``every``, and multiplied by ``every`` there, so that its expected
    weight per update is R1's; on the other updates the term is exactly 0
    and the double backward pass is not run (``lax.cond``; under ``vmap``
    both branches run). ``every=1`` is :class:`R1`.

    Reported as ``r1``: the raw penalty E‖∇ₓ D(x)‖² (without the weight) on
    the updates that compute it and 0 on the others; like every
    discriminator metric it is the mean over a step's ``d_steps`` updates
    (with ``d_steps = 1`` each step reports its own update's value).

    Attributes:
      gamma: γ, R1's weight.
      every: the interval N >= 1 (16 in StyleGAN2).

    References:
      Karras, Laine, Aittala, Hellsten, Lehtinen, Aila, "Analyzing and
      Improving the Image Quality of StyleGAN", CVPR 2020, §B ("lazy
      regularization"); Mescheder, Geiger, Nowozin 2018, eq. 9.
    """

    gamma: float
    every: int = dataclasses.field(default=16, kw_only=True)

    def __post_init__(self):
        check_nonnegative(self.gamma, "LazyR1 gamma")
        check_int(self.every, "LazyR1 every", minimum=1, static=True)

    def regularize(self, inputs):
        def penalty(real):
            return r1_penalty(inputs.critic_fn, real)

        if self.every == 1:
            value = penalty(inputs.real)
        else:
            zero = jax.eval_shape(penalty, inputs.real)
            value = lax.cond(
                inputs.update % self.every == 0,
                penalty,
                # Typed as the penalty (varying over a shard_map axis, as the parameters are).
                lambda real: mark_varying(jnp.zeros(zero.shape, zero.dtype), inputs.axis_name),
                inputs.real,
            )
        return 0.5 * self.gamma * self.every * value, {"r1": value}, inputs.state


class LeCamState(NamedTuple):
    """:class:`LeCam`'s moving averages (zero-debiased, as Adam's moments).

    Attributes:
      real: ``[]`` float32, the moving average of the mean D(x), started at 0.
      fake: ``[]`` float32, the moving average of the mean D(G(z)), started at 0.
      weight: ``[]`` float32, the same average of ones, 1 − decayᵗ after t
        updates: the anchors are ``real / weight`` and ``fake / weight``.
    """

    real: jax.Array
    fake: jax.Array
    weight: jax.Array


@dataclasses.dataclass(frozen=True)
class LeCam(DiscriminatorRegularizer):
    """The LeCam regulariser: ``weight · (E‖D(x) − α_F‖² + E‖D(G(z)) − α_R‖²)``.

    α_R and α_F are exponential moving averages (decay ``decay``) of the
    discriminator's mean output on real and on generated data, kept in the
    GAN's state (:class:`LeCamState`). Each discriminator update first moves
    the anchors with this update's means (over the global batch under
    ``axis_name``; no gradient flows through them), then computes the
    penalty against the moved anchors, as the authors' code does. The
    averages start at 0 and are debiased (divided by 1 − decayᵗ, as their
    StyleGAN2 code's ``zero_debias=True``), so the first update's anchors
    are its own means. Reported as ``lecam`` (without the weight),
    ``lecam_anchor_real`` (α_R) and ``lecam_anchor_fake`` (α_F).

    The paper's eq. 3 squares the differences; the authors' code squares
    only their positive parts, ``relu(D(x) − α_F)² + relu(α_R − D(G(z)))²``
    (google/lecam-gan, ``biggan_cifar/losses.py`` and
    ``stylegan2/lecam_loss.py``): ``one_sided=True``. (Their BigGAN code
    also holds the anchors at the current means, and the term off, for the
    first 1000 iterations, with decay 0.9; their StyleGAN2 code uses 0.99.)

    Attributes:
      weight: λ (0.3 for BigGAN on CIFAR-10 in the authors' scripts).
      decay: the moving averages' decay, in [0, 1).
      one_sided: the authors' code's relu.

    References:
      Tseng, Jiang, Liu, Yang, Yang, "Regularizing Generative Adversarial
      Networks under Limited Data", CVPR 2021, eq. 3 and §3.
    """

    weight: float
    decay: float = dataclasses.field(default=0.99, kw_only=True)
    one_sided: bool = dataclasses.field(default=False, kw_only=True)

    def __post_init__(self):
        check_nonnegative(self.weight, "LeCam weight")
        check_in_range(self.decay, "LeCam decay", 0.0, 1.0)
        check_bool(self.one_sided, "LeCam one_sided")

    def init(self) -> LeCamState:
        zero = jnp.zeros((), jnp.float32)
        return LeCamState(real=zero, fake=zero, weight=zero)

    def regularize(self, inputs):
        state = inputs.state
        if not isinstance(state, LeCamState):
            raise TypeError(f"LeCam's state must be a LeCamState (its init()), got {type(state).__name__}.")

        def global_mean(out):
            mean = jnp.mean(lax.stop_gradient(out).astype(jnp.float32))
            return pmean_floats(mean, inputs.axis_name)

        d = self.decay
        state = LeCamState(
            real=d * state.real + (1 - d) * global_mean(inputs.real_out),
            fake=d * state.fake + (1 - d) * global_mean(inputs.fake_out),
            weight=d * state.weight + (1 - d),
        )
        anchor_real, anchor_fake = state.real / state.weight, state.fake / state.weight
        above = inputs.real_out - anchor_fake.astype(inputs.real_out.dtype)
        below = anchor_real.astype(inputs.fake_out.dtype) - inputs.fake_out
        if self.one_sided:
            above, below = jax.nn.relu(above), jax.nn.relu(below)
        value = jnp.mean(jnp.square(above)) + jnp.mean(jnp.square(below))
        metrics = {"lecam": value, "lecam_anchor_real": anchor_real, "lecam_anchor_fake": anchor_fake}
        return self.weight * value, metrics, state
