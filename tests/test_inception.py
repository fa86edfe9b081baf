"""Tests for the FID InceptionV3 (jgan.models._inception) and its weight files.

The independent reference is a small PyTorch re-implementation of
pytorch-fid's ``fid_inception_v3`` below (torchvision's blocks with the FID
patches: padding-excluding average pools, a max pool in Mixed_7c, 1008
logits). Its randomly initialised weights are saved with ``torch.save`` and
read back by jgan's torch-free reader; the flax network must then compute
what torch computes, block by block and end to end (float32, 1e-4). The
BatchNorm running averages are set from a calibration batch, so that
activations stay of order one through all the layers (with running averages
at mean 0 / variance 1 they would vanish or explode and hide errors).
"""

import copy
import os
import pathlib
import pickle
import subprocess
import sys
import zipfile

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import traverse_util
from torch import nn as tnn

from jgan import models
from jgan.models import _inception

REPO = pathlib.Path(__file__).resolve().parents[1]
TOL = {"rtol": 1e-4, "atol": 1e-4}
# Small images, resized to 299x299 by the network (as pytorch-fid does).
IMAGE_SHAPE = (37, 45)


# ----------------------------------------------------------------------------
# The torch reference (pytorch-fid's fid_inception_v3, NCHW).


class TorchBasicConv2d(tnn.Module):
    def __init__(self, cin, cout, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = tnn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = tnn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x):
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class TorchFIDInceptionA(tnn.Module):
    def __init__(self, cin, pool_features):
        super().__init__()
        self.branch1x1 = TorchBasicConv2d(cin, 64, 1)
        self.branch5x5_1 = TorchBasicConv2d(cin, 48, 1)
        self.branch5x5_2 = TorchBasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = TorchBasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = TorchBasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = TorchBasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = TorchBasicConv2d(cin, pool_features, 1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b5, b3, bp], 1)


class TorchInceptionB(tnn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = TorchBasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = TorchBasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = TorchBasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = TorchBasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class TorchFIDInceptionC(tnn.Module):
    def __init__(self, cin, c7):
        super().__init__()
        self.branch1x1 = TorchBasicConv2d(cin, 192, 1)
        self.branch7x7_1 = TorchBasicConv2d(cin, c7, 1)
        self.branch7x7_2 = TorchBasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = TorchBasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = TorchBasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = TorchBasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = TorchBasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = TorchBasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = TorchBasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = TorchBasicConv2d(cin, 192, 1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b7, bd, bp], 1)


class TorchInceptionD(tnn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = TorchBasicConv2d(cin, 192, 1)
        self.branch3x3_2 = TorchBasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = TorchBasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = TorchBasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = TorchBasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = TorchBasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class TorchFIDInceptionE(tnn.Module):
    """E_1 (``max_pool=False``) or E_2 (``max_pool=True``)."""

    def __init__(self, cin, max_pool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = TorchBasicConv2d(cin, 320, 1)
        self.branch3x3_1 = TorchBasicConv2d(cin, 384, 1)
        self.branch3x3_2a = TorchBasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = TorchBasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = TorchBasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = TorchBasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = TorchBasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = TorchBasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = TorchBasicConv2d(cin, 192, 1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)


class TorchFIDInceptionV3(tnn.Module):
    """``fid_inception_v3`` with pytorch-fid's input handling; returns every top-level output."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = TorchBasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = TorchBasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = TorchBasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = TorchBasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = TorchBasicConv2d(80, 192, 3)
        self.Mixed_5b = TorchFIDInceptionA(192, 32)
        self.Mixed_5c = TorchFIDInceptionA(256, 64)
        self.Mixed_5d = TorchFIDInceptionA(288, 64)
        self.Mixed_6a = TorchInceptionB(288)
        self.Mixed_6b = TorchFIDInceptionC(768, 128)
        self.Mixed_6c = TorchFIDInceptionC(768, 160)
        self.Mixed_6d = TorchFIDInceptionC(768, 160)
        self.Mixed_6e = TorchFIDInceptionC(768, 192)
        self.Mixed_7a = TorchInceptionD(768)
        self.Mixed_7b = TorchFIDInceptionE(1280, max_pool=False)
        self.Mixed_7c = TorchFIDInceptionE(2048, max_pool=True)
        self.fc = tnn.Linear(2048, 1008)

    def forward(self, images):
        x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        outputs = {}
        for name, layer in self.named_children():
            if name == "fc":
                break
            x = layer(x)
            outputs[name] = x
            if name in ("Conv2d_2b_3x3", "Conv2d_4a_3x3"):
                x = F.max_pool2d(x, kernel_size=3, stride=2)
        features = torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)
        outputs["features"] = features
        outputs["fc"] = self.fc(features)
        return outputs


def _randomise_and_calibrate(module, x, seed):
    """Random BatchNorm affine; running averages set to the statistics of ``x``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, tnn.BatchNorm2d):
                layer.weight.copy_(0.5 + torch.rand(layer.weight.shape, generator=generator))
                layer.bias.copy_(0.2 * torch.randn(layer.bias.shape, generator=generator))
                layer.momentum = None  # cumulative average: one batch sets it
                layer.reset_running_stats()
        module.train()
        module(x)
    module.eval()
    return module


def _nhwc(t):
    return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


def _numpy_state_dict(module):
    return {name: value.numpy() for name, value in module.state_dict().items()}


def _images(seed, batch, shape=IMAGE_SHAPE):
    return torch.rand((batch, 3, *shape), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def torch_net():
    torch.manual_seed(0)
    net = TorchFIDInceptionV3()
    return _randomise_and_calibrate(net, _images(1, 4), seed=2)


@pytest.fixture(scope="module")
def pth_file(torch_net, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / models.FID_WEIGHTS_FILENAME
    torch.save(torch_net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def variables(pth_file):
    return models.load_fid_inception(pth_file)


def _abstract_variables():
    shapes = _inception._expected_shapes()
    flat = {key: jax.ShapeDtypeStruct(shape, jnp.float32) for key, shape in shapes.items()}
    return traverse_util.unflatten_dict(flat, sep="/")


# ----------------------------------------------------------------------------
# Shapes and input checks (traced only).


@pytest.mark.parametrize(
    "model, shape",
    [
        (models.InceptionV3(), (2, 64, 48, 3)),
        (models.InceptionV3(), (1, 299, 299, 3)),
        (models.InceptionV3(resize_input=False), (2, 75, 75, 3)),
        (models.InceptionV3(resize_input=False), (1, 80, 120, 3)),
    ],
)
def test_output_shapes(model, shape):
    out = jax.eval_shape(model.apply, _abstract_variables(), jax.ShapeDtypeStruct(shape, jnp.float32))
    assert isinstance(out, models.InceptionOutput)
    chex.assert_shape(out.features, (shape[0], 2048))
    chex.assert_shape(out.logits, (shape[0], 1008))


def test_variables_are_those_of_pytorch_fid(torch_net):
    """Every torch key but num_batches_tracked maps to exactly one flax variable."""
    names = [name for name in torch_net.state_dict() if not name.endswith("num_batches_tracked")]
    flax_keys = {_inception._flax_key(name)[0] for name in names}
    assert flax_keys == set(_inception._expected_shapes())
    assert len(names) == 472  # 94 BasicConv2d x 5 + fc weight and bias


@pytest.mark.parametrize(
    "model, shape, match",
    [
        (models.InceptionV3(), (64, 64, 3), "shape"),  # no batch axis
        (models.InceptionV3(), (2, 64, 64, 1), "3"),  # grey
        (models.InceptionV3(), (2, 3, 64, 64), "NHWC"),  # NCHW
        (models.InceptionV3(resize_input=False), (2, 74, 80, 3), "75"),
    ],
)
def test_rejects_bad_images(model, shape, match):
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(model.apply, _abstract_variables(), jax.ShapeDtypeStruct(shape, jnp.float32))


def test_rejects_train_mode():
    model = models.InceptionV3()
    sample = jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32)
    with pytest.raises(ValueError, match="train"):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=True), _abstract_variables(), sample)


def test_features_fn_rejects_bad_input():
    features_fn = models.make_inception_features(_abstract_variables(), chunk_size=2)
    with pytest.raises(ValueError, match="shape"):
        jax.eval_shape(features_fn, jax.ShapeDtypeStruct((4, 64, 64), jnp.float32))
    with pytest.raises(ValueError, match="chunk_size"):
        models.make_inception_features(_abstract_variables(), chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size must be a Python int"):
        models.make_inception_features(_abstract_variables(), chunk_size=2.0)


# ----------------------------------------------------------------------------
# The bilinear resize against torch.


@pytest.mark.parametrize(
    "in_shape, out_shape",
    [
        ((37, 45), (299, 299)),  # upsampling (small generated images)
        ((400, 350), (299, 299)),  # downsampling
        ((8, 8), (3, 5)),  # strong, non-integer downsampling
        ((5, 7), (12, 4)),  # up in one axis, down in the other
        ((299, 299), (299, 299)),  # identity
    ],
)
def test_resize_matches_torch_bilinear(in_shape, out_shape):
    images = _images(3, 2, in_shape)
    expected = F.interpolate(images, size=out_shape, mode="bilinear", align_corners=False)
    resized = _inception._resize_bilinear(jnp.asarray(_nhwc(images)), out_shape)
    np.testing.assert_allclose(np.asarray(resized), _nhwc(expected), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------
# Blocks against torch.

BLOCKS = {
    "BasicConv2d_3x3_stride2": (
        lambda: TorchBasicConv2d(5, 7, 3, stride=2),
        lambda: _inception.BasicConv2d(7, 3, strides=2),
        5,
    ),
    "BasicConv2d_1x7": (
        lambda: TorchBasicConv2d(5, 7, (1, 7), padding=(0, 3)),
        lambda: _inception.BasicConv2d(7, (1, 7), padding=(0, 3)),
        5,
    ),
    "FIDInceptionA": (lambda: TorchFIDInceptionA(16, 8), lambda: _inception.FIDInceptionA(8), 16),
    "InceptionB": (lambda: TorchInceptionB(16), lambda: _inception.InceptionB(), 16),
    "FIDInceptionC": (lambda: TorchFIDInceptionC(16, 12), lambda: _inception.FIDInceptionC(12), 16),
    "InceptionD": (lambda: TorchInceptionD(16), lambda: _inception.InceptionD(), 16),
    "FIDInceptionE_1": (lambda: TorchFIDInceptionE(16, False), lambda: _inception.FIDInceptionE(max_pool=False), 16),
    "FIDInceptionE_2": (lambda: TorchFIDInceptionE(16, True), lambda: _inception.FIDInceptionE(max_pool=True), 16),
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_matches_torch(name):
    make_torch, make_flax, channels = BLOCKS[name]
    torch.manual_seed(0)
    calibration = torch.randn((4, channels, 9, 11), generator=torch.Generator().manual_seed(1))
    block = _randomise_and_calibrate(make_torch(), calibration, seed=2)
    x = torch.randn((2, channels, 9, 11), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = _nhwc(block(x))
    variables = _inception._variables_from_state_dict(_numpy_state_dict(block))
    out = jax.jit(make_flax().apply)(variables, jnp.asarray(_nhwc(x)))
    assert out.shape == expected.shape
    assert np.std(expected) > 0.1  # activations of order one: a real test
    np.testing.assert_allclose(np.asarray(out), expected, **TOL)


# ----------------------------------------------------------------------------
# The whole network, from a file written by torch.save.


def _torch_forward(net, images):
    with torch.no_grad():
        return {name: value.numpy() for name, value in net(images).items()}


@pytest.fixture(scope="module")
def torch_outputs(torch_net):
    return _torch_forward(torch_net, _images(4, 3))


@pytest.fixture(scope="module")
def torch_outputs64(torch_net):
    return _torch_forward(copy.deepcopy(torch_net).double(), _images(4, 3).double())


def _top_level(module, method_name):
    return method_name == "__call__" and len(module.scope.path) == 1


def _flax_forward(model, variables, images):
    """Every top-level output (stem convolutions, Mixed blocks), pool3 features and logits, in torch's names."""

    def apply(variables, images):
        return model.apply(variables, images, capture_intermediates=_top_level, mutable=["intermediates"])

    out, state = jax.jit(apply)(variables, images)
    outputs = {name: np.asarray(value["__call__"][0]) for name, value in state["intermediates"].items()}
    outputs["features"] = np.asarray(out.features)
    outputs["fc"] = np.asarray(out.logits)
    return out, outputs


@pytest.fixture(scope="module")
def flax_outputs(variables):
    return _flax_forward(models.InceptionV3(), variables, jnp.asarray(_nhwc(_images(4, 3))))


@pytest.fixture(scope="module")
def flax_outputs64(variables):
    with jax.enable_x64(True):
        variables64 = jax.tree.map(lambda v: jnp.asarray(np.asarray(v), jnp.float64), variables)
        images = jnp.asarray(_nhwc(_images(4, 3).double()))
        assert images.dtype == jnp.float64
        return _flax_forward(models.InceptionV3(dtype=jnp.float64), variables64, images)[1]


def _as_torch_layout(name, value):
    return value if name in ("features", "fc") else np.transpose(value, (0, 3, 1, 2))


def test_network_matches_torch_in_float64(torch_outputs64, flax_outputs64):
    """In float64 the two implementations agree to round-off, block by block."""
    assert len(torch_outputs64) == 18  # 5 stem convolutions, 11 Mixed blocks, features, logits
    for name, expected in torch_outputs64.items():
        assert expected.dtype == np.float64 and flax_outputs64[name].dtype == np.float64, name
        assert np.std(expected) > 0.1, name  # activations of order one: a real test
        actual = _as_torch_layout(name, flax_outputs64[name])
        np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-9, err_msg=name)


def test_network_float32_is_as_accurate_as_torch_float32(torch_outputs, torch_outputs64, flax_outputs):
    """Against the float64 reference, our float32 error is at most twice torch's.

    Round-off grows by about 1.6x per block in this random network (torch's own
    float32 error reaches 5e-3 at Mixed_7c), so a fixed tolerance fits only the
    first blocks; those are compared directly.
    """
    _, outputs = flax_outputs
    for name, reference in torch_outputs64.items():
        actual = _as_torch_layout(name, outputs[name])
        assert actual.dtype == np.float32, name
        torch_error = np.abs(torch_outputs[name] - reference).max()
        error = np.abs(actual - reference).max()
        assert error <= 2 * torch_error + 1e-6, (name, error, torch_error)
    for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "Mixed_5b", "Mixed_5c"):
        np.testing.assert_allclose(_as_torch_layout(name, outputs[name]), torch_outputs[name], err_msg=name, **TOL)


def test_network_matches_torch_features_and_logits(torch_outputs, flax_outputs):
    out, _ = flax_outputs
    chex.assert_shape(out.features, (3, 2048))
    chex.assert_shape(out.logits, (3, 1008))
    assert np.std(torch_outputs["fc"]) > 0.1
    # Values of order one; float32 round-off after 94 layers (see above).
    np.testing.assert_allclose(np.asarray(out.features), torch_outputs["features"], rtol=1e-4, atol=3e-4)
    np.testing.assert_allclose(np.asarray(out.logits), torch_outputs["fc"], rtol=1e-4, atol=1e-4)
    # Different images give different features (the comparison is not vacuous).
    assert np.abs(np.asarray(out.features[0] - out.features[1])).max() > 1e-2


def test_features_fn_chunked_with_native_weights(pth_file, flax_outputs, tmp_path):
    """Chunks of 2 (the last one padded) and the .npz give the features of one batch and the .pth."""
    native = models.convert_fid_inception_weights(pth_file, tmp_path / "fid")
    assert native.name == "fid.npz"
    features_fn = models.make_inception_features(models.load_fid_inception(native), chunk_size=2)
    out = features_fn(jnp.asarray(_nhwc(_images(4, 3))))
    expected, _ = flax_outputs
    chex.assert_shape(out.features, (3, 2048))
    np.testing.assert_allclose(np.asarray(out.features), np.asarray(expected.features), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out.logits), np.asarray(expected.logits), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("resize_input", [True, False])
def test_input_range(resize_input):
    """[0, 1] floats (pytorch-fid), [-1, 1] floats and uint8 reach the network as the same [-1, 1] images."""
    pixels = np.random.default_rng(0).integers(0, 256, (2, 80, 90, 3), dtype=np.uint8)
    unit = pixels.astype(np.float32) / 255.0

    def preprocess(x, input_range):
        return _inception._preprocess(jnp.asarray(x), resize_input=resize_input, input_range=input_range, dtype=jnp.float32)

    reference = torch.from_numpy(unit.transpose(0, 3, 1, 2))
    if resize_input:
        reference = F.interpolate(reference, size=(299, 299), mode="bilinear", align_corners=False)
    expected = _nhwc(2 * reference - 1)
    np.testing.assert_allclose(preprocess(unit, (0.0, 1.0)), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(preprocess(2.0 * unit - 1.0, (-1.0, 1.0)), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(preprocess(pixels, (0.0, 255.0)), expected, rtol=0, atol=1e-6)
    assert float(jnp.min(expected)) < -0.9 and float(jnp.max(expected)) > 0.9


# ----------------------------------------------------------------------------
# Weight files: formats, round trips and bad files.


def test_native_file_round_trips(variables, tmp_path):
    path = models.save_fid_inception(variables, tmp_path / "w.npz")
    chex.assert_trees_all_equal(models.load_fid_inception(path), variables)


def test_pth_values_land_in_the_right_variables(torch_net, variables):
    state = torch_net.state_dict()
    conv = state["Mixed_6b.branch7x7_2.conv.weight"].numpy()  # [out, in, 1, 7]
    np.testing.assert_array_equal(variables["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"], conv.transpose(2, 3, 1, 0))
    bn = variables["batch_stats"]["Mixed_7c"]["branch_pool"]["bn"]
    np.testing.assert_array_equal(bn["mean"], state["Mixed_7c.branch_pool.bn.running_mean"].numpy())
    np.testing.assert_array_equal(bn["var"], state["Mixed_7c.branch_pool.bn.running_var"].numpy())
    fc = variables["params"]["fc"]
    np.testing.assert_array_equal(fc["kernel"], state["fc.weight"].numpy().T)
    np.testing.assert_array_equal(fc["bias"], state["fc.bias"].numpy())


def test_legacy_format_and_float16_and_cache_dir(torch_net, variables, tmp_path, monkeypatch):
    """The pre-1.6 torch.save format, a half-precision file under any name, and cache_dir."""
    half = {name: value.half() if value.is_floating_point() else value for name, value in torch_net.state_dict().items()}
    path = tmp_path / "weights.bin"
    torch.save(half, path, _use_new_zipfile_serialization=False)
    loaded = models.load_fid_inception(path)
    expected = jax.tree.map(lambda v: np.asarray(v).astype(np.float16).astype(np.float32), variables)
    chex.assert_trees_all_equal(loaded, expected)
    # cache_dir prefers the native file, then the .pth.
    os.replace(path, tmp_path / models.FID_WEIGHTS_FILENAME)
    chex.assert_trees_all_equal(models.load_fid_inception(cache_dir=tmp_path), expected)
    models.save_fid_inception(variables, tmp_path / models.FID_WEIGHTS_NATIVE_FILENAME)
    chex.assert_trees_all_equal(models.load_fid_inception(cache_dir=tmp_path), variables)
    # "~" is the user's home, as a shell would read it.
    monkeypatch.setenv("HOME", str(tmp_path.parent))
    chex.assert_trees_all_equal(models.load_fid_inception(cache_dir=f"~/{tmp_path.name}"), variables)
    chex.assert_trees_all_equal(
        models.load_fid_inception(f"~/{tmp_path.name}/{models.FID_WEIGHTS_NATIVE_FILENAME}"), variables)


def test_convert_example_cli(torch_net, pth_file, variables, tmp_path, capsys):
    from examples import convert_fid_inception as cli

    written = cli.main([str(pth_file), "--out", str(tmp_path)])
    assert written == tmp_path / models.FID_WEIGHTS_NATIVE_FILENAME
    n_params = sum(p.numel() for p in torch_net.parameters())
    assert f"{n_params:,} parameters" in capsys.readouterr().out
    chex.assert_trees_all_equal(models.load_fid_inception(cache_dir=tmp_path), variables)
    with pytest.raises(SystemExit) as raised:
        cli.main([str(tmp_path / "missing.pth")])
    assert raised.value.code == 1 and "no PyTorch checkpoint" in capsys.readouterr().err


def test_reading_needs_no_torch(pth_file):
    """A fresh interpreter where ``import torch`` fails reads the .pth."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from jgan.models import read_torch_state_dict\n"
        f"state = read_torch_state_dict({str(pth_file)!r})\n"
        "print(len(state), state['fc.weight'].shape, state['fc.weight'].dtype)\n"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=True)
    assert result.stdout.split("\n")[0] == "566 (1008, 2048) float32"


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_reader_dtypes_strides_and_shared_storage(legacy, tmp_path):
    generator = torch.Generator().manual_seed(0)
    big = torch.randn(6, 5, generator=generator)
    state = {
        "float32": torch.randn(3, 4, generator=generator),
        "float16": torch.randn(2, 3, generator=generator).half(),
        "bfloat16": torch.randn(5, generator=generator).bfloat16(),
        "float64": torch.randn(2, 2, dtype=torch.float64, generator=generator),
        "int64": torch.arange(7) - 3,
        "int32": torch.arange(4, dtype=torch.int32),
        "uint8": torch.arange(250, 256, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "transposed": torch.randn(4, 5, generator=generator).t(),  # strides (1, 5)
        "big": big,
        "rows": big[2:5],  # storage offset 10 into big's storage
        "column": big[:, 3],  # offset 3, stride 5
        "broadcast": torch.randn(3, 1, generator=generator).expand(3, 4),  # stride 0
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
        "conv": torch.randn(8, 3, 3, 3, generator=generator)[::2],  # every other filter
    }
    path = tmp_path / "state.pth"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    loaded = models.read_torch_state_dict(path)
    assert list(loaded) == list(state)
    for name, tensor in state.items():
        expected = tensor.float().numpy().astype(np.float32) if tensor.dtype == torch.bfloat16 else tensor.numpy()
        value = loaded[name].astype(np.float32) if tensor.dtype == torch.bfloat16 else loaded[name]
        assert value.dtype == expected.dtype, name
        assert value.shape == expected.shape, name
        np.testing.assert_array_equal(value, expected, err_msg=name)


class _Arbitrary:
    pass


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_reader_refuses_unknown_globals(tmp_path):
    # A class of this module, saved by torch.save.
    path = tmp_path / "class.pth"
    torch.save({"w": torch.ones(2), "x": _Arbitrary()}, path)
    with pytest.raises(ValueError, match="refusing to load the global .*_Arbitrary"):
        models.read_torch_state_dict(path)
    # A zip checkpoint whose pickle would run a shell command.
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": _RunsCode(marker)}, protocol=2))
    with pytest.raises(ValueError, match="refusing to load the global .*system"):
        models.read_torch_state_dict(path)
    # The same payload as a legacy stream.
    legacy = tmp_path / "evil_legacy.pth"
    legacy.write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))
    with pytest.raises(ValueError, match="refusing to load the global .*system"):
        models.read_torch_state_dict(legacy)
    assert not marker.exists()


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        models.read_torch_state_dict(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        models.load_fid_inception(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match=models.FID_WEIGHTS_FILENAME):
        models.load_fid_inception(cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        models.convert_fid_inception_weights(tmp_path / "missing.pth", tmp_path / "out.npz")
    with pytest.raises(ValueError, match="cache_dir"):
        models.load_fid_inception()


def test_malformed_files(pth_file, tmp_path):
    cases = {
        "random.pth": np.random.default_rng(0).bytes(4096),
        "text.pth": b"this is not a checkpoint\n",
        "empty.pth": b"",
        "truncated.pth": pth_file.read_bytes()[: 1 << 20],
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match="cannot read"):
            models.load_fid_inception(tmp_path / name)
    # A zip that is no checkpoint, and a checkpoint whose storage record is gone.
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="data.pkl"):
        models.read_torch_state_dict(tmp_path / "other.zip")
    torch.save({"w": torch.ones(3)}, tmp_path / "small.pth")
    with zipfile.ZipFile(tmp_path / "small.pth") as source, zipfile.ZipFile(tmp_path / "nodata.pth", "w") as target:
        for item in source.namelist():
            if "/data/" not in item:
                target.writestr(item, source.read(item))
    with pytest.raises(ValueError, match="storage record"):
        models.read_torch_state_dict(tmp_path / "nodata.pth")
    # A legacy checkpoint cut inside its tensor data.
    torch.save({"w": torch.ones(1000)}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    (tmp_path / "legacy_cut.pth").write_bytes((tmp_path / "legacy.pth").read_bytes()[:-100])
    with pytest.raises(ValueError, match="ends inside storage"):
        models.read_torch_state_dict(tmp_path / "legacy_cut.pth")
    # Not a state_dict: a bare tensor.
    torch.save(torch.ones(3), tmp_path / "tensor.pth")
    with pytest.raises(ValueError, match="state_dict"):
        models.read_torch_state_dict(tmp_path / "tensor.pth")


def _edited(state, *, drop=(), add=None, replace=None):
    state = {k: v for k, v in state.items() if k not in drop}
    state.update(add or {})
    state.update(replace or {})
    return state


@pytest.mark.parametrize(
    "edit, match",
    [
        ({"drop": ["Mixed_6e.branch7x7dbl_3.bn.running_var"]}, "missing.*'Mixed_6e.branch7x7dbl_3.bn.running_var'"),
        ({"drop": ["fc.bias"]}, "missing.*'fc.bias'"),
        ({"add": {"AuxLogits.fc.weight": torch.zeros(1008, 768)}}, "unexpected.*'AuxLogits.fc.weight'"),
        ({"add": {"Mixed_5b.extra.conv.weight": torch.zeros(1, 1, 1, 1)}}, "unexpected.*'Mixed_5b.extra.conv.weight'"),
        ({"add": {"Mixed_5b.branch1x1.conv.bias": torch.zeros(64)}}, "unexpected key 'Mixed_5b.branch1x1.conv.bias'"),
        ({"replace": {"fc.weight": torch.zeros(1000, 2048)}}, r"'fc.weight' has shape \(1000, 2048\), expected \(1008, 2048\)"),
        (
            {"replace": {"Mixed_5b.branch5x5_2.conv.weight": torch.zeros(64, 48, 3, 3)}},
            r"'Mixed_5b.branch5x5_2.conv.weight' has shape \(64, 48, 3, 3\), expected \(64, 48, 5, 5\)",
        ),
        ({"replace": {"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3)}}, "'Conv2d_1a_3x3.conv.weight': expected 4 dimensions"),
        ({"replace": {"Conv2d_1a_3x3.bn.weight": torch.zeros(32, dtype=torch.int64)}}, "'Conv2d_1a_3x3.bn.weight' has dtype int64"),
    ],
    ids=["missing_bn", "missing_fc", "extra_aux", "extra_block", "conv_bias", "fc_shape", "conv_shape", "conv_rank", "dtype"],
)
def test_pth_with_wrong_keys_is_refused(torch_net, tmp_path, edit, match):
    path = tmp_path / "edited.pth"
    torch.save(_edited(torch_net.state_dict(), **edit), path)
    with pytest.raises(ValueError, match=match):
        models.load_fid_inception(path)


def test_native_with_wrong_keys_is_refused(variables, tmp_path):
    flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(variables, sep="/").items()}
    marker = {"__format__": np.array("jgan-fid-inception-v1")}
    key = "params/Mixed_6a/branch3x3/conv/kernel"
    np.savez(tmp_path / "missing.npz", **marker, **{k: v for k, v in flat.items() if k != key})
    with pytest.raises(ValueError, match=f"missing.*'{key}'"):
        models.load_fid_inception(tmp_path / "missing.npz")
    np.savez(tmp_path / "shape.npz", **marker, **{**flat, key: flat[key][:1]})
    with pytest.raises(ValueError, match=f"'{key}' has shape"):
        models.load_fid_inception(tmp_path / "shape.npz")
    np.savez(tmp_path / "extra.npz", **marker, **flat, **{"params/fc/extra": np.zeros(3)})
    with pytest.raises(ValueError, match="unexpected.*'params/fc/extra'"):
        models.load_fid_inception(tmp_path / "extra.npz")
    np.savez(tmp_path / "unmarked.npz", **flat)
    with pytest.raises(ValueError, match="marker"):
        models.load_fid_inception(tmp_path / "unmarked.npz")
