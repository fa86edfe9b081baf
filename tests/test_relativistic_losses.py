"""The relativistic average losses (Jolicoeur-Martineau 2019) beyond their closed forms.

The closed forms (numpy, float64), the ``[batch, 1]`` layout, finiteness at
±1e4, shape and empty-batch errors are checked with every other loss in
tests/test_losses.py. Here:

- properties (hypothesis): each discriminator loss is symmetric under swapping
  real and fake and negating, each generator loss is its discriminator loss
  with the batches swapped, every loss is invariant under a common shift of
  all outputs, and ``reduction="none"`` averages to the loss;
- the exact limits far in the tails (outputs of ±1e4);
- ``axis_name``: under ``jax.shard_map`` over 4 devices the per-device losses
  and averaged per-device gradients equal the whole batch's on one device
  (and without it they do not);
- ``Unrolled.generator_loss`` at K = 0 equals the plain relativistic
  generator loss, value and gradient (the unrolled ``make_gan`` step of each
  relativistic family against a Python-loop twin is in tests/test_unroll.py).
"""

from __future__ import annotations

import functools
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jgan import losses as L
from jgan._parallel import mark_varying
from jgan.unroll import Unrolled

from nets import discriminator, generator

SETTINGS = settings(max_examples=30, deadline=None, derandomize=bool(os.environ.get("CI")))

# name -> (discriminator loss, generator loss)
RELATIVISTIC = {
    name: (family.d_loss, family.g_loss)
    for name, family in L.LOSS_FAMILIES.items()
    if family.relativistic
}
FUNCTIONS = [fn for pair in RELATIVISTIC.values() for fn in pair]

# Outputs of moderate size, so that float32 rounding of the batch means stays
# far below the tolerances (the ±1e4 tails are checked separately).
OUTPUTS = st.floats(-30.0, 30.0, width=32, allow_subnormal=False)
BATCHES = st.sampled_from([1, 2, 5, 16])


def test_the_three_families_are_named_and_flagged():
    assert set(RELATIVISTIC) == {
        "relativistic_average", "relativistic_average_least_squares", "relativistic_average_hinge"}
    for name in RELATIVISTIC:
        family = L.LOSS_FAMILIES[name]
        assert family.relativistic and not family.on_logits and not family.wasserstein
        assert L.loss_family(name) is family


def _draw(data, batch):
    return data.draw(hnp.arrays(np.float32, batch, elements=OUTPUTS))


@SETTINGS
@given(name=st.sampled_from(sorted(RELATIVISTIC)), data=st.data(), n_real=BATCHES, n_fake=BATCHES,
       shift=st.floats(-50.0, 50.0, width=32))
def test_symmetries_of_the_relativistic_losses(name, data, n_real, n_fake, shift):
    d_loss, g_loss = RELATIVISTIC[name]
    r, f = _draw(data, n_real), _draw(data, n_fake)
    d = float(d_loss(r, f))
    # Swapping real and fake with negated outputs leaves D's loss unchanged
    # (each term maps onto the other's: ℓ_real(x) = ℓ_fake(−x)).
    np.testing.assert_allclose(float(d_loss(-f, -r)), d, rtol=1e-5, atol=1e-4)
    # The generator's loss is D's with the batches swapped (the paper's G loss).
    np.testing.assert_allclose(float(g_loss(f, r)), float(d_loss(f, r)), rtol=1e-6, atol=1e-6)
    # Only differences of outputs enter: a common shift changes nothing.
    np.testing.assert_allclose(float(d_loss(r + shift, f + shift)), d, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(float(g_loss(f + shift, r + shift)), float(g_loss(f, r)), rtol=1e-4, atol=1e-3)


@SETTINGS
@given(fn=st.sampled_from(FUNCTIONS), data=st.data(), batch=BATCHES)
def test_reduction_none_averages_to_the_mean(fn, data, batch):
    x, y = _draw(data, batch), _draw(data, batch)
    per_example = fn(x, y, reduction="none")
    chex.assert_shape(per_example, (batch,))
    np.testing.assert_allclose(float(jnp.mean(per_example)), float(fn(x, y)), rtol=1e-5, atol=1e-4)


def test_per_example_values_are_relative_to_the_whole_other_batch(x64):
    # Changing one generated output changes every real example's value (through E C(G(z))).
    r, f = jnp.array([0.5, -1.0, 2.0]), jnp.array([0.0, 1.0, -2.0])
    for fn, _ in RELATIVISTIC.values():
        before = fn(r, f, reduction="none")
        after = fn(r, f.at[2].set(3.0), reduction="none")
        assert np.all(np.asarray(before[:2] != after[:2])), fn.__name__


@pytest.mark.parametrize("name", sorted(RELATIVISTIC))
def test_exact_limits_far_in_the_tails(name):
    # D separates perfectly: r − E f = 2e4, f − E r = −2e4.
    d_loss, g_loss = RELATIVISTIC[name]
    r, f = jnp.full(4, 1e4, jnp.float32), jnp.full(4, -1e4, jnp.float32)
    expected = {  # (D's loss, G's loss) there
        "relativistic_average": (0.0, 4e4),  # softplus(−2e4) twice; softplus(2e4) twice.
        "relativistic_average_least_squares": (2 * (2e4 - 1) ** 2, 2 * (2e4 + 1) ** 2),
        "relativistic_average_hinge": (0.0, 2 * (1 + 2e4)),
    }[name]
    np.testing.assert_allclose([float(d_loss(r, f)), float(g_loss(f, r))], expected, rtol=1e-6)
    grads = jax.grad(lambda r, f: d_loss(r, f) + g_loss(f, r), (0, 1))(r, f)
    chex.assert_tree_all_finite(grads)


def test_rasgan_gradient_reaches_the_real_outputs_through_the_fake_mean(x64):
    """∂/∂r_j of the G loss: the fake term's E C(x) and the real term's own r_j (by hand)."""
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    r, f = np.array([0.3, -1.2, 2.0]), np.array([0.7, -0.4])
    grad = jax.grad(lambda r: L.relativistic_average_generator_loss(f, r))(jnp.asarray(r))
    # G: E_z softplus(−(f − E r)) + E_x softplus(r − E f).
    fake_part = np.mean(-sig(-(f - r.mean()))) * (-1 / r.size)  # through E r
    real_part = sig(r - f.mean()) / r.size
    np.testing.assert_allclose(grad, fake_part + real_part, rtol=1e-12)


# --- axis_name: the batch means over every device's rows. ------------------------------


@pytest.fixture(scope="module")
def mesh():
    return Mesh(np.array(jax.devices()[:4]), ("data",))  # tests/conftest.py forces 8 CPU devices.


def _critic(w, x):
    """A linear critic: outputs w[0]·x + w[1], ``[batch]``."""
    return w[0] * x + w[1]


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda fn: fn.__name__)
def test_axis_name_makes_the_data_parallel_loss_and_gradient_exact(fn, mesh):
    rng = np.random.default_rng(0)
    x, y = jnp.asarray(rng.normal(size=16), jnp.float32), jnp.asarray(rng.normal(size=16) + 1, jnp.float32)
    w = jnp.array([1.3, -0.2], jnp.float32)

    def loss(w, x, y, **kw):
        return fn(_critic(w, x), _critic(w, y), **kw)

    def per_device(axis_name):
        @functools.partial(jax.shard_map, mesh=mesh, in_specs=(P(), P("data"), P("data")),
                           out_specs=(P(), P(), P("data")))
        def run(w, x, y):
            kw = {} if axis_name is None else {"axis_name": axis_name}
            value, grads = jax.value_and_grad(loss)(mark_varying(w, "data"), x, y, **kw)
            # What a data-parallel step does: average the values and the gradients.
            return (jax.lax.pmean(value, "data"), jax.lax.pmean(grads, "data"),
                    fn(_critic(w, x), _critic(w, y), reduction="none", **kw))
        return jax.jit(run)(w, x, y)

    value, grads = jax.value_and_grad(loss)(w, x, y)
    per_example = fn(_critic(w, x), _critic(w, y), reduction="none")
    mapped = per_device("data")
    np.testing.assert_allclose(mapped[0], value, rtol=1e-5)
    np.testing.assert_allclose(mapped[1], grads, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mapped[2], per_example, rtol=1e-5, atol=1e-6)
    # Without the axis each device compares with its own rows' mean: not the same loss.
    local = per_device(None)
    assert np.max(np.abs(np.asarray(local[2]) - np.asarray(per_example))) > 1e-3


def test_axis_name_outside_a_mapped_axis_is_a_clear_error():
    with pytest.raises(ValueError, match="axis_name='data' is not a mapped axis"):
        L.relativistic_average_discriminator_loss(jnp.zeros(2), jnp.zeros(2), axis_name="data")


def test_loss_family_validates_the_relativistic_flag():
    with pytest.raises(TypeError, match="relativistic must be a bool"):
        L.loss_family(L.LossFamily(L.relativistic_average_discriminator_loss,
                                   L.relativistic_average_generator_loss, relativistic="yes"))


# --- The step. --------------------------------------------------------------------------


def _layer(rng, n_in, n_out):
    return (jnp.asarray(rng.normal(size=(n_in, n_out)) / np.sqrt(n_in), jnp.float32),
            jnp.asarray(rng.normal(size=n_out) * 0.1, jnp.float32))


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(4)
    g_params, d_params = [_layer(rng, 2, 8), _layer(rng, 8, 2)], [_layer(rng, 2, 8), _layer(rng, 8, 1)]
    z = jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)
    real = jnp.asarray(rng.normal(size=(8, 2)) + 1.0, jnp.float32)
    return g_params, d_params, z, real


# A tiny program compiled once: no LLVM optimisation passes (as in tests/test_unroll.py).
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


@pytest.mark.parametrize("name", ["relativistic_average"])  # The rule is the same for the three.
def test_unrolled_surrogate_at_zero_steps_is_the_plain_generator_loss(name, problem, x64):
    """K = 0: D_K(x) does not depend on θ_G, so the subtracted term has no gradient."""
    g_params, d_params, z, real = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), problem)
    family = L.LOSS_FAMILIES[name]

    def surrogate(g, k):
        d_loss = lambda d: family.d_loss(discriminator(d, real), discriminator(d, generator(g, z)))  # noqa: E731
        return Unrolled(k, remat=False).generator_loss(
            family, discriminator, real, generator(g, z), d_params=d_params,
            d_opt_state=optax.sgd(0.1).init(d_params), d_loss=d_loss, optimizer=optax.sgd(0.1))

    (value, g_loss), grads = jit(jax.value_and_grad(surrogate, has_aux=True), static_argnums=1)(g_params, 0)
    plain = lambda g: family.g_loss(discriminator(d_params, generator(g, z)), discriminator(d_params, real))  # noqa: E731
    np.testing.assert_allclose(g_loss, plain(g_params), rtol=1e-12)
    chex.assert_trees_all_close(grads, jit(jax.grad(plain))(g_params), rtol=1e-10, atol=1e-12)
    # With K = 2 the real outputs depend on θ_G through D_K: the gradient changes.
    grads_2 = jit(jax.grad(lambda g: surrogate(g, 2)[0]))(g_params)
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in
               zip(jax.tree.leaves(grads_2), jax.tree.leaves(grads))) > 1e-6
