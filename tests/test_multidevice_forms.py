"""Three data-parallel forms of one step, one result, on 8 forced CPU devices (conftest.py).

Each configuration's step, run for three steps on global batches split over
eight devices, must give the single-device step's whole state (parameters,
optimizer moments, model state, EMA, pools, key) and metrics, up to float
summation order, in each of the three forms a caller can write:

- ``jit``: ``jax.jit`` of the step built without ``axis_name``, the state
  replicated and the batch sharded over a ``jax.make_mesh`` mesh (whose axis
  is ``Explicit`` by default: every array's sharding is part of its type);
  XLA partitions the step, and BatchNorm's statistics are over the global
  batch by construction;
- ``shard_map``: the step built with ``axis_name="batch"`` under
  ``jax.shard_map`` (its default varying-axis checks on), BatchNorm
  synchronised over the axis;
- ``pmap``: the same step under ``jax.pmap``, one copy of the state per device.
"""

import dataclasses
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from jgan import models, steps
from jgan.augment import DiffAugment
from jgan.objectives import Adversarial, GeneratorInputs, SinkhornDivergence
from jgan.penalties import LazyR1, LeCam

import test_cyclegan
from nets import discriminator, generator, mlp_init
from test_multidevice_make_gan import PARTS
from tree_checks import key_bits

DEVICES = 8
AXIS = "batch"
LATENT = 3
CLASSES = 3
BATCH = 64  # Global: 8 rows per device (4 packed pairs).
N_STEPS = 3

pytestmark = pytest.mark.skipif(
    jax.device_count() < DEVICES, reason="needs 8 (forced host) devices")


class BatchNormMLP(nn.Module):
    """Dense → LeakyReLU → BatchNorm → Dense, BatchNorm's statistics over ``axis_name`` when mapped.

    BatchNorm follows the non-linearity so that no parameter's gradient is
    exactly 0. With Dense → BatchNorm the first layer's bias cancels, and so
    does a shift of the generator's output (the discriminator normalises the
    generated batch on its own): their gradients are rounding noise, which
    differs with the summation order, and Adam turns it into steps of ±lr
    (measured: the generator's output bias 0.025 apart after three steps).
    """

    features: int
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = True):
        h = nn.leaky_relu(nn.Dense(8)(x))
        h = nn.BatchNorm(use_running_average=not train, momentum=0.5, axis_name=self.axis_name)(h)
        return nn.Dense(self.features)(h)


def _conditional(net):
    """``net`` on its input and the one-hot labels, concatenated."""
    return lambda params, x, labels: net(params, jnp.concatenate([x, jax.nn.one_hot(labels, CLASSES)], -1))


@dataclasses.dataclass(frozen=True)
class Config:
    """A configuration of make_gan.

    Attributes:
      parts: keywords of ``make_gan`` besides the networks, optimizers and prior.
      nets: ``"plain"`` (the MLPs of tests/nets.py), ``"conditional"`` (the
        same on one-hot labels), ``"batchnorm"`` (:class:`BatchNormMLP`,
        stateful) or ``"image"`` (the MLPs on 4×4×1 images, flattened).
      optimizer: both networks' optimizer.
    """

    parts: dict
    nets: str = "plain"
    optimizer: optax.GradientTransformation = optax.adam(1e-2)


# Where a configuration takes another optimizer than adam(1e-2), and why.
OPTIMIZERS = {
    # A WGAN-GP critic's first-layer bias of a unit whose pre-activation has
    # one sign on the whole batch has a gradient of exactly 0 in exact
    # arithmetic (the real and fake means cancel, the penalty is piecewise
    # constant in it): what the step computes is rounding noise (~1e-9),
    # which differs with the summation order, and Adam's first steps turn
    # it into ±lr. eps = 1e-3 keeps that noise a noise; the rest of the
    # configuration is unchanged.
    "wgan_gp_k2": optax.adam(1e-2, eps=1e-3),
}

CONFIGS = {
    # Those of tests/test_multidevice.py: the plain non-saturating GAN,
    # unrolled with PacGAN, the gradient penalty with two critic updates, R1
    # with EMA.
    **{name: Config(parts, optimizer=OPTIMIZERS.get(name, optax.adam(1e-2))) for name, parts in PARTS.items()},
    "conditional_k2": Config(dict(d_steps=2), nets="conditional"),
    "batchnorm_k2": Config(dict(d_steps=2, g_stateful=True, d_stateful=True), nets="batchnorm"),
    "sinkhorn_and_adversarial": Config(
        dict(g_objectives=[Adversarial(), SinkhornDivergence(0.5, epsilon=0.3, iterations=10)])),
    # Regularisers with a state (LeCam's anchors: global means) and a counter
    # (LazyR1 on every other update), on DiffAugment's per-image draws, in a
    # relativistic game (each side compared with the other batch's global mean).
    # SGD: a relativistic loss is blind to D's output bias, whose gradient is 0
    # on one device and float noise across devices, which Adam would blow up
    # to a step of the learning rate's size.
    "relativistic_lecam_lazy_r1_diffaugment_k2": Config(
        dict(d_steps=2, loss="relativistic_average", augment=DiffAugment(),
             d_regularizers=[LeCam(0.3, decay=0.9), LazyR1(1.0, every=2)]),
        nets="image", optimizer=optax.sgd(0.05)),
}
SIDE = 4  # The "image" configuration's images: [batch, 4, 4, 1].


def _gan(config, axis_name):
    """``(initial state, step)`` of a configuration, its step built with ``axis_name``."""
    key = jax.random.key(0)
    states = {}
    if config.nets == "batchnorm":
        g_module, d_module = BatchNormMLP(2, axis_name), BatchNormMLP(1, axis_name)
        g_params, states["g_model_state"] = models.init_model(g_module, jax.random.fold_in(key, 1), jnp.zeros((1, LATENT)))
        d_params, states["d_model_state"] = models.init_model(d_module, jax.random.fold_in(key, 2), jnp.zeros((1, 2)))
        gen, disc = models.make_apply(g_module, stateful=True), models.make_apply(d_module, stateful=True)
    elif config.nets == "image":
        g_params = mlp_init(jax.random.fold_in(key, 1), [LATENT, 16, SIDE * SIDE])
        d_params = mlp_init(jax.random.fold_in(key, 2), [SIDE * SIDE, 16, 1])
        gen = lambda params, z: jnp.tanh(generator(params, z)).reshape(-1, SIDE, SIDE, 1)  # noqa: E731
        disc = discriminator  # (nets.mlp flattens its input)
    else:
        labels = CLASSES if config.nets == "conditional" else 0
        g_params = mlp_init(jax.random.fold_in(key, 1), [LATENT + labels, 16, 2])
        d_params = mlp_init(jax.random.fold_in(key, 2), [2 * config.parts.get("pack", 1) + labels, 16, 1])
        gen, disc = generator, discriminator
        if config.nets == "conditional":
            gen, disc = _conditional(generator), _conditional(discriminator)
    gan = steps.make_gan(generator=gen, discriminator=disc, g_optimizer=config.optimizer,
                         d_optimizer=config.optimizer, prior=LATENT, axis_name=axis_name, **config.parts)
    return gan.init(key, g_params, d_params, **states), gan.step


def _batches(config):
    """The global batches of the steps, on the host (as a data loader gives them)."""
    batches = []
    for i in range(N_STEPS):
        x = jax.random.normal(jax.random.fold_in(jax.random.key(5), i), (BATCH, 2)) * 0.5 + 1.0
        if config.nets == "image":
            x = jnp.tanh(jax.random.normal(jax.random.fold_in(jax.random.key(5), i), (BATCH, SIDE, SIDE, 1)))
        if config.nets == "conditional":
            x = {"x": x, "label": jax.random.randint(jax.random.fold_in(jax.random.key(6), i), (BATCH,), 0, CLASSES)}
        batches.append(jax.tree.map(np.asarray, x))
    return batches


# CycleGAN: the hand-written networks of tests/test_cyclegan.py, with identity
# loss and image pools (which hold the global batch's images).
CYCLEGAN = dict(identity_weight=5.0, pool_size=20)


def _cyclegan(axis_name):
    return test_cyclegan._setup(axis_name=axis_name, **CYCLEGAN)


def _cyclegan_batches():
    return [jax.tree.map(np.asarray, test_cyclegan._batch(batch_a=2 * DEVICES, batch_b=2 * DEVICES, key=10 + i))
            for i in range(N_STEPS)]


# name: (axis_name -> (initial state, step), () -> global batches)
SETUPS = {
    **{name: (functools.partial(_gan, config), functools.partial(_batches, config))
       for name, config in CONFIGS.items()},
    "cyclegan_identity_pool": (_cyclegan, _cyclegan_batches),
}


# ---------------------------------------------------------------------------
# The forms: each runs a configuration's steps and returns (state, metrics of each step).


@functools.cache
def _single_device(name):
    setup, batches = SETUPS[name]
    state, step = setup(None)
    step = jax.jit(step)
    history = []
    for batch in batches():
        state, metrics = step(state, batch)
        history.append(metrics)
    return state, history


def _on_mesh(name, axis_name, wrap):
    """The steps on batches sharded over a ``jax.make_mesh`` mesh, the state replicated."""
    setup, batches = SETUPS[name]
    state, step = setup(axis_name)
    mesh = jax.make_mesh((DEVICES,), (AXIS,))
    rows, replicated = NamedSharding(mesh, P(AXIS)), NamedSharding(mesh, P())
    step = jax.jit(wrap(step, mesh), in_shardings=(replicated, rows))
    state = jax.device_put(state, replicated)
    history = []
    for batch in batches():
        batch = jax.device_put(batch, rows)
        assert all(len(x.sharding.device_set) == DEVICES for x in jax.tree.leaves(batch))
        state, metrics = step(state, batch)
        history.append(metrics)
    return state, history


def _jit(name):
    """No axis_name: jax.jit partitions the step over the batch's sharding."""
    return _on_mesh(name, None, lambda step, mesh: step)


def _shard_map(name):
    return _on_mesh(name, AXIS, lambda step, mesh: jax.shard_map(
        step, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P())))


def _per_device(tree):
    """One copy of ``tree`` per device, placed as pmap places its outputs (so the second step does not compile again)."""
    mesh = jax.make_mesh((DEVICES,), (AXIS,), axis_types=(AxisType.Auto,))
    copies = jax.jit(lambda tree: jax.tree.map(lambda x: jnp.broadcast_to(x, (DEVICES, *x.shape)), tree),
                     out_shardings=NamedSharding(mesh, P(AXIS)))
    return copies(tree)


def _split(batch):
    """``[devices · n, ...]`` → ``[devices, n, ...]``."""
    return jax.tree.map(lambda x: x.reshape(DEVICES, -1, *x.shape[1:]), batch)


def _first_device(tree):
    """Device 0's copy (PRNG keys as their bits), after checking that every device holds the same."""
    tree = jax.tree.map(np.asarray, key_bits(tree))
    for leaf in jax.tree.leaves(tree):
        np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[0], leaf.shape))
    return jax.tree.map(lambda x: x[0], tree)


def _pmap(name):
    setup, batches = SETUPS[name]
    state, step = setup(AXIS)
    state, step = _per_device(state), jax.pmap(step, axis_name=AXIS)
    history = []
    for batch in batches():
        state, metrics = step(state, _split(batch))
        history.append(metrics)
    return _first_device(state), [_first_device(m) for m in history]


FORMS = {"jit": _jit, "shard_map": _shard_map, "pmap": _pmap}


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("name", sorted(SETUPS))
def test_each_form_equals_the_single_device_step(name, form):
    expected, expected_history = _single_device(name)
    state, history = FORMS[form](name)
    assert int(state.step) == N_STEPS
    chex.assert_trees_all_equal(key_bits(state.key), key_bits(expected.key))
    chex.assert_trees_all_close(state._replace(key=None), expected._replace(key=None), rtol=2e-5, atol=2e-6)
    chex.assert_trees_all_close(history, expected_history, rtol=1e-4, atol=1e-5)
    assert max(float(m["nonfinite"]) for m in history) == 0.0


def test_the_sinkhorn_divergence_of_the_local_batches_is_not_that_of_the_global_ones():
    """Control: a step whose Sinkhorn objective saw only its device's rows would fail the test above.

    (It did, under shard_map and pmap, before SinkhornDivergence gathered the
    global batches.)
    """
    config = CONFIGS["sinkhorn_and_adversarial"]
    divergence = config.parts["g_objectives"][1]
    real = _batches(config)[0]
    fake = np.asarray(jax.random.normal(jax.random.key(1), real.shape))
    value = jax.jit(lambda fake, real: divergence(GeneratorInputs(fake, real, jnp.zeros(())))[1]["sinkhorn"])
    local = np.mean([value(f, r) for f, r in zip(_split(fake), _split(real))])
    assert abs(local - value(fake, real)) > 0.1 * value(fake, real)


# ---------------------------------------------------------------------------
# Bad input.


def test_a_global_batch_that_does_not_divide_over_the_devices_is_refused_naming_the_sizes():
    """60 rows on 8 devices: refused where the batch is placed (jit) or mapped (shard_map).

    JAX's own errors name both sizes, before the step runs, so the step needs
    no check of its own.
    """
    config = CONFIGS["non_saturating"]
    batch = _batches(config)[0][:60]
    mesh = jax.make_mesh((DEVICES,), (AXIS,))
    with pytest.raises(ValueError, match="partitioned 8 times, but does not evenly divide the dimension size 60"):
        jax.device_put(batch, NamedSharding(mesh, P(AXIS)))
    state, step = _gan(config, AXIS)
    mapped = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P())))
    with pytest.raises(ValueError, match="8 does not evenly divide 60"):
        mapped(state, batch)


def test_a_step_outside_its_mapped_axis_is_refused_naming_the_axis():
    """Built with axis_name="batch", run over an axis named "data" (or none): a clear error, not a NameError."""
    config = CONFIGS["non_saturating"]
    batch = _batches(config)[0]
    state, step = _gan(config, AXIS)
    mesh = jax.make_mesh((DEVICES,), ("data",))
    mapped = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P("data")), out_specs=(P(), P())))
    elsewhere = r"axis_name='batch', but it runs outside a mapped axis of that name \(the mapped axes here are \('data',\)\)"
    with pytest.raises(ValueError, match=elsewhere):
        mapped(jax.device_put(state, NamedSharding(mesh, P())), jax.device_put(batch, NamedSharding(mesh, P("data"))))
    with pytest.raises(ValueError, match=elsewhere):
        jax.pmap(step, axis_name="data")(_per_device(state), _split(batch))
    for unmapped in (step, jax.jit(step)):
        with pytest.raises(ValueError, match=r"axis_name='batch'.*\(no axis is mapped here\).*axis_name=None"):
            unmapped(state, batch)
    state, step = _cyclegan(AXIS)
    with pytest.raises(ValueError, match=r"The CycleGAN step was built with axis_name='batch'.*\('data',\)"):
        jax.pmap(step, axis_name="data")(_per_device(state), _split(_cyclegan_batches()[0]))
