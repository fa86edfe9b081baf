"""GAN losses as pure functions of discriminator outputs.

Every loss takes logits (for the families built on a sigmoid discriminator) or
critic scores (Wasserstein, hinge, least squares) of shape ``[batch]`` or
``[batch, 1]`` and is *to be minimised*. ``reduction="mean"`` (the default)
returns a scalar; ``reduction="none"`` returns per-example values of shape
``[batch]``. For a discriminator loss, element ``i`` of the per-example values
is the real term of example ``i`` plus the fake term of example ``i``, so real
and fake batches must then have equal sizes; the mean of the per-example
values equals the scalar loss.

Losses on logits never form ``log(sigmoid(x))``: they use ``softplus`` and are
finite, with finite gradients, for logits of any magnitude whose batch sum
stays finite (|logit| · batch below the dtype's largest value, about 3e38 in
float32: the mean adds the batch up in the logits' dtype).

References:
  Goodfellow et al., "Generative Adversarial Nets", 2014 (eq. 1, Algorithm 1).
  Goodfellow, "NIPS 2016 Tutorial: Generative Adversarial Networks", 2016, §3.2.
  Arjovsky, Chintala, Bottou, "Wasserstein GAN", 2017.
  Lim & Ye, "Geometric GAN", 2017 (hinge); Mao et al., "Least Squares GAN", 2017.
  Zhu et al., "Unpaired Image-to-Image Translation using Cycle-Consistent
  Adversarial Networks", 2017 (eq. 2).
"""

from __future__ import annotations

import math

from typing import Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jgan._validate import check_bool, check_in_range

Reduction = Literal["mean", "none"]

__all__ = [
    "as_logits",
    "minimax_discriminator_loss",
    "minimax_generator_loss",
    "non_saturating_generator_loss",
    "maximum_likelihood_generator_loss",
    "wasserstein_discriminator_loss",
    "wasserstein_generator_loss",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "least_squares_discriminator_loss",
    "least_squares_generator_loss",
    "cycle_consistency_loss",
    "LossFamily",
    "LOSS_FAMILIES",
    "loss_family",
]


def as_logits(outputs: ArrayLike, *, name: str = "discriminator output") -> jax.Array:
    """Validates a discriminator output and returns it as a ``[batch]`` array.

    Args:
      outputs: logits or critic scores, ``[batch]`` or ``[batch, 1]``.
      name: what the array is, for the error message.

    Returns:
      The outputs as a ``[batch]`` array.

    Raises:
      ValueError: at trace time, for any other shape. A ``[batch, k]`` output
        with ``k > 1`` would otherwise broadcast silently against a ``[batch]``
        target.
    """
    outputs = jnp.asarray(outputs)
    if not (jnp.issubdtype(outputs.dtype, jnp.floating) or jnp.issubdtype(outputs.dtype, jnp.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {outputs.dtype}.")
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        outputs = outputs[:, 0]
    if outputs.ndim != 1:
        raise ValueError(
            f"{name} must have shape [batch] or [batch, 1], got {outputs.shape}."
        )
    if outputs.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {outputs.shape}): a mean over it is NaN.")
    return outputs


def _reduce_one(values: jax.Array, reduction: Reduction) -> jax.Array:
    if reduction == "mean":
        return jnp.mean(values)
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}.")


def _reduce_pair(real_terms, fake_terms, reduction: Reduction) -> jax.Array:
    """Reduces a discriminator loss made of a real and a fake term."""
    if reduction == "mean":
        return jnp.mean(real_terms) + jnp.mean(fake_terms)
    if reduction == "none":
        if real_terms.shape != fake_terms.shape:
            raise ValueError(
                "reduction='none' pairs real example i with fake example i, so both"
                f" batches must have the same size; got {real_terms.shape[0]} real"
                f" and {fake_terms.shape[0]} fake."
            )
        return real_terms + fake_terms
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}.")


def minimax_discriminator_loss(
    real_logits: ArrayLike, fake_logits: ArrayLike, *, reduction: Reduction = "mean"
) -> jax.Array:
    """Discriminator loss of the minimax game: −E log σ(r) − E log(1 − σ(f)).

    Shared by the minimax, non-saturating and maximum-likelihood families: they
    differ only in the generator's loss.

    Args:
      real_logits: D's logits on real data, ``[batch]`` or ``[batch, 1]``.
      fake_logits: D's logits on generated data, ``[batch]`` or ``[batch, 1]``.
      reduction: ``"mean"`` or ``"none"`` (per-example real + fake terms).

    Returns:
      The loss, a scalar or ``[batch]``.

    References:
      Goodfellow et al. 2014, eq. 1 (negated: here it is minimised).
    """
    r = as_logits(real_logits, name="real_logits")
    f = as_logits(fake_logits, name="fake_logits")
    # −log σ(r) = softplus(−r);  −log(1 − σ(f)) = softplus(f).
    return _reduce_pair(jax.nn.softplus(-r), jax.nn.softplus(f), reduction)


def minimax_generator_loss(
    fake_logits: ArrayLike, *, reduction: Reduction = "mean"
) -> jax.Array:
    """The saturating generator loss of the minimax game: E log(1 − σ(f)).

    Its gradient vanishes when D confidently rejects the samples (f ≪ 0), which
    is why the non-saturating loss is used in practice.

    Args:
      fake_logits: D's logits on generated data, ``[batch]`` or ``[batch, 1]``.
      reduction: ``"mean"`` or ``"none"``.

    Returns:
      The loss, a scalar or ``[batch]``.

    References:
      Goodfellow et al. 2014, eq. 1.
    """
    f = as_logits(fake_logits, name="fake_logits")
    return _reduce_one(-jax.nn.softplus(f), reduction)


def non_saturating_generator_loss(
    fake_logits: ArrayLike, *, reduction: Reduction = "mean"
) -> jax.Array:
    """The non-saturating generator loss: −E log σ(f).

    Args:
      fake_logits: D's logits on generated data, ``[batch]`` or ``[batch, 1]``.
      reduction: ``"mean"`` or ``"none"``.

    Returns:
      The loss, a scalar or ``[batch]``.

    References:
      Goodfellow et al. 2014, §3 ("maximize log D(G(z))").
    """
    f = as_logits(fake_logits, name="fake_logits")
    return _reduce_one(jax.nn.softplus(-f), reduction)


def maximum_likelihood_generator_loss(
    fake_logits: ArrayLike,
    *,
    reduction: Reduction = "mean",
    max_logit: float | None = 30.0,
) -> jax.Array:
    """The maximum-likelihood generator loss: −½ E exp(f).

    With the optimal discriminator, exp(f) = D/(1 − D) = p_data/p_g, and
    minimising this loss follows the gradient of KL(p_data ‖ p_g).

    exp(f) overflows float32 for f > 88 (float16 for f > 11). Logits above
    ``max_logit`` (and above what exp can take in their dtype, log(max) − 1)
    are clamped (their gradient is then zero: those samples already look real
    with odds above e^max_logit ≈ 1e13), so the loss and its gradient stay
    finite for logits of any magnitude in float16, 32 and 64.
    ``max_logit=None`` gives the unclamped formula.

    Args:
      fake_logits: D's logits on generated data, ``[batch]`` or ``[batch, 1]``.
      reduction: ``"mean"`` or ``"none"``.
      max_logit: clamp for the logits before ``exp``; ``None`` for none.

    Returns:
      The loss, a scalar or ``[batch]``.

    References:
      Goodfellow 2016 (NIPS tutorial), §3.2.3, eq. 10; Goodfellow 2014,
      "On distinguishability criteria for estimating generative models".
    """
    f = as_logits(fake_logits, name="fake_logits")
    if max_logit is not None:
        max_logit = check_in_range(max_logit, "max_logit", -math.inf, math.inf)
        # Never above what exp can take in f's dtype (about 10.1 in float16).
        f = jnp.minimum(f, min(max_logit, _largest_exp_argument(f.dtype)))
    return _reduce_one(-0.5 * jnp.exp(f), reduction)


def _largest_exp_argument(dtype) -> float:
    """A logit whose exp, halved and summed over a batch in float32, stays finite in ``dtype``."""
    return float(np.log(np.finfo(dtype).max)) - 1.0


def wasserstein_discriminator_loss(
    real_scores: ArrayLike, fake_scores: ArrayLike, *, reduction: Reduction = "mean"
) -> jax.Array:
    """The WGAN critic loss: E f − E r (the negated Wasserstein estimate).

    Args:
      real_scores: critic scores on real data, ``[batch]`` or ``[batch, 1]``.
      fake_scores: critic scores on generated data, ``[batch]`` or ``[batch, 1]``.
      reduction: ``"mean"`` or ``"none"``.

    Returns:
      The loss, a scalar or ``[batch]``.

    References:
      Arjovsky et al. 2017, Algorithm 1.
    """
    r = as_logits(real_scores, name="real_scores")
    f = as_logits(fake_scores, name="fake_scores")
    return _reduce_pair(-r, f, reduction)


def wasserstein_generator_loss(
    fake_scores: ArrayLike, *, reduction: Reduction = "mean"
) -> jax.Array:
    """The WGAN generator loss: −E f.

    Args:
      fake_scores: critic scores on generated data, ``[batch]`` or ``[batch, 1]``.
      reduction: ``"mean"`` or ``"none"``.

    Returns:
      The loss, a scalar or ``[batch]``.

    References:
      Arjovsky et al. 2017, Algorithm 1.
    """
    f = as_logits(fake_scores, name="fake_scores")
    return _reduce_one(-f, reduction)


def hinge_discriminator_loss(
    real_scores: ArrayLike, fake_scores: ArrayLike, *, reduction: Reduction = "mean"
) -> jax.Array:
    """The hinge discriminator loss: E relu(1 − r) + E relu(1 + f).

    Args:
      real_scores: D's scores on real data, ``[batch]`` or ``[batch, 1]``.
      fake_scores: D's scores on generated data, ``[batch]`` or ``[batch, 1]``.
      reduction: ``"mean"`` or ``"none"``.

    Returns:
      The loss, a scalar or ``[batch]``.

    References:
      Lim & Ye 2017; Miyato et al. 2018 (SN-GAN), eq. 16.
    """
    r = as_logits(real_scores, name="real_scores")
    f = as_logits(fake_scores, name="fake_scores")
    return _reduce_pair(jax.nn.relu(1.0 - r), jax.nn.relu(1.0 + f), reduction)


def hinge_generator_loss(
    fake_scores: ArrayLike, *, reduction: Reduction = "mean"
) -> jax.Array:
    """The hinge generator loss: −E f.

    Args:
      fake_scores: D's scores on generated data, ``[batch]`` or ``[batch, 1]``.
      reduction: ``"mean"`` or ``"none"``.

    Returns:
      The loss, a scalar or ``[batch]``.
    """
    f = as_logits(fake_scores, name="fake_scores")
    return _reduce_one(-f, reduction)


def least_squares_discriminator_loss(
    real_scores: ArrayLike, fake_scores: ArrayLike, *, reduction: Reduction = "mean"
) -> jax.Array:
    """The least-squares discriminator loss: ½E(r − 1)² + ½E f².

    Args:
      real_scores: D's outputs on real data, ``[batch]`` or ``[batch, 1]``.
      fake_scores: D's outputs on generated data, ``[batch]`` or ``[batch, 1]``.
      reduction: ``"mean"`` or ``"none"``.

    Returns:
      The loss, a scalar or ``[batch]``.

    References:
      Mao et al. 2017, eq. 9 with a = 0, b = c = 1 (used by CycleGAN).
    """
    r = as_logits(real_scores, name="real_scores")
    f = as_logits(fake_scores, name="fake_scores")
    return _reduce_pair(0.5 * jnp.square(r - 1.0), 0.5 * jnp.square(f), reduction)


def least_squares_generator_loss(
    fake_scores: ArrayLike, *, reduction: Reduction = "mean"
) -> jax.Array:
    """The least-squares generator loss: ½E(f − 1)².

    Args:
      fake_scores: D's outputs on generated data, ``[batch]`` or ``[batch, 1]``.
      reduction: ``"mean"`` or ``"none"``.

    Returns:
      The loss, a scalar or ``[batch]``.

    References:
      Mao et al. 2017, eq. 9 with c = 1.
    """
    f = as_logits(fake_scores, name="fake_scores")
    return _reduce_one(0.5 * jnp.square(f - 1.0), reduction)


def cycle_consistency_loss(
    x: ArrayLike, x_reconstructed: ArrayLike, *, reduction: Reduction = "mean"
) -> jax.Array:
    """The CycleGAN cycle-consistency loss: E ‖x − x̂‖₁ as a mean absolute error.

    Per example, the absolute error is averaged over every non-batch axis (as
    PyTorch's ``L1Loss`` does in the reference implementation).

    Args:
      x: inputs, ``[batch, ...]``.
      x_reconstructed: F(G(x)), the same shape as ``x``.
      reduction: ``"mean"`` or ``"none"``.

    Returns:
      The loss, a scalar or ``[batch]``.

    References:
      Zhu et al. 2017, eq. 2.
    """
    x = jnp.asarray(x)
    x_reconstructed = jnp.asarray(x_reconstructed)
    if x.shape != x_reconstructed.shape:
        raise ValueError(
            f"x and x_reconstructed must have the same shape, got {x.shape} and"
            f" {x_reconstructed.shape}."
        )
    if x.ndim < 1:
        raise ValueError("x must have a leading batch axis.")
    if x.size == 0:
        raise ValueError(f"x is empty (shape {x.shape}): a mean over it is NaN.")
    per_example = jnp.mean(
        jnp.abs(x - x_reconstructed).reshape(x.shape[0], -1), axis=-1
    )
    return _reduce_one(per_example, reduction)


class LossFamily(NamedTuple):
    """A GAN game: the discriminator's and the generator's loss, both to be minimised.

    Pass one to ``jgan.steps.make_gan(loss=...)``; the named families are in
    :data:`LOSS_FAMILIES`. A family of your own gets the same metrics as the
    named ones: declare ``on_logits`` if the discriminator's outputs are
    logits of a probability (the step then reports ``d_real`` and ``d_fake``
    as mean probabilities σ(D)), and ``wasserstein`` if E D(x) − E D(G(z))
    estimates a Wasserstein distance (reported as ``wasserstein``).

    Attributes:
      d_loss: ``(real_outputs [batch], fake_outputs [batch]) -> scalar``.
      g_loss: ``(fake_outputs [batch]) -> scalar``.
      on_logits: the outputs are logits of the probability that x is real.
      wasserstein: the outputs are critic scores of a Wasserstein GAN.
    """

    d_loss: Callable[[jax.Array, jax.Array], jax.Array]
    g_loss: Callable[[jax.Array], jax.Array]
    on_logits: bool = False
    wasserstein: bool = False


LOSS_FAMILIES: dict[str, LossFamily] = {
    "minimax": LossFamily(minimax_discriminator_loss, minimax_generator_loss, on_logits=True),
    "non_saturating": LossFamily(
        minimax_discriminator_loss, non_saturating_generator_loss, on_logits=True
    ),
    "maximum_likelihood": LossFamily(
        minimax_discriminator_loss, maximum_likelihood_generator_loss, on_logits=True
    ),
    "wasserstein": LossFamily(
        wasserstein_discriminator_loss, wasserstein_generator_loss, wasserstein=True
    ),
    "hinge": LossFamily(hinge_discriminator_loss, hinge_generator_loss),
    "least_squares": LossFamily(least_squares_discriminator_loss, least_squares_generator_loss),
}


def loss_family(loss: str | LossFamily | tuple[Callable, Callable]) -> LossFamily:
    """The :class:`LossFamily` named by ``loss`` (a key of :data:`LOSS_FAMILIES`), or ``loss`` itself.

    Args:
      loss: a family name, a :class:`LossFamily`, or a pair ``(d_loss,
        g_loss)`` of callables (a family without ``on_logits`` or
        ``wasserstein``).

    Returns:
      The family.

    Raises:
      ValueError: an unknown name. TypeError: neither a name nor a family.
    """
    if isinstance(loss, LossFamily):
        if not (callable(loss.d_loss) and callable(loss.g_loss)):
            raise TypeError(f"loss: a LossFamily needs callable d_loss and g_loss, got {loss!r}.")
        check_bool(loss.on_logits, "LossFamily on_logits")
        check_bool(loss.wasserstein, "LossFamily wasserstein")
        return loss
    if isinstance(loss, str):
        if loss not in LOSS_FAMILIES:
            raise ValueError(f"Unknown loss {loss!r}; known: {sorted(LOSS_FAMILIES)}.")
        return LOSS_FAMILIES[loss]
    if isinstance(loss, (tuple, list)) and len(loss) == 2 and all(callable(fn) for fn in loss):
        return LossFamily(loss[0], loss[1])
    raise TypeError(
        f"loss must name a family ({sorted(LOSS_FAMILIES)}), be a jgan.losses.LossFamily or"
        f" a pair (d_loss(real_out, fake_out), g_loss(fake_out)) of callables; got"
        f" {type(loss).__name__} {loss!r}."
    )
