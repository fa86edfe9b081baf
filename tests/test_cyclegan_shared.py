"""The shared-encoder CycleGAN (the seed notes' sec. 6.1): the translator as a partition of two ResnetGenerators, and the step's tied gradient.

The translator in the step, trained end to end (every leaf of the encoder and
both decoders moves; the logged translation errors are those of two
ResnetGenerators holding the one encoder), is tested through the example in
tests/test_example_cyclegan.py (--shared-encoder).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jgan import cyclegan, models

# ---------------------------------------------------------------------------
# The network against two ResnetGenerators.

SIZE = 8


def _shapes(module, channels=1):
    """The parameters' shapes ``jax.ShapeDtypeStruct`` (traced, nothing compiled)."""
    params, model_state = jax.eval_shape(
        lambda x: models.init_model(module, jax.random.key(0), x), jnp.zeros((1, SIZE, SIZE, channels)))
    assert model_state == {}  # Instance norm: parameters only.
    return params


def _images(batch=2, channels=1, key=3):
    return jax.random.uniform(jax.random.key(key), (batch, SIZE, SIZE, channels), minval=-1.0, maxval=1.0)


def _count(tree):
    return sum(int(np.size(x)) for x in jax.tree.leaves(tree))


def _random(shapes, key=11, scale=0.3):
    """Parameters of these shapes drawn at random (learned norm scales/biases off their 1/0 start, decoders distinct)."""
    leaves, treedef = jax.tree.flatten(shapes)
    keys = jax.random.split(jax.random.key(key), len(leaves))
    return treedef.unflatten([scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])


def _as_resnet_generator(params, decoder):
    """A ResnetGenerator's parameters: the encoder's layers, then ``decoder``'s (its norms renumbered after the encoder's 3)."""
    own = {
        (f"InstanceNorm_{3 + int(k.split('_')[1])}" if k.startswith("InstanceNorm_") else k): v
        for k, v in params[decoder].items()
    }
    assert not set(own) & set(params["encoder"])
    return {**params["encoder"], **own}


def _encoder_closed_form(channels_in, f, shared_blocks, affine):
    """c7s1-f, d2f, d4f (no biases: a norm follows) and the shared residual blocks, counted by hand."""
    weights = 49 * channels_in * f + 9 * f * 2 * f + 9 * 2 * f * 4 * f + shared_blocks * 2 * 9 * (4 * f) ** 2
    norms = 2 * (f + 2 * f + 4 * f) + shared_blocks * 2 * 2 * 4 * f if affine else 0
    return weights + norms


@pytest.mark.parametrize(
    "n_blocks, shared_blocks, affine", [(3, None, False), (4, None, True), (3, 3, False), (2, 0, False)]
)
def test_one_encoder_fewer_parameters_than_two_generators(n_blocks, shared_blocks, affine):
    f, channels = 2, 1
    translator = models.SharedEncoderTranslator(
        channels=channels, features=f, n_blocks=n_blocks, shared_blocks=shared_blocks, norm_affine=affine)
    generator = models.ResnetGenerator(channels=channels, features=f, n_blocks=n_blocks, norm_affine=affine)
    shared = _shapes(translator)
    separate = [_shapes(generator), _shapes(generator)]
    k = n_blocks // 2 if shared_blocks is None else shared_blocks
    assert set(shared) == {"encoder", "decoder_a", "decoder_b"}
    assert _count(shared["encoder"]) == _encoder_closed_form(channels, f, k, affine)
    # Two generators hold the encoder twice; the translator once.
    assert _count(separate) - _count(shared) == _count(shared["encoder"]) > 0
    assert _count(shared["decoder_a"]) == _count(shared["decoder_b"]) == _count(separate[0]) - _count(shared["encoder"])


def test_translations_are_two_resnet_generators_holding_the_shared_encoder():
    translator = models.SharedEncoderTranslator(channels=1, features=2, n_blocks=3, norm_affine=True)
    generator = models.ResnetGenerator(channels=1, features=2, n_blocks=3, norm_affine=True)
    params = _random(_shapes(translator))
    g_params = _as_resnet_generator(params, "decoder_b")
    f_params = _as_resnet_generator(params, "decoder_a")
    # The partition covers exactly ResnetGenerator's layers, with their shapes.
    reference = jax.tree.map(jnp.shape, _shapes(generator))
    assert jax.tree.map(jnp.shape, g_params) == reference == jax.tree.map(jnp.shape, f_params)

    resnet = models.make_apply(generator, stateful=False)
    generator_ab, generator_ba = models.make_shared_generators(translator)

    @jax.jit  # One program for all five (cheaper than five, or than op-by-op dispatch).
    def outputs(x):
        both = translator.apply({"params": params}, x)  # __call__: both directions from one encoding
        return generator_ab(params, x), generator_ba(params, x), resnet(g_params, x), resnet(f_params, x), both

    g_x, f_x, g_reference, f_reference, both = outputs(_images())
    np.testing.assert_allclose(g_x, g_reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(f_x, f_reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(both[0], g_x, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(both[1], f_x, rtol=1e-6, atol=1e-7)
    # Control: the two decoders are distinct functions.
    assert not np.allclose(g_x, f_x, atol=1e-3)


def test_translator_errors():
    def shapes(translator, size=SIZE):
        return jax.eval_shape(lambda x: translator.init(jax.random.key(0), x), jnp.zeros((1, size, size, 1)))

    with pytest.raises(ValueError, match="shared_blocks must be at most n_blocks = 2, got 3"):
        shapes(models.SharedEncoderTranslator(channels=1, features=2, n_blocks=2, shared_blocks=3))
    with pytest.raises(TypeError, match="n_blocks"):
        shapes(models.SharedEncoderTranslator(channels=1, features=2, n_blocks=2.0))
    with pytest.raises(ValueError, match="shared_blocks"):
        shapes(models.SharedEncoderTranslator(channels=1, features=2, n_blocks=2, shared_blocks=-1))
    with pytest.raises(ValueError, match="multiples of 4"):
        shapes(models.SharedEncoderTranslator(channels=1, features=2, n_blocks=1), size=10)
    with pytest.raises(TypeError, match="SharedEncoderTranslator"):
        models.make_shared_generators(models.ResnetGenerator(features=2, n_blocks=1))


# ---------------------------------------------------------------------------
# The step with shared parameters: hand-written per-pixel networks.

SHAPE = (3, 4, 2)
HIDDEN = 3


def encode(p, x):
    return jnp.tanh(x @ p["w"] + p["b"])


def decode(p, h):
    return h @ p["v"] + p["c"] + jnp.square(h) @ p["q"]


def shared_ab(p, x):
    return decode(p["decoder_b"], encode(p["encoder"], x))


def shared_ba(p, x):
    return decode(p["decoder_a"], encode(p["encoder"], x))


def separate(p, x):
    """A generator of its own encoder and decoder ``{"encoder", "decoder"}``."""
    return decode(p["decoder"], encode(p["encoder"], x))


def disc(p, x):
    """A 1x1-patch map ``[batch, h, w, 1]``."""
    return jax.nn.leaky_relu(x @ p["u"] + p["c"]) @ p["v"]


def _shared_params(key):
    k = jax.random.split(key, 8)
    c = SHAPE[-1]

    def decoder(k1, k2, k3):
        return {"v": jax.random.normal(k1, (HIDDEN, c)), "c": 0.1 * jax.random.normal(k2, (c,)),
                "q": 0.3 * jax.random.normal(k3, (HIDDEN, c))}

    return {
        "encoder": {"w": jax.random.normal(k[0], (c, HIDDEN)), "b": 0.1 * jax.random.normal(k[1], (HIDDEN,))},
        "decoder_a": decoder(*k[2:5]),
        "decoder_b": decoder(*k[5:8]),
    }


def _disc_params(key, hidden=5):
    k1, k2, k3 = jax.random.split(key, 3)
    return {"u": jax.random.normal(k1, (SHAPE[-1], hidden)), "c": 0.1 * jax.random.normal(k2, (hidden,)),
            "v": jax.random.normal(k3, (hidden, 1)) / np.sqrt(hidden)}


def _batch(batch=4, key=7):
    ka, kb = jax.random.split(jax.random.key(key))
    return {"a": jax.random.uniform(ka, (batch, *SHAPE), minval=-1.0, maxval=1.0),
            "b": 0.5 * jax.random.uniform(kb, (batch, *SHAPE), minval=-1.0, maxval=1.0) + 0.2}


def _setup(shared=True, opt=None, pool_size=0, params=None, **kwargs):
    """The shared-parameter state and step, or (``shared=False``) two separate generators holding copies of the encoder."""
    opt = opt or optax.adam(1e-2)
    key = jax.random.key(0)
    params = _shared_params(jax.random.fold_in(key, 1)) if params is None else params
    if shared:
        g_ab, g_ba, gens = params, None, (shared_ab, shared_ba)
    else:
        g_ab = {"encoder": params["encoder"], "decoder": params["decoder_b"]}
        g_ba = {"encoder": params["encoder"], "decoder": params["decoder_a"]}
        gens = (separate, separate)
    state = cyclegan.init_cyclegan_state(
        jax.random.key(42), g_ab, g_ba, _disc_params(jax.random.fold_in(key, 3)),
        _disc_params(jax.random.fold_in(key, 4)), g_optimizer=opt, d_optimizer=opt, pool_size=pool_size,
        a_shape=SHAPE,
    )  # fmt: skip
    step = cyclegan.make_cyclegan_train_step(
        generator_ab=gens[0], generator_ba=gens[1], discriminator_a=disc, discriminator_b=disc, g_optimizer=opt,
        d_optimizer=opt, pool_size=pool_size, shared_generator_params=shared, **kwargs,
    )  # fmt: skip
    return state, step


def _untied_objective(encoders, decoders, d_params, a, b, lam, identity):
    """Zhu et al.'s eq. 3 (LSGAN, paper scale) + identity, with G's and F's encoders as separate arguments.

    ``encoders = (e_G, e_F)``, ``decoders = (decoder_a, decoder_b)``:
    G = decoder_b(e_G(.)) and F = decoder_a(e_F(.)).
    """
    e_g, e_f = encoders
    dec_a, dec_b = decoders
    d_a, d_b = d_params

    def g(x):
        return decode(dec_b, encode(e_g, x))

    def f(x):
        return decode(dec_a, encode(e_f, x))

    fake_b, fake_a = g(a), f(b)
    gan = jnp.mean((disc(d_b, fake_b) - 1.0) ** 2) + jnp.mean((disc(d_a, fake_a) - 1.0) ** 2)
    cyc = jnp.mean(jnp.abs(f(fake_b) - a)) + jnp.mean(jnp.abs(g(fake_a) - b))
    idt = jnp.mean(jnp.abs(g(b) - b)) + jnp.mean(jnp.abs(f(a) - a))
    return gan + lam * cyc + identity * idt


def _to_x64(tree):
    return jax.tree.map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def test_the_encoders_gradient_is_the_sum_of_both_directions(x64):
    lam, identity = 10.0, 5.0
    # SGD with learning rate 1: each update is minus the gradient.
    state, step = _setup(opt=optax.sgd(1.0), cycle_weight=lam, identity_weight=identity, adversarial_weight=2.0)
    state, batch = _to_x64(state), _to_x64(_batch())
    new_state, metrics = jax.jit(step)(state, batch)
    assert new_state.g_ba_params is None
    params = state.g_ab_params
    update = jax.tree.map(lambda old, new: old - new, params, new_state.g_ab_params)

    d_params = (state.d_a_params, state.d_b_params)
    args = ((params["decoder_a"], params["decoder_b"]), d_params, batch["a"], batch["b"], lam, identity)
    (grad_e_g, grad_e_f), (grad_dec_a, grad_dec_b) = jax.grad(_untied_objective, argnums=(0, 1))(
        (params["encoder"], params["encoder"]), *args)
    expected_encoder = jax.tree.map(jnp.add, grad_e_g, grad_e_f)
    chex.assert_trees_all_close(update["encoder"], expected_encoder, rtol=1e-10, atol=1e-12)
    chex.assert_trees_all_close(update["decoder_a"], grad_dec_a, rtol=1e-10, atol=1e-12)
    chex.assert_trees_all_close(update["decoder_b"], grad_dec_b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(metrics["g_loss"], _untied_objective((params["encoder"],) * 2, *args), rtol=1e-12)
    # Both directions contribute: neither one alone is the encoder's gradient.
    for part in (grad_e_g, grad_e_f):
        assert not np.allclose(part["w"], expected_encoder["w"], rtol=1e-3)
        assert float(jnp.abs(part["w"]).max()) > 1e-3


def test_shared_step_equals_two_generators_holding_the_same_encoder(x64):
    """Against the standard step (independently tested against the paper's objective): same losses, same D updates,
    the shared encoder's step the sum of the two copies' steps."""
    opt = optax.sgd(1.0)
    kwargs = dict(opt=opt, identity_weight=2.0, pool_size=3)
    shared_state, shared_step = _setup(shared=True, **kwargs)
    sep_state, sep_step = _setup(shared=False, **kwargs)
    shared_state, sep_state, batch = _to_x64(shared_state), _to_x64(sep_state), _to_x64(_batch())
    shared_new, shared_metrics = jax.jit(shared_step)(shared_state, batch)
    sep_new, sep_metrics = jax.jit(sep_step)(sep_state, batch)
    chex.assert_trees_all_close(shared_metrics["g_loss"], sep_metrics["g_loss"], rtol=1e-12)
    for name in ("cycle_loss", "identity_loss", "g_ab_loss", "g_ba_loss", "d_a_loss", "d_b_loss"):
        np.testing.assert_allclose(shared_metrics[name], sep_metrics[name], rtol=1e-12, err_msg=name)
    chex.assert_trees_all_close((shared_new.d_a_params, shared_new.d_b_params, shared_new.pool_a, shared_new.pool_b),
                                (sep_new.d_a_params, sep_new.d_b_params, sep_new.pool_a, sep_new.pool_b), rtol=1e-12)

    def step_of(old, new):
        return jax.tree.map(lambda u, v: u - v, old, new)

    sep_g = step_of(sep_state.g_ab_params, sep_new.g_ab_params)
    sep_f = step_of(sep_state.g_ba_params, sep_new.g_ba_params)
    shared = step_of(shared_state.g_ab_params, shared_new.g_ab_params)
    chex.assert_trees_all_close(shared["encoder"], jax.tree.map(jnp.add, sep_g["encoder"], sep_f["encoder"]),
                                rtol=1e-10, atol=1e-12)
    chex.assert_trees_all_close(shared["decoder_b"], sep_g["decoder"], rtol=1e-10, atol=1e-12)
    chex.assert_trees_all_close(shared["decoder_a"], sep_f["decoder"], rtol=1e-10, atol=1e-12)


def test_a_state_of_the_other_form_is_refused():
    shared_state, shared_step = _setup(shared=True)
    sep_state, sep_step = _setup(shared=False)
    with pytest.raises(ValueError, match="g_ba_params must be None"):
        shared_step(sep_state, _batch())
    with pytest.raises(ValueError, match="shared_generator_params=True"):
        sep_step(shared_state, _batch())
    with pytest.raises(TypeError, match="shared_generator_params must be a bool"):
        cyclegan.make_cyclegan_train_step(
            generator_ab=shared_ab, generator_ba=shared_ba, discriminator_a=disc, discriminator_b=disc,
            g_optimizer=optax.sgd(1.0), d_optimizer=optax.sgd(1.0), shared_generator_params="yes")


# ---------------------------------------------------------------------------
# Data-parallel (8 forced CPU devices, set in conftest.py).

DEVICES = 8


@pytest.mark.skipif(jax.device_count() < DEVICES, reason="needs 8 (forced host) devices")
def test_shard_map_equals_single_device():
    config = dict(identity_weight=5.0, pool_size=20)
    batches = [_batch(batch=2 * DEVICES, key=10 + i) for i in range(2)]
    expected, step = _setup(**config)
    step = jax.jit(step)
    for batch in batches:
        expected, _ = step(expected, batch)
    state, step = _setup(axis_name="batch", **config)
    mesh = Mesh(np.array(jax.devices()[:DEVICES]), ("batch",))
    mapped = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P("batch")), out_specs=(P(), P())))
    for batch in batches:
        state, metrics = mapped(state, batch)
    assert state.g_ba_params is None
    chex.assert_trees_all_close(state._replace(key=None), expected._replace(key=None), rtol=2e-5, atol=2e-6)
    chex.assert_tree_all_finite(metrics)
