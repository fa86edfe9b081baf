"""Tests for jgan.models: shapes, the DCGAN rules as facts, apply conventions.

Architecture rules are checked on what the networks compute (the jaxpr's
primitives and the order in which layers are called), initialisations
statistically, and the MLPs against an independent numpy forward pass.
"""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jgan import models

LATENT = 16
FEATURES = 4
SIZES = (28, 32, 64)
# Spatial sizes after each layer (generator: projection then transposed convs;
# discriminator: strided convs then the whole-map logit conv).
G_PLANS = {64: [4, 8, 16, 32, 64], 32: [4, 8, 16, 32], 28: [7, 14, 28]}
D_PLANS = {64: [32, 16, 8, 4, 1], 32: [16, 8, 4, 1], 28: [14, 7, 1]}


def _latents(key, batch=4):
    return jax.random.normal(key, (batch, LATENT))


def _images(key, size, channels, batch=4):
    return jax.random.uniform(key, (batch, size, size, channels), minval=-1.0, maxval=1.0)


@functools.lru_cache(maxsize=None)
def _init_cached(module, example_shape, seed):
    init = jax.jit(functools.partial(models.init_model, module))
    return init(jax.random.key(seed, impl="rbg"), jnp.zeros((1, *example_shape)))


def _init(module, x, seed=0):
    """Initialises ``module`` for inputs shaped like ``x``, fast.

    On CPU, initialisers drawing from the default (partitionable threefry)
    keys take seconds to compile per network, so test fixtures use ``rbg``
    keys, a jitted ``init_model`` and a cache per (module, example shape,
    seed). Callers must not mutate the result.
    """
    return _init_cached(module, tuple(x.shape[1:]), seed)


def _abstract(module, shape):
    """Shapes of ``(params, model_state)`` without computing them."""
    sample = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(lambda key, x: models.init_model(module, key, x), jax.random.key(0), sample)


def _equations(jaxpr):
    """Yields every equation of a jaxpr, descending into sub-jaxprs."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for item in value if isinstance(value, (tuple, list)) else (value,):
                if hasattr(item, "eqns"):
                    yield from _equations(item)
                elif hasattr(getattr(item, "jaxpr", None), "eqns"):
                    yield from _equations(item.jaxpr)


def _equations_of(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
    return list(_equations(jaxpr))


def _layer_sequence(module, shape):
    """The class names of the submodules ``module`` calls, in call order.

    Linear layers (``Dense``, ``Conv``, ``ConvTranspose``) that have a bias are
    marked ``+bias``.
    """
    params, state = _abstract(module, shape)
    calls = []

    def interceptor(next_fun, args, kw, context):
        out = next_fun(*args, **kw)
        layer = context.module
        if context.method_name == "__call__" and type(layer) is not type(module):
            name = type(layer).__name__
            if not isinstance(layer, nn.BatchNorm) and "bias" in layer.variables["params"]:
                name += "+bias"
            calls.append(name)
        return out

    with nn.intercept_methods(interceptor):
        apply = models.make_apply(module, stateful=True)
        jax.eval_shape(apply, params, state, jax.ShapeDtypeStruct(shape, jnp.float32))
    return calls


# ----------------------------------------------------------------------------
# Shapes.


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", (1, 3))
def test_generator_output_shape(size, channels):
    generator = models.DCGANGenerator(image_size=size, channels=channels, features=FEATURES)
    params, state = _abstract(generator, (1, LATENT))
    z = jax.ShapeDtypeStruct((5, LATENT), jnp.float32)
    images, new_state = jax.eval_shape(models.make_apply(generator, stateful=True), params, state, z)
    chex.assert_shape(images, (5, size, size, channels))
    chex.assert_trees_all_equal_shapes_and_dtypes(new_state, state)


def test_generator_output_is_tanh_bounded():
    """Output in [-1, 1]; with weights scaled up it saturates at the ends of tanh."""
    generator = models.DCGANGenerator(image_size=28, channels=1, features=FEATURES)
    params, state = _init(generator, jnp.zeros((1, LATENT)))
    apply = jax.jit(models.make_apply(generator, stateful=True))
    z = _latents(jax.random.key(1))
    images, _ = apply(params, state, z)
    assert float(jnp.min(images)) >= -1.0 and float(jnp.max(images)) <= 1.0
    images, _ = apply(jax.tree.map(lambda p: 100.0 * p, params), state, z)
    assert float(jnp.min(images)) >= -1.0 and float(jnp.max(images)) <= 1.0
    # A linear output layer would leave [-1, 1] here; tanh reaches its ends.
    assert float(jnp.max(jnp.abs(images))) > 0.99


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", (1, 3, 2 * 3, 4 * 1))
def test_discriminator_output_is_one_logit_per_example(size, channels):
    """Any channel count, including PacGAN packing (pack * channels), gives ``[batch]``."""
    discriminator = models.DCGANDiscriminator(features=FEATURES)
    params, state = _abstract(discriminator, (1, size, size, channels))
    x = jax.ShapeDtypeStruct((3, size, size, channels), jnp.float32)
    logits, _ = jax.eval_shape(models.make_apply(discriminator, stateful=True), params, state, x)
    chex.assert_shape(logits, (3,))


def test_discriminator_values_for_packed_input():
    discriminator = models.DCGANDiscriminator(features=FEATURES)
    x = _images(jax.random.key(2), 32, 2 * 3, batch=3)
    params, state = _init(discriminator, x)
    logits, _ = jax.jit(models.make_apply(discriminator, stateful=True))(params, state, x)
    chex.assert_shape(logits, (3,))
    chex.assert_tree_all_finite(logits)


def test_generator_rejects_unsupported_size():
    generator = models.DCGANGenerator(image_size=48, channels=3, features=FEATURES)
    with pytest.raises(ValueError, match="image_size"):
        _init(generator, jnp.zeros((1, LATENT)))


# ----------------------------------------------------------------------------
# The DCGAN architecture guidelines, as facts about the computation.


@pytest.mark.parametrize("size", SIZES)
def test_generator_upsamples_with_transposed_convolutions_only(size):
    generator = models.DCGANGenerator(image_size=size, channels=3, features=FEATURES)
    params, state = _abstract(generator, (1, LATENT))
    z = jax.ShapeDtypeStruct((4, LATENT), jnp.float32)
    eqns = _equations_of(models.make_apply(generator, stateful=True), params, state, z)
    names = {eqn.primitive.name for eqn in eqns}
    assert not any("reduce_window" in name for name in names), names  # no pooling
    convs = [eqn for eqn in eqns if eqn.primitive.name == "conv_general_dilated"]
    assert len(convs) == len(G_PLANS[size]) - 1
    for conv in convs:  # fractionally strided: input dilated by 2, stride 1
        assert tuple(conv.params["lhs_dilation"]) == (2, 2)
        assert tuple(conv.params["window_strides"]) == (1, 1)
    spatial = [conv.outvars[0].aval.shape[1] for conv in convs]
    assert spatial == G_PLANS[size][1:]


@pytest.mark.parametrize("size", SIZES)
def test_discriminator_downsamples_with_strided_convolutions_only(size):
    discriminator = models.DCGANDiscriminator(features=FEATURES)
    x = jax.ShapeDtypeStruct((4, size, size, 3), jnp.float32)
    params, state = _abstract(discriminator, x.shape)
    eqns = _equations_of(models.make_apply(discriminator, stateful=True), params, state, x)
    names = {eqn.primitive.name for eqn in eqns}
    assert not any("reduce_window" in name for name in names), names  # no pooling
    convs = [eqn for eqn in eqns if eqn.primitive.name == "conv_general_dilated"]
    *strided, logit = convs
    for conv in strided:
        assert tuple(conv.params["window_strides"]) == (2, 2)
        assert tuple(conv.params["lhs_dilation"]) == (1, 1)
    # The logit layer is a convolution covering its whole input: no hidden dense layer.
    in_spatial = logit.invars[0].aval.shape[1:3]
    kernel_spatial = logit.invars[1].aval.shape[:2]
    assert tuple(kernel_spatial) == tuple(in_spatial)
    spatial = [conv.outvars[0].aval.shape[1] for conv in convs]
    assert spatial == D_PLANS[size]


@pytest.mark.parametrize("size", SIZES)
def test_batch_norm_placement(size):
    """BatchNorm follows every hidden layer, not G's output layer nor D's input
    layer; a layer followed by BatchNorm has no (redundant) bias."""
    generator = models.DCGANGenerator(image_size=size, channels=3, features=FEATURES)
    g_layers = _layer_sequence(generator, (2, LATENT))
    hidden = len(G_PLANS[size]) - 2
    assert g_layers == ["Dense", "BatchNorm"] + ["ConvTranspose", "BatchNorm"] * hidden + ["ConvTranspose+bias"]

    discriminator = models.DCGANDiscriminator(features=FEATURES)
    d_layers = _layer_sequence(discriminator, (2, size, size, 3))
    hidden = len(D_PLANS[size]) - 2
    assert d_layers == ["Conv+bias"] + ["Conv", "BatchNorm"] * hidden + ["Conv+bias"]


def test_discriminator_uses_leaky_relu_with_slope_0_2():
    """On a negative input, D's first layer (no BatchNorm) scales by exactly 0.2."""
    discriminator = models.DCGANDiscriminator(features=FEATURES)
    x = jnp.zeros((1, 28, 28, 1))
    params, state = _init(discriminator, x)
    # With a zero input and the first conv's bias set to -1, the first hidden
    # activation is leaky_relu(-1) = -0.2 everywhere.
    params = {**params, "Conv_0": {**params["Conv_0"], "bias": -jnp.ones_like(params["Conv_0"]["bias"])}}

    def first_hidden_activation(params):
        acts = []

        def interceptor(next_fun, args, kw, context):
            if context.method_name == "__call__" and context.module.name == "Conv_1":
                acts.append(args[0])
            return next_fun(*args, **kw)

        with nn.intercept_methods(interceptor):
            models.make_apply(discriminator, stateful=True, train=False)(params, state, x)
        return acts[0]

    act = jax.jit(first_hidden_activation)(params)
    chex.assert_shape(act, (1, 14, 14, FEATURES))
    np.testing.assert_allclose(np.asarray(act), -0.2, rtol=1e-6)


# ----------------------------------------------------------------------------
# BatchNorm statistics.


def _d_setup(size=28, channels=1, batch=8, seed=0):
    discriminator = models.DCGANDiscriminator(features=FEATURES)
    x = _images(jax.random.key(seed + 100), size, channels, batch=batch) * 3.0 + 0.5
    params, state = _init(discriminator, x, seed)
    return discriminator, params, state, x


def test_batch_norm_statistics_update_in_train_mode_only():
    discriminator, params, state, x = _d_setup()
    train_apply = jax.jit(models.make_apply(discriminator, stateful=True, train=True))
    eval_apply = jax.jit(models.make_apply(discriminator, stateful=True, train=False))

    _, after_train = train_apply(params, state, x)
    chex.assert_trees_all_equal_structs(after_train, state)
    for old, new in zip(jax.tree.leaves(state), jax.tree.leaves(after_train)):
        assert not np.allclose(old, new), "every running statistic should move"

    _, after_eval = eval_apply(params, after_train, x)
    chex.assert_trees_all_equal(after_eval, after_train)


def test_generator_batch_norm_statistics_update_in_train_mode_only():
    generator = models.DCGANGenerator(image_size=28, channels=1, features=FEATURES)
    params, state = _init(generator, jnp.zeros((1, LATENT)))
    z = _latents(jax.random.key(3), batch=8) + 1.0
    _, after_train = jax.jit(models.make_apply(generator, stateful=True))(params, state, z)
    for old, new in zip(jax.tree.leaves(state), jax.tree.leaves(after_train)):
        assert not np.allclose(old, new)
    _, after_eval = jax.jit(models.make_apply(generator, stateful=True, train=False))(params, after_train, z)
    chex.assert_trees_all_equal(after_eval, after_train)


def test_running_averages_match_numpy_with_momentum_0_9():
    """The first BatchNorm of G sees ``z @ W`` reshaped to 7x7 maps; after one
    train call its running averages are 0.9 * init + 0.1 * batch statistics."""
    generator = models.DCGANGenerator(image_size=28, channels=1, features=FEATURES)
    params, state = _init(generator, jnp.zeros((1, LATENT)))
    z = np.asarray(_latents(jax.random.key(4), batch=8)) + 0.5
    _, new_state = jax.jit(models.make_apply(generator, stateful=True))(params, state, z)

    h = z.astype(np.float64) @ np.asarray(params["project"]["kernel"], np.float64)
    h = h.reshape(8, 7, 7, 2 * FEATURES)
    stats = new_state["batch_stats"]["BatchNorm_0"]
    np.testing.assert_allclose(stats["mean"], 0.1 * h.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * h.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)


def test_train_and_eval_outputs_differ_then_agree_when_statistics_converge():
    """Eval mode uses running averages: it differs from train mode until the
    averages converge to the batch statistics (momentum 0.9 ** 300 ~ 0)."""
    discriminator, params, state, x = _d_setup()
    train_apply = jax.jit(models.make_apply(discriminator, stateful=True, train=True))
    eval_apply = jax.jit(models.make_apply(discriminator, stateful=True, train=False))

    for _ in range(3):
        _, state = train_apply(params, state, x)
    train_out, _ = train_apply(params, state, x)
    eval_out, _ = eval_apply(params, state, x)
    assert not np.allclose(train_out, eval_out, atol=1e-3)

    for _ in range(300):
        _, state = train_apply(params, state, x)
    eval_out, _ = eval_apply(params, state, x)
    np.testing.assert_allclose(eval_out, train_out, rtol=1e-4, atol=1e-4)


def test_synchronised_batch_norm_matches_the_full_batch():
    """With ``axis_name``, statistics on 2 shards equal those of the whole batch."""
    devices = np.array(jax.devices()[:2])
    if devices.size < 2:
        pytest.skip("needs 2 devices")
    mesh = jax.sharding.Mesh(devices, ("batch",))
    synced = models.DCGANDiscriminator(features=FEATURES, axis_name="batch")
    plain = models.DCGANDiscriminator(features=FEATURES)
    x = _images(jax.random.key(5), 28, 1, batch=8) * 2.0 + 0.3
    params, state = _init(plain, x)

    sharded = jax.shard_map(
        models.make_apply(synced, stateful=True),
        mesh=mesh,
        in_specs=(P(), P(), P("batch")),
        out_specs=(P("batch"), P()),
    )
    out, new_state = jax.jit(sharded)(params, state, x)
    plain_apply = jax.jit(models.make_apply(plain, stateful=True))
    ref_out, ref_state = plain_apply(params, state, x)
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-5)
    chex.assert_trees_all_close(new_state, ref_state, rtol=1e-4, atol=1e-6)

    # Unsynchronised per-shard statistics differ from the whole batch's.
    _, local_state = plain_apply(params, state, x[:4])
    assert not np.allclose(jax.tree.leaves(local_state)[0], jax.tree.leaves(ref_state)[0])


# ----------------------------------------------------------------------------
# Initialisation.


def _leaves_named(tree, name):
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [np.asarray(leaf).ravel() for path, leaf in flat if path[-1].key == name]


def test_dcgan_initialisation_follows_the_paper():
    """Weights ~ N(0, 0.02), BatchNorm scales ~ N(1, 0.02), BatchNorm biases 0."""
    g_params, _ = _init(models.DCGANGenerator(image_size=64, channels=3, features=8), jnp.zeros((1, LATENT)))
    d_params, _ = _init(models.DCGANDiscriminator(features=8), jnp.zeros((1, 64, 64, 3)))
    for params in (g_params, d_params):
        kernels = np.concatenate(_leaves_named(params, "kernel"))
        assert kernels.size > 40_000
        assert abs(kernels.mean()) < 5e-4
        assert abs(kernels.std() - 0.02) < 1e-3  # the default (lecun) would give >= 0.03
        for kernel in _leaves_named(params, "kernel"):  # every layer, not only the biggest
            assert abs(kernel.std() - 0.02) < 0.006, kernel.size

    bn_params = {"g": {k: v for k, v in g_params.items() if "BatchNorm" in k},
                 "d": {k: v for k, v in d_params.items() if "BatchNorm" in k}}
    scales = np.concatenate(_leaves_named(bn_params, "scale"))
    assert scales.size > 200
    assert abs(scales.mean() - 1.0) < 0.006
    assert 0.015 < scales.std() < 0.025  # the default (ones) would give 0
    np.testing.assert_array_equal(np.concatenate(_leaves_named(bn_params, "bias")), 0.0)


def test_init_model_splits_and_starts_running_averages_at_zero_one():
    discriminator = models.DCGANDiscriminator(features=FEATURES)
    x = _images(jax.random.key(0), 28, 1)
    params, state = _init(discriminator, x)  # from zeros
    assert set(state) == {"batch_stats"}
    assert "batch_stats" not in params and "Conv_0" in params
    for mean in _leaves_named(state, "mean"):
        np.testing.assert_array_equal(mean, 0.0)
    for var in _leaves_named(state, "var"):
        np.testing.assert_array_equal(var, 1.0)
    # Only the sample's shape matters.
    init = jax.jit(functools.partial(models.init_model, discriminator))
    key = jax.random.key(0, impl="rbg")
    chex.assert_trees_all_equal(init(key, x), init(key, jnp.zeros_like(x)))


def test_split_variables():
    variables = {"params": {"w": 1}, "batch_stats": {"m": 2}, "other": {"c": 3}}
    params, state = models.split_variables(variables)
    assert params == {"w": 1}
    assert state == {"batch_stats": {"m": 2}, "other": {"c": 3}}
    params, state = models.split_variables({"params": {"w": 1}})
    assert params == {"w": 1} and state == {}


# ----------------------------------------------------------------------------
# Apply conventions.


def test_stateless_apply_structure_jit_and_gradients():
    generator = models.MLPGenerator(out_features=2)
    discriminator = models.MLPDiscriminator()
    g_params, g_state = _init(generator, jnp.zeros((1, LATENT)))
    d_params, d_state = _init(discriminator, jnp.zeros((1, 2)))
    assert g_state == {} and d_state == {}
    g_apply = models.make_apply(generator, stateful=False)
    d_apply = models.make_apply(discriminator, stateful=False)
    z = _latents(jax.random.key(0), batch=5)

    samples = g_apply(g_params, z)
    assert isinstance(samples, jax.Array)
    chex.assert_shape(samples, (5, 2))
    chex.assert_shape(d_apply(d_params, samples), (5,))

    jitted = jax.jit(chex.assert_max_traces(g_apply, n=1))
    np.testing.assert_allclose(jitted(g_params, z), samples, rtol=1e-5, atol=1e-6)
    jitted(g_params, z + 1.0)  # a second call must not retrace

    def loss(g_params, d_params):
        return jnp.mean(d_apply(d_params, g_apply(g_params, z)))

    g_grads, d_grads = jax.grad(loss, argnums=(0, 1))(g_params, d_params)
    chex.assert_trees_all_equal_structs(g_grads, g_params)
    chex.assert_tree_all_finite((g_grads, d_grads))
    assert all(float(jnp.abs(leaf).sum()) > 0 for leaf in jax.tree.leaves((g_grads, d_grads)))


def test_stateful_apply_structure_jit_and_gradients():
    generator = models.DCGANGenerator(image_size=28, channels=1, features=FEATURES)
    discriminator = models.DCGANDiscriminator(features=FEATURES)
    g_params, g_state = _init(generator, jnp.zeros((1, LATENT)))
    d_params, d_state = _init(discriminator, jnp.zeros((1, 28, 28, 1)))
    g_apply = models.make_apply(generator, stateful=True)
    d_apply = models.make_apply(discriminator, stateful=True)
    z = _latents(jax.random.key(0), batch=6)

    result = jax.jit(g_apply)(g_params, g_state, z)
    assert isinstance(result, tuple) and len(result) == 2
    images, new_g_state = result
    chex.assert_shape(images, (6, 28, 28, 1))
    assert isinstance(new_g_state, dict)
    chex.assert_trees_all_equal_structs(new_g_state, g_state)

    jitted = jax.jit(chex.assert_max_traces(d_apply, n=1))
    logits, new_d_state = jitted(d_params, d_state, images)
    ref_logits, ref_state = d_apply(d_params, d_state, images)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-5)
    chex.assert_trees_all_close(new_d_state, ref_state, rtol=1e-5, atol=1e-6)
    jitted(d_params, new_d_state, images * 0.5)  # a second call must not retrace

    def loss(g_params, d_params):
        images, _ = g_apply(g_params, g_state, z)
        logits, _ = d_apply(d_params, d_state, images)
        return jnp.mean(jax.nn.softplus(-logits))

    g_grads, d_grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(g_params, d_params)
    chex.assert_tree_all_finite((g_grads, d_grads))
    # Every parameter is connected to the output (no bias before a BatchNorm).
    for leaf in jax.tree.leaves((g_grads, d_grads)):
        assert float(jnp.abs(leaf).sum()) > 0


def test_stateful_apply_accepts_an_empty_state():
    generator = models.MLPGenerator(out_features=2)
    params, state = _init(generator, jnp.zeros((1, LATENT)))
    z = _latents(jax.random.key(0))
    out, new_state = models.make_apply(generator, stateful=True)(params, state, z)
    assert new_state == {}
    np.testing.assert_array_equal(out, models.make_apply(generator, stateful=False)(params, z))
    out, new_state = models.make_apply(generator, stateful=True, train=False)(params, {}, z)
    assert new_state == {}


@pytest.mark.parametrize("train", (True, False))
def test_batch_norm_module_without_state_raises(train):
    discriminator, params, state, x = _d_setup()
    with pytest.raises(ValueError, match="stateful=True"):
        models.make_apply(discriminator, stateful=False, train=train)(params, x)
    with pytest.raises(ValueError, match="batch_stats|collection"):
        models.make_apply(discriminator, stateful=True, train=train)(params, {}, x)


# ----------------------------------------------------------------------------
# MLPs against an independent numpy reference.


def _numpy_mlp(params, x, activation, output_activation=None):
    layers = sorted(params, key=lambda name: int(name.split("_")[-1]))
    h = np.asarray(x, np.float64)
    for i, name in enumerate(layers):
        h = h @ np.asarray(params[name]["kernel"], np.float64) + np.asarray(params[name]["bias"], np.float64)
        if i < len(layers) - 1:
            h = activation(h)
    return h if output_activation is None else output_activation(h)


def test_mlp_generator_matches_numpy():
    relu = lambda h: np.maximum(h, 0.0)  # noqa: E731
    generator = models.MLPGenerator(out_features=3, hidden=(5, 7))
    params, _ = _init(generator, jnp.zeros((1, 4)))
    assert [params[f"Dense_{i}"]["kernel"].shape for i in range(3)] == [(4, 5), (5, 7), (7, 3)]
    z = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    out = models.make_apply(generator, stateful=False)(params, z)
    np.testing.assert_allclose(out, _numpy_mlp(params, z, relu), rtol=1e-5, atol=1e-6)

    bounded = models.MLPGenerator(out_features=3, hidden=(5, 7), output_activation=jnp.tanh)
    out = models.make_apply(bounded, stateful=False)(params, z)
    np.testing.assert_allclose(out, _numpy_mlp(params, z, relu, np.tanh), rtol=1e-5, atol=1e-6)


def test_mlp_generator_represents_an_affine_map():
    """With no hidden layer and a linear output, G(z) = A z + b exactly."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2, 3)).astype(np.float32)
    b = rng.normal(size=(2,)).astype(np.float32)
    generator = models.MLPGenerator(out_features=2, hidden=())
    params, _ = _init(generator, jnp.zeros((1, 3)))
    chex.assert_trees_all_equal_shapes(params, {"Dense_0": {"kernel": a.T, "bias": b}})
    params = {"Dense_0": {"kernel": jnp.asarray(a.T), "bias": jnp.asarray(b)}}
    z = rng.normal(size=(10, 3)).astype(np.float32)
    out = models.make_apply(generator, stateful=False)(params, z)
    np.testing.assert_allclose(out, z @ a.T + b, rtol=1e-5, atol=1e-5)


def test_mlp_discriminator_flattens_and_matches_numpy():
    relu = lambda h: np.maximum(h, 0.0)  # noqa: E731
    discriminator = models.MLPDiscriminator(hidden=(6, 5))
    x = np.random.default_rng(2).normal(size=(7, 2, 3)).astype(np.float32)  # e.g. pack=2 of 3-D points
    params, _ = _init(discriminator, x)
    assert params["Dense_0"]["kernel"].shape == (6, 6)
    logits = models.make_apply(discriminator, stateful=False)(params, x)
    chex.assert_shape(logits, (7,))
    np.testing.assert_allclose(logits, _numpy_mlp(params, x.reshape(7, 6), relu)[:, 0], rtol=1e-5, atol=1e-6)


def test_mlp_default_architecture_is_metz_et_al():
    """Two hidden layers of 128 ReLU units."""
    generator = models.MLPGenerator(out_features=2)
    params, _ = _init(generator, jnp.zeros((1, 256)))
    assert [params[f"Dense_{i}"]["kernel"].shape for i in range(3)] == [(256, 128), (128, 128), (128, 2)]
    z = -jnp.ones((1, 256))
    # ReLU: a hidden unit is never negative.
    hidden = []

    def interceptor(next_fun, args, kw, context):
        if context.method_name == "__call__" and context.module.name == "Dense_1":
            hidden.append(args[0])
        return next_fun(*args, **kw)

    with nn.intercept_methods(interceptor):
        generator.apply({"params": params}, z)
    assert float(jnp.min(hidden[0])) == 0.0


@pytest.mark.parametrize("normalization", ["layer", "none"])
def test_critic_without_batch_norm_scores_each_example_alone(normalization):
    """A WGAN-GP critic must not couple examples: D(x)[0] is D(x[:1]) whatever the batch."""
    critic = models.DCGANDiscriminator(features=4, normalization=normalization)
    x = _images(jax.random.key(3), 32, 1, batch=5)
    params, state = _init(critic, x)
    assert state == {}
    apply = models.make_apply(critic, stateful=False)
    scores = apply(params, x)
    for i in range(5):
        np.testing.assert_allclose(apply(params, x[i : i + 1]), scores[i : i + 1], rtol=1e-5, atol=1e-6)
    # In training mode BatchNorm couples the examples of a batch, for contrast.
    bn = models.DCGANDiscriminator(features=4)
    bn_params, bn_state = _init(bn, x)
    bn_apply = models.make_apply(bn, stateful=True)
    assert not np.allclose(bn_apply(bn_params, bn_state, x)[0][:1], bn_apply(bn_params, bn_state, x[:1])[0], atol=1e-4)


def test_unknown_normalization_is_an_error():
    with pytest.raises(ValueError, match="normalization"):
        _init(models.DCGANDiscriminator(features=4, normalization="group"), jnp.zeros((1, 32, 32, 1)))


# ---------------------------------------------------------------------------
# Metz et al.'s stacked-MNIST networks.


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_stacked_generator_layer_plan_and_parameter_count():
    generator = models.StackedGenerator()
    params, state = models.init_model(generator, jax.random.key(0), jnp.zeros((1, 256)))
    # Linear 256 -> 4x4x64 (no bias: BatchNorm follows), three 3x3 transposed
    # convolutions 64 -> 32 -> 16 -> 8 (no bias), BatchNorm after each of the
    # four, then a 3x3 convolution 8 -> 3 with a bias.
    batch_norms = 2 * (64 + 32 + 16 + 8)
    expected = 256 * 4 * 4 * 64 + 9 * (64 * 32 + 32 * 16 + 16 * 8) + batch_norms + 9 * 8 * 3 + 3
    assert _count(params) == expected and _count(state) == batch_norms
    _, captured = generator.apply(
        {"params": params, **state}, jax.random.normal(jax.random.key(1), (2, 256)), train=False,
        capture_intermediates=lambda m, _: isinstance(m, nn.ConvTranspose), mutable=["intermediates"])
    shapes = [v.shape[1:] for v in jax.tree.leaves(captured["intermediates"])]
    assert shapes == [(7, 7, 32), (14, 14, 16), (28, 28, 8)]


def test_stacked_generator_images_are_in_range():
    generator = models.StackedGenerator()
    params, state = models.init_model(generator, jax.random.key(0), jnp.zeros((1, 256)))
    z = 3.0 * jax.random.normal(jax.random.key(2), (5, 256))
    images, _ = models.make_apply(generator, stateful=True)(params, state, z)
    assert images.shape == (5, 28, 28, 3) and float(jnp.max(jnp.abs(images))) <= 1.0 and float(images.std()) > 0


@pytest.mark.parametrize("features", [models.METZ_QUARTER_FEATURES, models.METZ_HALF_FEATURES])
@pytest.mark.parametrize("pack", [1, 4])
def test_stacked_discriminator_parameter_count_and_packed_inputs(features, pack):
    a, b, c = features
    channels = 3 * pack
    discriminator = models.StackedDiscriminator(features=features)
    params, state = models.init_model(discriminator, jax.random.key(0), jnp.zeros((1, 28, 28, channels)))
    # Three 3x3 stride-2 convolutions (28 -> 14 -> 7 -> 4; BatchNorm without
    # biases on the last two), then a linear layer from 4x4xc to one logit.
    expected = 9 * channels * a + a + 9 * a * b + 2 * b + 9 * b * c + 2 * c + 4 * 4 * c + 1
    assert _count(params) == expected and _count(state) == 2 * (b + c)
    logits, new_state = models.make_apply(discriminator, stateful=True)(
        params, state, jax.random.uniform(jax.random.key(1), (6, 28, 28, channels), minval=-1, maxval=1))
    assert logits.shape == (6,) and bool(jnp.all(jnp.isfinite(logits)))
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


def test_stacked_discriminator_d_is_a_quarter_or_half_of_g():
    assert models.METZ_QUARTER_FEATURES == (2, 4, 8) and models.METZ_HALF_FEATURES == (4, 8, 16)
    generator_widths = (32, 16, 8)  # The generator's transposed convolutions, widest first.
    assert sorted(models.METZ_QUARTER_FEATURES) == sorted(w // 4 for w in generator_widths)
    assert sorted(models.METZ_HALF_FEATURES) == sorted(w // 2 for w in generator_widths)
    with pytest.raises(ValueError, match="three convolutions"):
        models.init_model(models.StackedDiscriminator(features=(2, 4)), jax.random.key(0), jnp.zeros((1, 28, 28, 3)))
