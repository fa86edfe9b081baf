"""Bad inputs to the whole public API: each one a clear error of the right type.

One table, one row per bad input: the call, the error type it must raise and
a fragment of the message, which names the offending argument (or what is
wrong with it). The calls are small and eager (tiny arrays, no training):
an error that a train step raises at trace time is met in one eager call
with tiny shapes, before the step compiles.

Rows marked ``xfail(strict=True)`` are bad inputs that the library does not
yet refuse clearly (a silent result, a NaN, or an internal error that does
not name the argument). Their error type and fragment are the behaviour they
should have, their reason the behaviour they have; once fixed, a row fails
as XPASS, so that its mark is removed.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx
from jax import lax

from jgan import augment, checkpoint, cyclegan, data, loop, losses, metrics, models, objectives
from jgan import penalties, presets, steps, unroll

KEY = jax.random.key(0)
NAN = float("nan")
INF = float("inf")
SGD = optax.sgd(0.1)


def xfail(reason: str):
    """A bad input the library does not refuse clearly yet (see the module docstring)."""
    return pytest.mark.xfail(strict=True, reason=reason)


def case(call, error, fragment, id, marks=()):
    """A row: ``call()`` raises ``error`` whose message contains ``fragment``."""
    return pytest.param(call, error, fragment, id=id, marks=marks)


def a(*shape, value=1.0, dtype=jnp.float32):
    """A constant array of ``shape``."""
    return jnp.full(shape, value, dtype)


def with_value(x, index, value):
    return jnp.asarray(x).at[index].set(value)


X4 = jax.random.normal(jax.random.key(1), (4, 2))
Y4 = jax.random.normal(jax.random.key(2), (4, 2)) + 1.0


# ---------------------------------------------------------------------------
# jgan.losses

D_LOSSES = [
    ("minimax_discriminator_loss", "real_logits", "fake_logits"),
    ("wasserstein_discriminator_loss", "real_scores", "fake_scores"),
    ("hinge_discriminator_loss", "real_scores", "fake_scores"),
    ("least_squares_discriminator_loss", "real_scores", "fake_scores"),
]
G_LOSSES = [
    ("minimax_generator_loss", "fake_logits"),
    ("non_saturating_generator_loss", "fake_logits"),
    ("maximum_likelihood_generator_loss", "fake_logits"),
    ("wasserstein_generator_loss", "fake_scores"),
    ("hinge_generator_loss", "fake_scores"),
    ("least_squares_generator_loss", "fake_scores"),
]


def _d_loss_cases():
    out = []
    for name, real, fake in D_LOSSES:
        fn = getattr(losses, name)
        out += [
            case(functools.partial(fn, a(4, 2), a(4)), ValueError,
                 f"{real} must have shape [batch] or [batch, 1]", f"losses.{name}-real[batch,2]"),
            case(functools.partial(fn, a(4), a(4, 2)), ValueError,
                 f"{fake} must have shape [batch] or [batch, 1]", f"losses.{name}-fake[batch,2]"),
            case(functools.partial(fn, a(0), a(4)), ValueError,
                 f"{real} is an empty batch", f"losses.{name}-empty-real"),
            case(functools.partial(fn, a(4), a(0)), ValueError,
                 f"{fake} is an empty batch", f"losses.{name}-empty-fake"),
            case(functools.partial(fn, a(4), a(4), reduction="sum"), ValueError,
                 "reduction must be 'mean' or 'none'", f"losses.{name}-reduction-sum"),
            case(functools.partial(fn, a(4), a(3), reduction="none"), ValueError,
                 "both batches must have the same size", f"losses.{name}-none-sizes-differ"),
        ]
    return out


def _g_loss_cases():
    out = []
    for name, fake in G_LOSSES:
        fn = getattr(losses, name)
        out += [
            case(functools.partial(fn, a(4, 2)), ValueError,
                 f"{fake} must have shape [batch] or [batch, 1]", f"losses.{name}-[batch,2]"),
            case(functools.partial(fn, a()), ValueError,
                 f"{fake} must have shape [batch] or [batch, 1]", f"losses.{name}-scalar"),
            case(functools.partial(fn, a(0)), ValueError,
                 f"{fake} is an empty batch", f"losses.{name}-empty"),
            case(functools.partial(fn, a(4), reduction=None), ValueError,
                 "reduction must be 'mean' or 'none'", f"losses.{name}-reduction-None"),
        ]
    return out


def _d_loss_pair(real, fake):
    return jnp.mean(real) - jnp.mean(fake)


def _g_loss_one(fake):
    return -jnp.mean(fake)


LOSS_CASES = _d_loss_cases() + _g_loss_cases() + [
    case(lambda: losses.minimax_discriminator_loss(a(4, 1, 1), a(4)), ValueError,
         "real_logits must have shape", "losses.minimax_discriminator_loss-rank3"),
    case(lambda: losses.cycle_consistency_loss(a(2, 3), a(2, 4)), ValueError,
         "x and x_reconstructed must have the same shape", "losses.cycle_consistency_loss-shapes"),
    case(lambda: losses.cycle_consistency_loss(a(), a()), ValueError,
         "x must have a leading batch axis", "losses.cycle_consistency_loss-scalar"),
    case(lambda: losses.cycle_consistency_loss(a(0, 3), a(0, 3)), ValueError,
         "x is empty", "losses.cycle_consistency_loss-empty"),
    case(lambda: losses.cycle_consistency_loss(a(2, 0), a(2, 0)), ValueError,
         "x is empty", "losses.cycle_consistency_loss-empty-features"),
    case(lambda: losses.cycle_consistency_loss(a(2, 3), a(2, 3), reduction="sum"), ValueError,
         "reduction must be", "losses.cycle_consistency_loss-reduction"),
    case(lambda: losses.as_logits(a(0, 1)), ValueError, "is an empty batch", "losses.as_logits-empty-[0,1]"),
    case(lambda: losses.minimax_discriminator_loss(a(4), a(0, 1)), ValueError,
         "fake_logits is an empty batch", "losses.minimax_discriminator_loss-empty-fake-[0,1]"),
    case(lambda: losses.as_logits(a(3, 2), name="my_scores"), ValueError,
         "my_scores must have shape", "losses.as_logits-name"),
    case(lambda: losses.loss_family("wgan"), ValueError,
         "Unknown loss 'wgan'", "losses.loss_family-unknown-name"),
    case(lambda: losses.loss_family(3), TypeError,
         "loss must name a family", "losses.loss_family-int"),
    case(lambda: losses.loss_family(None), TypeError,
         "loss must name a family", "losses.loss_family-None"),
    case(lambda: losses.loss_family((_d_loss_pair,)), TypeError,
         "loss must name a family", "losses.loss_family-one-callable"),
    case(lambda: losses.loss_family((_d_loss_pair, "g")), TypeError,
         "loss must name a family", "losses.loss_family-pair-not-callable"),
    case(lambda: losses.loss_family(losses.LossFamily(1, 2)), TypeError,
         "a LossFamily needs callable d_loss and g_loss", "losses.loss_family-LossFamily-ints"),
    case(lambda: losses.loss_family(losses.LossFamily(_d_loss_pair, _g_loss_one, on_logits="no")),
         TypeError, "on_logits must be a bool", "losses.loss_family-on_logits-str"),
    case(lambda: losses.maximum_likelihood_generator_loss(a(4), max_logit="30"), TypeError,
         "max_logit", "losses.maximum_likelihood_generator_loss-max_logit-str"),
    case(lambda: losses.maximum_likelihood_generator_loss(a(4), max_logit=True), TypeError,
         "max_logit", "losses.maximum_likelihood_generator_loss-max_logit-bool"),
    case(lambda: losses.maximum_likelihood_generator_loss(a(4), max_logit=NAN), ValueError,
         "max_logit", "losses.maximum_likelihood_generator_loss-max_logit-nan"),
    case(lambda: losses.non_saturating_generator_loss(jnp.array([True, False])), TypeError, "fake_logits",
         "losses.non_saturating_generator_loss-bool-logits"),
]


# ---------------------------------------------------------------------------
# jgan.penalties


def _critic(x):
    return jnp.sum(x, axis=tuple(range(1, x.ndim)))


def _critic_wide(x):
    return jnp.stack([_critic(x), _critic(x)], axis=1)  # [batch, 2]


def _critic_short(x):
    return _critic(x)[:2]


PENALTY_CASES = [
    case(lambda: penalties.interpolate(a(4, 2), a(4, 3), KEY), ValueError,
         "real and fake must have the same shape", "penalties.interpolate-shapes"),
    case(lambda: penalties.interpolate(a(), a(), KEY), ValueError,
         "real and fake need a leading batch axis", "penalties.interpolate-scalar"),
    case(lambda: penalties.gradient_penalty(_critic, a(4, 2), a(3, 2), KEY), ValueError,
         "real and fake must have the same shape", "penalties.gradient_penalty-batch-sizes"),
    case(lambda: penalties.gradient_penalty(_critic_wide, a(4, 2), a(4, 2), KEY), ValueError,
         "critic_fn(x) must have shape [batch] or [batch, 1]", "penalties.gradient_penalty-critic[batch,2]"),
    case(lambda: penalties.gradient_penalty(_critic_short, a(4, 2), a(4, 2), KEY), ValueError,
         "critic_fn returned 2 scores for a batch of 4", "penalties.gradient_penalty-critic-batch"),
    case(lambda: penalties.gradient_penalty(_critic, a(0, 2), a(0, 2), KEY), ValueError,
         "critic_fn(x) is an empty batch", "penalties.gradient_penalty-empty"),
    case(lambda: penalties.gradient_penalty(_critic, a(4, 2), a(4, 2), KEY, one_sided="False"),
         TypeError, "one_sided must be a bool", "penalties.gradient_penalty-one_sided-str"),
    case(lambda: penalties.gradient_penalty(_critic, a(4, 2), a(4, 2), KEY, target=-1.0),
         ValueError, "target must be >= 0", "penalties.gradient_penalty-target-negative"),
    case(lambda: penalties.gradient_penalty(_critic, a(4, 2), a(4, 2), KEY, target="1"),
         TypeError, "target must be a number", "penalties.gradient_penalty-target-str"),
    case(lambda: penalties.gradient_norm_penalty(_critic_wide, a(4, 2)), ValueError,
         "critic_fn(x) must have shape", "penalties.gradient_norm_penalty-critic[batch,2]"),
    case(lambda: penalties.gradient_norm_penalty(_critic, a(0, 3)), ValueError,
         "critic_fn(x) is an empty batch", "penalties.gradient_norm_penalty-empty"),
    case(lambda: penalties.gradient_norm_penalty(3, a(4, 2)), TypeError,
         "critic_fn must be a callable", "penalties.gradient_norm_penalty-critic-int"),
    case(lambda: penalties.r1_penalty(_critic_wide, a(4, 2)), ValueError,
         "critic_fn(x) must have shape", "penalties.r1_penalty-critic[batch,2]"),
    case(lambda: penalties.r1_penalty(_critic_short, a(4, 2)), ValueError,
         "critic_fn returned 2 scores", "penalties.r1_penalty-critic-batch"),
    case(lambda: penalties.r1_penalty(_critic, a(0, 2)), ValueError,
         "critic_fn(x) is an empty batch", "penalties.r1_penalty-empty"),
    case(lambda: penalties.weight_clipping(-0.01), ValueError,
         "weight_clipping c must be >= 0", "penalties.weight_clipping-negative"),
    case(lambda: penalties.weight_clipping("0.01"), TypeError,
         "weight_clipping c must be a number", "penalties.weight_clipping-str"),
    case(lambda: penalties.weight_clipping(True), TypeError,
         "weight_clipping c must be a number", "penalties.weight_clipping-bool"),
    case(lambda: penalties.weight_clipping(NAN), ValueError,
         "weight_clipping c must be >= 0 and finite", "penalties.weight_clipping-nan"),
    case(lambda: penalties.weight_clipping(INF), ValueError,
         "weight_clipping c must be >= 0 and finite", "penalties.weight_clipping-inf"),
    case(lambda: penalties.weight_clipping(0.01).update(a(2), penalties.WeightClippingState()),
         ValueError, "weight_clipping needs params", "penalties.weight_clipping-update-no-params"),
    case(lambda: penalties.GradientPenalty(-1.0), ValueError,
         "GradientPenalty weight must be >= 0", "penalties.GradientPenalty-weight-negative"),
    case(lambda: penalties.GradientPenalty("10"), TypeError,
         "GradientPenalty weight must be a number", "penalties.GradientPenalty-weight-str"),
    case(lambda: penalties.GradientPenalty(True), TypeError,
         "GradientPenalty weight must be a number", "penalties.GradientPenalty-weight-bool"),
    case(lambda: penalties.GradientPenalty(INF), ValueError,
         "GradientPenalty weight must be >= 0 and finite", "penalties.GradientPenalty-weight-inf"),
    case(lambda: penalties.GradientPenalty(10.0, target=-1.0), ValueError,
         "GradientPenalty target must be >= 0", "penalties.GradientPenalty-target-negative"),
    case(lambda: penalties.GradientPenalty(10.0, target=None), TypeError,
         "GradientPenalty target must be a number", "penalties.GradientPenalty-target-None"),
    case(lambda: penalties.GradientPenalty(10.0, one_sided="False"), TypeError,
         "GradientPenalty one_sided must be a bool", "penalties.GradientPenalty-one_sided-str"),
    case(lambda: penalties.GradientPenalty(10.0, one_sided=1), TypeError,
         "GradientPenalty one_sided must be a bool", "penalties.GradientPenalty-one_sided-int"),
    case(lambda: penalties.R1(-1.0), ValueError, "R1 gamma must be >= 0", "penalties.R1-negative"),
    case(lambda: penalties.R1("1"), TypeError, "R1 gamma must be a number", "penalties.R1-str"),
    case(lambda: penalties.R1(NAN), ValueError, "R1 gamma must be >= 0 and finite", "penalties.R1-nan"),
    case(lambda: penalties.R2(True), TypeError, "R2 gamma must be a number", "penalties.R2-bool"),
    case(lambda: penalties.R2(-INF), ValueError, "R2 gamma must be >= 0", "penalties.R2-minus-inf"),
    case(lambda: penalties.LazyR1(1.0, every=0), ValueError, "LazyR1 every must be >= 1", "penalties.LazyR1-every-zero"),
    case(lambda: penalties.LazyR1(1.0, every=2.0), TypeError, "LazyR1 every must be a Python int",
         "penalties.LazyR1-every-float"),
    case(lambda: penalties.LazyR1(-1.0), ValueError, "LazyR1 gamma must be >= 0", "penalties.LazyR1-gamma-negative"),
    case(lambda: penalties.LeCam(0.3, decay=1.0), ValueError, "LeCam decay must be in [0.0, 1.0)",
         "penalties.LeCam-decay-one"),
    case(lambda: penalties.LeCam(0.3, decay=-0.1), ValueError, "LeCam decay must be in [0.0, 1.0)",
         "penalties.LeCam-decay-negative"),
    case(lambda: penalties.LeCam(0.3, decay="0.99"), TypeError, "LeCam decay must be a number",
         "penalties.LeCam-decay-str"),
    case(lambda: penalties.LeCam(-0.3), ValueError, "LeCam weight must be >= 0", "penalties.LeCam-weight-negative"),
    case(lambda: penalties.LeCam(0.3, one_sided="yes"), TypeError, "LeCam one_sided must be a bool",
         "penalties.LeCam-one_sided-str"),
    case(lambda: type("Empty", (penalties.DiscriminatorRegularizer,), {})(), TypeError,
         "Can't instantiate Empty: a DiscriminatorRegularizer implements __call__",
         "penalties.DiscriminatorRegularizer-subclass-empty"),
]


# ---------------------------------------------------------------------------
# jgan.unroll


def _unroll(**kw):
    params = a(2)
    args = dict(loss_fn=lambda p: jnp.sum(p**2), optimizer=SGD, steps=1)
    args.update(kw)
    return unroll.unroll_discriminator(params, SGD.init(params), **args)


def _update_with_root_in_cond(updates, state, params=None):
    out = lax.cond(jnp.sum(updates) > 0, jnp.sqrt, lambda u: u, updates)
    return out, state


UNROLL_CASES = [
    case(lambda: _unroll(steps=1.0), TypeError, "steps must be a Python int",
         "unroll.unroll_discriminator-steps-float"),
    case(lambda: _unroll(steps=-1), ValueError, "steps must be >= 0", "unroll.unroll_discriminator-steps-negative"),
    case(lambda: _unroll(steps=True), TypeError, "steps must be a Python int",
         "unroll.unroll_discriminator-steps-bool"),
    case(lambda: _unroll(steps=jnp.int32(2)), TypeError, "steps must be a Python int",
         "unroll.unroll_discriminator-steps-array"),
    case(lambda: _unroll(first_order="no"), TypeError, "first_order must be a bool",
         "unroll.unroll_discriminator-first_order-str"),
    case(lambda: _unroll(optimizer="adam"), TypeError, "optimizer must be an optax.GradientTransformation",
         "unroll.unroll_discriminator-optimizer-str"),
    case(lambda: _unroll(optimizer=optax.adam), TypeError, "optimizer must be an optax.GradientTransformation",
         "unroll.unroll_discriminator-optimizer-factory"),
    case(lambda: _unroll(loss_fn=3), TypeError, "loss_fn must be a callable",
         "unroll.unroll_discriminator-loss_fn-int"),
    case(lambda: _unroll(remat="yes"), TypeError, "remat must be a bool, 'auto' or a jax.checkpoint policy",
         "unroll.unroll_discriminator-remat-str"),
    case(lambda: unroll.Unrolled(1.5), TypeError, "Unrolled steps must be a Python int", "unroll.Unrolled-float"),
    case(lambda: unroll.Unrolled(-1), ValueError, "Unrolled steps must be >= 0", "unroll.Unrolled-negative"),
    case(lambda: unroll.Unrolled(True), TypeError, "Unrolled steps must be a Python int", "unroll.Unrolled-bool"),
    case(lambda: unroll.Unrolled("5"), TypeError, "Unrolled steps must be a Python int", "unroll.Unrolled-str"),
    case(lambda: unroll.Unrolled(5, first_order="no"), TypeError, "Unrolled first_order must be a bool",
         "unroll.Unrolled-first_order-str"),
    case(lambda: unroll.Unrolled(5, remat=3), TypeError, "remat must be a bool, 'auto' or a jax.checkpoint policy",
         "unroll.Unrolled-remat-int"),
    case(lambda: unroll.safe_root_update(_update_with_root_in_cond)(a(2), (), None), TypeError,
         "square root inside `cond`", "unroll.safe_root_update-root-under-cond"),
    case(lambda: unroll.safe_root_update(3), TypeError, "update must be a callable",
         "unroll.safe_root_update-int"),
]


# ---------------------------------------------------------------------------
# jgan.objectives

OBJECTIVE_CASES = [
    case(lambda: objectives.Adversarial(-1.0), ValueError, "Adversarial weight must be >= 0",
         "objectives.Adversarial-negative"),
    case(lambda: objectives.Adversarial("1"), TypeError, "Adversarial weight must be a number",
         "objectives.Adversarial-str"),
    case(lambda: objectives.Adversarial(True), TypeError, "Adversarial weight must be a number",
         "objectives.Adversarial-bool"),
    case(lambda: objectives.Adversarial(NAN), ValueError, "Adversarial weight must be >= 0 and finite",
         "objectives.Adversarial-nan"),
    case(lambda: objectives.SinkhornDivergence(-0.5), ValueError, "SinkhornDivergence weight must be >= 0",
         "objectives.SinkhornDivergence-weight-negative"),
    case(lambda: objectives.SinkhornDivergence(None), TypeError, "SinkhornDivergence weight must be a number",
         "objectives.SinkhornDivergence-weight-None"),
    case(lambda: objectives.SinkhornDivergence(epsilon=0.0), ValueError,
         "SinkhornDivergence epsilon must be > 0", "objectives.SinkhornDivergence-epsilon-zero"),
    case(lambda: objectives.SinkhornDivergence(epsilon="0.1"), TypeError,
         "SinkhornDivergence epsilon must be a number", "objectives.SinkhornDivergence-epsilon-str"),
    case(lambda: objectives.SinkhornDivergence(epsilon=INF), ValueError,
         "SinkhornDivergence epsilon must be > 0 and finite", "objectives.SinkhornDivergence-epsilon-inf"),
    case(lambda: objectives.SinkhornDivergence(iterations=0), ValueError,
         "SinkhornDivergence iterations must be >= 1", "objectives.SinkhornDivergence-iterations-zero"),
    case(lambda: objectives.SinkhornDivergence(iterations=10.0), TypeError,
         "SinkhornDivergence iterations must be a Python int", "objectives.SinkhornDivergence-iterations-float"),
    case(lambda: objectives.SinkhornDivergence(iterations=True), TypeError,
         "SinkhornDivergence iterations must be a Python int", "objectives.SinkhornDivergence-iterations-bool"),
]


# ---------------------------------------------------------------------------
# jgan.steps: make_gan and the GAN's init, step and sample


def _g(p, z):
    return p * z


def _d(p, x):
    return p * jnp.sum(x, axis=tuple(range(1, x.ndim)))


def _g_stateful(p, s, z):
    return p * z, s


def _d_stateful(p, s, x):
    return _d(p, x), s


def _g_labels(p, z, labels):
    return p * z


def _d_labels(p, x, labels):
    return _d(p, x)


class _Crop(augment.Augmentation):
    """An augmentation that drops features: not the discriminator's input shape."""

    def __call__(self, x, *, key, draw):
        return x[..., :1]


def _gan(**kw):
    args = dict(generator=_g, discriminator=_d, g_optimizer=SGD, d_optimizer=SGD, prior=2)
    args.update(kw)
    return steps.make_gan(**args)


def _init(gan, **kw):
    return gan.init(KEY, jnp.float32(1.0), jnp.float32(1.0), **kw)


def _step(batch, state=None, **kw):
    gan = _gan(**kw)
    return gan.step(_init(gan) if state is None else state, batch)


def _sample(n, labels=None, **kw):
    gan = _gan(**kw)
    return gan.sample(_init(gan), KEY, n, labels=labels)


MAKE_GAN_CASES = [
    case(lambda: _gan(generator=None), TypeError, "generator must be a callable", "steps.make_gan-generator-None"),
    case(lambda: _gan(discriminator=3), TypeError, "discriminator must be a callable",
         "steps.make_gan-discriminator-int"),
    case(lambda: _gan(g_optimizer="adam"), TypeError, "g_optimizer must be an optax.GradientTransformation",
         "steps.make_gan-g_optimizer-str"),
    case(lambda: _gan(d_optimizer=None), TypeError, "d_optimizer must be an optax.GradientTransformation",
         "steps.make_gan-d_optimizer-None"),
    case(lambda: _gan(d_optimizer=optax.adam), TypeError, "d_optimizer must be an optax.GradientTransformation",
         "steps.make_gan-d_optimizer-factory"),
    case(lambda: _gan(prior="2"), TypeError, "prior must be an int", "steps.make_gan-prior-str"),
    case(lambda: _gan(prior=2.0), TypeError, "prior must be an int", "steps.make_gan-prior-float"),
    case(lambda: _gan(prior=True), TypeError, "prior must be an int", "steps.make_gan-prior-bool"),
    case(lambda: _gan(prior=0), ValueError, "prior (a latent dimension) must be >= 1", "steps.make_gan-prior-zero"),
    case(lambda: _gan(loss="wgan"), ValueError, "Unknown loss 'wgan'", "steps.make_gan-loss-unknown"),
    case(lambda: _gan(loss=None), TypeError, "loss must name a family", "steps.make_gan-loss-None"),
    case(lambda: _gan(d_steps=0), ValueError, "d_steps must be >= 1", "steps.make_gan-d_steps-zero"),
    case(lambda: _gan(d_steps=2.0), TypeError, "d_steps must be a Python int", "steps.make_gan-d_steps-float"),
    case(lambda: _gan(d_steps=True), TypeError, "d_steps must be a Python int", "steps.make_gan-d_steps-bool"),
    case(lambda: _gan(batches="stacked"), ValueError, "batches must be 'shared'", "steps.make_gan-batches-unknown"),
    case(lambda: _gan(d_regularizers=penalties.GradientPenalty(10.0)), TypeError,
         "d_regularizers must be a list or tuple", "steps.make_gan-d_regularizers-bare-part"),
    case(lambda: _gan(d_regularizers="gp"), TypeError, "d_regularizers must be a list or tuple",
         "steps.make_gan-d_regularizers-str"),
    case(lambda: _gan(d_regularizers=[10.0]), TypeError, "d_regularizers[0] must be a",
         "steps.make_gan-d_regularizers-float-item"),
    case(lambda: _gan(g_objectives=[]), ValueError, "g_objectives is empty", "steps.make_gan-g_objectives-empty"),
    case(lambda: _gan(g_objectives=objectives.Adversarial()), TypeError, "g_objectives must be a list or tuple",
         "steps.make_gan-g_objectives-bare-part"),
    case(lambda: _gan(g_objectives=[objectives.Adversarial(), "sinkhorn"]), TypeError,
         "g_objectives[1] must be a", "steps.make_gan-g_objectives-str-item"),
    case(lambda: _gan(unroll=5), TypeError, "unroll must be a jgan.unroll.Unrolled", "steps.make_gan-unroll-int"),
    case(lambda: _gan(augment=lambda x: x), TypeError, "augment must be a jgan.augment.Augmentation",
         "steps.make_gan-augment-function"),
    case(lambda: _gan(augment="diffaugment"), TypeError, "augment must be a jgan.augment.Augmentation",
         "steps.make_gan-augment-str"),
    case(lambda: _gan(pack=0), ValueError, "pack must be >= 1", "steps.make_gan-pack-zero"),
    case(lambda: _gan(pack=2.0), TypeError, "pack must be a Python int", "steps.make_gan-pack-float"),
    case(lambda: _gan(pack=True), TypeError, "pack must be a Python int", "steps.make_gan-pack-bool"),
    case(lambda: _gan(ema_decay=1.0), ValueError, "ema_decay must be in [0.0, 1.0)", "steps.make_gan-ema_decay-one"),
    case(lambda: _gan(ema_decay=-0.1), ValueError, "ema_decay must be in", "steps.make_gan-ema_decay-negative"),
    case(lambda: _gan(ema_decay=NAN), ValueError, "ema_decay must be in", "steps.make_gan-ema_decay-nan"),
    case(lambda: _gan(ema_decay="0.99"), TypeError, "ema_decay must be a number", "steps.make_gan-ema_decay-str"),
    case(lambda: _gan(ema_decay=True), TypeError, "ema_decay must be a number", "steps.make_gan-ema_decay-bool"),
    case(lambda: _gan(axis_name=0), TypeError, "axis_name must be a str or None", "steps.make_gan-axis_name-int"),
    case(lambda: _gan(g_stateful="yes"), TypeError, "g_stateful must be a bool", "steps.make_gan-g_stateful-str"),
    case(lambda: _gan(d_stateful=1), TypeError, "d_stateful must be a bool", "steps.make_gan-d_stateful-int"),
    case(lambda: _gan(sample_generator=3), TypeError, "sample_generator must be a callable",
         "steps.make_gan-sample_generator-int"),
]


def _dict_state():
    return dict(_init(_gan())._asdict())


GAN_CALL_CASES = [
    # init
    case(lambda: _init(_gan(), g_model_state={}), ValueError,
         "g_model_state was given but the generator is stateless", "steps.GAN.init-g_model_state-stateless"),
    case(lambda: _init(_gan(discriminator=_d_stateful, d_stateful=True)), ValueError,
         "pass its d_model_state to init", "steps.GAN.init-d_model_state-missing"),
    case(lambda: _gan().init(None, jnp.float32(1.0), jnp.float32(1.0)), TypeError, "key must be a",
         "steps.GAN.init-key-None"),
    # step: the state
    case(lambda: _step(X4, state=_dict_state()), TypeError, "state must be a GANState", "steps.GAN.step-state-dict"),
    case(lambda: _step(X4, state=_init(_gan()), ema_decay=0.9), ValueError,
         "ema_decay is set but the state has no g_ema_params", "steps.GAN.step-state-without-ema"),
    case(lambda: _step(X4, state=_init(_gan(ema_decay=0.9))), ValueError,
         "The state keeps g_ema_params but the step has no ema_decay", "steps.GAN.step-state-with-ema"),
    case(lambda: _step(X4, state=_init(_gan()), generator=_g_stateful, g_stateful=True), ValueError,
         "g_stateful=True but the state has no g_model_state", "steps.GAN.step-g_model_state-missing"),
    case(lambda: _step(X4, state=_init(_gan())._replace(d_model_state={})), ValueError,
         "The state holds a d_model_state but d_stateful=False", "steps.GAN.step-d_model_state-extra"),
    case(lambda: _step(X4, state=_init(_gan()), d_regularizers=[penalties.LeCam(0.3)]), ValueError,
         "This GAN's regularisers keep a state (LeCam) but the state has no d_regularizer_state",
         "steps.GAN.step-d_regularizer_state-missing"),
    case(lambda: _step(X4, state=_init(_gan(d_regularizers=[penalties.LeCam(0.3)]))), ValueError,
         "The state holds a d_regularizer_state but no regulariser of this GAN keeps a state",
         "steps.GAN.step-d_regularizer_state-extra"),
    case(lambda: _step(X4, state=_init(_gan(d_regularizers=[penalties.LeCam(0.3)])),
                       d_regularizers=[penalties.R1(1.0), penalties.LeCam(0.3)]), ValueError,
         "The state's d_regularizer_state does not fit this GAN's regularisers (R1, LeCam)",
         "steps.GAN.step-d_regularizer_state-mismatch"),
    case(lambda: _step(X4, augment=_Crop()), ValueError,
         "augment (_Crop) must return its input's shape (4, 2), got (4, 1)", "steps.GAN.step-augment-shape"),
    # step: the batch
    case(lambda: _step(a(4, 3)), ValueError, "Generated samples (4, 2) and real samples (4, 3) differ in shape",
         "steps.GAN.step-batch-features"),
    case(lambda: _step(a(4)), ValueError, "differ in shape", "steps.GAN.step-batch-rank1"),
    case(lambda: _step(a(0, 2)), ValueError, "The real batch is empty", "steps.GAN.step-batch-empty"),
    case(lambda: _step(a(3, 4, 2), d_steps=2, batches="sliced"), ValueError,
         "batches='sliced' takes real data [d_steps=2, batch, ...]", "steps.GAN.step-sliced-wrong-k"),
    case(lambda: _step(a(2, 0, 2), d_steps=2, batches="sliced"), ValueError,
         "The real batch is empty", "steps.GAN.step-sliced-empty"),
    case(lambda: _step(a(2, 4, 2), d_steps=2), ValueError, "differ in shape", "steps.GAN.step-shared-given-slices"),
    case(lambda: _step({"y": X4}), ValueError, "A dict batch holds 'x'", "steps.GAN.step-dict-without-x"),
    case(lambda: _step({"x": X4, "labels": a(4)}), ValueError, "A dict batch holds 'x'",
         "steps.GAN.step-dict-unknown-key"),
    case(lambda: _step({"x": X4, "label": jnp.zeros(3, jnp.int32)}, generator=_g_labels, discriminator=_d_labels),
         ValueError, "differ in batch size", "steps.GAN.step-labels-batch"),
    case(lambda: _step({"x": a(2, 4, 2), "label": jnp.zeros((2, 3), jnp.int32)}, generator=_g_labels,
                       discriminator=_d_labels, d_steps=2, batches="sliced"),
         ValueError, "batches='sliced' takes labels [d_steps, batch, ...]", "steps.GAN.step-sliced-labels"),
    case(lambda: _step({"x": X4, "label": jnp.zeros(4, jnp.int32)}, generator=_g_labels,
                       discriminator=_d_labels, pack=2),
         ValueError, "pack > 1 is not supported with conditional labels", "steps.GAN.step-pack-with-labels"),
    case(lambda: _step(a(4, 2), pack=3), ValueError, "pack=3 must divide the batch size", "steps.GAN.step-pack-divide"),
    case(lambda: _step(X4, axis_name="batch"), ValueError,
         "built with axis_name='batch', but it runs outside a mapped axis of that name", "steps.GAN.step-axis-unmapped"),
    case(lambda: _step(None), TypeError, "batch", "steps.GAN.step-batch-None"),
    # step: the networks
    case(lambda: _step(X4, discriminator=lambda p, x: jnp.stack([_d(p, x)] * 2, 1)), ValueError,
         "The discriminator's output on real samples must have shape [batch] or [batch, 1]",
         "steps.GAN.step-discriminator[batch,2]"),
    case(lambda: _step(X4, discriminator=lambda p, x: _d(p, x)[:2]), ValueError,
         "The discriminator returned 2 outputs for 4 real inputs", "steps.GAN.step-discriminator-batch"),
    case(lambda: _step(X4, generator=lambda p, z: p * z[:, :1]), ValueError,
         "Generated samples (4, 1) and real samples (4, 2) differ", "steps.GAN.step-generator-shape"),
    # sample
    case(lambda: _sample(0), ValueError, "n must be >= 1", "steps.GAN.sample-n-zero"),
    case(lambda: _sample(4.0), TypeError, "n must be a Python int", "steps.GAN.sample-n-float"),
    case(lambda: _sample(True), TypeError, "n must be a Python int", "steps.GAN.sample-n-bool"),
    case(lambda: _sample(jnp.int32(4)), TypeError, "n must be a Python int", "steps.GAN.sample-n-array"),
    case(lambda: _gan().sample(_dict_state(), KEY, 4), TypeError, "state must be a GANState",
         "steps.GAN.sample-state-dict"),
    case(lambda: _sample(4, labels=jnp.zeros(3, jnp.int32), generator=_g_labels, discriminator=_d_labels),
         ValueError, "labels must have n = 4 rows", "steps.GAN.sample-labels-rows"),
]


# make_train_step / init_state (the earlier keyword interface)


def _legacy(**kw):
    args = dict(generator=_g, discriminator=_d, g_optimizer=SGD, d_optimizer=SGD, latent_dim=2)
    args.update(kw)
    return steps.make_train_step(**args)


def _legacy_state(**kw):
    args = dict(g_optimizer=SGD, d_optimizer=SGD)
    args.update(kw)
    return steps.init_state(KEY, jnp.float32(1.0), jnp.float32(1.0), **args)


LEGACY_CASES = [
    case(lambda: _legacy(unroll_steps=-1), ValueError, "unroll_steps must be >= 0",
         "steps.make_train_step-unroll_steps-negative"),
    case(lambda: _legacy(unroll_steps=1.5), TypeError, "unroll_steps must be a Python int",
         "steps.make_train_step-unroll_steps-float"),
    case(lambda: _legacy(unroll_first_order="no"), TypeError, "unroll_first_order must be a bool",
         "steps.make_train_step-unroll_first_order-str"),
    case(lambda: _legacy(unroll_steps=2, unroll_remat="yes"), TypeError, "remat must be a bool",
         "steps.make_train_step-unroll_remat-str"),
    case(lambda: _legacy(gradient_penalty="10"), TypeError, "gradient_penalty must be a number",
         "steps.make_train_step-gradient_penalty-str"),
    case(lambda: _legacy(gradient_penalty=True), TypeError, "gradient_penalty must be a number",
         "steps.make_train_step-gradient_penalty-bool"),
    case(lambda: _legacy(gradient_penalty=INF), ValueError, "gradient_penalty must be >= 0 and finite",
         "steps.make_train_step-gradient_penalty-inf"),
    case(lambda: _legacy(gradient_penalty=10.0, gradient_penalty_target=-1.0), ValueError,
         "gradient_penalty_target must be >= 0", "steps.make_train_step-gradient_penalty_target-negative"),
    case(lambda: _legacy(gradient_penalty=10.0, gradient_penalty_one_sided="False"), TypeError,
         "gradient_penalty_one_sided must be a bool", "steps.make_train_step-gradient_penalty_one_sided-str"),
    case(lambda: _legacy(r1=-1.0), ValueError, "r1 must be >= 0", "steps.make_train_step-r1-negative"),
    case(lambda: _legacy(r2="1"), TypeError, "r2 must be a number", "steps.make_train_step-r2-str"),
    case(lambda: _legacy(weight_clip="0.01"), TypeError, "weight_clip must be a number",
         "steps.make_train_step-weight_clip-str"),
    case(lambda: _legacy(weight_clip=-0.01), ValueError, "weight_clip must be >= 0",
         "steps.make_train_step-weight_clip-negative"),
    case(lambda: _legacy(adversarial_weight=-1.0), ValueError, "adversarial_weight must be >= 0",
         "steps.make_train_step-adversarial_weight-negative"),
    case(lambda: _legacy(sinkhorn_weight="0.5"), TypeError, "sinkhorn_weight must be a number",
         "steps.make_train_step-sinkhorn_weight-str"),
    case(lambda: _legacy(sinkhorn_epsilon=-0.1), ValueError, "sinkhorn_epsilon must be >= 0",
         "steps.make_train_step-sinkhorn_epsilon-negative"),
    case(lambda: _legacy(sinkhorn_weight=1.0, sinkhorn_iterations=0), ValueError,
         "SinkhornDivergence iterations must be >= 1", "steps.make_train_step-sinkhorn_iterations-zero"),
    case(lambda: _legacy(ema_decay="0.99"), TypeError, "ema_decay must be a number",
         "steps.make_train_step-ema_decay-str"),
    case(lambda: _legacy(latent_dim=None), ValueError, "Give latent_dim", "steps.make_train_step-no-prior"),
    case(lambda: _legacy(latent_dim=0), ValueError, "must be >= 1", "steps.make_train_step-latent_dim-zero"),
    case(lambda: _legacy(d_steps=0), ValueError, "d_steps must be >= 1", "steps.make_train_step-d_steps-zero"),
    case(lambda: _legacy(loss="wgan"), ValueError, "Unknown loss 'wgan'", "steps.make_train_step-loss-unknown"),
    case(lambda: _legacy(g_optimizer=None), TypeError, "g_optimizer must be an optax.GradientTransformation",
         "steps.make_train_step-g_optimizer-None"),
    case(lambda: _legacy(latent_dim=None, latent_sampler=3), TypeError, "latent_sampler must be a callable",
         "steps.make_train_step-latent_sampler-int"),
    case(lambda: _legacy()(_dict_state(), X4), TypeError, "state must be a GANState",
         "steps.make_train_step-step-state-dict"),
    case(lambda: _legacy()(_legacy_state(), a(4, 3)), ValueError, "Real samples of shape (4, 3)",
         "steps.make_train_step-step-batch-shape"),
    case(lambda: _legacy()(_legacy_state(), a(3, 4, 2)), ValueError, "needs k = d_steps = 1, got k = 3",
         "steps.make_train_step-step-slices-k"),
    case(lambda: _legacy_state(g_optimizer="adam"), TypeError, "g_optimizer must be an optax.GradientTransformation",
         "steps.init_state-g_optimizer-str"),
    case(lambda: _legacy_state(d_optimizer=optax.adam), TypeError,
         "d_optimizer must be an optax.GradientTransformation",
         "steps.init_state-d_optimizer-factory"),
    case(lambda: _legacy_state(ema="yes"), TypeError, "ema must be a bool", "steps.init_state-ema-str"),
]


def _no_nonfinite_step(state, batch):
    return state, {"loss": jnp.float32(0.0)}


def _finite_step(state, batch):
    return state + jnp.sum(batch), {"nonfinite": jnp.float32(0.0)}


STEP_TOOL_CASES = [
    case(lambda: steps.skip_nonfinite(3), TypeError, "step must be a callable", "steps.skip_nonfinite-int"),
    case(lambda: steps.skip_nonfinite(_no_nonfinite_step)(a(), a(2)), ValueError,
         "skip_nonfinite needs a step that reports metrics['nonfinite']", "steps.skip_nonfinite-no-nonfinite"),
    case(lambda: steps.pack_samples(X4, 0), ValueError, "pack must be an int >= 1", "steps.pack_samples-zero"),
    case(lambda: steps.pack_samples(X4, 2.0), ValueError, "pack must be an int >= 1", "steps.pack_samples-float"),
    case(lambda: steps.pack_samples(X4, True), ValueError, "pack must be an int >= 1", "steps.pack_samples-bool"),
    case(lambda: steps.pack_samples(X4, 3), ValueError, "pack=3 must divide the batch size",
         "steps.pack_samples-divide"),
    case(lambda: steps.check_finite({"d_loss": jnp.float32(NAN), "g_loss": 1.0}), steps.NonFiniteError,
         "Non-finite training: d_loss", "steps.check_finite-nan-metric"),
    case(lambda: steps.check_finite({"g_loss": INF}, step=7), steps.NonFiniteError,
         "at step 7: g_loss", "steps.check_finite-inf-metric-step"),
    case(lambda: steps.check_finite({"g_loss": 1.0, "nonfinite": 1.0}), steps.NonFiniteError,
         "nonfinite (a loss, a gradient or the new state)", "steps.check_finite-nonfinite-flag"),
    case(lambda: steps.check_finite([1.0, NAN]), TypeError, "metrics must be a dict",
         "steps.check_finite-list"),
    case(lambda: steps.pack_samples([[1.0, 2.0], [3.0, 4.0]], 2), TypeError, "x must be",
         "steps.pack_samples-list"),
    case(lambda: steps.sample_scale(a(4, 2), a(4, 3)), ValueError, "fake and real",
         "steps.sample_scale-trailing-shapes"),
    case(lambda: steps.sample_scale(a(4, 2), a(0, 2)), ValueError, "real is empty",
         "steps.sample_scale-real-empty"),
]


# ---------------------------------------------------------------------------
# jgan.loop


def _run(**kw):
    args = dict(step=_finite_step, state=a(), data=lambda i: a(2), num_steps=2)
    args.update(kw)
    return loop.run_steps(args.pop("step"), args.pop("state"), args.pop("data"), args.pop("num_steps"), **args)


def _info(nonfinite, first):
    return loop.RunInfo(updates=jnp.int32(5), nonfinite=jnp.asarray(nonfinite, jnp.int32),
                        first_nonfinite=jnp.asarray(first, jnp.int32))


LOOP_CASES = [
    case(lambda: _run(step=3), TypeError, "step must be a callable", "loop.run_steps-step-int"),
    case(lambda: _run(num_steps=0), ValueError, "num_steps must be >= 1", "loop.run_steps-num_steps-zero"),
    case(lambda: _run(num_steps=2.0), TypeError, "num_steps must be a Python int", "loop.run_steps-num_steps-float"),
    case(lambda: _run(num_steps=True), TypeError, "num_steps must be a Python int", "loop.run_steps-num_steps-bool"),
    case(lambda: _run(on_nonfinite="ignore"), ValueError, "on_nonfinite must be one of",
         "loop.run_steps-on_nonfinite-unknown"),
    case(lambda: _run(on_nonfinite=None), ValueError, "on_nonfinite must be one of",
         "loop.run_steps-on_nonfinite-None"),
    case(lambda: _run(start=1.5), TypeError, "start must be an integer scalar", "loop.run_steps-start-float"),
    case(lambda: _run(start=True), TypeError, "start must be an integer scalar", "loop.run_steps-start-bool"),
    case(lambda: _run(start=jnp.zeros(2, jnp.int32)), ValueError, "start must be a scalar",
         "loop.run_steps-start-vector"),
    case(lambda: _run(data="batches"), TypeError, "data must be a callable", "loop.run_steps-data-str"),
    case(lambda: _run(data={}), TypeError, "data must be a callable", "loop.run_steps-data-empty-dict"),
    case(lambda: _run(data=a(3, 2)), ValueError, "data's stacked batches need a leading axis of num_steps = 2",
         "loop.run_steps-data-wrong-length"),
    case(lambda: _run(step=_no_nonfinite_step), ValueError, "run_steps needs a step whose metrics",
         "loop.run_steps-step-without-nonfinite"),
    case(lambda: _run(step=lambda s, b: (s, {"nonfinite": jnp.zeros(2)})), ValueError,
         "metrics['nonfinite'] must be a scalar", "loop.run_steps-nonfinite-vector"),
    case(lambda: loop.check_run({"nonfinite": 0}), TypeError, "info must be a RunInfo", "loop.check_run-dict"),
    case(lambda: loop.check_run(_info(0, -1), max_nonfinite=-1), ValueError, "max_nonfinite must be >= 0",
         "loop.check_run-max_nonfinite-negative"),
    case(lambda: loop.check_run(_info(0, -1), max_nonfinite=0.5), TypeError, "max_nonfinite must be a Python int",
         "loop.check_run-max_nonfinite-float"),
    case(lambda: loop.check_run(_info(2, 3)), steps.NonFiniteError, "2 non-finite step(s), the first at step 3",
         "loop.check_run-nonfinite"),
    case(lambda: loop.check_run(_info([0, 1], [-1, 4])), steps.NonFiniteError,
         "Non-finite training in 1 of 2 runs (seed 1: 1 from step 4", "loop.check_run-nonfinite-seeds"),
]


# ---------------------------------------------------------------------------
# jgan.cyclegan


def _translate(p, x):
    return p * x


def _patch_score(p, x):
    return p * jnp.mean(x, axis=(1, 2, 3))


IMG = jnp.zeros((2, 4, 4, 1))


def _cyclegan(**kw):
    args = dict(generator_ab=_translate, generator_ba=_translate, discriminator_a=_patch_score,
                discriminator_b=_patch_score, g_optimizer=SGD, d_optimizer=SGD)
    args.update(kw)
    return cyclegan.make_cyclegan_train_step(**args)


def _cyclegan_state(**kw):
    args = dict(g_optimizer=SGD, d_optimizer=SGD)
    args.update(kw)
    one = jnp.float32(1.0)
    return cyclegan.init_cyclegan_state(KEY, one, one, one, one, **args)


def _cyclegan_step(batch, state=None, **kw):
    return _cyclegan(**kw)(_cyclegan_state() if state is None else state, batch)


CYCLEGAN_CASES = [
    case(lambda: _cyclegan(generator_ab=None), TypeError, "generator_ab must be a callable",
         "cyclegan.make_cyclegan_train_step-generator_ab-None"),
    case(lambda: _cyclegan(generator_ba="F"), TypeError, "generator_ba must be a callable",
         "cyclegan.make_cyclegan_train_step-generator_ba-str"),
    case(lambda: _cyclegan(discriminator_a=1), TypeError, "discriminator_a must be a callable",
         "cyclegan.make_cyclegan_train_step-discriminator_a-int"),
    case(lambda: _cyclegan(discriminator_b=None), TypeError, "discriminator_b must be a callable",
         "cyclegan.make_cyclegan_train_step-discriminator_b-None"),
    case(lambda: _cyclegan(g_optimizer="adam"), TypeError, "g_optimizer must be an optax.GradientTransformation",
         "cyclegan.make_cyclegan_train_step-g_optimizer-str"),
    case(lambda: _cyclegan(d_optimizer=optax.adam), TypeError, "d_optimizer must be an optax.GradientTransformation",
         "cyclegan.make_cyclegan_train_step-d_optimizer-factory"),
    case(lambda: _cyclegan(cycle_weight=-10.0), ValueError, "cycle_weight must be >= 0",
         "cyclegan.make_cyclegan_train_step-cycle_weight-negative"),
    case(lambda: _cyclegan(cycle_weight="10"), TypeError, "cycle_weight must be a number",
         "cyclegan.make_cyclegan_train_step-cycle_weight-str"),
    case(lambda: _cyclegan(identity_weight=NAN), ValueError, "identity_weight must be >= 0 and finite",
         "cyclegan.make_cyclegan_train_step-identity_weight-nan"),
    case(lambda: _cyclegan(adversarial_weight=True), TypeError, "adversarial_weight must be a number",
         "cyclegan.make_cyclegan_train_step-adversarial_weight-bool"),
    case(lambda: _cyclegan(loss="cycle"), ValueError, "Unknown loss 'cycle'", "cyclegan.make_cyclegan_train_step-loss"),
    case(lambda: _cyclegan(loss="relativistic_average"), ValueError, "a relativistic family",
         "cyclegan.make_cyclegan_train_step-loss-relativistic"),
    case(lambda: _cyclegan(pool_size=-1), ValueError, "pool_size must be >= 0",
         "cyclegan.make_cyclegan_train_step-pool_size-negative"),
    case(lambda: _cyclegan(pool_size=2.5), TypeError, "pool_size must be a Python int",
         "cyclegan.make_cyclegan_train_step-pool_size-float"),
    case(lambda: _cyclegan(axis_name=3), TypeError, "axis_name must be a str or None",
         "cyclegan.make_cyclegan_train_step-axis_name-int"),
    case(lambda: _cyclegan_state(g_optimizer="adam"), TypeError, "g_optimizer must be an optax.GradientTransformation",
         "cyclegan.init_cyclegan_state-g_optimizer-str"),
    case(lambda: _cyclegan_state(pool_size=-1), ValueError, "pool_size must be >= 0",
         "cyclegan.init_cyclegan_state-pool_size-negative"),
    case(lambda: _cyclegan_state(pool_size=True), TypeError, "pool_size must be a Python int",
         "cyclegan.init_cyclegan_state-pool_size-bool"),
    case(lambda: _cyclegan_state(pool_size=5), ValueError, "A pool (pool_size > 0) needs a_shape",
         "cyclegan.init_cyclegan_state-pool-without-a_shape"),
    case(lambda: _cyclegan_state(pool_size=2, a_shape="abc"), TypeError, "a_shape",
         "cyclegan.init_cyclegan_state-a_shape-str"),
    case(lambda: _cyclegan_step({"a": IMG, "b": IMG}, state={}), TypeError, "state must be a CycleGANState",
         "cyclegan.step-state-dict"),
    case(lambda: _cyclegan_step({"a": IMG}), ValueError, "A CycleGAN batch is a dict with keys 'a' and 'b'",
         "cyclegan.step-batch-without-b"),
    case(lambda: _cyclegan_step((IMG, IMG)), ValueError, "A CycleGAN batch is a dict with keys 'a' and 'b'",
         "cyclegan.step-batch-tuple"),
    case(lambda: _cyclegan_step({"a": a(2), "b": IMG}), ValueError, "batch['a'] must be [batch, ...] images",
         "cyclegan.step-batch-a-rank1"),
    case(lambda: _cyclegan_step({"a": IMG, "b": IMG}, axis_name="batch"), ValueError,
         "built with axis_name='batch', but it runs outside a mapped axis of that name", "cyclegan.step-axis-unmapped"),
    case(lambda: _cyclegan_step({"a": IMG, "b": IMG}, pool_size=2), ValueError,
         "The step has pool_size=2 but the state's pool_a holds 0 images", "cyclegan.step-pool_size-mismatch"),
    case(lambda: _cyclegan_step({"a": IMG, "b": IMG}, pool_size=2,
                                state=_cyclegan_state(pool_size=2, a_shape=(8, 8, 1))),
         ValueError, "The state's pool_a stores images of shape (8, 8, 1)", "cyclegan.step-pool-image-shape"),
    case(lambda: _cyclegan_step({"a": IMG, "b": IMG}, generator_ab=lambda p, x: p * x[:, :2]), ValueError,
         "generator_ab (G: A -> B) maps images", "cyclegan.step-generator_ab-shape"),
    case(lambda: _cyclegan_step({"a": IMG, "b": IMG}, discriminator_b=lambda p, x: p * jnp.sum(x)), ValueError,
         "discriminator_b returned outputs of shape ()", "cyclegan.step-discriminator_b-scalar"),
    case(lambda: _cyclegan_step({"a": IMG, "b": jnp.zeros((2, 4, 4, 3))}, identity_weight=5.0,
                                generator_ab=lambda p, x: p * jnp.repeat(x[..., :1], 3, -1),
                                generator_ba=lambda p, x: p * x[..., :1]),
         ValueError, "identity_weight > 0 feeds b to G", "cyclegan.step-identity-shapes"),
    case(lambda: _cyclegan_step({"a": jnp.zeros((0, 4, 4, 1)), "b": IMG}), ValueError,
         "batch['a'] is empty", "cyclegan.step-batch-a-empty"),
]


# ---------------------------------------------------------------------------
# jgan.presets

PRESET_CASES = [
    case(lambda: presets.wgan(learning_rate=0.0), ValueError, "learning_rate must be > 0",
         "presets.wgan-learning_rate-zero"),
    case(lambda: presets.wgan(learning_rate="5e-5"), TypeError, "learning_rate must be a number",
         "presets.wgan-learning_rate-str"),
    case(lambda: presets.wgan(clip=-0.01), ValueError, "clip must be > 0", "presets.wgan-clip-negative"),
    case(lambda: presets.wgan(clip=True), TypeError, "clip must be a number", "presets.wgan-clip-bool"),
    case(lambda: presets.wgan(n_critic=0), ValueError, "n_critic must be >= 1", "presets.wgan-n_critic-zero"),
    case(lambda: presets.wgan(n_critic=5.0), TypeError, "n_critic must be a Python int", "presets.wgan-n_critic-float"),
    case(lambda: presets.wgan_gp(learning_rate=-1e-4), ValueError, "learning_rate must be > 0",
         "presets.wgan_gp-learning_rate-negative"),
    case(lambda: presets.wgan_gp(n_critic=True), TypeError, "n_critic must be a Python int",
         "presets.wgan_gp-n_critic-bool"),
    case(lambda: presets.wgan_gp(penalty=-10.0), ValueError, "weight must be >= 0", "presets.wgan_gp-penalty-negative"),
    case(lambda: presets.wgan_gp(penalty="10"), TypeError, "must be a number", "presets.wgan_gp-penalty-str"),
    case(lambda: presets.dcgan(learning_rate=INF), ValueError, "learning_rate must be > 0 and finite",
         "presets.dcgan-learning_rate-inf"),
    case(lambda: presets.dcgan(learning_rate=None), TypeError, "learning_rate must be a number",
         "presets.dcgan-learning_rate-None"),
    case(lambda: presets.wgan_gp()._replace(d_regularizers=(penalties.R1(1.0),)).step_kwargs(), ValueError,
         "make_train_step takes only a gradient penalty", "presets.Preset.step_kwargs-R1"),
]


# ---------------------------------------------------------------------------
# jgan.metrics


def _sinkhorn(x=X4, y=Y4, **kw):
    kw.setdefault("epsilon", 0.5)
    return metrics.sinkhorn(x, y, **kw)


def _divergence(x=X4, y=Y4, **kw):
    kw.setdefault("epsilon", 0.5)
    return metrics.sinkhorn_divergence(x, y, **kw)


EYE2 = jnp.eye(2)
ZERO2 = jnp.zeros(2)
PROBS = jnp.full((10, 4), 0.25)


def _state3():
    return metrics.init_gaussian_statistics(3)


def _kid(f1=None, f2=None, **kw):
    f1 = jnp.ones((6, 3)) * jnp.arange(6.0)[:, None] if f1 is None else f1
    f2 = -f1 if f2 is None else f2
    args = dict(subsets=2, subset_size=3, key=KEY)
    args.update(kw)
    return metrics.kid(f1, f2, **args)


SINKHORN_CASES = [
    case(lambda: _sinkhorn(x=a(4)), ValueError, "x must be [n, d]", "metrics.sinkhorn-x-rank1"),
    case(lambda: _sinkhorn(y=a(4, 2, 1)), ValueError, "y must be [m, d]", "metrics.sinkhorn-y-rank3"),
    case(lambda: _sinkhorn(x=a(0, 2)), ValueError, "x and y must hold at least one point", "metrics.sinkhorn-x-empty"),
    case(lambda: _sinkhorn(y=a(4, 3)), ValueError, "x and y must have the same dimension d",
         "metrics.sinkhorn-d-differs"),
    case(lambda: _sinkhorn(cost="l1"), ValueError, "cost must be one of", "metrics.sinkhorn-cost-unknown"),
    case(lambda: _sinkhorn(epsilon=0.0), ValueError, "epsilon must be finite and > 0", "metrics.sinkhorn-epsilon-zero"),
    case(lambda: _sinkhorn(epsilon=-0.1), ValueError, "epsilon must be finite and > 0",
         "metrics.sinkhorn-epsilon-negative"),
    case(lambda: _sinkhorn(epsilon=NAN), ValueError, "epsilon must be finite and > 0", "metrics.sinkhorn-epsilon-nan"),
    case(lambda: _sinkhorn(epsilon=jnp.array([0.1, 0.2])), ValueError, "epsilon must be a scalar",
         "metrics.sinkhorn-epsilon-vector"),
    case(lambda: _sinkhorn(threshold=0.0), ValueError, "threshold must be finite and > 0",
         "metrics.sinkhorn-threshold-zero"),
    case(lambda: _sinkhorn(max_iterations=0), ValueError, "max_iterations must be >= 1",
         "metrics.sinkhorn-max_iterations-zero"),
    case(lambda: _sinkhorn(max_iterations=100.0), TypeError, "max_iterations must be a Python int",
         "metrics.sinkhorn-max_iterations-float"),
    case(lambda: _sinkhorn(inner_iterations=True), TypeError, "inner_iterations must be a Python int",
         "metrics.sinkhorn-inner_iterations-bool"),
    case(lambda: _sinkhorn(num_iterations=0), ValueError, "num_iterations must be >= 1",
         "metrics.sinkhorn-num_iterations-zero"),
    case(lambda: _sinkhorn(a=jnp.full(3, 1 / 3)), ValueError, "a must have shape [4]", "metrics.sinkhorn-a-shape"),
    case(lambda: _sinkhorn(b=jnp.array([0.5, 0.5, 0.5, -0.5])), ValueError, "b must be finite and non-negative",
         "metrics.sinkhorn-b-negative"),
    case(lambda: _sinkhorn(a=jnp.full(4, 0.5)), ValueError, "a must sum to 1", "metrics.sinkhorn-a-sum"),
    case(lambda: _sinkhorn(a=jnp.array([NAN, 0.5, 0.25, 0.25])), ValueError, "a must be finite",
         "metrics.sinkhorn-a-nan"),
    case(lambda: _sinkhorn(epsilon_scaling=0.5), TypeError, "epsilon_scaling must be an EpsilonScaling",
         "metrics.sinkhorn-epsilon_scaling-float"),
    case(lambda: _sinkhorn(overrelaxation=1.5), TypeError, "overrelaxation must be an Overrelaxation",
         "metrics.sinkhorn-overrelaxation-float"),
    case(lambda: _sinkhorn(x=X4.astype(jnp.complex64)), ValueError, "must be real", "metrics.sinkhorn-complex"),
    case(lambda: _sinkhorn(x=with_value(X4, (0, 0), NAN)), ValueError, "x holds", "metrics.sinkhorn-x-nan"),
    case(lambda: _sinkhorn(y=with_value(Y4, (1, 1), INF)), ValueError, "y holds", "metrics.sinkhorn-y-inf"),
    case(lambda: _sinkhorn(return_plan="no"), TypeError, "return_plan must be a bool",
         "metrics.sinkhorn-return_plan-str"),
    case(lambda: _sinkhorn(epsilon=True), TypeError, "epsilon must be a", "metrics.sinkhorn-epsilon-bool"),
    case(lambda: _sinkhorn(epsilon="0.5"), TypeError, "epsilon must be a", "metrics.sinkhorn-epsilon-str"),
    case(lambda: _sinkhorn(epsilon=None), TypeError, "epsilon must be a", "metrics.sinkhorn-epsilon-None"),
    case(lambda: _sinkhorn(threshold=True), TypeError, "threshold must be a", "metrics.sinkhorn-threshold-bool"),
    case(lambda: metrics.EpsilonScaling(decay=1.0), ValueError, "EpsilonScaling decay must be in",
         "metrics.EpsilonScaling-decay-one"),
    case(lambda: metrics.EpsilonScaling(decay=0.0), ValueError, "EpsilonScaling decay must be in (0, 1)",
         "metrics.EpsilonScaling-decay-zero"),
    case(lambda: metrics.EpsilonScaling(decay="0.5"), TypeError, "EpsilonScaling decay must be a number",
         "metrics.EpsilonScaling-decay-str"),
    case(lambda: metrics.EpsilonScaling(initial=-1.0), ValueError, "EpsilonScaling initial must be > 0",
         "metrics.EpsilonScaling-initial-negative"),
    case(lambda: metrics.Overrelaxation(max_omega=2.0), ValueError, "Overrelaxation max_omega must be in [1.0, 2.0)",
         "metrics.Overrelaxation-max_omega-two"),
    case(lambda: metrics.Overrelaxation(max_omega=0.5), ValueError, "Overrelaxation max_omega must be in",
         "metrics.Overrelaxation-max_omega-half"),
    case(lambda: _divergence(x=a(4)), ValueError, "x must be [n, d]", "metrics.sinkhorn_divergence-x-rank1"),
    case(lambda: _divergence(y=a(0, 2)), ValueError, "x and y must hold at least one point",
         "metrics.sinkhorn_divergence-y-empty"),
    case(lambda: _divergence(y=a(4, 5)), ValueError, "x and y must have the same dimension d",
         "metrics.sinkhorn_divergence-d-differs"),
    case(lambda: _divergence(epsilon=0.0), ValueError, "epsilon must be finite and > 0",
         "metrics.sinkhorn_divergence-epsilon-zero"),
    case(lambda: _divergence(cost="cosine"), ValueError, "cost must be one of",
         "metrics.sinkhorn_divergence-cost-unknown"),
    case(lambda: _divergence(b=jnp.full(4, 0.3)), ValueError, "b must sum to 1", "metrics.sinkhorn_divergence-b-sum"),
    case(lambda: _divergence(num_iterations=2.5), TypeError, "num_iterations must be a Python int",
         "metrics.sinkhorn_divergence-num_iterations-float"),
    case(lambda: _divergence(x=with_value(X4, (2, 1), NAN)), ValueError, "x holds",
         "metrics.sinkhorn_divergence-x-nan"),
]

FRECHET_CASES = [
    case(lambda: metrics.frechet_distance(EYE2, EYE2, ZERO2, EYE2), ValueError, "mu1 must be a vector [d]",
         "metrics.frechet_distance-mu1-matrix"),
    case(lambda: metrics.frechet_distance(ZERO2, a(2, 3), ZERO2, EYE2), ValueError,
         "sigma1 must be a square matrix [d, d]", "metrics.frechet_distance-sigma1-not-square"),
    case(lambda: metrics.frechet_distance(ZERO2, EYE2, jnp.zeros(3), EYE2), ValueError, "dimensions disagree",
         "metrics.frechet_distance-dimensions"),
    case(lambda: metrics.frechet_distance(a(0), a(0, 0), a(0), a(0, 0)), ValueError,
         "the dimension d must be at least 1", "metrics.frechet_distance-d-zero"),
    case(lambda: metrics.frechet_distance(ZERO2, EYE2, with_value(ZERO2, 0, NAN), EYE2), ValueError,
         "mu2 holds 1 non-finite value", "metrics.frechet_distance-mu2-nan"),
    case(lambda: metrics.frechet_distance(ZERO2, EYE2, ZERO2, with_value(EYE2, (0, 1), INF)), ValueError,
         "sigma2 holds 1 non-finite value", "metrics.frechet_distance-sigma2-inf"),
    case(lambda: metrics.frechet_distance(ZERO2, -EYE2, ZERO2, EYE2), ValueError,
         "sigma1 is not positive semi-definite", "metrics.frechet_distance-sigma1-negative-definite"),
    case(lambda: metrics.frechet_distance(ZERO2, EYE2, ZERO2, jnp.array([[1.0, 2.0], [2.0, 1.0]])), ValueError,
         "sigma2 is not positive semi-definite", "metrics.frechet_distance-sigma2-indefinite"),
    case(lambda: metrics.frechet_distance(ZERO2, EYE2, ZERO2, EYE2, psd="clip"), ValueError,
         'psd must be "raise" or "project"', "metrics.frechet_distance-psd-unknown"),
    case(lambda: metrics.frechet_distance(ZERO2, EYE2, ZERO2, EYE2, psd_tolerance=-1.0), ValueError,
         "psd_tolerance must be >= 0", "metrics.frechet_distance-psd_tolerance-negative"),
    case(lambda: metrics.frechet_distance(ZERO2, EYE2, ZERO2, EYE2, dtype=jnp.int32), ValueError,
         "dtype", "metrics.frechet_distance-dtype-int"),
    case(lambda: metrics.gaussian_statistics(a(5)), ValueError, "features must be [n, d]",
         "metrics.gaussian_statistics-rank1"),
    case(lambda: metrics.gaussian_statistics(a(1, 3)), ValueError, "the covariance needs at least two samples",
         "metrics.gaussian_statistics-one-row"),
    case(lambda: metrics.gaussian_statistics(with_value(X4, (3, 0), NAN)), ValueError,
         "features holds 1 non-finite value (1 NaN, 0 inf; the first at index (3, 0))",
         "metrics.gaussian_statistics-nan"),
    case(lambda: metrics.gaussian_statistics(X4, dtype=jnp.int32), ValueError, "dtype",
         "metrics.gaussian_statistics-dtype-int"),
    case(lambda: metrics.init_gaussian_statistics(0), ValueError, "dim must be >= 1",
         "metrics.init_gaussian_statistics-zero"),
    case(lambda: metrics.init_gaussian_statistics(3.0), TypeError, "dim must be a Python int",
         "metrics.init_gaussian_statistics-float"),
    case(lambda: metrics.update_gaussian_statistics(_state3(), a(4, 2)), ValueError,
         "features must be [b, 3] to match the state", "metrics.update_gaussian_statistics-dim"),
    case(lambda: metrics.update_gaussian_statistics(_state3(), a(4, 3), mask=jnp.ones(3, bool)), ValueError,
         "mask must be [b]", "metrics.update_gaussian_statistics-mask-shape"),
    case(lambda: metrics.update_gaussian_statistics(_state3(), with_value(a(4, 3), (1, 2), INF)), ValueError,
         "features holds 1 non-finite value", "metrics.update_gaussian_statistics-inf"),
    case(lambda: metrics.merge_gaussian_statistics(_state3(), metrics.init_gaussian_statistics(2)), ValueError,
         "cannot merge statistics of shapes (3,) and (2,)", "metrics.merge_gaussian_statistics-dims"),
    case(lambda: metrics.finalize_gaussian_statistics(_state3()), ValueError,
         "the covariance needs at least two samples, the accumulator has 0",
         "metrics.finalize_gaussian_statistics-empty"),
    case(lambda: metrics.fid(a(4), X4), ValueError, "features1 must be [n, d]", "metrics.fid-features1-rank1"),
    case(lambda: metrics.fid(X4, X4[:1]), ValueError, "the covariance needs at least two samples, features2",
         "metrics.fid-features2-one-row"),
    case(lambda: metrics.fid(X4, a(4, 3)), ValueError, "features1 and features2 must have the same dimension d",
         "metrics.fid-dims"),
    case(lambda: metrics.fid(with_value(X4, (0, 1), NAN), Y4), ValueError, "features1 holds 1 non-finite value",
         "metrics.fid-features1-nan"),
    case(lambda: metrics.fid(X4, with_value(Y4, (2, 0), -INF)), ValueError, "features2 holds 1 non-finite value",
         "metrics.fid-features2-inf"),
    case(lambda: metrics.fid(X4, Y4, psd="ignore"), ValueError, 'psd must be "raise" or "project"',
         "metrics.fid-psd-unknown"),
]

IS_MMD_COVERAGE_CASES = [
    case(lambda: metrics.inception_score(jnp.full(4, 0.25)), ValueError, "probs must be [n, classes]",
         "metrics.inception_score-rank1"),
    case(lambda: metrics.inception_score(a(0, 4)), ValueError, "probs must be [n, classes]",
         "metrics.inception_score-empty"),
    case(lambda: metrics.inception_score(with_value(PROBS, (0, 0), NAN), splits=2), ValueError,
         "probs must be finite", "metrics.inception_score-nan"),
    case(lambda: metrics.inception_score(PROBS.at[0].set(jnp.array([-0.5, 0.5, 0.5, 0.5])), splits=2), ValueError,
         "probs must be non-negative", "metrics.inception_score-negative"),
    case(lambda: metrics.inception_score(PROBS * 2, splits=2), ValueError, "every row of probs must sum to 1",
         "metrics.inception_score-row-sum"),
    case(lambda: metrics.inception_score(PROBS, splits=0), ValueError, "splits must be in [1, n] = [1, 10]",
         "metrics.inception_score-splits-zero"),
    case(lambda: metrics.inception_score(PROBS, splits=11), ValueError, "splits must be in [1, n] = [1, 10]",
         "metrics.inception_score-splits-above-n"),
    case(lambda: metrics.inception_score(PROBS, splits=2.0), TypeError, "splits must be a Python int",
         "metrics.inception_score-splits-float"),
    case(lambda: metrics.inception_score(PROBS, splits=True), TypeError, "splits must be a Python int",
         "metrics.inception_score-splits-bool"),
    case(lambda: metrics.inception_score_from_logits(a(2, 3, 4)), ValueError, "logits must be [n, classes]",
         "metrics.inception_score_from_logits-rank3"),
    case(lambda: metrics.inception_score_from_logits(with_value(a(4, 3), (1, 1), INF), splits=2), ValueError,
         "logits must be finite", "metrics.inception_score_from_logits-inf"),
    case(lambda: metrics.inception_score_from_logits(a(4, 3), splits=5), ValueError, "splits must be in [1, n]",
         "metrics.inception_score_from_logits-splits"),
    case(lambda: metrics.mmd2(a(4), Y4, bandwidth=1.0), ValueError, "x must be [n, d]", "metrics.mmd2-x-rank1"),
    case(lambda: metrics.mmd2(X4, Y4[:1], bandwidth=1.0), ValueError, "at least 2 samples in y",
         "metrics.mmd2-y-one-row"),
    case(lambda: metrics.mmd2(X4, a(4, 3), bandwidth=1.0), ValueError, "x and y must have the same dimension d",
         "metrics.mmd2-dims"),
    case(lambda: metrics.mmd2(with_value(X4, (1, 0), NAN), Y4, bandwidth=1.0), ValueError,
         "x holds 1 non-finite value", "metrics.mmd2-x-nan"),
    case(lambda: metrics.mmd2(X4, with_value(Y4, (0, 0), INF), bandwidth=1.0), ValueError,
         "y holds 1 non-finite value", "metrics.mmd2-y-inf"),
    case(lambda: metrics.mmd2(X4, Y4, bandwidth=0.0), ValueError, "bandwidth must be finite and > 0",
         "metrics.mmd2-bandwidth-zero"),
    case(lambda: metrics.mmd2(X4, Y4, bandwidth=jnp.array([1.0, -1.0])), ValueError,
         "bandwidth must be finite and > 0", "metrics.mmd2-bandwidth-negative-entry"),
    case(lambda: metrics.mmd2(X4, Y4, bandwidth=NAN), ValueError, "bandwidth must be finite and > 0",
         "metrics.mmd2-bandwidth-nan"),
    case(lambda: metrics.mmd2(X4, Y4, bandwidth=jnp.ones((1, 1))), ValueError,
         "bandwidth must be a scalar or a non-empty vector", "metrics.mmd2-bandwidth-matrix"),
    case(lambda: metrics.mmd2(X4, Y4, bandwidth=jnp.zeros(0)), ValueError,
         "bandwidth must be a scalar or a non-empty vector", "metrics.mmd2-bandwidth-empty"),
    case(lambda: metrics.mmd2(X4.astype(jnp.complex64), Y4, bandwidth=1.0), ValueError, "must be real",
         "metrics.mmd2-x-complex"),
    case(lambda: metrics.fid(X4.astype(jnp.complex64), Y4), ValueError, "must be real",
         "metrics.fid-features1-complex"),
    case(lambda: metrics.mmd2(X4, Y4, bandwidth=True), TypeError, "bandwidth must be", "metrics.mmd2-bandwidth-bool"),
    case(lambda: metrics.mmd2(X4, Y4, bandwidth="1.0"), TypeError, "bandwidth must be a real number",
         "metrics.mmd2-bandwidth-str"),
    case(lambda: metrics.mmd2(X4, Y4, bandwidth=jnp.array([True, True])), TypeError,
         "bandwidth must be real numbers", "metrics.mmd2-bandwidth-bool-vector"),
    case(lambda: metrics.mmd2(X4, Y4.astype(jnp.complex64), bandwidth=1.0), ValueError, "y must be real",
         "metrics.mmd2-y-complex"),
    case(lambda: _kid(f1=a(6)), ValueError, "features1 must be [n, d]", "metrics.kid-features1-rank1"),
    case(lambda: _kid(f2=with_value(a(6, 3), (5, 2), NAN)), ValueError, "features2 holds 1 non-finite value",
         "metrics.kid-features2-nan"),
    case(lambda: _kid(f2=a(6, 2)), ValueError, "features1 and features2 must have the same dimension d",
         "metrics.kid-dims"),
    case(lambda: _kid(subsets=0), ValueError, "subsets must be >= 1", "metrics.kid-subsets-zero"),
    case(lambda: _kid(subset_size=1), ValueError, "subset_size must be >= 2", "metrics.kid-subset_size-one"),
    case(lambda: _kid(subset_size=7), ValueError, "subset_size 7 is larger than the smaller feature set",
         "metrics.kid-subset_size-above-n"),
    case(lambda: _kid(subset_size=3.0), TypeError, "subset_size must be a Python int", "metrics.kid-subset_size-float"),
    case(lambda: _kid(degree=0), ValueError, "degree must be >= 1", "metrics.kid-degree-zero"),
    case(lambda: _kid(degree=True), TypeError, "degree must be a Python int", "metrics.kid-degree-bool"),
    case(lambda: _kid(gamma=0.0), ValueError, "gamma must be finite and > 0", "metrics.kid-gamma-zero"),
    case(lambda: _kid(gamma=True), TypeError, "gamma must be a", "metrics.kid-gamma-bool"),
    case(lambda: _kid(coef0="1"), TypeError, "coef0 must be a", "metrics.kid-coef0-str"),
    case(lambda: _kid(coef0=True), TypeError, "coef0 must be a real number", "metrics.kid-coef0-bool"),
    case(lambda: _kid(coef0=NAN), ValueError, "coef0 must be finite", "metrics.kid-coef0-nan"),
    case(lambda: _kid(f2=a(6, 3, dtype=jnp.complex64)), ValueError, "features2 must be real",
         "metrics.kid-features2-complex"),
    case(lambda: _kid(gamma=jnp.ones(2)), ValueError, "gamma must be a scalar", "metrics.kid-gamma-vector"),
    case(lambda: _kid(coef0=jnp.ones(2)), ValueError, "coef0 must be a scalar", "metrics.kid-coef0-vector"),
    case(lambda: _kid(f1=jnp.full((6, 3), 1e13) * jnp.arange(1.0, 7.0)[:, None]), OverflowError,
         "the polynomial kernel of degree 3 overflowed", "metrics.kid-overflow"),
    case(lambda: _kid(key=None), TypeError, "unexpected PRNG key type", "metrics.kid-key-None"),
    case(lambda: metrics.mode_coverage(a(4), a(3, 2), std=0.1), ValueError, "samples must be [n, d]",
         "metrics.mode_coverage-samples-rank1"),
    case(lambda: metrics.mode_coverage(X4, a(2), std=0.1), ValueError, "centers must be [M, d]",
         "metrics.mode_coverage-centers-rank1"),
    case(lambda: metrics.mode_coverage(a(0, 2), a(3, 2), std=0.1), ValueError, "samples must hold at least one sample",
         "metrics.mode_coverage-samples-empty"),
    case(lambda: metrics.mode_coverage(X4, a(0, 2), std=0.1), ValueError, "centers must hold at least one centre",
         "metrics.mode_coverage-centers-empty"),
    case(lambda: metrics.mode_coverage(X4, a(3, 3), std=0.1), ValueError,
         "samples and centers must have the same dimension d", "metrics.mode_coverage-dims"),
    case(lambda: metrics.mode_coverage(with_value(X4, (0, 0), NAN), a(3, 2), std=0.1), ValueError,
         "samples holds 1 non-finite value", "metrics.mode_coverage-samples-nan"),
    case(lambda: metrics.mode_coverage(X4, with_value(a(3, 2), (2, 1), INF), std=0.1), ValueError,
         "centers holds 1 non-finite value", "metrics.mode_coverage-centers-inf"),
    case(lambda: metrics.mode_coverage(X4, a(3, 2), std=0.0), ValueError, "std must be finite and > 0",
         "metrics.mode_coverage-std-zero"),
    case(lambda: metrics.mode_coverage(X4, a(3, 2), std=True), TypeError, "std must be a",
         "metrics.mode_coverage-std-bool"),
    case(lambda: metrics.mode_coverage(X4, a(3, 2), std=0.1, threshold="3"), TypeError, "threshold must be a",
         "metrics.mode_coverage-threshold-str"),
    case(lambda: metrics.mode_coverage(X4, a(3, 2), std=jnp.ones(2)), ValueError, "std must be a scalar",
         "metrics.mode_coverage-std-vector"),
    case(lambda: metrics.mode_coverage(X4, a(3, 2), std=0.1, threshold=-3.0), ValueError,
         "threshold must be finite and > 0", "metrics.mode_coverage-threshold-negative"),
]


# ---------------------------------------------------------------------------
# jgan.data

def _unit_images(n=8):
    return np.full((n, 2, 2, 1), 0.5, np.float32)


def _images(n=8):
    return np.linspace(-1, 1, n * 4, dtype=np.float32).reshape(n, 2, 2, 1)


def _batches(arrays=None, **kw):
    args = dict(batch_size=4, seed=0, process_index=0, process_count=1)
    args.update(kw)
    return data.array_batches(_images() if arrays is None else arrays, **args)


DATA_CASES = [
    case(lambda: data.ring(KEY, 0), ValueError, "n must be >= 1", "data.ring-n-zero"),
    case(lambda: data.ring(KEY, 4.0), TypeError, "n must be a Python int", "data.ring-n-float"),
    case(lambda: data.ring(KEY, True), TypeError, "n must be a Python int", "data.ring-n-bool"),
    case(lambda: data.ring(KEY, 4, modes=0), ValueError, "modes must be >= 1", "data.ring-modes-zero"),
    case(lambda: data.ring(KEY, 4, modes=8.0), TypeError, "modes must be a Python int", "data.ring-modes-float"),
    case(lambda: data.ring(KEY, 4, radius=0.0), ValueError, "radius must be finite and > 0", "data.ring-radius-zero"),
    case(lambda: data.ring(KEY, 4, radius=INF), ValueError, "radius must be finite and > 0", "data.ring-radius-inf"),
    case(lambda: data.ring(KEY, 4, std=-0.02), ValueError, "std must be finite and >= 0", "data.ring-std-negative"),
    case(lambda: data.ring(KEY, 4, std=NAN), ValueError, "std must be finite and >= 0", "data.ring-std-nan"),
    case(lambda: data.ring(KEY, 4, std=jnp.ones(2)), ValueError, "std must be a scalar", "data.ring-std-vector"),
    case(lambda: data.ring(KEY, 4, radius=True), TypeError, "radius must be a", "data.ring-radius-bool"),
    case(lambda: data.ring(KEY, 4, std="0.1"), TypeError, "std must be a", "data.ring-std-str"),
    case(lambda: data.mixture("ring", std=True), TypeError, "std must be a real number", "data.mixture-std-bool"),
    case(lambda: data.grid(KEY, 4, spacing="2"), TypeError, "spacing must be a real number", "data.grid-spacing-str"),
    case(lambda: data.grid(KEY, 4, side=0), ValueError, "side must be >= 1", "data.grid-side-zero"),
    case(lambda: data.grid(KEY, 4, spacing=-2.0), ValueError, "spacing must be finite and > 0",
         "data.grid-spacing-negative"),
    case(lambda: data.grid(KEY, -1), ValueError, "n must be >= 1", "data.grid-n-negative"),
    case(lambda: data.ring_centers(modes=-3), ValueError, "modes must be >= 1", "data.ring_centers-modes-negative"),
    case(lambda: data.grid_centers(side=2.5), TypeError, "side must be a Python int", "data.grid_centers-side-float"),
    case(lambda: data.mixture("circle"), ValueError, "unknown mixture 'circle'", "data.mixture-unknown"),
    case(lambda: data.mixture("ring", colour=1), ValueError, "unknown settings ['colour'] for mixture 'ring'",
         "data.mixture-unknown-setting"),
    case(lambda: data.mixture("grid", modes=4), ValueError, "unknown settings ['modes'] for mixture 'grid'",
         "data.mixture-setting-of-another-preset"),
    case(lambda: data.mixture("ring", std=-1.0), ValueError, "std must be finite and >= 0",
         "data.mixture-std-negative"),
    case(lambda: data.mixture("ring", modes=0), ValueError, "modes must be >= 1", "data.mixture-modes-zero"),
    case(lambda: data.sample_mixture(KEY, 0, data.mixture("ring")), ValueError, "n must be >= 1",
         "data.sample_mixture-n-zero"),
    case(lambda: data.sample_mixture(KEY, 4, "ring"), TypeError, "spec must be a MixtureSpec",
         "data.sample_mixture-spec-str"),
    case(lambda: data.digits(split="val"), ValueError, "Unknown split 'val'", "data.digits-split"),
    case(lambda: data.digits(image_size=4), ValueError, "image_size must be >= 8", "data.digits-image_size-small"),
    case(lambda: data.digits(image_size=32.0), TypeError, "image_size must be a Python int",
         "data.digits-image_size-float"),
    case(lambda: data.check_images(np.zeros((8, 2, 2), np.float32)), ValueError,
         "images must be [n, height, width, channels] (rank 4)", "data.check_images-rank3"),
    case(lambda: data.check_images(np.zeros((8, 2, 2, 1), np.uint8)), ValueError,
         "images must be floating-point images in [-1, 1], got dtype uint8", "data.check_images-uint8"),
    case(lambda: data.check_images(with_value(_images(), (0, 0, 0, 0), NAN)), ValueError,
         "images contain non-finite values", "data.check_images-nan"),
    case(lambda: data.check_images(_images() * 2), ValueError, "images must lie in [-1, 1]",
         "data.check_images-range"),
    case(lambda: data.check_images(_unit_images()), ValueError, "images look scaled to [0, 1]",
         "data.check_images-unit-range"),
    case(lambda: data.check_images(_unit_images(), what="batch['x']"), ValueError, "batch['x'] look scaled",
         "data.check_images-what"),
    case(lambda: data.check_images(_images(), allow_nonnegative="yes"), TypeError,
         "allow_nonnegative must be a bool", "data.check_images-allow_nonnegative-str"),
    case(lambda: _batches(batch_size=0), ValueError, "batch_size must be >= 1", "data.array_batches-batch_size-zero"),
    case(lambda: _batches(batch_size=4.0), TypeError, "batch_size must be a Python int",
         "data.array_batches-batch_size-float"),
    case(lambda: _batches(seed=-1), ValueError, "seed must be >= 0", "data.array_batches-seed-negative"),
    case(lambda: _batches(seed=1.5), TypeError, "seed must be a Python int", "data.array_batches-seed-float"),
    case(lambda: _batches(batch_size=16), ValueError, "only 8 examples, fewer than one batch of 16",
         "data.array_batches-batch-larger-than-data"),
    case(lambda: _batches({"x": _images(), "label": np.zeros(7, np.int32)}), ValueError,
         "every array must have the same leading (example) dimension", "data.array_batches-leading-dims"),
    case(lambda: _batches([_images(), _images(), _images()]), ValueError, "arrays must be a dict of arrays",
         "data.array_batches-list-of-three"),
    case(lambda: _batches({}), ValueError, "arrays is empty", "data.array_batches-empty-dict"),
    case(lambda: _batches({"image": _images()}), ValueError, "validate_images looks for images under 'x'",
         "data.array_batches-no-x"),
    case(lambda: _batches(_unit_images()), ValueError, "arrays[\"x\"] look scaled to [0, 1]",
         "data.array_batches-unit-range"),
    case(lambda: _batches(process_index=2, process_count=2), ValueError, "process_index must be < process_count = 2",
         "data.array_batches-process_index"),
    case(lambda: _batches(process_count=0), ValueError, "process_count must be >= 1",
         "data.array_batches-process_count-zero"),
    case(lambda: _batches(batch_size=3, process_count=2), ValueError, "is not divisible by process_count = 2",
         "data.array_batches-batch-per-process"),
    case(lambda: _batches(devices=3), ValueError, "is not divisible by devices = 3", "data.array_batches-devices"),
    case(lambda: _batches(shuffle="no"), TypeError, "shuffle must be a bool", "data.array_batches-shuffle-str"),
    case(lambda: _batches(drop_remainder="no"), TypeError, "drop_remainder must be a bool",
         "data.array_batches-drop_remainder-str"),
    case(lambda: _batches(repeat="no"), TypeError, "repeat must be a bool", "data.array_batches-repeat-str"),
    case(lambda: _batches(validate_images="no"), TypeError, "validate_images must be a bool",
         "data.array_batches-validate_images-str"),
    case(lambda: data.tfds_images("mnist", split="train", batch_size=4, seed=0, shuffle="no"), TypeError,
         "shuffle must be a bool", "data.tfds_images-shuffle-str"),
    case(lambda: data.shard_for_devices({"x": np.zeros((4, 2))}, 0), ValueError, "n_devices must be >= 1",
         "data.shard_for_devices-zero"),
    case(lambda: data.shard_for_devices({"x": np.zeros((4, 2))}, 2.0), TypeError, "n_devices must be a Python int",
         "data.shard_for_devices-float"),
    case(lambda: data.shard_for_devices({"x": np.zeros((5, 2))}, 2), ValueError,
         "a batch of 5 examples cannot be split evenly across 2 devices", "data.shard_for_devices-divide"),
    case(lambda: data.shard_for_devices({"x": np.float32(1.0)}, 2), ValueError,
         "needs arrays with a batch axis, got a scalar", "data.shard_for_devices-scalar"),
    case(lambda: data.prefetch(iter([]), size=0), ValueError, "size must be >= 1", "data.prefetch-size-zero"),
    case(lambda: data.image_dataset_spec("imagenet"), ValueError, "unknown image dataset 'imagenet'",
         "data.image_dataset_spec-unknown"),
    case(lambda: data.image_dataset_spec("digits", image_size=0), ValueError, "image_size must be >= 1",
         "data.image_dataset_spec-image_size-zero"),
    case(lambda: data.image_dataset("imagenet", split="train", batch_size=4, seed=0), ValueError,
         "unknown image dataset 'imagenet'", "data.image_dataset-unknown"),
    case(lambda: data.image_dataset("digits", split="val", batch_size=4, seed=0), ValueError,
         "Unknown split 'val'", "data.image_dataset-digits-split"),
    case(lambda: data.tfds_images("imagenet", split="train", batch_size=4, seed=0), ValueError,
         "unsupported tfds dataset 'imagenet'", "data.tfds_images-unknown"),
    case(lambda: data.tfds_images("mnist", split="train", batch_size=4, seed=0, image_size=0), ValueError,
         "image_size must be >= 1", "data.tfds_images-image_size-zero"),
    case(lambda: data.tfds_images("mnist", split="train", batch_size=4, seed=0, shuffle_buffer=0), ValueError,
         "shuffle_buffer must be >= 1", "data.tfds_images-shuffle_buffer-zero"),
    case(lambda: data.tfds_unpaired_images("horse2zebra", split="train", batch_size=4, seed=0), ValueError,
         "unsupported unpaired dataset 'horse2zebra'", "data.tfds_unpaired_images-unknown"),
]


# ---------------------------------------------------------------------------
# jgan.checkpoint

CHECKPOINT_STATE = {"w": jnp.arange(3.0), "step": jnp.int32(1)}
_TEMPORARY_DIRS = []  # Removed after the module's tests.


@functools.cache
def _checkpoint_dir(incomplete: bool = False) -> str:
    """A directory holding a checkpoint at step 1 (and, if ``incomplete``, a step 2 without its finish marker).

    Two directories: a save into the one with an incomplete step would remove it.
    """
    directory = tempfile.mkdtemp(prefix="jgan-bad-inputs-")
    _TEMPORARY_DIRS.append(directory)
    checkpoint.save(directory, CHECKPOINT_STATE, step=1)
    if incomplete:
        checkpoint.save(directory, CHECKPOINT_STATE, step=2)
        os.remove(os.path.join(directory, "2", "_CHECKPOINT_METADATA"))
    return directory


@functools.cache
def _missing_dir() -> str:
    """A path that does not exist (inside a temporary directory removed after the module)."""
    parent = tempfile.mkdtemp(prefix="jgan-bad-inputs-")
    _TEMPORARY_DIRS.append(parent)
    return os.path.join(parent, "absent")


@pytest.fixture(scope="module", autouse=True)
def _remove_temporary_directories():
    yield
    for directory in _TEMPORARY_DIRS:
        shutil.rmtree(directory, ignore_errors=True)


CHECKPOINT_CASES = [
    case(lambda: checkpoint.save(_missing_dir(), CHECKPOINT_STATE, step=-1), ValueError, "step must be >= 0",
         "checkpoint.save-step-negative"),
    case(lambda: checkpoint.save(_missing_dir(), CHECKPOINT_STATE, step=1.5), TypeError,
         "step must be a Python int", "checkpoint.save-step-float"),
    case(lambda: checkpoint.save(_missing_dir(), CHECKPOINT_STATE, step="3"), TypeError,
         "step must be a Python int", "checkpoint.save-step-str"),
    case(lambda: checkpoint.save(_missing_dir(), CHECKPOINT_STATE, step=True), TypeError,
         "step must be a Python int", "checkpoint.save-step-bool"),
    case(lambda: checkpoint.save(_missing_dir(), CHECKPOINT_STATE, step=jnp.float32(2.0)), TypeError,
         "step must be a Python int", "checkpoint.save-step-float-array"),
    case(lambda: checkpoint.save(_missing_dir(), {"w": jnp.zeros(2)}), ValueError, "Give step=",
         "checkpoint.save-no-step"),
    case(lambda: checkpoint.save(_missing_dir(), CHECKPOINT_STATE, step=1, max_to_keep=0), ValueError,
         "max_to_keep must be >= 1", "checkpoint.save-max_to_keep-zero"),
    case(lambda: checkpoint.save(_missing_dir(), CHECKPOINT_STATE, step=1, max_to_keep=2.0), TypeError,
         "max_to_keep must be a Python int", "checkpoint.save-max_to_keep-float"),
    case(lambda: checkpoint.save(_missing_dir(), CHECKPOINT_STATE, step=1, metadata=[("lr", 1e-4)]), TypeError,
         "metadata must be a dict", "checkpoint.save-metadata-list"),
    case(lambda: checkpoint.save(_missing_dir(), CHECKPOINT_STATE, step=1, metadata={"f": object()}), TypeError,
         "metadata must be JSON-serialisable", "checkpoint.save-metadata-not-json"),
    case(lambda: checkpoint.save(_checkpoint_dir(), CHECKPOINT_STATE, step=1), ValueError,
         "already holds a checkpoint at step 1 >= 1", "checkpoint.save-step-not-newer"),
    case(lambda: checkpoint.restore(_missing_dir(), CHECKPOINT_STATE), FileNotFoundError, "No checkpoint in",
         "checkpoint.restore-missing-directory"),
    case(lambda: checkpoint.restore(_checkpoint_dir(), CHECKPOINT_STATE, step=0.0), TypeError,
         "step must be a Python int", "checkpoint.restore-step-float"),
    case(lambda: checkpoint.restore(_checkpoint_dir(), CHECKPOINT_STATE, step="1"), TypeError,
         "step must be a Python int", "checkpoint.restore-step-str"),
    case(lambda: checkpoint.restore(_checkpoint_dir(), CHECKPOINT_STATE, step=-1), ValueError,
         "step must be >= 0", "checkpoint.restore-step-negative"),
    case(lambda: checkpoint.restore(_checkpoint_dir(), CHECKPOINT_STATE, step=7), FileNotFoundError,
         "No checkpoint at step 7", "checkpoint.restore-step-absent"),
    case(lambda: checkpoint.restore(_checkpoint_dir(incomplete=True), CHECKPOINT_STATE, step=2),
         FileNotFoundError, "is incomplete and cannot be restored", "checkpoint.restore-step-incomplete"),
    case(lambda: checkpoint.restore(_checkpoint_dir(), {"w": jnp.zeros(4), "step": jnp.int32(0)}), ValueError,
         "does not match the template", "checkpoint.restore-template-shape"),
    case(lambda: checkpoint.restore(_checkpoint_dir(), {"v": jnp.zeros(3)}), ValueError,
         "does not match the template", "checkpoint.restore-template-structure"),
    case(lambda: checkpoint.all_steps(None), TypeError, "directory must be", "checkpoint.all_steps-None"),
    case(lambda: checkpoint.latest_step(3), TypeError, "directory must be", "checkpoint.latest_step-int"),
    case(lambda: checkpoint.save(None, CHECKPOINT_STATE, step=1), TypeError, "directory must be a path",
         "checkpoint.save-directory-None"),
    case(lambda: checkpoint.restore(3, CHECKPOINT_STATE), TypeError, "directory must be a path",
         "checkpoint.restore-directory-int"),
]


# ---------------------------------------------------------------------------
# jgan.models


class _Dense(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(x)


class _BatchNormNet(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool = True):
        return nn.BatchNorm(use_running_average=not train)(x)


class _FixedBatchNorm(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.BatchNorm(use_running_average=False)(x)


class _NnxLinear(nnx.Module):
    def __init__(self):
        self.linear = nnx.Linear(2, 1, rngs=nnx.Rngs(0))

    def __call__(self, x):
        return self.linear(x)


class _NnxBatchNorm(nnx.Module):
    def __init__(self):
        self.norm = nnx.BatchNorm(2, rngs=nnx.Rngs(0))

    def __call__(self, x):
        return self.norm(x)


def _bn_variables():
    return models.init_model(_BatchNormNet(), KEY, a(2, 2))


MODEL_CASES = [
    case(lambda: models.make_apply(3, stateful=False), TypeError,
         "make_apply takes a flax linen module (flax.linen.Module), got int", "models.make_apply-int"),
    case(lambda: models.make_apply(_NnxLinear(), stateful=False), TypeError, "use make_nnx_apply",
         "models.make_apply-nnx-module"),
    case(lambda: models.make_apply(_BatchNormNet(), stateful=False)(_bn_variables()[0], a(2, 2)), ValueError,
         "reads a variable collection absent from the variables", "models.make_apply-stateless-batchnorm"),
    case(lambda: models.make_apply(_FixedBatchNorm(), stateful=True, train=False)(
             *models.init_model(_FixedBatchNorm(), KEY, a(2, 2)), a(2, 2)),
         ValueError, "updates its model_state in a call where it is immutable", "models.make_apply-immutable-state"),
    case(lambda: models.make_apply(_Dense(), stateful="no"), TypeError, "stateful must be a bool",
         "models.make_apply-stateful-str"),
    case(lambda: models.make_apply(_BatchNormNet(), stateful=True, train="False"), TypeError,
         "train must be a bool", "models.make_apply-train-str"),
    case(lambda: models.init_model(_NnxLinear(), KEY, a(1, 2)), TypeError, "use split_nnx_module",
         "models.init_model-nnx-module"),
    case(lambda: models.init_model("dense", KEY, a(1, 2)), TypeError, "init_model takes a flax linen module",
         "models.init_model-str"),
    case(lambda: models.make_nnx_apply(_Dense()), TypeError, "make_nnx_apply takes a flax.nnx.Module, got _Dense",
         "models.make_nnx_apply-linen-module"),
    case(lambda: models.make_nnx_apply(_NnxBatchNorm(), stateful=False), ValueError,
         "has variables other than nnx.Param", "models.make_nnx_apply-stateless-batchnorm"),
    case(lambda: models.make_nnx_apply(_NnxLinear(), stateful=False)({"w": a(2)}, a(1, 2)), ValueError,
         "params does not have the structure of _NnxLinear's params", "models.make_nnx_apply-params-structure"),
    case(lambda: models.make_nnx_apply(_NnxLinear(), stateful="no"), TypeError, "stateful must be a bool or None",
         "models.make_nnx_apply-stateful-str"),
    case(lambda: models.make_nnx_apply(_NnxLinear(), train="no"), TypeError, "train must be a bool",
         "models.make_nnx_apply-train-str"),
    case(lambda: models.split_nnx_module(_Dense()), TypeError, "use init_model for a flax linen module",
         "models.split_nnx_module-linen-module"),
    case(lambda: models.merge_nnx_module(_NnxLinear(), {"w": a(2)}, {}), ValueError,
         "params does not have the structure", "models.merge_nnx_module-params-structure"),
    case(lambda: models.merge_nnx_module(None, {}, {}), TypeError, "merge_nnx_module takes a flax.nnx.Module",
         "models.merge_nnx_module-None"),
    case(lambda: models.init_model(models.DCGANGenerator(image_size=48), KEY, a(1, 4)), ValueError,
         "image_size must be one of [28, 32, 64], got 48", "models.DCGANGenerator-image_size"),
    case(lambda: models.init_model(models.DCGANDiscriminator(normalization="group"), KEY, a(1, 8, 8, 1)),
         ValueError, "normalization must be 'batch', 'layer' or 'none'", "models.DCGANDiscriminator-normalization"),
    case(lambda: models.init_model(models.ResnetGenerator(n_blocks=-1), KEY, a(1, 8, 8, 3)), ValueError,
         "n_blocks must be >= 0", "models.ResnetGenerator-n_blocks-negative"),
    case(lambda: models.init_model(models.ResnetGenerator(), KEY, a(1, 6, 6, 3)), ValueError,
         "height and width multiples of 4", "models.ResnetGenerator-image-size"),
    case(lambda: models.init_model(models.PatchGANDiscriminator(n_layers=0), KEY, a(1, 8, 8, 3)), ValueError,
         "n_layers must be >= 1", "models.PatchGANDiscriminator-n_layers-zero"),
    case(lambda: models.check_labels(jnp.zeros(4), 10), ValueError, "labels must be integers",
         "models.check_labels-float"),
    case(lambda: models.check_labels(jnp.zeros((4, 1), jnp.int32), 10), ValueError,
         "labels must have shape [batch]", "models.check_labels-[batch,1]"),
    case(lambda: models.check_labels(jnp.zeros(4, jnp.int32), 10, batch=3), ValueError,
         "labels must have shape [3]", "models.check_labels-batch"),
    case(lambda: models.check_labels(jnp.array([0, 10, 3]), 10), ValueError, "labels must lie in [0, 10), got [10]",
         "models.check_labels-too-large"),
    case(lambda: models.check_labels(jnp.array([-1, 2]), 10), ValueError, "labels must lie in [0, 10), got [-1]",
         "models.check_labels-negative"),
    case(lambda: models.check_labels(jnp.array([1, 2]), "10"), TypeError, "num_classes",
         "models.check_labels-num_classes-str"),
    case(lambda: models.check_labels(jnp.array([0]), 0), ValueError, "num_classes must be >= 1",
         "models.check_labels-num_classes-zero"),
    case(lambda: models.init_model(models.ConditionalDCGANGenerator(image_size=32, num_classes=10), KEY, a(2, 8),
                                   jnp.zeros(3, jnp.int32)),
         ValueError, "labels must have shape [2]", "models.ConditionalDCGANGenerator-labels-batch"),
    case(lambda: models.make_inception_features({}, chunk_size=0), ValueError, "chunk_size must be >= 1",
         "models.make_inception_features-chunk_size-zero"),
    case(lambda: models.load_fid_inception(), ValueError, "pass the weights file as path",
         "models.load_fid_inception-no-path"),
    case(lambda: models.load_fid_inception(_missing_dir()), FileNotFoundError, "no FID Inception weights at",
         "models.load_fid_inception-missing-file"),
    case(lambda: models.read_torch_state_dict(_missing_dir()), FileNotFoundError, "no PyTorch checkpoint at",
         "models.read_torch_state_dict-missing-file"),
    case(lambda: models.load_classifier(_missing_dir()), FileNotFoundError, "No classifier file at",
         "models.load_classifier-missing-file"),
    case(lambda: models.make_classifier_fn(models.DigitClassifier(), {}, batch_size=0), ValueError,
         "batch_size must be >= 1", "models.make_classifier_fn-batch_size-zero"),
    case(lambda: models.make_classifier_fn(models.DigitClassifier(), {}, batch_size=2.5), TypeError,
         "batch_size must be a Python int", "models.make_classifier_fn-batch_size-float"),
]


CASES = (
    LOSS_CASES
    + PENALTY_CASES
    + UNROLL_CASES
    + OBJECTIVE_CASES
    + MAKE_GAN_CASES
    + GAN_CALL_CASES
    + LEGACY_CASES
    + STEP_TOOL_CASES
    + LOOP_CASES
    + CYCLEGAN_CASES
    + PRESET_CASES
    + SINKHORN_CASES
    + FRECHET_CASES
    + IS_MMD_COVERAGE_CASES
    + DATA_CASES
    + CHECKPOINT_CASES
    + MODEL_CASES
)


@pytest.mark.parametrize("call, error, fragment", CASES)
def test_bad_input_raises_a_clear_error(call, error, fragment):
    with pytest.raises(error, match=re.escape(fragment)):
        call()


def test_the_table_is_large_and_its_ids_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    assert len([c for c in CASES if not c.marks]) >= 150
