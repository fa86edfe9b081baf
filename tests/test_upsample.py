"""models.ConvTranspose and subpixel_conv_transpose against flax's nn.ConvTranspose and lax.conv_transpose.

The reference is flax's own layer with the same parameters: values and
derivatives (in the inputs and the parameters, of a random linear functional)
agree to float precision, in float32 and float64, for the configurations the
models use and the others the layer claims; the models' parameter trees are
those they had with flax's layer; on CPU the kernel derivative runs without
an input-dilated convolution, and a program lowered for another platform
keeps conv_transpose's.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import export, lax
from jax.test_util import check_grads

from jgan import models
from jgan.models import _cyclegan, _dcgan
from jgan.models import ConvTranspose, subpixel_conv_transpose

FLOAT32_RTOL = 1e-5
FLOAT64_RTOL = 1e-12

# (kwargs of the layer, input shape). The first three are the models' layers.
MODEL_LAYERS = {
    "dcgan_hidden": (
        dict(features=6, kernel_size=(4, 4), strides=(2, 2), padding="SAME", use_bias=False), (3, 4, 4, 5)
    ),
    "dcgan_output": (dict(features=3, kernel_size=(4, 4), strides=(2, 2), padding="SAME"), (3, 7, 7, 4)),
    "cyclegan_up": (
        dict(features=4, kernel_size=(3, 3), strides=(2, 2), padding=((1, 2), (1, 2)), use_bias=False),
        (2, 5, 6, 6),
    ),
}
OTHER_LAYERS = {
    "valid_stride_3x2": (dict(features=3, kernel_size=(3, 5), strides=(3, 2), padding="VALID"), (2, 4, 5, 2)),
    "negative_padding": (dict(features=2, kernel_size=(4, 4), strides=(2, 2), padding=((0, 3), (-1, 1))), (2, 5, 6, 3)),
    "int_padding": (dict(features=2, kernel_size=(3, 3), strides=(2, 2), padding=1), (2, 5, 4, 3)),
    "stride_1": (dict(features=4, kernel_size=(3, 3), strides=(1, 1), padding="SAME"), (2, 5, 6, 3)),
    "stride_above_kernel": (dict(features=2, kernel_size=(2, 1), strides=(3, 3), padding="SAME"), (2, 4, 3, 3)),
    "kernel_dilation": (
        dict(features=3, kernel_size=(3, 3), strides=(2, 2), padding="SAME", kernel_dilation=(2, 1)), (2, 5, 4, 2)
    ),
    "transpose_kernel": (
        dict(features=3, kernel_size=(4, 3), strides=(2, 2), padding="VALID", transpose_kernel=True), (2, 4, 5, 2)
    ),
    "mask": (
        dict(features=3, kernel_size=(3, 3), strides=(2, 2), padding="SAME",
             mask=jnp.asarray(np.random.default_rng(0).integers(0, 2, (3, 3, 2, 3)), jnp.float32)),
        (2, 4, 5, 2),
    ),
    "1d": (dict(features=3, kernel_size=(4,), strides=(2,), padding="SAME"), (2, 7, 3)),
    "3d": (dict(features=2, kernel_size=(3, 3, 2), strides=(2, 2, 3), padding="SAME"), (1, 3, 4, 2, 2)),
    "two_batch_axes": (dict(features=3, kernel_size=(4, 4), strides=(2, 2), padding="SAME"), (2, 3, 4, 5, 2)),
    "unbatched": (dict(features=3, kernel_size=(4, 4), strides=(2, 2), padding="SAME"), (4, 5, 2)),
}
LAYERS = {**MODEL_LAYERS, **OTHER_LAYERS}


def _assert_close(actual, expected, rtol):
    """Same tree; each leaf within ``rtol`` times the largest magnitude of the expected leaf."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        assert a.shape == e.shape and a.dtype == e.dtype
        scale = float(np.max(np.abs(e))) if e.size else 0.0
        np.testing.assert_allclose(a, e, rtol=0, atol=rtol * max(scale, np.finfo(e.dtype).tiny))


def _value_and_gradients(layer, variables, x, key):
    """The output, and the gradients in ``(variables, x)`` of ``sum(w * output)`` for a random ``w``."""
    out = layer.apply(variables, x)
    w = jax.random.normal(key, out.shape, out.dtype)
    grads = jax.jit(jax.grad(lambda v, x: jnp.sum(w * layer.apply(v, x)), argnums=(0, 1)))(variables, x)
    return jax.jit(layer.apply)(variables, x), grads


def _compare_with_flax(kwargs, shape, method, dtype, rtol, seed=0):
    keys = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(keys[0], shape, dtype)
    param_dtype = dict(param_dtype=dtype) if dtype != jnp.float32 else {}
    reference = nn.ConvTranspose(**kwargs, **param_dtype)
    layer = ConvTranspose(**kwargs, **param_dtype, method=method)
    variables = reference.init(keys[1], x)
    # The same parameters: names, shapes, dtypes and initial values.
    jax.tree.map(np.testing.assert_array_equal, layer.init(keys[1], x), variables)
    actual = _value_and_gradients(layer, variables, x, keys[2])
    expected = _value_and_gradients(reference, variables, x, keys[2])
    _assert_close(actual, expected, rtol)
    if method != "subpixel":  # The value is conv_transpose's own.
        np.testing.assert_array_equal(actual[0], expected[0])


@pytest.mark.parametrize("method", ["auto", "subpixel", "transpose"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_equals_flax_conv_transpose_float32(name, method):
    kwargs, shape = LAYERS[name]
    _compare_with_flax(kwargs, shape, method, jnp.float32, FLOAT32_RTOL)


@pytest.mark.parametrize("method", ["auto", "subpixel"])
@pytest.mark.parametrize("name", [*MODEL_LAYERS, "valid_stride_3x2", "kernel_dilation", "transpose_kernel", "3d"])
def test_layer_equals_flax_conv_transpose_float64(name, method):
    kwargs, shape = LAYERS[name]
    with jax.enable_x64(True):
        _compare_with_flax(kwargs, shape, method, jnp.float64, FLOAT64_RTOL)


@settings(deadline=None, max_examples=12, derandomize=True)
@given(
    name=st.sampled_from(sorted(MODEL_LAYERS)),
    method=st.sampled_from(["auto", "subpixel"]),
    batch=st.integers(1, 3),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_model_layers_equal_flax_at_any_input_size(name, method, batch, height, width, seed):
    """Odd and even sizes, down to 1x1: the phases' lengths and the cut-off of the last one."""
    kwargs, shape = MODEL_LAYERS[name]
    _compare_with_flax(kwargs, (batch, height, width, shape[-1]), method, jnp.float32, FLOAT32_RTOL, seed=seed)


@pytest.mark.parametrize("name", [
    name for name, (kwargs, shape) in LAYERS.items()  # Those without the layer's own options.
    if not {"kernel_dilation", "transpose_kernel", "mask"} & set(kwargs)
    and len(shape) == len(kwargs["kernel_size"]) + 2
])
def test_subpixel_conv_transpose_equals_lax_conv_transpose(name):
    """The function on its own, against lax.conv_transpose with flax's arguments (unflipped kernel)."""
    kwargs, shape = LAYERS[name]
    n = len(kwargs["kernel_size"])
    padding = kwargs["padding"]
    padding = [(padding, padding)] * n if isinstance(padding, int) else padding
    x = jax.random.normal(jax.random.key(1), shape)
    kernel = jax.random.normal(jax.random.key(2), (*kwargs["kernel_size"], shape[-1], 5))
    expected = lax.conv_transpose(x, kernel, kwargs["strides"], padding)
    _assert_close(subpixel_conv_transpose(x, kernel, kwargs["strides"], padding), expected, FLOAT32_RTOL)


def test_derivatives_of_every_order_match_finite_differences(x64):
    """Forward and reverse mode, second order: the custom derivative rule of ``"auto"`` is exact."""
    kwargs, shape = MODEL_LAYERS["dcgan_output"]
    layer = ConvTranspose(**kwargs, param_dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(0), (1, 3, 2, shape[-1]), jnp.float64)
    variables = layer.init(jax.random.key(1), x)

    def f(x, kernel):
        return layer.apply({"params": {**variables["params"], "kernel": kernel}}, x)

    check_grads(f, (x, variables["params"]["kernel"]), order=2, modes=("fwd", "rev"))


def test_jvp_and_hessian_vector_product_equal_flax():
    kwargs, shape = MODEL_LAYERS["cyclegan_up"]
    x = jax.random.normal(jax.random.key(0), shape)
    reference = nn.ConvTranspose(**kwargs)
    variables = reference.init(jax.random.key(1), x)
    tangents = jax.tree.map(lambda v: jax.random.normal(jax.random.key(2), v.shape), (variables, x))

    def results(layer):
        def loss(v, x):
            return jnp.sum(jnp.sin(layer.apply(v, x)))

        jvp = jax.jvp(layer.apply, (variables, x), tangents)[1]
        hvp = jax.jvp(jax.grad(loss, argnums=(0, 1)), (variables, x), tangents)[1]
        return jvp, hvp

    _assert_close(results(ConvTranspose(**kwargs)), results(reference), FLOAT32_RTOL)


# ---------------------------------------------------------------------------
# The choice per backend.


def _dilated_convolutions(method, platform, *, derivative):
    """Input-dilated (fractionally strided) convolutions in the program lowered for ``platform``."""
    kwargs, shape = MODEL_LAYERS["dcgan_hidden"]
    layer = ConvTranspose(**kwargs, method=method)
    x = jnp.ones(shape)
    variables = layer.init(jax.random.key(0), x)
    fn = jax.grad(lambda v, x: jnp.sum(jnp.sin(layer.apply(v, x)))) if derivative else layer.apply
    text = export.export(jax.jit(fn), platforms=[platform])(variables, x).mlir_module()
    return text.count("lhs_dilate = [2, 2]")


def test_auto_computes_the_kernel_derivative_without_a_dilated_convolution_on_cpu():
    # The value: conv_transpose in both methods; its derivative: one dilated convolution fewer.
    assert _dilated_convolutions("auto", "cpu", derivative=False) == 1
    assert _dilated_convolutions("transpose", "cpu", derivative=False) == 1
    assert _dilated_convolutions("transpose", "cpu", derivative=True) == 2
    assert _dilated_convolutions("auto", "cpu", derivative=True) == 1
    assert _dilated_convolutions("subpixel", "cpu", derivative=True) == 0


def test_auto_keeps_conv_transpose_on_other_backends():
    assert _dilated_convolutions("auto", "cuda", derivative=True) == 2
    assert _dilated_convolutions("subpixel", "cuda", derivative=True) == 0  # Forced: every backend.


# ---------------------------------------------------------------------------
# The models.


def _flax_conv_transpose(*args, method, **kwargs):
    """The models' layer as it was: flax's own (``method`` dropped)."""
    del method
    return nn.ConvTranspose(*args, **kwargs)


MODELS = {
    "dcgan_28": (lambda m: models.DCGANGenerator(28, channels=1, features=2, upsample_method=m), (2, 8)),
    "dcgan_32": (lambda m: models.DCGANGenerator(32, channels=3, features=2, upsample_method=m), (2, 8)),
    "dcgan_64": (lambda m: models.DCGANGenerator(64, channels=3, features=2, upsample_method=m), (2, 8)),
    "resnet": (lambda m: models.ResnetGenerator(channels=3, features=2, n_blocks=1, upsample_method=m), (2, 12, 8, 3)),
}


def _init(module, shape, seed=0):
    return jax.jit(module.init)(jax.random.key(seed), jnp.zeros(shape))


@pytest.mark.parametrize("name", list(MODELS))
def test_model_parameter_trees_are_unchanged(name, monkeypatch):
    make, shape = MODELS[name]
    variables = _init(make("auto"), shape)
    monkeypatch.setattr(_dcgan, "ConvTranspose", _flax_conv_transpose)
    monkeypatch.setattr(_cyclegan, "ConvTranspose", _flax_conv_transpose)
    before = _init(make("auto"), shape)
    # Names (ConvTranspose_<i>, up_<i>), shapes, dtypes and initial values.
    assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(before)
    jax.tree.map(np.testing.assert_array_equal, variables, before)


def test_conditional_generator_parameter_tree_is_unchanged(monkeypatch):
    generator = models.ConditionalDCGANGenerator(image_size=28, num_classes=3, channels=1, features=2)
    labels = jnp.zeros((2,), jnp.int32)
    variables = jax.jit(generator.init)(jax.random.key(0), jnp.zeros((2, 8)), labels)
    monkeypatch.setattr(_dcgan, "ConvTranspose", _flax_conv_transpose)
    before = jax.jit(generator.init)(jax.random.key(0), jnp.zeros((2, 8)), labels)
    jax.tree.map(np.testing.assert_array_equal, variables, before)
    assert "ConvTranspose_0" in variables["params"]["body"]


@pytest.mark.parametrize("name", list(MODELS))
def test_model_methods_agree(name):
    """Images and the gradient of a random linear functional, for each upsample_method."""
    make, shape = MODELS[name]
    variables = _init(make("transpose"), shape)
    x = jax.random.normal(jax.random.key(1), shape)

    def results(method):
        module = make(method)

        def apply(params, x):
            out = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
            return out[0] if isinstance(out, tuple) else out

        out = jax.jit(apply)(variables["params"], x)
        w = jax.random.normal(jax.random.key(2), out.shape)
        return out, jax.jit(jax.grad(lambda p, x: jnp.sum(w * apply(p, x)), argnums=(0, 1)))(variables["params"], x)

    expected = results("transpose")
    _assert_close(results("auto"), expected, FLOAT32_RTOL)
    _assert_close(results("subpixel"), expected, FLOAT32_RTOL)


# ---------------------------------------------------------------------------
# Bad input.


def test_inputs_of_the_wrong_rank_are_refused():
    with pytest.raises(ValueError, match=r"at least 3 axes; got shape \(4, 2\)"):
        ConvTranspose(3, (3, 3), strides=(2, 2)).init(jax.random.key(0), jnp.zeros((4, 2)))


@pytest.mark.parametrize("module", [
    ConvTranspose(3, (3, 3), method="fast"),
    models.DCGANGenerator(28, upsample_method="fast"),
])
def test_an_unknown_method_is_refused(module):
    shape = (1, 4, 4, 2) if isinstance(module, ConvTranspose) else (1, 8)
    with pytest.raises(ValueError, match="method must be one of"):
        module.init(jax.random.key(0), jnp.zeros(shape))


def test_circular_padding_falls_back_to_flax_or_is_refused_when_subpixel_is_forced():
    kwargs = dict(features=3, kernel_size=(4, 4), strides=(2, 2), padding="CIRCULAR")
    _compare_with_flax(kwargs, (2, 4, 5, 2), "auto", jnp.float32, 0.0)  # Exactly flax's computation.
    with pytest.raises(ValueError, match="does not cover padding 'CIRCULAR'"):
        ConvTranspose(**kwargs, method="subpixel").init(jax.random.key(0), jnp.zeros((2, 4, 5, 2)))


def test_an_empty_output_falls_back_to_flax_or_is_refused_when_subpixel_is_forced():
    kwargs = dict(features=3, kernel_size=(4, 4), strides=(2, 2), padding=((0, 0), (0, 0)))
    x = jnp.ones((1, 2, 2, 1))  # Dilated to 3x3, smaller than the kernel.
    assert ConvTranspose(**kwargs).init_with_output(jax.random.key(0), x)[0].shape == (1, 0, 0, 3)
    with pytest.raises(ValueError, match="does not cover an empty output"):
        ConvTranspose(**kwargs, method="subpixel").init(jax.random.key(0), x)


@pytest.mark.parametrize("x_shape, k_shape, strides, padding, match", [
    ((4, 4, 2), (3, 3, 2, 1), (2, 2), "SAME", "of the same rank"),
    ((1, 4, 4, 2), (3, 3, 3, 1), (2, 2), "SAME", "takes 3 input features"),
    ((1, 4, 4, 2), (3, 3, 2, 1), (2, 0), "SAME", "strides must be 2 ints >= 1"),
    ((1, 4, 4, 2), (3, 3, 2, 1), (2,), "SAME", "strides must be 2 ints >= 1"),
    ((1, 4, 4, 2), (3, 3, 2, 1), (2, 2), "CIRCULAR", "padding must be 'SAME', 'VALID'"),
    ((1, 4, 4, 2), (3, 3, 2, 1), (2, 2), [(1, 1)], "one \\(low, high\\) pair per spatial axis"),
    ((1, 4, 4, 2), (3, 3, 2, 1), (2, 2), [(-9, -9), (0, 0)], "is empty"),
])
def test_subpixel_conv_transpose_refuses_bad_arguments(x_shape, k_shape, strides, padding, match):
    with pytest.raises(ValueError, match=match):
        subpixel_conv_transpose(jnp.zeros(x_shape), jnp.zeros(k_shape), strides, padding)
