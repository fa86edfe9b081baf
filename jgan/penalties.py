"""Regularisers of the discriminator: gradient penalties and weight clipping.

The gradient penalties differentiate the critic with respect to its *input*
(``jax.grad`` inside), and the result is itself differentiable with respect to
whatever ``critic_fn`` closes over (the critic's parameters): the step then
takes a gradient of a gradient (nested ``jax.grad``), which is exact.

References:
  Gulrajani et al., "Improved Training of Wasserstein GANs", 2017 (Algorithm 1).
  Mescheder, Geiger, Nowozin, "Which Training Methods for GANs do actually
  Converge?", 2018 (R1 and R2, eq. 9 and 10).
  Arjovsky, Chintala, Bottou, "Wasserstein GAN", 2017 (Algorithm 1, clipping).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.typing import ArrayLike

from jgan._validate import check_bool, check_callable, check_nonnegative
from jgan.losses import as_logits

__all__ = [
    "gradient_penalty",
    "interpolate",
    "gradient_norm_penalty",
    "r1_penalty",
    "weight_clipping",
    "WeightClippingState",
    "DiscriminatorRegularizer",
    "GradientPenalty",
    "R1",
    "R2",
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


class DiscriminatorRegularizer(abc.ABC):
    """A term added to the discriminator's loss: subclass it for your own.

    ``make_gan(d_regularizers=[...])`` calls each regulariser in every
    discriminator update (the unrolled ones included) on the inputs the
    discriminator saw there, packed for PacGAN, and adds the returned term to
    the discriminator's loss, in the order given.
    """

    @abc.abstractmethod
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
