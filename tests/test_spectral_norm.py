"""Spectral normalisation of the discriminators (Miyato et al. 2018).

Checked against independent references: ``numpy.linalg.svd`` of every raw
kernel (the stored ``sigma`` converges to its largest singular value), a
float64 NumPy twin of one power iteration (what one training-mode call
stores, and what a ``make_gan`` step stores with and without unrolling), the
network without spectral normalisation applied to the kernels divided by the
twin's ``sigma`` (the forward pass really uses ``W / sigma`` for every
weight), and frozen copies of the discriminators as they were before the
option existed (``spectral_norm=False`` changes nothing).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jgan import models, steps
from jgan.models._conditional import _embed, check_labels
from jgan.models._cyclegan import _instance_norm
from jgan.models._dcgan import _KERNEL_INIT, _LEAKY_SLOPE, _batch_norm
from jgan.unroll import Unrolled

SIZE = 16
BATCH = 8
CLASSES = 3
LATENT = 8

# name -> (module factory taking spectral_norm, whether it takes labels)
NETWORKS = {
    "dcgan": (lambda sn: models.DCGANDiscriminator(features=4, normalization="none", spectral_norm=sn), False),
    "dcgan_batch": (lambda sn: models.DCGANDiscriminator(features=4, spectral_norm=sn), False),
    "projection": (lambda sn: models.ProjectionDiscriminator(num_classes=CLASSES, features=4, spectral_norm=sn), True),
    "patchgan": (lambda sn: models.PatchGANDiscriminator(features=4, n_layers=2, spectral_norm=sn), False),
}


def _images(seed, batch=BATCH):
    return jax.random.uniform(jax.random.key(seed), (batch, SIZE, SIZE, 1), minval=-1.0, maxval=1.0)


def _labels(batch=BATCH):
    return jnp.arange(batch, dtype=jnp.int32) % CLASSES


def _args(name, batch=BATCH):
    return (_labels(batch),) if NETWORKS[name][1] else ()


@functools.cache
def _init(name, sn, seed=0):
    module = NETWORKS[name][0](sn)
    init = jax.jit(functools.partial(models.init_model, module))
    params, state = init(jax.random.key(seed, impl="rbg"), jnp.zeros((1, SIZE, SIZE, 1)), *_args(name, 1))
    return module, params, state


@functools.cache
def _apply(name, sn, train):
    return jax.jit(models.make_apply(NETWORKS[name][0](sn), stateful=True, train=train))


def _normalised_weights(params, state):
    """``{path: (raw weight [rows, cols] float64, u [1, cols], sigma)}`` for every SN entry of ``state``.

    ``nn.SpectralNorm`` stores ``"SpectralNorm_i"/"<layer>/kernel/u"``; the
    class embedding ``"class_embedding/u"``; both name the parameter's path.
    """
    stats = state["batch_stats"]
    entries = dict(stats)
    for key, value in stats.items():
        if key.startswith("SpectralNorm_"):
            del entries[key]
            entries.update(value)
    weights = {}
    for key in entries:
        if not key.endswith("/u"):
            continue
        path = key[: -len("/u")]
        w = params
        for part in path.split("/"):
            w = w[part]
        w = np.asarray(w, np.float64)
        weights[path] = (w.reshape(-1, w.shape[-1]), np.asarray(entries[key], np.float64), float(entries[path + "/sigma"]))
    return weights


def _power_iteration(u, w):
    """One power iteration from ``u [1, cols]`` on ``w [rows, cols]``: ``(u', sigma)`` (Miyato et al., Algorithm 1)."""

    def normalise(x):
        return x / np.sqrt(np.sum(x * x) + 1e-12)

    v = normalise(u @ w.T)
    u = normalise(v @ w)
    return u, float((v @ w @ u.T)[0, 0])


def _weights_of(params):
    """Paths of every parameter with two or more axes (every kernel and the class embedding)."""
    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    return {"/".join(k.key for k in path) for path, leaf in paths if np.ndim(leaf) >= 2}


def _train(name, calls):
    """The state after ``calls`` training-mode calls on random images, parameters fixed."""
    _, params, state = _init(name, True)
    apply = _apply(name, True, True)
    for i in range(calls):
        _, state = apply(params, state, _images(100 + i), *_args(name))
    return params, state


@pytest.mark.parametrize("name", ["dcgan", "projection", "patchgan"])
def test_sigma_converges_to_the_largest_singular_value(name):
    """The issue's test: ``W / sigma`` has largest singular value 1 (within 1e-2) after 20 calls."""
    params, state = _train(name, 20)
    weights = _normalised_weights(params, state)
    # Every weight, the class embedding included, is normalised; biases and norms are not.
    assert set(weights) == _weights_of(params)
    for path, (w, _, sigma) in weights.items():
        largest = np.linalg.svd(w, compute_uv=False)[0]
        assert abs(largest / sigma - 1.0) < 1e-2, (path, largest, sigma)
    # A fresh state is far off for the wide kernels: the check can fail.
    _, params0, state0 = _init(name, True)
    first = _normalised_weights(params0, state0)
    assert any(abs(np.linalg.svd(w, compute_uv=False)[0] / s - 1.0) > 1e-2 for w, _, s in first.values())


@pytest.mark.parametrize("name", ["dcgan_batch", "projection", "patchgan"])
def test_the_forward_pass_uses_kernels_divided_by_sigma(name):
    """Eval mode equals the plain network with ``W / sigma`` (sigma from one twin iteration from the stored u)."""
    params, state = _train(name, 3)
    x, y = _images(7), _args(name)
    sn_out, same = _apply(name, True, False)(params, state, x, *y)
    scaled = jax.tree.map(np.asarray, params)
    for path, (w, u, _) in _normalised_weights(params, state).items():
        _, sigma = _power_iteration(u, w)
        parts = path.split("/")
        leaf = scaled
        for part in parts[:-1]:
            leaf = leaf[part]
        leaf[parts[-1]] = (np.asarray(leaf[parts[-1]], np.float64) / sigma).astype(np.float32)
    plain_state = {"batch_stats": {k: v for k, v in state["batch_stats"].items() if k.startswith("BatchNorm_")}}
    plain_out, _ = _apply(name, False, False)(scaled, plain_state, x, *y)
    np.testing.assert_allclose(sn_out, plain_out, rtol=1e-4, atol=1e-5)
    # Without normalisation the output differs (the check can fail).
    raw_out, _ = _apply(name, False, False)(params, plain_state, x, *y)
    assert not np.allclose(raw_out, sn_out, rtol=1e-2)


def test_gradients_treat_u_and_v_as_constants():
    """d/dW of the output equals that of the plain network on ``W / (v W uᵀ)`` with ``u``, ``v`` fixed
    (Miyato et al., eq. 12: the gradient flows through sigma, not through the power iteration)."""
    name = "projection"
    params, state = _train(name, 2)
    x, y = _images(8), _args(name)
    constants = {}
    for path, (w, u, _) in _normalised_weights(params, state).items():
        v = u @ w.T
        v = v / np.sqrt(np.sum(v * v) + 1e-12)
        constants[path] = (v.astype(np.float32), _power_iteration(u, w)[0].astype(np.float32))
    plain_state = {"batch_stats": {k: v for k, v in state["batch_stats"].items() if k.startswith("BatchNorm_")}}
    sn_apply, plain_apply = _apply(name, True, False), _apply(name, False, False)

    def sn_loss(p):
        return jnp.sum(jnp.tanh(sn_apply(p, state, x, *y)[0]))

    def twin_loss(p):
        p = jax.tree.map(lambda a: a, p)  # a copy to edit
        for path, (v, u) in constants.items():
            *parents, last = path.split("/")
            node = p
            for part in parents:
                node = node[part]
            w = node[last]
            matrix = jnp.reshape(w, (-1, w.shape[-1]))
            node[last] = w / (v @ matrix @ u.T)[0, 0]
        return jnp.sum(jnp.tanh(plain_apply(p, plain_state, x, *y)[0]))

    sn_grads = jax.jit(jax.grad(sn_loss))(params)
    twin_grads = jax.jit(jax.grad(twin_loss))(params)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=2e-3, atol=1e-5), sn_grads, twin_grads)


@pytest.mark.parametrize("name", ["dcgan", "projection", "patchgan"])
def test_u_moves_by_one_power_iteration_in_training_mode_only(name):
    _, params, state = _init(name, True)
    x, y = _images(3), _args(name)
    _, trained = _apply(name, True, True)(params, state, x, *y)
    before, after = _normalised_weights(params, state), _normalised_weights(params, trained)
    for path, (w, u, _) in before.items():
        u1, sigma1 = _power_iteration(u, w)
        np.testing.assert_allclose(after[path][1], u1, rtol=1e-4, atol=1e-6, err_msg=path)
        np.testing.assert_allclose(after[path][2], sigma1, rtol=1e-4, err_msg=path)
        if w.shape[1] > 1:  # a single column's u is already converged (1 or -1)
            assert not np.allclose(after[path][1], u, atol=1e-3), path
    _, kept = _apply(name, True, False)(params, trained, x, *y)
    jax.tree.map(np.testing.assert_array_equal, kept, trained)


@pytest.mark.parametrize("name", ["dcgan", "patchgan"])
def test_stateless_apply_of_a_spectrally_normalised_network_says_what_to_do(name):
    module, params, _ = _init(name, True)
    with pytest.raises(ValueError, match=r"spectral normalisation.*make_apply\(module, stateful=True\)"):
        models.make_apply(module, stateful=False)(params, _images(0))


# ---------------------------------------------------------------------------
# Frozen copies of the discriminators before spectral_norm existed.


class _OldDCGAN(nn.Module):
    features: int = 64
    momentum: float = 0.9
    axis_name: str | None = None
    normalization: str = "batch"

    @nn.compact
    def __call__(self, x, *, train=True):
        width = self.features
        x = nn.Conv(width, (4, 4), strides=(2, 2), padding="SAME", kernel_init=_KERNEL_INIT)(x)
        x = nn.leaky_relu(x, _LEAKY_SLOPE)
        while max(x.shape[1:3]) > 7:
            width *= 2
            x = nn.Conv(
                width, (4, 4), strides=(2, 2), padding="SAME", use_bias=self.normalization == "none", kernel_init=_KERNEL_INIT
            )(x)
            if self.normalization == "batch":
                x = _batch_norm(train, self.momentum, self.axis_name)(x)
            elif self.normalization == "layer":
                x = nn.LayerNorm(reduction_axes=(-3, -2, -1), feature_axes=-1)(x)
            x = nn.leaky_relu(x, _LEAKY_SLOPE)
        x = nn.Conv(1, x.shape[1:3], padding="VALID", kernel_init=_KERNEL_INIT, name="logit")(x)
        return jnp.reshape(x, (x.shape[0],))


class _OldProjection(nn.Module):
    num_classes: int
    features: int = 64
    momentum: float = 0.9
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, labels, *, train=True):
        labels = check_labels(labels, self.num_classes, batch=x.shape[0])
        width = self.features
        h = nn.Conv(width, (4, 4), strides=(2, 2), padding="SAME", kernel_init=_KERNEL_INIT)(x)
        h = nn.leaky_relu(h, _LEAKY_SLOPE)
        while max(h.shape[1:3]) > 7:
            width *= 2
            h = nn.Conv(width, (4, 4), strides=(2, 2), padding="SAME", use_bias=False, kernel_init=_KERNEL_INIT)(h)
            h = nn.leaky_relu(_batch_norm(train, self.momentum, self.axis_name)(h), _LEAKY_SLOPE)
        phi = jnp.sum(h, axis=(1, 2))
        self.sow("intermediates", "features", phi)
        psi = nn.Dense(1, kernel_init=_KERNEL_INIT, name="psi")(phi)[:, 0]
        table = self.param("class_embedding", _KERNEL_INIT, (self.num_classes, width))
        return psi + jnp.sum(_embed(table, labels).astype(phi.dtype) * phi, axis=-1)


class _OldPatchGAN(nn.Module):
    features: int = 64
    n_layers: int = 3
    norm_affine: bool = False

    @nn.compact
    def __call__(self, x, *, train=True):
        del train
        pad = ((1, 1), (1, 1))
        h = nn.Conv(self.features, (4, 4), strides=(2, 2), padding=pad, kernel_init=_KERNEL_INIT)(x)
        h = nn.leaky_relu(h, _LEAKY_SLOPE)
        for i in range(1, self.n_layers + 1):
            width = self.features * min(2**i, 8)
            stride = 2 if i < self.n_layers else 1
            h = nn.Conv(width, (4, 4), strides=(stride, stride), padding=pad, use_bias=False, kernel_init=_KERNEL_INIT)(h)
            h = nn.leaky_relu(_instance_norm(self.norm_affine)(h), _LEAKY_SLOPE)
        return nn.Conv(1, (4, 4), padding=pad, kernel_init=_KERNEL_INIT, name="logits")(h)


_OLD = {
    "dcgan": (_OldDCGAN(features=4, normalization="none"), models.DCGANDiscriminator(features=4, normalization="none")),
    "dcgan_layer": (_OldDCGAN(features=4, normalization="layer"), models.DCGANDiscriminator(features=4, normalization="layer")),
    "dcgan_batch": (_OldDCGAN(features=4), models.DCGANDiscriminator(features=4)),
    "projection": (_OldProjection(num_classes=CLASSES, features=4), models.ProjectionDiscriminator(num_classes=CLASSES, features=4)),
    "patchgan": (_OldPatchGAN(features=4, n_layers=2), models.PatchGANDiscriminator(features=4, n_layers=2)),
}


def _init_and_apply(module, key, y):
    """``(variables, train-mode output and state, eval-mode output)``, jitted (rbg keys compile fast)."""
    variables = jax.jit(lambda k, x, *yy: module.init(k, x, *yy, train=False))(key, _images(0), *y)
    mutable = [c for c in variables if c != "params"]
    outs = [
        jax.jit(lambda v, x, *yy, train=train: module.apply(v, x, *yy, train=train, mutable=mutable))(variables, _images(1), *y)
        for train in (True, False)
    ]
    return variables, outs


@pytest.mark.parametrize("name", sorted(_OLD))
def test_default_is_the_network_as_it_was(name):
    old, new = _OLD[name]
    y = (_labels(),) if name == "projection" else ()
    key = jax.random.key(5, impl="rbg")
    old_vars, old_outs = _init_and_apply(old, key, y)
    new_vars, new_outs = _init_and_apply(new, key, y)
    assert jax.tree.structure(old_vars) == jax.tree.structure(new_vars)
    jax.tree.map(np.testing.assert_array_equal, old_vars, new_vars)
    jax.tree.map(np.testing.assert_array_equal, old_outs, new_outs)
    # Spectral normalisation adds model state only: the same parameters from
    # the same key (flax's nn.SpectralNorm would store W / sigma at init).
    sn = new.clone(spectral_norm=True)
    sn_vars = jax.jit(lambda k, x, *yy: sn.init(k, x, *yy, train=False))(key, _images(0), *y)
    jax.tree.map(np.testing.assert_array_equal, sn_vars["params"], new_vars["params"])


# ---------------------------------------------------------------------------
# make_gan with a spectrally normalised discriminator.


def _generator(params, z):
    return jnp.tanh(z @ params["w"]).reshape(-1, SIZE, SIZE, 1)


@functools.cache
def _gan_step(unroll):
    module = NETWORKS["dcgan"][0](True)
    gan = steps.make_gan(
        generator=_generator,
        discriminator=models.make_apply(module, stateful=True),
        g_optimizer=optax.adam(1e-3, b1=0.5),
        d_optimizer=optax.adam(1e-3, b1=0.5),
        prior=LATENT,
        unroll=None if unroll is None else Unrolled(unroll),
        d_stateful=True,
    )
    return gan, jax.jit(gan.step)


def _gan_state(gan):
    _, d_params, d_state = _init("dcgan", True)
    g_params = {"w": 0.1 * jax.random.normal(jax.random.key(9), (LATENT, SIZE * SIZE))}
    return gan.init(jax.random.key(4), g_params, d_params, d_model_state=d_state)


def test_make_gan_trains_a_spectrally_normalised_discriminator():
    gan, step = _gan_step(None)
    state = _gan_state(gan)
    for i in range(4):
        previous = _normalised_weights(state.d_params, state.d_model_state)
        state, metrics = step(state, _images(20 + i))
        assert float(metrics["nonfinite"]) == 0.0
        assert all(np.isfinite(float(v)) for v in metrics.values())
        current = _normalised_weights(state.d_params, state.d_model_state)
        assert any(not np.allclose(current[p][1], previous[p][1]) for p in current)
    assert int(state.step) == 4
    # sigma tracks the kernels the discriminator trained to.
    for path, (w, _, sigma) in _normalised_weights(state.d_params, state.d_model_state).items():
        assert abs(np.linalg.svd(w, compute_uv=False)[0] / sigma - 1.0) < 0.5, path


@pytest.fixture(scope="module")
def one_step_each():
    """One step from the same state, without unrolling and with ``Unrolled(2)``."""
    out = {}
    for unroll in (None, 2):
        gan, step = _gan_step(unroll)
        state = _gan_state(gan)
        out[unroll] = (state, *step(state, _images(30)))
    return out


def test_unrolled_passes_leave_the_model_state_frozen(one_step_each):
    """u after a step: two iterations on the old kernels (the discriminator's
    real and fake passes), then, without unrolling only, one on the updated
    kernels (the generator's pass); the K unrolled passes store nothing."""
    start, plain, plain_metrics = one_step_each[None]
    _, unrolled, unrolled_metrics = one_step_each[2]
    for metrics in (plain_metrics, unrolled_metrics):
        assert float(metrics["nonfinite"]) == 0.0
    # The discriminator's update does not depend on the unrolling.
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-7), unrolled.d_params, plain.d_params)
    old = _normalised_weights(start.d_params, start.d_model_state)
    new_plain = _normalised_weights(plain.d_params, plain.d_model_state)
    new_unrolled = _normalised_weights(unrolled.d_params, unrolled.d_model_state)
    for path, (w0, u0, _) in old.items():
        u2, sigma2 = _power_iteration(_power_iteration(u0, w0)[0], w0)
        np.testing.assert_allclose(new_unrolled[path][1], u2, rtol=1e-4, atol=1e-5, err_msg=path)
        np.testing.assert_allclose(new_unrolled[path][2], sigma2, rtol=1e-4, err_msg=path)
        u3, sigma3 = _power_iteration(u2, new_plain[path][0])
        np.testing.assert_allclose(new_plain[path][1], u3, rtol=1e-4, atol=1e-5, err_msg=path)
        np.testing.assert_allclose(new_plain[path][2], sigma3, rtol=1e-4, err_msg=path)
    # The two differ by the generator's pass (the check can fail).
    assert any(not np.allclose(new_plain[p][1], new_unrolled[p][1], atol=1e-6) for p in old if old[p][0].shape[1] > 1)


@pytest.mark.parametrize("name", ["dcgan", "projection", "patchgan"])
def test_spectral_norm_must_be_a_bool(name):
    module = NETWORKS[name][0](True).clone(spectral_norm="False")  # truthy: would switch it on
    with pytest.raises(TypeError, match="spectral_norm must be a bool"):
        module.init(jax.random.key(0), _images(0, batch=1), *_args(name, 1), train=False)
