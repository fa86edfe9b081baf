"""The FID Inception network (InceptionV3, TF-ported weights) and its weights.

``InceptionV3`` is the network that FID and the Inception Score are defined
with: the InceptionV3 graph of TensorFlow's ``inception-2015-12-05`` release as
pytorch-fid ports it (``fid_inception_v3``), so features computed here match
the published numbers once the standard weights are loaded. It differs from
torchvision's ``inception_v3`` in four places:

- the average pools of the Mixed_5* (A), Mixed_6b-e (C) and Mixed_7b (E_1)
  blocks exclude the zero padding from the mean (``count_include_pad=False``);
- Mixed_7c (E_2) pools its ``branch_pool`` with a 3x3 *max* pool;
- the classifier has 1008 logits (TF's 1000 classes plus 8 unused);
- there is no auxiliary classifier.

Every convolution is ``BasicConv2d``: a bias-free convolution, BatchNorm with
``epsilon=1e-3`` (always with its running averages: the network is for
inference) and a ReLU. Layouts are NHWC.

Weights. The standard file is ``pt_inception-2015-12-05-6726825d.pth``, a
PyTorch ``state_dict``, from ``FID_WEIGHTS_URL``. jgan never downloads it and
never needs torch to read it: ``read_torch_state_dict`` parses PyTorch's
checkpoint formats (the zip format of ``torch.save`` since PyTorch 1.6 and the
older "legacy" stream of pickles) with a restricted unpickler that refuses
every global but tensors, storages and ``OrderedDict``. The native format of
jgan is an ``.npz`` (``numpy.savez``; loaded with ``allow_pickle=False``)
holding one array per flax variable, named by its path, e.g.
``params/Mixed_5b/branch1x1/conv/kernel`` or
``batch_stats/Mixed_5b/branch1x1/bn/mean``, plus a ``__format__`` entry.
``convert_fid_inception_weights`` writes it from the ``.pth``;
``load_fid_inception`` reads either.

Names map one to one: the torch module path is the flax module path, and

- ``<m>.conv.weight`` ``[out, in, kh, kw]`` -> ``params/<m>/conv/kernel``
  ``[kh, kw, in, out]``;
- ``<m>.bn.weight`` / ``.bias`` -> ``params/<m>/bn/scale`` / ``bias``;
- ``<m>.bn.running_mean`` / ``running_var`` -> ``batch_stats/<m>/bn/mean`` /
  ``var``; ``<m>.bn.num_batches_tracked`` is ignored;
- ``fc.weight`` ``[1008, 2048]`` -> ``params/fc/kernel`` ``[2048, 1008]``,
  ``fc.bias`` -> ``params/fc/bias``.

Example::

    variables = load_fid_inception("pt_inception-2015-12-05-6726825d.pth")
    features_fn = make_inception_features(variables, chunk_size=50)
    out = features_fn(images)  # images [batch, height, width, 3] in [0, 1]
    out.features  # [batch, 2048], the pool3 features FID is computed on
    out.logits    # [batch, 1008]

References:
  Szegedy, Vanhoucke, Ioffe, Shlens, Wojna, "Rethinking the Inception
  Architecture for Computer Vision", CVPR 2016 (InceptionV3).
  Heusel, Ramsauer, Unterthiner, Nessler, Hochreiter, "GANs Trained by a Two
  Time-Scale Update Rule Converge to a Local Nash Equilibrium", NeurIPS 2017
  (FID on the pool3 features of this network).
  Seitzer, "pytorch-fid", https://github.com/mseitzer/pytorch-fid
  (``src/pytorch_fid/inception.py``: the port and its weights).
"""

from __future__ import annotations

import collections
import functools
import io
import os
import pathlib
import pickle
import struct
import zipfile
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import traverse_util

from jgan import _validate

FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_NATIVE_FILENAME = "pt_inception-2015-12-05-6726825d.npz"

NUM_CLASSES = 1008
FEATURES = 2048
IMAGE_SIZE = 299
# The smallest input the network accepts without resizing (its valid
# convolutions and pools leave a 1x1 map before the final pool).
MIN_IMAGE_SIZE = 75
_BN_EPSILON = 1e-3
_NATIVE_FORMAT = "jgan-fid-inception-v1"
_SEP = "/"

PathLike = str | os.PathLike


class InceptionOutput(NamedTuple):
    """What ``InceptionV3`` computes for a batch of images.

    Attributes:
      features: the pool3 features ``[batch, 2048]`` (the global average of
        Mixed_7c), on which FID and KID are computed.
      logits: the classifier's logits ``[batch, 1008]``; the Inception Score
        uses ``softmax(logits)``.
    """

    features: jax.Array
    logits: jax.Array


# ----------------------------------------------------------------------------
# The network.


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


class BasicConv2d(nn.Module):
    """Convolution without bias, BatchNorm (running averages) and ReLU.

    Attributes:
      features: output channels.
      kernel_size: ``(kh, kw)`` or one int for a square kernel.
      strides: ``(sh, sw)`` or one int.
      padding: symmetric zero padding ``(ph, pw)`` or one int, as in
        ``torch.nn.Conv2d``.
    """

    features: int
    kernel_size: int | tuple[int, int]
    strides: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the layer.

        Args:
          x: feature maps ``[batch, height, width, channels]``.

        Returns:
          feature maps ``[batch, height', width', features]``.
        """
        ph, pw = _pair(self.padding)
        x = nn.Conv(
            self.features,
            _pair(self.kernel_size),
            strides=_pair(self.strides),
            padding=((ph, ph), (pw, pw)),
            use_bias=False,
            name="conv",
        )(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=_BN_EPSILON, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3_exclude_padding(x: jax.Array) -> jax.Array:
    # TF's average pool divides by the number of input pixels in the window.
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x: jax.Array, stride: int) -> jax.Array:
    padding = ((1, 1), (1, 1)) if stride == 1 else "VALID"
    return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=padding)


class FIDInceptionA(nn.Module):
    """The 35x35 block (Mixed_5b-d): 1x1, 5x5, double 3x3 and pool branches.

    Attributes:
      pool_features: output channels of the pool branch (32 or 64); the block
        outputs ``224 + pool_features`` channels.
    """

    pool_features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps ``[batch, h, w, c]`` to ``[batch, h, w, 224 + pool_features]``."""
        branch1x1 = BasicConv2d(64, 1, name="branch1x1")(x)
        branch5x5 = BasicConv2d(48, 1, name="branch5x5_1")(x)
        branch5x5 = BasicConv2d(64, 5, padding=2, name="branch5x5_2")(branch5x5)
        branch3x3dbl = BasicConv2d(64, 1, name="branch3x3dbl_1")(x)
        branch3x3dbl = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(branch3x3dbl)
        branch3x3dbl = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_3")(branch3x3dbl)
        branch_pool = BasicConv2d(self.pool_features, 1, name="branch_pool")(_avg_pool_3x3_exclude_padding(x))
        return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(nn.Module):
    """The 35x35 -> 17x17 reduction (Mixed_6a); ``c`` input channels give ``480 + c``."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps ``[batch, h, w, c]`` to ``[batch, (h - 3) // 2 + 1, (w - 3) // 2 + 1, 480 + c]``."""
        branch3x3 = BasicConv2d(384, 3, strides=2, name="branch3x3")(x)
        branch3x3dbl = BasicConv2d(64, 1, name="branch3x3dbl_1")(x)
        branch3x3dbl = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(branch3x3dbl)
        branch3x3dbl = BasicConv2d(96, 3, strides=2, name="branch3x3dbl_3")(branch3x3dbl)
        branch_pool = _max_pool_3x3(x, stride=2)
        return jnp.concatenate([branch3x3, branch3x3dbl, branch_pool], axis=-1)


class FIDInceptionC(nn.Module):
    """The 17x17 block (Mixed_6b-e) with factorised 7x7 convolutions.

    Attributes:
      channels_7x7: the width of the factorised 1x7 / 7x1 convolutions
        (128, 160 or 192); the block outputs 768 channels.
    """

    channels_7x7: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps ``[batch, h, w, c]`` to ``[batch, h, w, 768]``."""
        c7 = self.channels_7x7
        branch1x1 = BasicConv2d(192, 1, name="branch1x1")(x)
        branch7x7 = BasicConv2d(c7, 1, name="branch7x7_1")(x)
        branch7x7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(branch7x7)
        branch7x7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(branch7x7)
        branch7x7dbl = BasicConv2d(c7, 1, name="branch7x7dbl_1")(x)
        branch7x7dbl = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(branch7x7dbl)
        branch7x7dbl = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(branch7x7dbl)
        branch7x7dbl = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(branch7x7dbl)
        branch7x7dbl = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(branch7x7dbl)
        branch_pool = BasicConv2d(192, 1, name="branch_pool")(_avg_pool_3x3_exclude_padding(x))
        return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(nn.Module):
    """The 17x17 -> 8x8 reduction (Mixed_7a); ``c`` input channels give ``512 + c``."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps ``[batch, h, w, c]`` to ``[batch, (h - 3) // 2 + 1, (w - 3) // 2 + 1, 512 + c]``."""
        branch3x3 = BasicConv2d(192, 1, name="branch3x3_1")(x)
        branch3x3 = BasicConv2d(320, 3, strides=2, name="branch3x3_2")(branch3x3)
        branch7x7x3 = BasicConv2d(192, 1, name="branch7x7x3_1")(x)
        branch7x7x3 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(branch7x7x3)
        branch7x7x3 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(branch7x7x3)
        branch7x7x3 = BasicConv2d(192, 3, strides=2, name="branch7x7x3_4")(branch7x7x3)
        branch_pool = _max_pool_3x3(x, stride=2)
        return jnp.concatenate([branch3x3, branch7x7x3, branch_pool], axis=-1)


class FIDInceptionE(nn.Module):
    """The 8x8 block (Mixed_7b: ``E_1``, Mixed_7c: ``E_2``) with expanded 3x3 branches.

    Attributes:
      max_pool: pool ``branch_pool``'s input with a 3x3 max pool (``E_2``,
        Mixed_7c) instead of the padding-excluding 3x3 average pool
        (``E_1``, Mixed_7b). The max pool is a quirk of the TF graph that
        FID is defined with.
    """

    max_pool: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps ``[batch, h, w, c]`` to ``[batch, h, w, 2048]``."""
        branch1x1 = BasicConv2d(320, 1, name="branch1x1")(x)
        branch3x3 = BasicConv2d(384, 1, name="branch3x3_1")(x)
        branch3x3 = jnp.concatenate(
            [
                BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(branch3x3),
                BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(branch3x3),
            ],
            axis=-1,
        )
        branch3x3dbl = BasicConv2d(448, 1, name="branch3x3dbl_1")(x)
        branch3x3dbl = BasicConv2d(384, 3, padding=1, name="branch3x3dbl_2")(branch3x3dbl)
        branch3x3dbl = jnp.concatenate(
            [
                BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(branch3x3dbl),
                BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(branch3x3dbl),
            ],
            axis=-1,
        )
        pooled = _max_pool_3x3(x, stride=1) if self.max_pool else _avg_pool_3x3_exclude_padding(x)
        branch_pool = BasicConv2d(192, 1, name="branch_pool")(pooled)
        return jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1)


def _resize_bilinear(images: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Bilinear resize of ``[batch, h, w, c]`` to ``[batch, *size, c]``.

    Half-pixel centres and no antialiasing, which is what
    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``
    computes, when upsampling and when downsampling.
    """
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    shape = (images.shape[0], *size, images.shape[3])
    return jax.image.resize(images, shape, method="bilinear", antialias=False)


def _pil_bicubic(x: np.ndarray) -> np.ndarray:
    """PIL's bicubic kernel (Keys, ``a = -0.5``; ``bicubic_filter`` in ``libImaging/Resample.c``)."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


@functools.lru_cache(maxsize=16)
def _pil_bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """The ``[out_size, in_size]`` float64 matrix of PIL's antialiased bicubic resampling along one axis.

    ``precompute_coeffs`` of Pillow's ``libImaging/Resample.c``: output pixel
    ``i`` is centred at ``(i + 0.5) * scale`` in input coordinates
    (``scale = in_size / out_size``); when downsampling the kernel is
    stretched by ``scale`` (its support ``2 * scale``, which is the
    antialiasing); the taps are the input pixels ``j`` in
    ``[int(centre - support + 0.5), int(centre + support + 0.5))`` clipped to
    the image, weighted ``kernel((j + 0.5 - centre) / max(scale, 1))`` and
    normalised to sum to one (so the border is handled by renormalising the
    truncated kernel, not by padding). Read-only.
    """
    scale = in_size / out_size
    stretch = max(scale, 1.0)
    support = 2.0 * stretch
    centre = (np.arange(out_size) + 0.5) * scale
    # C's (int) cast truncates toward zero; negative starts are clamped to 0 anyway.
    first = np.maximum(np.trunc(centre - support + 0.5), 0)
    stop = np.minimum(np.trunc(centre + support + 0.5), in_size)
    taps = np.arange(in_size)
    weights = _pil_bicubic((taps[None, :] - centre[:, None] + 0.5) / stretch)
    weights = np.where((taps >= first[:, None]) & (taps < stop[:, None]), weights, 0.0)
    total = np.sum(weights, axis=1, keepdims=True)
    weights = np.where(total != 0.0, weights / np.where(total != 0.0, total, 1.0), weights)
    weights.setflags(write=False)
    return weights


def _resize_clean(images: jax.Array, size: tuple[int, int]) -> jax.Array:
    """PIL's antialiased bicubic resize of ``[batch, h, w, c]`` to ``[batch, *size, c]``.

    What ``Image.fromarray(channel, mode="F").resize((width, height),
    Image.BICUBIC)`` computes for each channel (clean-fid's "clean" resize),
    as two matrix products (along the width, then the height: PIL's order) at
    ``Precision.HIGHEST``; the matrices are built in float64 from the static
    sizes when the function is traced. Equal to PIL to float32 round-off
    (measured: within 3.1e-7 of the largest value, upsampling and
    downsampling). No clipping: the bicubic kernel overshoots near edges.
    """
    height, width = images.shape[1:3]
    if (height, width) == tuple(size):
        return images  # PIL skips both passes; the matrices would be the identity.
    rows = jnp.asarray(_pil_bicubic_matrix(height, size[0]), images.dtype)
    cols = jnp.asarray(_pil_bicubic_matrix(width, size[1]), images.dtype)
    highest = jax.lax.Precision.HIGHEST
    images = jnp.einsum("Ww,bhwc->bhWc", cols, images, precision=highest)  # PIL's horizontal pass first
    return jnp.einsum("Hh,bhWc->bHWc", rows, images, precision=highest)


Resize = Literal["bilinear", "clean"]
_RESIZE_METHODS = ("bilinear", "clean")


def _check_resize(resize: Any) -> str:
    if not (isinstance(resize, str) and resize in _RESIZE_METHODS):
        raise ValueError(
            'resize must be "bilinear" (pytorch-fid\'s F.interpolate) or "clean" (clean-fid\'s PIL bicubic), '
            f"got {resize!r}."
        )
    return resize


def _preprocess(
    x: jax.Array,
    *,
    resize_input: bool,
    input_range: tuple[float, float],
    dtype: Any,
    resize: Resize = "bilinear",
) -> jax.Array:
    """Casts, resizes to 299x299 (optionally) and maps ``input_range`` to [-1, 1].

    ``resize="bilinear"``: pytorch-fid's order and normalisation, ``2 x - 1``
    on ``[0, 1]`` values. ``resize="clean"``: clean-fid's, PIL's bicubic
    resize, a clip to ``input_range`` and ``(v - 128) / 128`` on ``[0, 255]``
    values ``v`` (the normalisation inside the TF graph that clean-fid feeds).
    """
    _check_resize(resize)
    low, high = input_range
    x = jnp.asarray(x, dtype)
    if resize == "clean":
        if resize_input:
            x = _resize_clean(x, (IMAGE_SIZE, IMAGE_SIZE))
        x = jnp.clip(x, low, high)  # clean-fid clips the resized [0, 255] values.
        scale = 255.0 / (128.0 * (high - low))  # v = 255 (x - low) / (high - low) -> v / 128 - 1
        return x * scale + (-1.0 - low * scale)
    if resize_input:
        x = _resize_bilinear(x, (IMAGE_SIZE, IMAGE_SIZE))
    scale = 2.0 / (high - low)
    return x * scale + (-1.0 - low * scale)  # (0, 1): 2x - 1, as pytorch-fid; (-1, 1): x.


def _check_images(shape: tuple[int, ...], *, resize_input: bool) -> None:
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"InceptionV3 takes RGB images [batch, height, width, 3] (NHWC), got shape {tuple(shape)}.")
    if not resize_input and min(shape[1:3]) < MIN_IMAGE_SIZE:
        raise ValueError(
            f"InceptionV3 with resize_input=False needs images of at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}, "
            f"got {shape[1]}x{shape[2]}."
        )


class InceptionV3(nn.Module):
    """The FID variant of InceptionV3: ``images -> (pool3 features, logits)``.

    The input convention is pytorch-fid's default: RGB images in
    ``input_range`` (``[0, 1]`` unless set), bilinearly resized to 299x299
    (as ``F.interpolate(mode="bilinear", align_corners=False)``), then mapped
    linearly to ``[-1, 1]``, the range the TF graph was trained on. Images
    from a tanh generator pass ``input_range=(-1.0, 1.0)``; ``uint8`` images
    ``input_range=(0.0, 255.0)``.

    ``resize="clean"`` is clean-fid's "clean" mode instead (Parmar et al.,
    CVPR 2022): each channel is resized with PIL's antialiased bicubic filter
    on float32 values (``Image.fromarray(c, mode="F").resize((299, 299),
    Image.BICUBIC)``, reproduced in jax.numpy to float32 round-off), clipped to
    ``input_range`` (clean-fid clips to ``[0, 255]``), and a value ``v`` on the
    ``[0, 255]`` scale enters the network as ``(v - 128) / 128`` (what clean-fid
    feeds its TF-graph Inception) rather than pytorch-fid's ``v / 127.5 - 1``.
    What is matched is the arithmetic from the values given: clean-fid reads
    image files as ``uint8`` and resizes those values converted to float32, so
    to reproduce its numbers on a dataset pass the ``uint8`` images (with
    ``input_range=(0.0, 255.0)``, or ``k / 255`` floats with the default
    range); its generator path resizes the generator's float output
    unquantised, as this does with float images. Without ``resize_input`` only
    the clip and the normalisation apply. (clean-fid runs NVIDIA's TorchScript
    export of the TF graph; ``load_fid_inception`` loads pytorch-fid's port of
    the same graph.)

    The network is for inference: BatchNorm always uses the stored running
    averages, so its variables are ``{"params": ..., "batch_stats": ...}``
    and ``apply`` needs no mutable collection. Module names follow the torch
    ones (``Conv2d_1a_3x3``, ``Mixed_5b/branch1x1/conv``, ``fc``).

    Attributes:
      resize_input: resize to 299x299 first (pytorch-fid's default). Without
        it, any size of at least 75x75 is accepted (the network is fully
        convolutional up to its global pool).
      input_range: ``(low, high)``, the range of the input values, mapped to
        ``[-1, 1]``.
      dtype: the dtype the images are cast to before resizing. The layers
        compute in the promotion of it and of the variables' dtype:
        float32 with the float32 variables of ``load_fid_inception``;
        float64 variables and ``dtype=jnp.float64`` (with ``jax_enable_x64``)
        give a float64 forward pass.
      resize: ``"bilinear"`` (pytorch-fid, the default) or ``"clean"``
        (clean-fid; see above): how images are resized and normalised.
    """

    resize_input: bool = True
    input_range: tuple[float, float] = (0.0, 1.0)
    dtype: Any = jnp.float32
    resize: Resize = "bilinear"

    def __post_init__(self) -> None:
        _check_resize(self.resize)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> InceptionOutput:
        """Computes the pool3 features and logits of a batch of images.

        Args:
          x: images ``[batch, height, width, 3]`` (NHWC, RGB), values in
            ``input_range``; any real or integer dtype.
          train: must be ``False``: accepted for the ``make_apply`` /
            ``init_model`` convention of jgan's modules.

        Returns:
          ``InceptionOutput(features [batch, 2048], logits [batch, 1008])``.

        Raises:
          ValueError: on images that are not ``[batch, height, width, 3]``,
            smaller than 75x75 without resizing, or ``train=True``.
        """
        if train:
            raise ValueError("InceptionV3 is an inference network (BatchNorm uses running averages): train must be False.")
        _check_images(x.shape, resize_input=self.resize_input)
        x = _preprocess(
            x, resize_input=self.resize_input, input_range=self.input_range, dtype=self.dtype, resize=self.resize
        )

        # Stem: 299 -> 149 -> 147 -> 147 -> 73 -> 73 -> 71 -> 35.
        x = BasicConv2d(32, 3, strides=2, name="Conv2d_1a_3x3")(x)
        x = BasicConv2d(32, 3, name="Conv2d_2a_3x3")(x)
        x = BasicConv2d(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3(x, stride=2)
        x = BasicConv2d(80, 1, name="Conv2d_3b_1x1")(x)
        x = BasicConv2d(192, 3, name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3(x, stride=2)
        # 35x35: 256, 288, 288 channels; 17x17: 768; 8x8: 1280, 2048, 2048.
        x = FIDInceptionA(32, name="Mixed_5b")(x)
        x = FIDInceptionA(64, name="Mixed_5c")(x)
        x = FIDInceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        x = FIDInceptionC(128, name="Mixed_6b")(x)
        x = FIDInceptionC(160, name="Mixed_6c")(x)
        x = FIDInceptionC(160, name="Mixed_6d")(x)
        x = FIDInceptionC(192, name="Mixed_6e")(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = FIDInceptionE(max_pool=False, name="Mixed_7b")(x)
        x = FIDInceptionE(max_pool=True, name="Mixed_7c")(x)
        features = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(NUM_CLASSES, name="fc")(features)
        return InceptionOutput(features=features, logits=logits)


def make_inception_features(
    variables: Mapping[str, Any],
    *,
    model: InceptionV3 | None = None,
    chunk_size: int | None = None,
) -> Callable[[jax.Array], InceptionOutput]:
    """Makes a compiled ``images -> InceptionOutput`` function.

    The variables are an argument of the compiled function, not constants
    baked into it, so compiling is as fast as for any other argument. Each
    new input shape compiles once.

    Args:
      variables: ``{"params": ..., "batch_stats": ...}``, e.g. from
        ``load_fid_inception``.
      model: the network (its input convention); ``InceptionV3()`` (images in
        ``[0, 1]``, resized to 299x299 as pytorch-fid) if ``None``. For
        clean-fid's preprocessing pass ``InceptionV3(resize="clean")``.
      chunk_size: if set, the batch runs through the network
        ``chunk_size`` images at a time (``lax.map`` over chunks, the last
        one zero-padded), which bounds the memory of the activations.

    Returns:
      ``features_fn(images)``: images ``[batch, height, width, 3]`` ->
      ``InceptionOutput(features [batch, 2048], logits [batch, 1008])``.

    Raises:
      ValueError: if ``chunk_size`` is not positive.
      TypeError: if ``chunk_size`` is neither None nor an int.
    """
    model = InceptionV3() if model is None else model
    if chunk_size is not None:
        chunk_size = _validate.check_int(chunk_size, "chunk_size", minimum=1)

    def forward(variables, images):
        _check_images(images.shape, resize_input=model.resize_input)
        if chunk_size is None:
            return model.apply(variables, images)
        n = images.shape[0]
        pad = -n % chunk_size
        images = jnp.pad(images, ((0, pad), (0, 0), (0, 0), (0, 0)))
        chunks = jnp.reshape(images, (-1, chunk_size, *images.shape[1:]))
        out = jax.lax.map(lambda chunk: model.apply(variables, chunk), chunks)
        return jax.tree.map(lambda a: jnp.reshape(a, (-1, *a.shape[2:]))[:n], out)

    compiled = jax.jit(forward)

    def features_fn(images: jax.Array) -> InceptionOutput:
        return compiled(variables, images)

    return features_fn


# ----------------------------------------------------------------------------
# PyTorch checkpoints, read without torch.

_STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "DoubleStorage": np.dtype(np.float64),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}
_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001


class _StorageType(NamedTuple):
    dtype: np.dtype


class _StorageRef(NamedTuple):
    key: str
    dtype: np.dtype
    numel: int
    offset: int  # elements into the root storage (legacy views)


class _TensorRef(NamedTuple):
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    del requires_grad, backward_hooks, metadata
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("_rebuild_tensor_v2 expects a storage as its first argument.")
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    del requires_grad, backward_hooks
    return data


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _TorchUnpickler(pickle.Unpickler):
    """Unpickles a state_dict, refusing every global but tensors and OrderedDict."""

    def __init__(self, file, *, legacy: bool):
        super().__init__(file, encoding="utf-8")
        self._legacy = legacy

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        raise pickle.UnpicklingError(
            f"refusing to load the global {module}.{name}: only tensors, storages and OrderedDict "
            "are allowed in a state_dict read without torch."
        )

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}.")
        typename = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if typename != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id of type {typename!r}.")
        if self._legacy:
            if len(pid) != 6:
                raise pickle.UnpicklingError(f"malformed storage id {pid!r}.")
            storage_type, key, _, numel, view = pid[1:]
        else:
            if len(pid) != 5:
                raise pickle.UnpicklingError(f"malformed storage id {pid!r}.")
            storage_type, key, _, numel = pid[1:]
            view = None
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {storage_type!r}.")
        if view is None:
            return _StorageRef(str(key), storage_type.dtype, int(numel), 0)
        _, view_offset, view_size = view
        return _StorageRef(str(key), storage_type.dtype, int(view_size), int(view_offset))


def _unpickle(file, *, legacy: bool) -> Any:
    return _TorchUnpickler(file, legacy=legacy).load()


def _tensor_from_storage(name: str, ref: _TensorRef, storages: Mapping[str, np.ndarray]) -> np.ndarray:
    storage = ref.storage
    if storage.key not in storages:
        raise ValueError(f"tensor {name!r}: its storage {storage.key!r} is missing from the file.")
    root = storages[storage.key]
    if storage.offset + storage.numel > root.size:
        raise ValueError(f"tensor {name!r}: storage {storage.key!r} holds {root.size} elements, fewer than declared.")
    flat = root[storage.offset : storage.offset + storage.numel]
    if len(ref.size) != len(ref.stride) or any(s < 0 for s in ref.size) or any(s < 0 for s in ref.stride):
        raise ValueError(f"tensor {name!r}: malformed size {ref.size} or stride {ref.stride}.")
    if 0 in ref.size:
        return np.zeros(ref.size, flat.dtype)
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if ref.offset < 0 or last >= flat.size:
        raise ValueError(
            f"tensor {name!r}: size {ref.size}, stride {ref.stride} and offset {ref.offset} reach past its storage "
            f"of {flat.size} elements."
        )
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset :], shape=ref.size, strides=tuple(s * itemsize for s in ref.stride), writeable=False
    )
    return np.array(view)


def _materialise(obj: Any, storages: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a state_dict (a mapping of names to tensors), got {type(obj).__name__}.")
    out = {}
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, _TensorRef):
            raise TypeError(
                f"expected a state_dict (a mapping of names to tensors); entry {name!r} is a {type(value).__name__}."
            )
        out[name] = _tensor_from_storage(name, value, storages)
    return out


def _storage_array(data: bytes, dtype: np.dtype, big_endian: bool) -> np.ndarray:
    usable = len(data) - len(data) % dtype.itemsize
    array = np.frombuffer(data[:usable], dtype.newbyteorder(">") if big_endian else dtype)
    return array.astype(dtype) if big_endian else array


def _storage_refs(obj: Any) -> dict[str, _StorageRef]:
    refs = {}
    if isinstance(obj, Mapping):
        for value in obj.values():
            if isinstance(value, _TensorRef):
                refs.setdefault(value.storage.key, value.storage)
    return refs


def _read_zip_checkpoint(archive: zipfile.ZipFile) -> dict[str, np.ndarray]:
    pickles = [name for name in archive.namelist() if name == "data.pkl" or name.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise ValueError("a PyTorch zip checkpoint has exactly one data.pkl record.")
    prefix = pickles[0][: -len("data.pkl")]
    names = set(archive.namelist())
    byteorder = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
    obj = _unpickle(io.BytesIO(archive.read(pickles[0])), legacy=False)
    storages = {}
    for key, ref in _storage_refs(obj).items():
        record = f"{prefix}data/{key}"
        if record not in names:
            raise ValueError(f"storage record {record!r} is missing from the archive.")
        storages[key] = _storage_array(archive.read(record), ref.dtype, byteorder == "big")
    return _materialise(obj, storages)


def _read_legacy_checkpoint(file, size: int) -> dict[str, np.ndarray]:
    if _unpickle(file, legacy=True) != _LEGACY_MAGIC_NUMBER:
        raise ValueError("not a PyTorch checkpoint (wrong magic number).")
    protocol = _unpickle(file, legacy=True)
    if protocol != _LEGACY_PROTOCOL_VERSION:
        raise ValueError(f"unsupported legacy PyTorch protocol version {protocol!r}.")
    sys_info = _unpickle(file, legacy=True)
    big_endian = isinstance(sys_info, Mapping) and not sys_info.get("little_endian", True)
    obj = _unpickle(file, legacy=True)
    keys = _unpickle(file, legacy=True)
    refs = _storage_refs(obj)
    dtypes = {key: ref.dtype for key, ref in refs.items()}
    storages = {}
    for key in keys:
        key = str(key)
        if key not in dtypes:
            raise ValueError(f"storage {key!r} is listed but used by no tensor.")
        header = file.read(8)
        if len(header) != 8:
            raise ValueError(f"the file ends before storage {key!r}.")
        (numel,) = struct.unpack(">q" if big_endian else "<q", header)
        nbytes = numel * dtypes[key].itemsize
        if numel < 0 or nbytes > size - file.tell():
            raise ValueError(f"the file ends inside storage {key!r}.")
        data = file.read(nbytes)
        if len(data) != nbytes:
            raise ValueError(f"the file ends inside storage {key!r}.")
        storages[key] = _storage_array(data, dtypes[key], big_endian)
    return _materialise(obj, storages)


# What unpickling and parsing a corrupt file can raise.
_MALFORMED = (
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    EOFError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    OverflowError,
    struct.error,
    ValueError,
)


def read_torch_state_dict(path: PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch ``state_dict`` file into numpy arrays, without torch.

    Both formats of ``torch.save`` are read: the zip archive (PyTorch >= 1.6)
    and the legacy stream of pickles. Tensors may be float32, float16,
    bfloat16, float64 or integer, strided and offset into shared storages;
    each is returned as its own C-contiguous array. Unpickling is restricted:
    only ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter``, torch
    storage types and ``collections.OrderedDict`` may be referenced, so a
    file cannot run code.

    Args:
      path: the ``.pth`` / ``.pt`` file.

    Returns:
      ``{name: array}`` in the file's order, e.g.
      ``{"Conv2d_1a_3x3.conv.weight": float32[32, 3, 3, 3], ...}``.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: if the file is not a PyTorch state_dict, is truncated or
        inconsistent, or references a global outside the allowed set
        (the message names it).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no PyTorch checkpoint at {str(path)!r}.")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return _read_zip_checkpoint(archive)
        with open(path, "rb") as file:
            return _read_legacy_checkpoint(file, path.stat().st_size)
    except _MALFORMED as error:
        raise ValueError(f"cannot read {str(path)!r} as a PyTorch state_dict: {error}") from error


# ----------------------------------------------------------------------------
# torch names <-> flax variables.

# (parent module, torch leaf) -> (collection, flax leaf, transpose from torch to flax)
_LEAVES = {
    ("conv", "weight"): ("params", "kernel", (2, 3, 1, 0)),
    ("bn", "weight"): ("params", "scale", None),
    ("bn", "bias"): ("params", "bias", None),
    ("bn", "running_mean"): ("batch_stats", "mean", None),
    ("bn", "running_var"): ("batch_stats", "var", None),
    ("fc", "weight"): ("params", "kernel", (1, 0)),
    ("fc", "bias"): ("params", "bias", None),
}
_IGNORED_LEAVES = {("bn", "num_batches_tracked")}
_FLAX_TO_TORCH = {
    (collection, parent, leaf): (torch_leaf, perm) for (parent, torch_leaf), (collection, leaf, perm) in _LEAVES.items()
}


def _flax_key(torch_name: str) -> tuple[str, tuple[int, ...] | None] | None:
    """``"Mixed_5b.branch1x1.conv.weight"`` -> ``("params/Mixed_5b/branch1x1/conv/kernel", perm)``."""
    parts = torch_name.split(".")
    if len(parts) < 2 or (parts[-2], parts[-1]) not in _LEAVES:
        return None
    collection, leaf, perm = _LEAVES[(parts[-2], parts[-1])]
    return _SEP.join([collection, *parts[:-1], leaf]), perm


def _torch_key(flax_key: str) -> tuple[str, tuple[int, ...] | None]:
    """``"params/Mixed_5b/branch1x1/conv/kernel"`` -> ``("Mixed_5b.branch1x1.conv.weight", perm)``."""
    collection, *modules, leaf = flax_key.split(_SEP)
    torch_leaf, perm = _FLAX_TO_TORCH[(collection, modules[-1], leaf)]
    return ".".join([*modules, torch_leaf]), perm


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(perm))


def _flat_from_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Maps torch names and layouts to flat flax keys; refuses unknown names."""
    flat = {}
    for name, value in state_dict.items():
        parts = name.split(".")
        if len(parts) >= 2 and (parts[-2], parts[-1]) in _IGNORED_LEAVES:
            continue
        mapped = _flax_key(name)
        if mapped is None:
            raise ValueError(f"unexpected key {name!r}: not a conv, BatchNorm or fc tensor of InceptionV3.")
        key, perm = mapped
        value = np.asarray(value)
        if perm is not None:
            if value.ndim != len(perm):
                raise ValueError(f"key {name!r}: expected {len(perm)} dimensions, got shape {value.shape}.")
            value = np.transpose(value, perm)
        flat[key] = value
    return flat


def _variables_from_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Converts a torch ``state_dict`` of (parts of) the network to flax variables.

    No check against the architecture: this maps the state_dict of any of the
    blocks above (e.g. one ``FIDInceptionA``) to the variables of its flax twin.
    """
    flat = {key: jnp.asarray(value, jnp.float32) for key, value in _flat_from_state_dict(state_dict).items()}
    return traverse_util.unflatten_dict(flat, sep=_SEP)


@functools.lru_cache(maxsize=1)
def _expected_shapes() -> dict[str, tuple[int, ...]]:
    """Flat flax key -> shape, for every variable of ``InceptionV3``."""
    model = InceptionV3(resize_input=False)
    sample = jax.ShapeDtypeStruct((1, MIN_IMAGE_SIZE, MIN_IMAGE_SIZE, 3), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0, impl="rbg"), sample)
    return {key: tuple(value.shape) for key, value in traverse_util.flatten_dict(shapes, sep=_SEP).items()}


def _validated(flat: Mapping[str, np.ndarray], *, torch_names: bool, source: str) -> dict[str, Any]:
    """Checks keys, shapes and dtypes against the architecture; returns flax variables."""
    expected = _expected_shapes()

    def describe(key):
        if torch_names:
            try:
                return _torch_key(key)[0]
            except (KeyError, IndexError, ValueError):
                pass
        return key

    missing = sorted(describe(key) for key in expected if key not in flat)
    extra = sorted(key for key in flat if key not in expected)
    if missing:
        raise ValueError(f"{source}: missing {len(missing)} key(s) of the FID InceptionV3, e.g. {missing[0]!r}: {missing[:5]}")
    if extra:
        names = [describe(key) for key in extra]
        raise ValueError(f"{source}: {len(extra)} unexpected key(s), e.g. {names[0]!r}: {names[:5]}")
    out = {}
    for key, shape in expected.items():
        value = flat[key]
        if value.shape != shape:
            if torch_names:
                name, perm = _torch_key(key)
                want = shape if perm is None else tuple(shape[i] for i in _inverse(perm))
                got = value.shape if perm is None else tuple(value.shape[i] for i in _inverse(perm))
            else:
                name, want, got = key, shape, value.shape
            raise ValueError(f"{source}: key {name!r} has shape {got}, expected {want}.")
        if not np.issubdtype(value.dtype, np.floating):
            raise ValueError(f"{source}: key {describe(key)!r} has dtype {value.dtype}, expected floating point.")
        out[key] = jnp.asarray(value, jnp.float32)
    return traverse_util.unflatten_dict(out, sep=_SEP)


def _read_native(path: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            flat = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"cannot read {str(path)!r} as a jgan .npz weights file: {error}") from error
    marker = flat.pop("__format__", None)
    if marker is None or str(marker) != _NATIVE_FORMAT:
        raise ValueError(f"{str(path)!r} is an .npz without the {_NATIVE_FORMAT!r} marker; not a jgan weights file.")
    return flat


def _is_native(path: pathlib.Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return False
    return bool(names) and all(name.endswith(".npy") for name in names)


def _locate(path: PathLike | None, cache_dir: PathLike | None) -> pathlib.Path:
    if path is not None:
        path = pathlib.Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no FID Inception weights at {str(path)!r}. Download {FID_WEIGHTS_URL}.")
        return path
    if cache_dir is None:
        raise ValueError("pass the weights file as path, or the directory holding it as cache_dir.")
    directory = pathlib.Path(cache_dir).expanduser()
    candidates = [directory / name for name in (FID_WEIGHTS_NATIVE_FILENAME, FID_WEIGHTS_FILENAME)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no FID Inception weights in {str(cache_dir)!r} (looked for {[c.name for c in candidates]}). "
        f"jgan never downloads: fetch {FID_WEIGHTS_URL} into that directory."
    )


def load_fid_inception(path: PathLike | None = None, *, cache_dir: PathLike | None = None) -> dict[str, Any]:
    """Loads the FID Inception weights as flax variables for ``InceptionV3``.

    Reads either jgan's native ``.npz`` (see ``convert_fid_inception_weights``)
    or pytorch-fid's ``.pth`` directly (without torch); the kind is told from
    the content, not the extension. Every key and shape is checked against the
    architecture. Nothing is ever downloaded.

    Args:
      path: the weights file. If ``None``, ``cache_dir`` is searched for
        ``FID_WEIGHTS_NATIVE_FILENAME``, then ``FID_WEIGHTS_FILENAME``.
      cache_dir: a directory holding the weights (used when ``path`` is
        ``None``).

    Returns:
      ``{"params": ..., "batch_stats": ...}`` (float32 arrays) for
      ``InceptionV3().apply``.

    Raises:
      FileNotFoundError: if the file (or a file in ``cache_dir``) is missing.
      ValueError: if the file is malformed, or has missing, unexpected or
        mis-shaped keys (the message names the first offending key).
    """
    path = _locate(path, cache_dir)
    if _is_native(path):
        return _validated(_read_native(path), torch_names=False, source=str(path))
    state_dict = read_torch_state_dict(path)
    try:
        flat = _flat_from_state_dict(state_dict)
    except ValueError as error:
        raise ValueError(f"{path!s}: {error}") from error
    return _validated(flat, torch_names=True, source=str(path))


def save_fid_inception(variables: Mapping[str, Any], path: PathLike) -> pathlib.Path:
    """Writes ``InceptionV3`` variables in jgan's native ``.npz`` format.

    Args:
      variables: ``{"params": ..., "batch_stats": ...}``.
      path: the output file (``numpy.savez`` appends ``.npz`` when missing).

    Returns:
      the path written.
    """
    flat = {key: np.asarray(value, np.float32) for key, value in traverse_util.flatten_dict(dict(variables), sep=_SEP).items()}
    _validated(flat, torch_names=False, source="variables")
    path = pathlib.Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, __format__=np.array(_NATIVE_FORMAT), **flat)
    return path


def convert_fid_inception_weights(pth_path: PathLike, out_path: PathLike) -> pathlib.Path:
    """Converts pytorch-fid's ``.pth`` into jgan's native ``.npz``, without torch.

    Args:
      pth_path: ``pt_inception-2015-12-05-6726825d.pth`` (or any file with
        the same keys and shapes).
      out_path: the ``.npz`` to write (``.npz`` is appended when missing).

    Returns:
      the path written.

    Raises:
      FileNotFoundError: if ``pth_path`` does not exist.
      ValueError: as ``load_fid_inception``.
    """
    pth_path = pathlib.Path(pth_path)
    if not pth_path.is_file():
        raise FileNotFoundError(f"no PyTorch checkpoint at {str(pth_path)!r}.")
    return save_fid_inception(load_fid_inception(pth_path), out_path)
