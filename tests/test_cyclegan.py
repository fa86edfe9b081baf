"""CycleGAN: the ResNet generator and PatchGAN as facts, and the train step against the paper's objective."""

import functools

import chex
import jax
from jax.extend import core as jcore
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from jgan import cyclegan, models, steps

# ---------------------------------------------------------------------------
# Networks.


@functools.cache
def _init(module, example_shape, seed=0):
    """Parameters for inputs ``[1, *example_shape]`` (``rbg`` keys, jitted; see tests/test_models.py)."""
    init = jax.jit(functools.partial(models.init_model, module))
    return init(jax.random.key(seed, impl="rbg"), jnp.zeros((1, *example_shape)))


def _images(shape, batch=2, key=3):
    return jax.random.uniform(jax.random.key(key), (batch, *shape), minval=-1.0, maxval=1.0)


def _convolutions(fn, *args):
    """``(kernel_shape, window_strides)`` of every convolution in ``fn``'s jaxpr, in order."""
    def equations(jaxpr):  # Into sub-jaxprs too: models.ConvTranspose runs in a custom_jvp_call.
        for eqn in jaxpr.eqns:
            yield eqn
            for sub in jcore.jaxprs_in_params(eqn.params):
                yield from equations(sub)

    return [
        (tuple(eqn.invars[1].aval.shape), tuple(eqn.params["window_strides"]))
        for eqn in equations(jax.make_jaxpr(fn)(*args).jaxpr)
        if eqn.primitive.name == "conv_general_dilated"
    ]


def _conv(x, kernel, padding="VALID"):
    return lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("shape, channels", [((16, 16, 3), 3), ((8, 12, 1), 2)])
def test_generator_preserves_the_image_shape(shape, channels):
    generator = models.ResnetGenerator(channels=channels, features=2, n_blocks=2)
    params, model_state = _init(generator, shape)
    assert model_state == {}  # Instance norm: parameters only.
    out = models.make_apply(generator, stateful=False)(params, _images(shape))
    assert out.shape == (2, *shape[:2], channels)


def test_generator_rejects_sizes_that_are_not_multiples_of_4():
    generator = models.ResnetGenerator(features=2, n_blocks=1)
    with pytest.raises(ValueError, match="multiples of 4"):
        jax.eval_shape(lambda x: generator.init(jax.random.key(0), x), jnp.zeros((1, 10, 12, 3)))


def test_generator_layer_plan_is_c7s1_d_d_r_u_u_c7s1():
    f, blocks = 2, 3
    generator = models.ResnetGenerator(channels=3, features=f, n_blocks=blocks)
    params, _ = _init(generator, (8, 8, 1))
    convs = _convolutions(lambda p, x: generator.apply({"params": p}, x), params, jnp.zeros((1, 8, 8, 1)))
    expected = [((7, 7, 1, f), (1, 1)), ((3, 3, f, 2 * f), (2, 2)), ((3, 3, 2 * f, 4 * f), (2, 2))]
    expected += [((3, 3, 4 * f, 4 * f), (1, 1))] * (2 * blocks)
    # Transposed convolutions run as input-dilated convolutions with stride 1.
    expected += [((3, 3, 4 * f, 2 * f), (1, 1)), ((3, 3, 2 * f, f), (1, 1)), ((7, 7, f, 3), (1, 1))]
    assert convs == expected
    assert set(params) == {"c7s1", "down_0", "down_1", "up_0", "up_1", "output"} | {f"res_{i}" for i in range(blocks)}


def test_generator_output_is_tanh_bounded():
    generator = models.ResnetGenerator(features=2, n_blocks=1)
    params, _ = _init(generator, (8, 8, 3))
    loud = jax.tree.map(lambda x: x, params)
    loud["output"] = {"kernel": params["output"]["kernel"] * 1e4, "bias": params["output"]["bias"]}
    out = generator.apply({"params": loud}, _images((8, 8, 3)))
    assert float(jnp.max(jnp.abs(out))) <= 1.0
    assert float(jnp.max(jnp.abs(out))) > 0.999  # Saturated, so the bound is tanh's.


def test_reflection_pad_does_not_repeat_the_edge():
    x = jnp.arange(1.0, 4.0).reshape(1, 1, 3, 1) * jnp.ones((1, 3, 1, 1))
    padded = models.reflection_pad(x, 1)
    np.testing.assert_array_equal(padded[0, 0, :, 0], [2.0, 1.0, 2.0, 3.0, 2.0])  # PyTorch's ReflectionPad2d.
    y = _images((5, 6, 2))
    np.testing.assert_array_equal(
        models.reflection_pad(y, 3), np.pad(np.asarray(y), ((0, 0), (3, 3), (3, 3), (0, 0)), mode="reflect")
    )


def test_generator_pads_its_7x7_layers_by_reflection():
    """The first and last layers, recomputed by hand from the parameters on reflect-padded inputs."""
    generator = models.ResnetGenerator(channels=3, features=2, n_blocks=1)
    params, _ = _init(generator, (8, 8, 3))
    x = _images((8, 8, 3))
    out, captured = generator.apply({"params": params}, x, capture_intermediates=True)
    inter = captured["intermediates"]
    padded = np.pad(np.asarray(x), ((0, 0), (3, 3), (3, 3), (0, 0)), mode="reflect")
    first = _conv(padded, params["c7s1"]["kernel"])
    np.testing.assert_allclose(inter["c7s1"]["__call__"][0], first, rtol=1e-5, atol=1e-6)
    # Control: zero padding gives a different border.
    assert not np.allclose(_conv(x, params["c7s1"]["kernel"], "SAME"), first, atol=1e-4)

    last_norm = sorted(k for k in inter if k.startswith("InstanceNorm"))[-1]
    h = jax.nn.relu(inter[last_norm]["__call__"][0])
    hp = np.pad(np.asarray(h), ((0, 0), (3, 3), (3, 3), (0, 0)), mode="reflect")
    expected = jnp.tanh(_conv(hp, params["output"]["kernel"]) + params["output"]["bias"])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm_normalises_each_example_and_channel(affine):
    generator = models.ResnetGenerator(features=2, n_blocks=1, norm_affine=affine)
    params, _ = _init(generator, (8, 8, 3))
    if affine:  # Learnable scale and bias, starting at 1 and 0.
        norms = [v for k, v in params.items() if k.startswith("InstanceNorm")]
        assert norms and all(np.all(n["scale"] == 1.0) and np.all(n["bias"] == 0.0) for n in norms)
    else:
        assert not any(k.startswith("InstanceNorm") for k in params)
    # Examples of very different scales: batch statistics would not normalise each one.
    x = _images((8, 8, 3)) * jnp.array([1.0, 50.0])[:, None, None, None] + jnp.array([0.0, 7.0])[:, None, None, None]
    # Kernels scaled up so that epsilon (1e-5) is negligible next to each channel's variance.
    loud = jax.tree.map(lambda v: v * 100.0 if v.ndim == 4 else v, params)
    _, captured = generator.apply({"params": loud}, x, capture_intermediates=True)
    outputs = []

    def collect(tree, name=""):
        for key, value in tree.items():
            if key == "__call__" and name.startswith("InstanceNorm"):
                outputs.append(value[0])
            elif isinstance(value, dict):
                collect(value, key)

    collect(captured["intermediates"])
    assert len(outputs) == 1 + 2 + 2 * 1 + 2
    for out in outputs:
        np.testing.assert_allclose(out.mean(axis=(1, 2)), 0.0, atol=1e-4)
        np.testing.assert_allclose(out.var(axis=(1, 2)), 1.0, rtol=1e-3)


@pytest.mark.parametrize("size, patches", [(32, 2), (64, 6), (128, 14)])
def test_patchgan_gives_a_patch_map(size, patches):
    discriminator = models.PatchGANDiscriminator(features=2)
    params, model_state = _init(discriminator, (size, size, 3))
    assert model_state == {}
    out = models.make_apply(discriminator, stateful=False)(params, _images((size, size, 3)))
    assert out.shape == (2, patches, patches, 1)


def test_patchgan_is_c64_c128_c256_c512_with_a_70x70_receptive_field():
    f = 2
    discriminator = models.PatchGANDiscriminator(features=f)
    params, _ = _init(discriminator, (64, 64, 3))
    convs = _convolutions(lambda p, x: discriminator.apply({"params": p}, x), params, jnp.zeros((1, 64, 64, 3)))
    assert convs == [
        ((4, 4, 3, f), (2, 2)), ((4, 4, f, 2 * f), (2, 2)), ((4, 4, 2 * f, 4 * f), (2, 2)),
        ((4, 4, 4 * f, 8 * f), (1, 1)), ((4, 4, 8 * f, 1), (1, 1)),
    ]
    receptive, jump = 1, 1
    for (k, _, _, _), (s, _) in convs:
        receptive += (k - 1) * jump
        jump *= s
    assert receptive == 70
    # Instance norm after every convolution but the first and the last; the first has a bias.
    _, captured = discriminator.apply({"params": params}, _images((64, 64, 3)), capture_intermediates=True)
    assert sorted(k for k in captured["intermediates"] if k.startswith("InstanceNorm")) == [
        "InstanceNorm_0", "InstanceNorm_1", "InstanceNorm_2"]
    assert "bias" in params["Conv_0"] and "bias" not in params["Conv_1"]


# ---------------------------------------------------------------------------
# The train step with hand-written networks.

SHAPE = (3, 4, 2)  # Images of both domains: 3x4 pixels, 2 channels.


def gen(p, x):
    """A per-pixel network: ``x W + b + x² C``; the identity when W = I, b = 0, C = 0."""
    return x @ p["w"] + p["b"] + jnp.square(x) @ p["c"]


def disc_flat(p, x):
    """Logits ``[batch, 1]`` from the flattened image."""
    h = jax.nn.leaky_relu(x.reshape(x.shape[0], -1) @ p["u"] + p["c"])
    return h @ p["v"]


def disc_patch(p, x):
    """A 1x1-patch map ``[batch, h, w, 1]``."""
    return jax.nn.leaky_relu(x @ p["u"] + p["c"]) @ p["v"]


def _gen_params(key, c_in=SHAPE[-1], c_out=SHAPE[-1], identity=False):
    k1, k2, k3 = jax.random.split(key, 3)
    if identity:
        return {"w": jnp.eye(c_in, c_out), "b": jnp.zeros(c_out), "c": jnp.zeros((c_in, c_out))}
    return {
        "w": jnp.eye(c_in, c_out) + 0.3 * jax.random.normal(k1, (c_in, c_out)),
        "b": 0.1 * jax.random.normal(k2, (c_out,)),
        "c": 0.1 * jax.random.normal(k3, (c_in, c_out)),
    }


def _disc_params(key, d_in, hidden=5):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "u": jax.random.normal(k1, (d_in, hidden)) / np.sqrt(d_in),
        "c": 0.1 * jax.random.normal(k2, (hidden,)),
        "v": jax.random.normal(k3, (hidden, 1)) / np.sqrt(hidden),
    }


def _setup(identity=False, g_optimizer=None, d_optimizer=None, pool_size=0, a_shape=SHAPE, b_shape=SHAPE, **kwargs):
    key = jax.random.key(0)
    g_opt = g_optimizer or optax.adam(1e-2)
    d_opt = d_optimizer or optax.adam(1e-2)
    state = cyclegan.init_cyclegan_state(
        jax.random.key(42),
        _gen_params(jax.random.fold_in(key, 1), a_shape[-1], b_shape[-1], identity),
        _gen_params(jax.random.fold_in(key, 2), b_shape[-1], a_shape[-1], identity),
        _disc_params(jax.random.fold_in(key, 3), int(np.prod(a_shape))),
        _disc_params(jax.random.fold_in(key, 4), b_shape[-1]),
        g_optimizer=g_opt, d_optimizer=d_opt, pool_size=pool_size, a_shape=a_shape, b_shape=b_shape,
    )
    step = steps.make_cyclegan_train_step(
        generator_ab=gen, generator_ba=gen, discriminator_a=disc_flat, discriminator_b=disc_patch,
        g_optimizer=g_opt, d_optimizer=d_opt, pool_size=pool_size, **kwargs,
    )
    return state, step


def _batch(batch_a=4, batch_b=4, a_shape=SHAPE, b_shape=SHAPE, key=7):
    ka, kb = jax.random.split(jax.random.key(key))
    return {
        "a": jax.random.uniform(ka, (batch_a, *a_shape), minval=-1.0, maxval=1.0),
        "b": 0.5 * jax.random.uniform(kb, (batch_b, *b_shape), minval=-1.0, maxval=1.0) + 0.2,
    }


def _moved(before, after):
    return any(jax.tree.leaves(jax.tree.map(lambda u, v: bool(np.any(np.asarray(u) != np.asarray(v))), before, after)))


def test_identity_generators_have_zero_cycle_and_identity_losses():
    state, step = _setup(identity=True, identity_weight=5.0)
    _, metrics = jax.jit(step)(state, _batch())
    for name in ("cycle_loss", "cycle_a", "cycle_b", "identity_loss"):
        assert float(metrics[name]) == 0.0, name
    # Control: non-identity generators do not.
    state, step = _setup(identity=False, identity_weight=5.0)
    _, metrics = jax.jit(step)(state, _batch())
    assert float(metrics["cycle_loss"]) > 1e-3 and float(metrics["identity_loss"]) > 1e-3


class StepVariantsTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_one_step_updates_all_four_networks_and_reports(self):
        state, step = _setup()
        new_state, metrics = self.variant(step)(state, _batch())
        assert int(new_state.step) == 1
        assert set(metrics) == {
            "g_loss", "g_ab_loss", "g_ba_loss", "cycle_loss", "cycle_a", "cycle_b", "d_a_loss",
            "d_b_loss", "d_a_real", "d_a_fake", "d_b_real", "d_b_fake", "g_grad_norm",
            "d_grad_norm", "nonfinite"}
        chex.assert_tree_all_finite(metrics)
        assert float(metrics["nonfinite"]) == 0.0
        chex.assert_trees_all_equal_structs(new_state, state)
        for name in ("g_ab_params", "g_ba_params", "d_a_params", "d_b_params"):
            assert _moved(getattr(state, name), getattr(new_state, name)), name


def _paper_generator_objective(g_params, d_params, a, b, lam, identity):
    """Zhu et al., eq. 3 with the least-squares GAN loss of sec. 4, plus sec. 5.2's identity term."""
    g_ab, g_ba = g_params
    d_a, d_b = d_params
    fake_b, fake_a = gen(g_ab, a), gen(g_ba, b)
    gan = jnp.mean((disc_patch(d_b, fake_b) - 1.0) ** 2) + jnp.mean((disc_flat(d_a, fake_a) - 1.0) ** 2)
    cyc = jnp.mean(jnp.abs(gen(g_ba, fake_b) - a)) + jnp.mean(jnp.abs(gen(g_ab, fake_a) - b))
    idt = jnp.mean(jnp.abs(gen(g_ab, b) - b)) + jnp.mean(jnp.abs(gen(g_ba, a) - a))
    return gan + lam * cyc + identity * idt


def _reference_discriminator_objective(d_params, g_params, a, b):
    """The authors' 0.5·(MSE(D(real), 1) + MSE(D(fake), 0)) for each discriminator, fakes held fixed."""
    g_ab, g_ba = g_params
    d_a, d_b = d_params
    fake_b = lax.stop_gradient(gen(g_ab, a))
    fake_a = lax.stop_gradient(gen(g_ba, b))
    loss_a = 0.5 * (jnp.mean((disc_flat(d_a, a) - 1.0) ** 2) + jnp.mean(disc_flat(d_a, fake_a) ** 2))
    loss_b = 0.5 * (jnp.mean((disc_patch(d_b, b) - 1.0) ** 2) + jnp.mean(disc_patch(d_b, fake_b) ** 2))
    return loss_a + loss_b


@pytest.mark.parametrize("identity", [0.0, 5.0])
def test_gradients_are_those_of_the_papers_objectives(identity, x64):
    lam = 10.0
    # SGD with learning rate 1: each update is minus the gradient.
    state, step = _setup(g_optimizer=optax.sgd(1.0), d_optimizer=optax.sgd(1.0), cycle_weight=lam,
                         identity_weight=identity, adversarial_weight=2.0)
    state = jax.tree.map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, state)
    batch = jax.tree.map(lambda x: x.astype(jnp.float64), _batch())
    new_state, metrics = jax.jit(step)(state, batch)
    g_params = (state.g_ab_params, state.g_ba_params)
    d_params = (state.d_a_params, state.d_b_params)

    g_grad = jax.grad(_paper_generator_objective)(g_params, d_params, batch["a"], batch["b"], lam, identity)
    g_step = jax.tree.map(lambda old, new: old - new, g_params, (new_state.g_ab_params, new_state.g_ba_params))
    chex.assert_trees_all_close(g_step, g_grad, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        metrics["g_loss"], _paper_generator_objective(g_params, d_params, batch["a"], batch["b"], lam, identity),
        rtol=1e-12)
    assert ("identity_loss" in metrics) == (identity > 0)

    d_grad = jax.grad(_reference_discriminator_objective)(d_params, g_params, batch["a"], batch["b"])
    d_step = jax.tree.map(lambda old, new: old - new, d_params, (new_state.d_a_params, new_state.d_b_params))
    chex.assert_trees_all_close(d_step, d_grad, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(metrics["d_a_loss"] + metrics["d_b_loss"],
                               _reference_discriminator_objective(d_params, g_params, batch["a"], batch["b"]),
                               rtol=1e-12)


def test_identity_term_changes_only_the_generators_step():
    opts = dict(g_optimizer=optax.sgd(0.1), d_optimizer=optax.sgd(0.1))
    off_state, off = _setup(identity_weight=0.0, **opts)
    on_state, on = _setup(identity_weight=5.0, **opts)
    a, _ = jax.jit(off)(off_state, _batch())
    b, metrics = jax.jit(on)(on_state, _batch())
    assert float(metrics["identity_loss"]) > 0.0
    assert not np.allclose(a.g_ab_params["w"], b.g_ab_params["w"])
    chex.assert_trees_all_close(a.d_a_params, b.d_a_params)
    chex.assert_trees_all_close(a.d_b_params, b.d_b_params)


def test_compiled_step_traces_once():
    state, step = _setup(pool_size=4, identity_weight=1.0)
    chex.clear_trace_counter()
    compiled = jax.jit(chex.assert_max_traces(step, n=1))
    for _ in range(3):
        state, _ = compiled(state, _batch())
    with pytest.raises(AssertionError):  # The guard is live: a new shape retraces.
        compiled(state, _batch(batch_a=2))


def test_domains_of_different_shapes_and_batch_sizes():
    a_shape, b_shape = (3, 4, 1), (3, 4, 3)
    state, step = _setup(a_shape=a_shape, b_shape=b_shape, pool_size=2)
    new_state, metrics = jax.jit(step)(state, _batch(batch_a=3, batch_b=5, a_shape=a_shape, b_shape=b_shape))
    assert float(metrics["nonfinite"]) == 0.0
    assert new_state.pool_a.shape == (2, *a_shape) and new_state.pool_b.shape == (2, *b_shape)
    # Identity loss feeds b to G: A -> B, which needs one image shape.
    state, step = _setup(a_shape=a_shape, b_shape=b_shape, identity_weight=1.0)
    with pytest.raises(ValueError, match="same image shape"):
        step(state, _batch(a_shape=a_shape, b_shape=b_shape))


def test_shape_and_argument_errors():
    state, step = _setup()
    with pytest.raises(ValueError, match="keys 'a' and 'b'"):
        step(state, {"x": _batch()["a"]})
    with pytest.raises(ValueError, match="target domain"):  # G maps 2 channels to 3, B has 2.
        step(state._replace(g_ab_params=_gen_params(jax.random.key(0), 2, 3)), _batch())
    bad = steps.make_cyclegan_train_step(
        generator_ab=gen, generator_ba=gen, discriminator_a=lambda p, x: jnp.zeros(()),
        discriminator_b=disc_patch, g_optimizer=optax.sgd(0.1), d_optimizer=optax.sgd(0.1))
    with pytest.raises(ValueError, match="discriminator_a"):
        bad(state, _batch())
    _, pooled = _setup(pool_size=3)
    with pytest.raises(ValueError, match="pool_size=3"):
        pooled(state, _batch())
    with pytest.raises(TypeError, match="CycleGANState"):
        step(tuple(state), _batch())
    for kwargs, error in [
        (dict(cycle_weight=-1.0), ValueError), (dict(identity_weight=float("nan")), ValueError),
        (dict(loss="nope"), ValueError), (dict(pool_size=-1), ValueError), (dict(pool_size=2.0), TypeError),
    ]:
        with pytest.raises(error):
            _setup(**kwargs)
    with pytest.raises(ValueError, match="a_shape"):
        cyclegan.init_cyclegan_state(jax.random.key(0), {}, {}, {}, {}, g_optimizer=optax.sgd(1.0),
                                     d_optimizer=optax.sgd(1.0), pool_size=2, a_shape=None)


@pytest.mark.parametrize("loss", ["non_saturating", "hinge"])
def test_other_loss_families(loss):
    state, step = _setup(loss=loss)
    _, metrics = jax.jit(step)(state, _batch())
    assert float(metrics["nonfinite"]) == 0.0
    if loss == "non_saturating":  # Probabilities for the sigmoid-based families.
        for name in ("d_a_real", "d_a_fake", "d_b_real", "d_b_fake"):
            assert 0.0 < float(metrics[name]) < 1.0


# ---------------------------------------------------------------------------
# The image pool.


def _python_image_pool(pool, size, images, key):
    """The authors' ImagePool.query, one image at a time, drawing the same random numbers.

    ``pool`` is a list of the stored images (updated in place).
    """
    out = []
    for image, k in zip(np.asarray(images), jax.random.split(key, images.shape[0])):
        k_swap, k_index = jax.random.split(k)
        if len(pool) < size:
            pool.append(image)
            out.append(image)
        elif float(jax.random.uniform(k_swap)) > 0.5:
            index = int(jax.random.randint(k_index, (), 0, size))
            out.append(pool[index].copy())
            pool[index] = image
        else:
            out.append(image)
    return np.stack(out)


def test_image_pool_matches_the_authors_algorithm():
    size, shape = 5, (2, 2, 1)
    pool, count = jnp.zeros((size, *shape)), jnp.zeros((), jnp.int32)
    reference_pool = []
    query = jax.jit(cyclegan.query_image_pool)
    history = []
    for i in range(6):
        images = jax.random.normal(jax.random.key(100 + i), (3, *shape))
        key = jax.random.key(200 + i)
        out, pool, count = query(pool, count, images, key)
        expected_out = _python_image_pool(reference_pool, size, images, key)
        np.testing.assert_array_equal(out, expected_out)
        assert int(count) == len(reference_pool)
        np.testing.assert_array_equal(pool[: len(reference_pool)], np.stack(reference_pool))
        # Every returned image is new or one that was generated before.
        history.extend(np.asarray(images))
        for image in np.asarray(out):
            assert any(np.array_equal(image, h) for h in history)
    assert int(count) == size
    assert not np.array_equal(out, images)  # After filling, some images come from the history.


def test_pool_is_part_of_the_state_and_feeds_the_discriminators():
    opts = dict(g_optimizer=optax.sgd(0.1), d_optimizer=optax.sgd(1.0))
    state, step = _setup(pool_size=3, **opts)
    fresh_state, no_pool = _setup(pool_size=0, **opts)
    batch = _batch(batch_a=2, batch_b=2)
    step, no_pool = jax.jit(step), jax.jit(no_pool)
    pooled, _ = step(state, batch)
    # Filling: the pools hold this step's generated images, which D saw unchanged.
    assert int(pooled.pool_a_count) == 2 and int(pooled.pool_b_count) == 2
    np.testing.assert_array_equal(pooled.pool_b[:2], gen(state.g_ab_params, batch["a"]))
    np.testing.assert_array_equal(pooled.pool_a[:2], gen(state.g_ba_params, batch["b"]))
    unpooled, _ = no_pool(fresh_state, batch)
    chex.assert_trees_all_close((pooled.d_a_params, pooled.d_b_params), (unpooled.d_a_params, unpooled.d_b_params))
    # The pool fills up, then D sees older images: its updates leave the pool-free ones.
    for _ in range(3):
        pooled, _ = step(pooled, batch)
        unpooled, _ = no_pool(unpooled, batch)
    assert int(pooled.pool_b_count) == 3
    assert not np.allclose(pooled.d_b_params["u"], unpooled.d_b_params["u"])


# ---------------------------------------------------------------------------
# The flax networks in the step.


def test_one_step_with_the_flax_networks():
    shape = (16, 16, 3)
    g = models.ResnetGenerator(channels=3, features=2, n_blocks=1)
    d = models.PatchGANDiscriminator(features=2, n_layers=2)
    g_ab, _ = _init(g, shape, 0)
    g_ba, _ = _init(g, shape, 1)
    d_a, _ = _init(d, shape, 2)
    d_b, _ = _init(d, shape, 3)
    opt = optax.adam(2e-4, b1=0.5)
    state = steps.init_cyclegan_state(jax.random.key(0), g_ab, g_ba, d_a, d_b, g_optimizer=opt,
                                      d_optimizer=opt, pool_size=2, a_shape=shape)
    g_apply = models.make_apply(g, stateful=False)
    d_apply = models.make_apply(d, stateful=False)
    step = jax.jit(steps.make_cyclegan_train_step(
        generator_ab=g_apply, generator_ba=g_apply, discriminator_a=d_apply, discriminator_b=d_apply,
        g_optimizer=opt, d_optimizer=opt, identity_weight=5.0, pool_size=2))
    batch = {"a": _images(shape, key=1), "b": _images(shape, key=2)}
    new_state, metrics = step(state, batch)
    assert float(metrics["nonfinite"]) == 0.0
    for name in ("g_ab_params", "g_ba_params", "d_a_params", "d_b_params"):
        assert _moved(getattr(state, name), getattr(new_state, name)), name
