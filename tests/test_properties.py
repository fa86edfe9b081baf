"""Property tests of the core (hypothesis): facts that must hold for every input.

Each property is checked on a few dozen generated inputs (shapes and values),
with hypothesis shrinking any failure to a minimal example:

- ``steps.pack_samples`` is a bijection: it only regroups consecutive samples,
  and unpacking recovers the batch exactly;
- every loss family's ``reduction="none"`` averages to its ``"mean"``;
- the losses on logits are finite, with finite gradients, for logits up to
  ±1e30, and match float64 references (``numpy.logaddexp``); the minimax
  game is symmetric under swapping real and fake with negated logits.
  (Up to ±1e30, not float32's 3.4e38: a batch mean sums in float32, and 32
  logits of 1.1e37 overflow that sum to inf);
- ``metrics.mode_coverage`` does not depend on the order of the samples;
- ``penalties.weight_clipping`` lands every parameter in [−c, c], leaves the
  ones already inside untouched, and puts the others at the nearer bound (to
  float32's spacing at the parameter).

Floats are drawn without subnormals: XLA on CPU flushes them to zero.

On CI (``CI`` set) the examples are derandomised, so a run is reproducible;
locally each run explores new inputs.
"""

from __future__ import annotations

import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jgan import losses, metrics, penalties, steps

SETTINGS = settings(max_examples=30, deadline=None, derandomize=bool(os.environ.get("CI")))

FLOAT32 = st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False)
LOGIT_BOUND = float(np.float32(1e30))
# Logits anywhere in [−1e30, 1e30], with the extremes and the edges of
# float32's exp (±88.7) drawn often.
LOGITS = st.one_of(
    st.sampled_from([-LOGIT_BOUND, -1e4, -88.7, -1.0, 0.0, 1.0, 88.7, 1e4, LOGIT_BOUND]),
    st.floats(-LOGIT_BOUND, LOGIT_BOUND, width=32, allow_subnormal=False),
)
# Few distinct shapes: each new shape compiles the functions again.
BATCHES = st.sampled_from([1, 2, 5, 64])
ON_LOGITS = sorted(name for name, family in losses.LOSS_FAMILIES.items() if family.on_logits)


def _logits(batch):
    return hnp.arrays(np.float32, batch, elements=LOGITS)


# ---------------------------------------------------------------------------
# steps.pack_samples


def _unpack(packed: np.ndarray, pack: int) -> np.ndarray:
    """The inverse of ``pack_samples``, written from its docstring."""
    groups, *inner, packed_features = packed.shape
    features = packed_features // pack
    split = packed.reshape(groups, *inner, pack, features)  # [b/m, ..., m, c]
    samples = np.moveaxis(split, -2, 1)  # [b/m, m, ..., c]
    return samples.reshape(groups * pack, *inner, features)


@SETTINGS
@given(
    groups=st.integers(1, 5),
    pack=st.integers(1, 4),
    sample_shape=st.sampled_from([(), (3,), (2, 3), (2, 2, 3)]),
)
def test_pack_samples_is_a_bijection_of_consecutive_groups(groups, pack, sample_shape):
    batch = groups * pack
    # Distinct values: any duplication or loss of an element would show.
    x = np.arange(batch * math.prod(sample_shape), dtype=np.float32).reshape(batch, *sample_shape)

    packed = np.asarray(steps.pack_samples(jnp.asarray(x), pack))

    if pack == 1:
        np.testing.assert_array_equal(packed, x)
        return
    if not sample_shape:  # [batch] -> [batch/m, m]
        chex.assert_shape(packed, (groups, pack))
        np.testing.assert_array_equal(packed.reshape(batch), x)
        return
    *inner, features = sample_shape
    chex.assert_shape(packed, (groups, *inner, pack * features))
    # Input i of the discriminator holds samples i·m, ..., i·m + m − 1, each
    # in its own block of the last axis.
    for i in range(groups):
        for j in range(pack):
            np.testing.assert_array_equal(packed[i, ..., j * features : (j + 1) * features], x[i * pack + j])
    np.testing.assert_array_equal(_unpack(packed, pack), x)
    np.testing.assert_array_equal(np.sort(packed, axis=None), np.sort(x, axis=None))


# ---------------------------------------------------------------------------
# Losses: reductions


@SETTINGS
@given(
    family=st.sampled_from(sorted(losses.LOSS_FAMILIES)),
    data=st.data(),
    batch=BATCHES,
    column=st.booleans(),
)
def test_reduction_none_averages_to_the_mean(family, data, batch, column):
    scores = hnp.arrays(np.float32, batch, elements=st.floats(-1e3, 1e3, width=32, allow_subnormal=False))
    real, fake = data.draw(scores), data.draw(scores)
    if column:  # [batch, 1] is accepted as [batch]
        real, fake = real[:, None], fake[:, None]
    fam = losses.LOSS_FAMILIES[family]
    # float32 rounding of a sum of terms up to (1 + 1e3)² in size.
    atol = 1e-5 * (1.0 + 1e3) ** 2

    g_args = (fake, real) if fam.relativistic else (fake,)  # A relativistic G loss reads D(x) too.
    d_none = fam.d_loss(real, fake, reduction="none")
    g_none = fam.g_loss(*g_args, reduction="none")
    chex.assert_shape([d_none, g_none], (batch,))
    chex.assert_trees_all_close(jnp.mean(d_none), fam.d_loss(real, fake), rtol=1e-5, atol=atol)
    chex.assert_trees_all_close(jnp.mean(g_none), fam.g_loss(*g_args), rtol=1e-5, atol=atol)
    chex.assert_trees_all_close(fam.d_loss(real, fake), fam.d_loss(real.reshape(batch), fake.reshape(batch)))


# ---------------------------------------------------------------------------
# Losses on logits: stability and closed forms


@SETTINGS
@given(family=st.sampled_from(ON_LOGITS), data=st.data(), batch=BATCHES)
def test_losses_on_logits_and_their_gradients_are_finite(family, data, batch):
    real, fake = data.draw(_logits(batch)), data.draw(_logits(batch))
    fam = losses.LOSS_FAMILIES[family]

    d_loss, d_grads = jax.value_and_grad(fam.d_loss, argnums=(0, 1))(real, fake)
    g_loss, g_grad = jax.value_and_grad(fam.g_loss)(fake)

    chex.assert_tree_all_finite((d_loss, d_grads, g_loss, g_grad))


def _softplus64(x):
    """log(1 + e^x) in float64 by an independent formula."""
    return np.logaddexp(0.0, np.asarray(x, np.float64))


@SETTINGS
@given(data=st.data(), n_real=BATCHES, n_fake=BATCHES)
def test_minimax_losses_match_float64_references(data, n_real, n_fake):
    real, fake = data.draw(_logits(n_real)), data.draw(_logits(n_fake))
    # −log σ(r) = log(1 + e^−r),  −log(1 − σ(f)) = log(1 + e^f).
    expected_d = _softplus64(-real).mean() + _softplus64(fake).mean()
    expected_ns = _softplus64(-fake).mean()
    expected_mm = -_softplus64(fake).mean()

    chex.assert_trees_all_close(losses.minimax_discriminator_loss(real, fake), expected_d, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(losses.non_saturating_generator_loss(fake), expected_ns, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(losses.minimax_generator_loss(fake), expected_mm, rtol=1e-5, atol=1e-6)


@SETTINGS
@given(data=st.data(), n_real=BATCHES, n_fake=BATCHES)
def test_minimax_game_identities(data, n_real, n_fake):
    real, fake = data.draw(_logits(n_real)), data.draw(_logits(n_fake))

    # Swapping the roles of real and fake, with the logits negated (a
    # discriminator for "fake" instead of "real"), is the same game.
    swapped = losses.minimax_discriminator_loss(-fake, -real)
    np.testing.assert_array_equal(swapped, losses.minimax_discriminator_loss(real, fake))

    # softplus(−f) − softplus(f) = −f: the non-saturating and the minimax
    # generator losses add up to −E f.
    total = losses.non_saturating_generator_loss(fake) + losses.minimax_generator_loss(fake)
    scale = float(np.max(np.abs(fake), initial=1.0))
    chex.assert_trees_all_close(total, -np.mean(fake, dtype=np.float64), rtol=0, atol=1e-6 * scale)


# ---------------------------------------------------------------------------
# metrics.mode_coverage


@SETTINGS
@given(data=st.data(), n=st.sampled_from([1, 5, 40]), modes=st.sampled_from([1, 3, 8]), std=st.floats(0.05, 2.0))
def test_mode_coverage_is_invariant_to_the_order_of_the_samples(data, n, modes, std):
    coordinates = st.floats(-3.0, 3.0, width=32, allow_subnormal=False)
    samples = data.draw(hnp.arrays(np.float32, (n, 2), elements=coordinates))
    centers = data.draw(hnp.arrays(np.float32, (modes, 2), elements=coordinates))
    order = np.asarray(data.draw(st.permutations(range(n))))

    result = metrics.mode_coverage(samples, centers, std=std)
    permuted = metrics.mode_coverage(samples[order], centers, std=std)

    chex.assert_trees_all_equal(permuted, result)
    counts = np.asarray(result.counts)
    assert int(result.modes) == np.count_nonzero(counts)
    assert counts.sum() == round(float(result.high_quality) * n)
    assert 0.0 <= float(result.reverse_kl) <= math.log(modes) + 1e-6


# ---------------------------------------------------------------------------
# penalties.weight_clipping


def _params(shapes):
    return st.fixed_dictionaries({name: hnp.arrays(np.float32, shape, elements=FLOAT32) for name, shape in shapes.items()})


@SETTINGS
@given(data=st.data(), c=FLOAT32.map(abs))
def test_weight_clipping_lands_in_the_box_and_keeps_parameters_inside(data, c):
    shapes = {"w": (3, 2), "b": (2,)}
    params, updates = data.draw(_params(shapes)), data.draw(_params(shapes))
    tx = penalties.weight_clipping(c)

    clipped, _ = tx.update(updates, tx.init(params), params)
    new = optax.apply_updates(params, clipped)
    unclipped = optax.apply_updates(params, updates)

    bound = np.float32(c)
    for name in shapes:
        value, plain = np.asarray(new[name]), np.asarray(unclipped[name])
        assert np.all(np.abs(value) <= bound), (name, value, bound)
        inside = np.isfinite(plain) & (np.abs(plain) <= bound)
        np.testing.assert_array_equal(value[inside], plain[inside])
        # Outside, the parameter goes to the nearer bound, up to the spacing
        # of float32 at the parameter (p + u' cannot be finer than that).
        outside = ~inside
        target = np.clip(plain[outside], -bound, bound)
        with np.errstate(over="ignore"):  # the spacing at float32's largest values is inf
            slack = 2 * np.spacing(np.abs(np.asarray(params[name])[outside])) + np.spacing(bound)
        assert np.all(np.abs(value[outside] - target) <= slack), (name, value, target, slack)
