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

One-sided label smoothing (Salimans et al. 2016) is a keyword of the
discriminator losses that have a real label (``real_label``), and
:func:`one_sided_label_smoothing` builds the family that uses it.

The relativistic average losses (Jolicoeur-Martineau 2019) compare each
output with the mean output on the *other* batch, so the generator's loss needs
the discriminator's outputs on real data too: their families are marked
``relativistic`` and the step calls ``g_loss(fake_outputs, real_outputs)``.

References:
  Goodfellow et al., "Generative Adversarial Nets", 2014 (eq. 1, Algorithm 1).
  Goodfellow, "NIPS 2016 Tutorial: Generative Adversarial Networks", 2016, §3.2.
  Arjovsky, Chintala, Bottou, "Wasserstein GAN", 2017.
  Lim & Ye, "Geometric GAN", 2017 (hinge); Mao et al., "Least Squares GAN", 2017.
  Zhu et al., "Unpaired Image-to-Image Translation using Cycle-Consistent
  Adversarial Networks", 2017 (eq. 2).
  Salimans et al., "Improved Techniques for Training GANs", 2016, §3.4.
  Jolicoeur-Martineau, "The relativistic discriminator: a key element missing
  from standard GAN", ICLR 2019 (relativistic average GANs).
"""

from __future__ import annotations

import functools
import math

from typing import Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jgan._validate import check_bool, check_in_range, check_positive

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
    "relativistic_average_discriminator_loss",
    "relativistic_average_generator_loss",
    "relativistic_average_least_squares_discriminator_loss",
    "relativistic_average_least_squares_generator_loss",
    "relativistic_average_hinge_discriminator_loss",
    "relativistic_average_hinge_generator_loss",
    "one_sided_label_smoothing",
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
    real_logits: ArrayLike,
    fake_logits: ArrayLike,
    *,
    reduction: Reduction = "mean",
    real_label: float = 1.0,
) -> jax.Array:
    """Discriminator loss of the minimax game: −E log σ(r) − E log(1 − σ(f)).

    Shared by the minimax, non-saturating and maximum-likelihood families: they
    differ only in the generator's loss.

    With ``real_label`` α < 1 (one-sided label smoothing) the real term is the
    cross-entropy against the target α instead of 1:
    −α log σ(r) − (1 − α) log(1 − σ(r)) = softplus(−r) + (1 − α)·r, and the
    optimal discriminator becomes D*(x) = α·p_data(x) / (p_data(x) + p_g(x)):
    it stops short of certainty on real data. The fake targets stay 0
    (smoothing them to β > 0 would give D* = (α p_data + β p_g) / (p_data + p_g),
    which leaves samples where p_data ≈ 0 and p_g is large without an
    incentive to move towards the data).
    ``real_label=1.0`` is the plain loss, computed exactly as before.

    Args:
      real_logits: D's logits on real data, ``[batch]`` or ``[batch, 1]``.
      fake_logits: D's logits on generated data, ``[batch]`` or ``[batch, 1]``.
      reduction: ``"mean"`` or ``"none"`` (per-example real + fake terms).
      real_label: α in (0, 1], the target of the real examples (a Python
        float; Salimans et al. use 0.9).

    Returns:
      The loss, a scalar or ``[batch]``.

    References:
      Goodfellow et al. 2014, eq. 1 (negated: here it is minimised).
      Salimans et al. 2016, §3.4 (one-sided label smoothing).
    """
    real_label = _check_real_label(real_label)
    r = as_logits(real_logits, name="real_logits")
    f = as_logits(fake_logits, name="fake_logits")
    # −log σ(r) = softplus(−r);  −log(1 − σ(f)) = softplus(f).
    real_terms = jax.nn.softplus(-r)
    if real_label != 1.0:
        # −(1 − α) log(1 − σ(r)) = (1 − α) softplus(r) = (1 − α) (softplus(−r) + r).
        real_terms = real_terms + (1.0 - real_label) * r
    return _reduce_pair(real_terms, jax.nn.softplus(f), reduction)


def _check_real_label(real_label: float) -> float:
    """``real_label`` as a float in (0, 1]: a static hyper-parameter, not a traced value."""
    value = check_positive(real_label, "real_label")  # A number, finite and > 0.
    if value > 1.0:
        raise ValueError(
            "real_label must be in (0, 1] (the discriminator's target on real data; 0.9 is"
            f" usual, 1 is no smoothing), got {real_label}."
        )
    return value


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
    real_scores: ArrayLike,
    fake_scores: ArrayLike,
    *,
    reduction: Reduction = "mean",
    real_label: float = 1.0,
) -> jax.Array:
    """The least-squares discriminator loss: ½E(r − b)² + ½E f², b = ``real_label`` (default 1).

    The optimal discriminator is D*(x) = b·p_data(x) / (p_data(x) + p_g(x))
    (Mao et al., eq. 4 with a = 0), so ``real_label`` b = α < 1 is one-sided
    label smoothing in the sense of Salimans et al.: the same D* as the
    smoothed cross-entropy, in score space.

    Args:
      real_scores: D's outputs on real data, ``[batch]`` or ``[batch, 1]``.
      fake_scores: D's outputs on generated data, ``[batch]`` or ``[batch, 1]``.
      reduction: ``"mean"`` or ``"none"``.
      real_label: b in (0, 1], the target of the real examples (a Python float).

    Returns:
      The loss, a scalar or ``[batch]``.

    References:
      Mao et al. 2017, eq. 9 with a = 0, b = c = 1 (used by CycleGAN).
      Salimans et al. 2016, §3.4 (b < 1).
    """
    real_label = _check_real_label(real_label)
    r = as_logits(real_scores, name="real_scores")
    f = as_logits(fake_scores, name="fake_scores")
    return _reduce_pair(0.5 * jnp.square(r - real_label), 0.5 * jnp.square(f), reduction)


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


# ---------------------------------------------------------------------------
# Relativistic average losses (Jolicoeur-Martineau 2019).


def _other_batch_mean(outputs: jax.Array, axis_name: str | None, what: str) -> jax.Array:
    """E over the other batch: this device's rows, or every device's rows along ``axis_name``."""
    mean = jnp.mean(outputs)
    if axis_name is None:
        return mean
    try:
        lax.axis_size(axis_name)
    except NameError:
        raise ValueError(
            f"{what}: axis_name={axis_name!r} is not a mapped axis here; pass it only under"
            " jax.shard_map, jax.pmap or jax.vmap with that axis name (under jax.jit on"
            " sharded inputs the loss already sees the whole batch: pass axis_name=None)."
        ) from None
    # A mean of equal-sized per-device means is the mean over all rows.
    return lax.pmean(mean, axis_name)


def _relativistic_average(first, second, first_term, second_term, reduction, axis_name, names, what):
    """first_term(x − E y) over x in ``first`` plus second_term(y − E x) over y in ``second``."""
    x = as_logits(first, name=names[0])
    y = as_logits(second, name=names[1])
    x_relative = x - _other_batch_mean(y, axis_name, what)
    y_relative = y - _other_batch_mean(x, axis_name, what)
    return _reduce_pair(first_term(x_relative), second_term(y_relative), reduction)


def relativistic_average_discriminator_loss(
    real_logits: ArrayLike,
    fake_logits: ArrayLike,
    *,
    reduction: Reduction = "mean",
    axis_name: str | None = None,
) -> jax.Array:
    """The RaSGAN discriminator loss: −E_x log σ(C(x) − E C(G(z))) − E_z log(1 − σ(C(G(z)) − E C(x))).

    The discriminator estimates the probability that real data is more
    realistic than the average generated sample, and vice versa. Computed with
    softplus: E softplus(−(r − E f)) + E softplus(f − E r).

    Args:
      real_logits: C's raw outputs on real data, ``[batch]`` or ``[batch, 1]``.
      fake_logits: C's raw outputs on generated data, ``[batch]`` or ``[batch, 1]``.
      reduction: ``"mean"`` or ``"none"``. Element i of ``"none"`` is the
        real term of example i plus the fake term of example i (batches of
        equal size), each relative to the *whole* other batch's mean output:
        a batch statistic, so a row's value changes when other rows do. Their
        mean is the loss.
      axis_name: ``None`` (the default): the means E C over the other batch
        are over the rows this call sees. Under ``jax.shard_map``,
        ``jax.pmap`` or ``jax.vmap`` with the batch split over a mapped axis,
        pass its name to average over every device's rows (``lax.pmean`` of
        the per-device means; per-device batches of equal size): the loss,
        and the average of the per-device gradients, then equal those of the
        whole batch on one device. Under ``jax.jit`` on sharded inputs the
        loss sees the whole batch: leave it ``None``.

    Returns:
      The loss, a scalar or ``[batch]``.

    References:
      Jolicoeur-Martineau 2019, the relativistic average GAN losses: RaSGAN.
    """
    return _relativistic_average(
        real_logits, fake_logits, lambda x: jax.nn.softplus(-x), jax.nn.softplus,
        reduction, axis_name, ("real_logits", "fake_logits"), "relativistic_average_discriminator_loss")


def relativistic_average_generator_loss(
    fake_logits: ArrayLike,
    real_logits: ArrayLike,
    *,
    reduction: Reduction = "mean",
    axis_name: str | None = None,
) -> jax.Array:
    """The RaSGAN generator loss: −E_z log σ(C(G(z)) − E C(x)) − E_x log(1 − σ(C(x) − E C(G(z)))).

    The discriminator's loss with real and generated data swapped: the
    generator gets gradients from the real batch too (through E C(G(z)) in
    its real term), unlike in a standard GAN.

    Args:
      fake_logits: C's raw outputs on generated data, ``[batch]`` or ``[batch, 1]``.
      real_logits: C's raw outputs on real data, ``[batch]`` or ``[batch, 1]``.
      reduction: ``"mean"`` or ``"none"`` (per-example values relative to the
        other batch's mean; see :func:`relativistic_average_discriminator_loss`).
      axis_name: the mapped axis to average the other batch's mean over, or
        ``None``; see :func:`relativistic_average_discriminator_loss`.

    Returns:
      The loss, a scalar or ``[batch]``.

    References:
      Jolicoeur-Martineau 2019, the relativistic average GAN losses: RaSGAN.
    """
    return _relativistic_average(
        fake_logits, real_logits, lambda x: jax.nn.softplus(-x), jax.nn.softplus,
        reduction, axis_name, ("fake_logits", "real_logits"), "relativistic_average_generator_loss")


def relativistic_average_least_squares_discriminator_loss(
    real_scores: ArrayLike,
    fake_scores: ArrayLike,
    *,
    reduction: Reduction = "mean",
    axis_name: str | None = None,
) -> jax.Array:
    """The RaLSGAN discriminator loss: E_x (C(x) − E C(G(z)) − 1)² + E_z (C(G(z)) − E C(x) + 1)².

    As in the paper, without the ½ of :func:`least_squares_discriminator_loss`.

    Args:
      real_scores: C's raw outputs on real data, ``[batch]`` or ``[batch, 1]``.
      fake_scores: C's raw outputs on generated data, ``[batch]`` or ``[batch, 1]``.
      reduction: ``"mean"`` or ``"none"`` (per-example values relative to the
        other batch's mean; see :func:`relativistic_average_discriminator_loss`).
      axis_name: the mapped axis to average the other batch's mean over, or
        ``None``; see :func:`relativistic_average_discriminator_loss`.

    Returns:
      The loss, a scalar or ``[batch]``.

    References:
      Jolicoeur-Martineau 2019, the relativistic average GAN losses: RaLSGAN.
    """
    return _relativistic_average(
        real_scores, fake_scores, lambda x: jnp.square(x - 1.0), lambda x: jnp.square(x + 1.0),
        reduction, axis_name, ("real_scores", "fake_scores"),
        "relativistic_average_least_squares_discriminator_loss")


def relativistic_average_least_squares_generator_loss(
    fake_scores: ArrayLike,
    real_scores: ArrayLike,
    *,
    reduction: Reduction = "mean",
    axis_name: str | None = None,
) -> jax.Array:
    """The RaLSGAN generator loss: E_z (C(G(z)) − E C(x) − 1)² + E_x (C(x) − E C(G(z)) + 1)².

    Args:
      fake_scores: C's raw outputs on generated data, ``[batch]`` or ``[batch, 1]``.
      real_scores: C's raw outputs on real data, ``[batch]`` or ``[batch, 1]``.
      reduction: ``"mean"`` or ``"none"`` (per-example values relative to the
        other batch's mean; see :func:`relativistic_average_discriminator_loss`).
      axis_name: the mapped axis to average the other batch's mean over, or
        ``None``; see :func:`relativistic_average_discriminator_loss`.

    Returns:
      The loss, a scalar or ``[batch]``.

    References:
      Jolicoeur-Martineau 2019, the relativistic average GAN losses: RaLSGAN.
    """
    return _relativistic_average(
        fake_scores, real_scores, lambda x: jnp.square(x - 1.0), lambda x: jnp.square(x + 1.0),
        reduction, axis_name, ("fake_scores", "real_scores"),
        "relativistic_average_least_squares_generator_loss")


def relativistic_average_hinge_discriminator_loss(
    real_scores: ArrayLike,
    fake_scores: ArrayLike,
    *,
    reduction: Reduction = "mean",
    axis_name: str | None = None,
) -> jax.Array:
    """The RaHingeGAN discriminator loss: E_x relu(1 − (C(x) − E C(G(z)))) + E_z relu(1 + (C(G(z)) − E C(x))).

    Args:
      real_scores: C's raw outputs on real data, ``[batch]`` or ``[batch, 1]``.
      fake_scores: C's raw outputs on generated data, ``[batch]`` or ``[batch, 1]``.
      reduction: ``"mean"`` or ``"none"`` (per-example values relative to the
        other batch's mean; see :func:`relativistic_average_discriminator_loss`).
      axis_name: the mapped axis to average the other batch's mean over, or
        ``None``; see :func:`relativistic_average_discriminator_loss`.

    Returns:
      The loss, a scalar or ``[batch]``.

    References:
      Jolicoeur-Martineau 2019, the relativistic average GAN losses: RaHingeGAN.
    """
    return _relativistic_average(
        real_scores, fake_scores, lambda x: jax.nn.relu(1.0 - x), lambda x: jax.nn.relu(1.0 + x),
        reduction, axis_name, ("real_scores", "fake_scores"),
        "relativistic_average_hinge_discriminator_loss")


def relativistic_average_hinge_generator_loss(
    fake_scores: ArrayLike,
    real_scores: ArrayLike,
    *,
    reduction: Reduction = "mean",
    axis_name: str | None = None,
) -> jax.Array:
    """The RaHingeGAN generator loss: E_z relu(1 − (C(G(z)) − E C(x))) + E_x relu(1 + (C(x) − E C(G(z)))).

    Args:
      fake_scores: C's raw outputs on generated data, ``[batch]`` or ``[batch, 1]``.
      real_scores: C's raw outputs on real data, ``[batch]`` or ``[batch, 1]``.
      reduction: ``"mean"`` or ``"none"`` (per-example values relative to the
        other batch's mean; see :func:`relativistic_average_discriminator_loss`).
      axis_name: the mapped axis to average the other batch's mean over, or
        ``None``; see :func:`relativistic_average_discriminator_loss`.

    Returns:
      The loss, a scalar or ``[batch]``.

    References:
      Jolicoeur-Martineau 2019, the relativistic average GAN losses: RaHingeGAN.
    """
    return _relativistic_average(
        fake_scores, real_scores, lambda x: jax.nn.relu(1.0 - x), lambda x: jax.nn.relu(1.0 + x),
        reduction, axis_name, ("fake_scores", "real_scores"),
        "relativistic_average_hinge_generator_loss")


class LossFamily(NamedTuple):
    """A GAN game: the discriminator's and the generator's loss, both to be minimised.

    Pass one to ``jgan.steps.make_gan(loss=...)``; the named families are in
    :data:`LOSS_FAMILIES`. A family of your own gets the same metrics as the
    named ones: declare ``on_logits`` if the discriminator's outputs are
    logits of a probability (the step then reports ``d_real`` and ``d_fake``
    as mean probabilities σ(D)), and ``wasserstein`` if E D(x) − E D(G(z))
    estimates a Wasserstein distance (reported as ``wasserstein``). A
    ``relativistic`` family's generator loss needs the discriminator's outputs
    on the real batch too: the step calls ``g_loss(fake_outputs,
    real_outputs)``, and, under a mapped data-parallel axis, passes
    ``axis_name=`` to both losses (the relativistic losses here take it: the
    batch means E C(x) and E C(G(z)) are then over every device's rows).

    Attributes:
      d_loss: ``(real_outputs [batch], fake_outputs [batch]) -> scalar``.
      g_loss: ``(fake_outputs [batch]) -> scalar``, or
        ``(fake_outputs [batch], real_outputs [batch]) -> scalar`` when
        ``relativistic``.
      on_logits: the outputs are logits of the probability that x is real.
      wasserstein: the outputs are critic scores of a Wasserstein GAN.
      relativistic: ``g_loss`` takes the real outputs as its second argument.
    """

    d_loss: Callable[[jax.Array, jax.Array], jax.Array]
    g_loss: Callable[..., jax.Array]
    on_logits: bool = False
    wasserstein: bool = False
    relativistic: bool = False


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
    # C's raw outputs: σ(C(x)) alone is not a probability that x is real
    # (σ(C(x) − E C(G(z))) is), so on_logits stays False.
    "relativistic_average": LossFamily(
        relativistic_average_discriminator_loss, relativistic_average_generator_loss,
        relativistic=True,
    ),
    "relativistic_average_least_squares": LossFamily(
        relativistic_average_least_squares_discriminator_loss,
        relativistic_average_least_squares_generator_loss,
        relativistic=True,
    ),
    "relativistic_average_hinge": LossFamily(
        relativistic_average_hinge_discriminator_loss,
        relativistic_average_hinge_generator_loss,
        relativistic=True,
    ),
}

# The discriminator losses with a real label to smooth (keyword real_label).
_SMOOTHABLE = (minimax_discriminator_loss, least_squares_discriminator_loss)

# Why the other named families have none.
_NOT_SMOOTHABLE = {
    "wasserstein": "a Wasserstein critic's scores are not probabilities of being real",
    "hinge": "the hinge loss has a margin (r >= 1), not a target; moving the margin"
    " only rescales the scores",
    "relativistic": "a relativistic discriminator's target is the ordering of real and"
    " generated outputs, not a label of the real data",
}


def one_sided_label_smoothing(
    loss: str | LossFamily = "non_saturating", *, real_label: float = 0.9
) -> LossFamily:
    """The loss family ``loss`` with its discriminator's real targets set to α = ``real_label``.

    One-sided label smoothing (Salimans et al. 2016, §3.4): the discriminator
    is trained towards α (e.g. 0.9) on real data and 0 on generated data,
    which keeps it from growing over-confident (large logits whose gradients
    the generator cannot use). The optimal discriminator becomes
    D*(x) = α·p_data(x) / (p_data(x) + p_g(x)). Only the real side is
    smoothed: smoothing the fake targets to β > 0 would give
    D* = (α p_data + β p_g) / (p_data + p_g), which leaves samples where
    p_data ≈ 0 and p_g is large without an incentive to move towards the
    data. The generator's loss is unchanged.

    Families on logits (``"minimax"``, ``"non_saturating"``,
    ``"maximum_likelihood"``) use ``minimax_discriminator_loss(...,
    real_label=α)``; ``"least_squares"`` uses
    ``least_squares_discriminator_loss(..., real_label=α)`` (LSGAN's real
    target b = α, which gives the same D* in score space). Note that the
    maximum-likelihood generator's loss assumes exp(f) = p_data/p_g, which
    holds at the optimal *unsmoothed* discriminator only.

    Args:
      loss: a family name (above) or one of those :class:`LossFamily` values.
      real_label: α in (0, 1]; 1 gives the family unchanged in value.

    Returns:
      The :class:`LossFamily` to pass to ``jgan.steps.make_gan(loss=...)``.

    Raises:
      ValueError: a family without a real label (``"wasserstein"``,
        ``"hinge"``, the relativistic ones), an unknown name, or
        ``real_label`` outside (0, 1].
      TypeError: ``loss`` is neither a name nor a :class:`LossFamily`.

    References:
      Salimans, Goodfellow, Zaremba, Cheung, Radford, Chen, "Improved
      Techniques for Training GANs", NeurIPS 2016, §3.4.
    """
    real_label = _check_real_label(real_label)
    family = loss_family(loss)
    if not _is_smoothable(family):
        if family.relativistic:
            reason = _NOT_SMOOTHABLE["relativistic"]
        elif family.d_loss is wasserstein_discriminator_loss:
            reason = _NOT_SMOOTHABLE["wasserstein"]
        elif family.d_loss is hinge_discriminator_loss:
            reason = _NOT_SMOOTHABLE["hinge"]
        else:
            reason = (
                "its d_loss is not minimax_discriminator_loss or least_squares_discriminator_loss,"
                " the losses with a real_label; smoothing a smoothed family is refused too"
            )
        supported = sorted(name for name, fam in LOSS_FAMILIES.items() if _is_smoothable(fam))
        raise ValueError(
            f"one_sided_label_smoothing cannot smooth loss={loss!r}: {reason}. Supported: {supported}."
        )
    return family._replace(d_loss=functools.partial(family.d_loss, real_label=real_label))


def _is_smoothable(family: LossFamily) -> bool:
    return any(family.d_loss is fn for fn in _SMOOTHABLE)


def loss_family(loss: str | LossFamily | tuple[Callable, Callable]) -> LossFamily:
    """The :class:`LossFamily` named by ``loss`` (a key of :data:`LOSS_FAMILIES`), or ``loss`` itself.

    Args:
      loss: a family name, a :class:`LossFamily`, or a pair ``(d_loss,
        g_loss)`` of callables (a family without ``on_logits``,
        ``wasserstein`` or ``relativistic``).

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
        check_bool(loss.relativistic, "LossFamily relativistic")
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
