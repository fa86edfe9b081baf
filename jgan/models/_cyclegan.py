"""CycleGAN networks: the ResNet generator and the 70x70 PatchGAN discriminator.

Generator (Johnson et al.'s image transformation network as used by Zhu et
al., appendix 7.2), for ``f = features`` (64 in the paper):

    c7s1-f, d2f, d4f, R4f x n_blocks, u2f, uf, c7s1-channels, tanh

- ``c7s1-k``: reflection padding 3, a 7x7 convolution with stride 1 and k
  filters, instance norm, ReLU (the output layer has no norm and a tanh);
- ``dk``: a 3x3 convolution with stride 2 (zero padding 1), instance norm, ReLU;
- ``Rk``: a residual block of two 3x3 convolutions, each after reflection
  padding 1 and followed by instance norm (ReLU after the first only);
- ``uk``: a 3x3 fractionally-strided convolution with stride 1/2 (PyTorch's
  ``ConvTranspose2d(3, stride=2, padding=1, output_padding=1)``), instance
  norm, ReLU.

The paper uses 6 blocks for 128x128 images and 9 for 256x256 and larger. The
image height and width must be multiples of 4 for the output to have the
input's shape.

Discriminator (the 70x70 PatchGAN of Isola et al., used by Zhu et al.):

    C64-C128-C256-C512, then a convolution to 1 channel

- ``Ck``: a 4x4 convolution with k filters and zero padding 1, instance norm
  (not on the first layer), LeakyReLU(0.2); stride 2 except on the last
  ``Ck``, which has stride 1, as has the output convolution.

Its output is a map of logits, one per overlapping 70x70 patch of the input:
``[batch, h', w', 1]`` with ``h' = h/8 - 2`` (30x30 for 256x256 input, 6x6 for
64x64).

Both networks use instance norm, which normalises each example and channel
over space and keeps no running statistics: they hold parameters only, so use
``make_apply(module, stateful=False)``; ``train`` is accepted and ignored.
Instance norm uses epsilon 1e-5 and, by default, no affine scale and bias,
as in the authors' PyTorch code (``InstanceNorm2d(affine=False)``);
``norm_affine=True`` learns them (initialised to scale 1, bias 0). The
convolutions before a norm have no bias (the norm removes it). Weights are
drawn from N(0, 0.02) (the authors' initialisation).

References:
  Zhu, Park, Isola, Efros, "Unpaired Image-to-Image Translation using
  Cycle-Consistent Adversarial Networks", ICCV 2017, sec. 4 and appendix 7.2.
  Johnson, Alahi, Fei-Fei, "Perceptual Losses for Real-Time Style Transfer
  and Super-Resolution", ECCV 2016 (the generator).
  Isola, Zhu, Zhou, Efros, "Image-to-Image Translation with Conditional
  Adversarial Networks", CVPR 2017, sec. 3.2.2 (PatchGAN).
  Ulyanov, Vedaldi, Lempitsky, "Instance Normalization", 2016.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgan import _validate
from jgan.models._dcgan import _spectrally_normalized
from jgan.models._upsample import ConvTranspose

_KERNEL_INIT = nn.initializers.normal(stddev=0.02)
_LEAKY_SLOPE = 0.2
_NORM_EPSILON = 1e-5


def reflection_pad(x: jax.Array, pad: int) -> jax.Array:
    """Pads the spatial axes by reflection (edge not repeated), like ``ReflectionPad2d``.

    Args:
      x: images ``[batch, height, width, channels]``.
      pad: the padding on each side, smaller than ``height`` and ``width``.

    Returns:
      ``[batch, height + 2·pad, width + 2·pad, channels]``.
    """
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def _instance_norm(affine: bool, name: str | None = None) -> nn.InstanceNorm:
    return nn.InstanceNorm(epsilon=_NORM_EPSILON, use_scale=affine, use_bias=affine, name=name)


class ResnetBlock(nn.Module):
    """The residual block ``Rk`` of the CycleGAN generator: ``x + block(x)``.

    Attributes:
      norm_affine: learn instance norm's scale and bias.
    """

    norm_affine: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the block.

        Args:
          x: feature maps ``[batch, height, width, channels]``.

        Returns:
          feature maps of the same shape.
        """
        channels = x.shape[-1]
        h = nn.Conv(channels, (3, 3), padding="VALID", use_bias=False, kernel_init=_KERNEL_INIT)(reflection_pad(x, 1))
        h = nn.relu(_instance_norm(self.norm_affine)(h))
        h = nn.Conv(channels, (3, 3), padding="VALID", use_bias=False, kernel_init=_KERNEL_INIT)(reflection_pad(h, 1))
        return x + _instance_norm(self.norm_affine)(h)


# The generator's layers as functions called inside a module's ``nn.compact``
# method (the layers are that module's, under these names), shared with the
# shared-encoder variant (jgan/models/_cyclegan_shared.py).


def encoder_layers(x: jax.Array, features: int, blocks: int, norm_affine: bool) -> jax.Array:
    """``c7s1-f, d2f, d4f, R4f x blocks``: images ``[b, h, w, c]`` to features ``[b, h/4, w/4, 4f]``."""
    f = features
    h = nn.Conv(f, (7, 7), padding="VALID", use_bias=False, kernel_init=_KERNEL_INIT, name="c7s1")(reflection_pad(x, 3))
    h = nn.relu(_instance_norm(norm_affine)(h))
    for i, width in enumerate((2 * f, 4 * f)):
        h = nn.Conv(
            width, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False,
            kernel_init=_KERNEL_INIT, name=f"down_{i}",
        )(h)
        h = nn.relu(_instance_norm(norm_affine)(h))
    for i in range(blocks):
        h = ResnetBlock(norm_affine, name=f"res_{i}")(h)
    return h


def decoder_layers(
    h: jax.Array, channels: int, features: int, blocks: range, norm_affine: bool, upsample_method: str
) -> jax.Array:
    """``R4f`` for each index in ``blocks`` (named ``res_i``), ``u2f, uf, c7s1-channels, tanh``: features to images."""
    f = features
    for i in blocks:
        h = ResnetBlock(norm_affine, name=f"res_{i}")(h)
    for i, width in enumerate((2 * f, f)):
        # PyTorch's ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1):
        # pad the dilated input by (k - 1 - padding, k - 1 - padding + output_padding).
        h = ConvTranspose(
            width, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)), use_bias=False,
            kernel_init=_KERNEL_INIT, method=upsample_method, name=f"up_{i}",
        )(h)
        h = nn.relu(_instance_norm(norm_affine)(h))
    h = nn.Conv(channels, (7, 7), padding="VALID", kernel_init=_KERNEL_INIT, name="output")(reflection_pad(h, 3))
    return jnp.tanh(h)


class ResnetGenerator(nn.Module):
    """The CycleGAN generator ``image -> image`` (Johnson et al.'s ResNet).

    Attributes:
      channels: the output channels (3 for RGB).
      features: the width of the first layer (64 in the paper); the
        downsampling layers have 2 and 4 times as many channels.
      n_blocks: residual blocks (6 for 128x128 images, 9 for 256x256).
      norm_affine: learn instance norm's scale and bias (the authors' code
        does not).
      upsample_method: how the ``uk`` layers' transposed convolutions are
        computed (:class:`~jgan.models.ConvTranspose`'s ``method``):
        ``"auto"`` (the kernel derivative in the sub-pixel form on CPU),
        ``"subpixel"`` or ``"transpose"``; the same function and parameters
        in every case.
    """

    channels: int = 3
    features: int = 64
    n_blocks: int = 9
    norm_affine: bool = False
    upsample_method: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = True) -> jax.Array:
        """Translates a batch of images.

        Args:
          x: images ``[batch, height, width, in_channels]``, height and width
            multiples of 4 and larger than 3.
          train: ignored (instance norm behaves the same in both modes).

        Returns:
          images ``[batch, height, width, channels]`` in [-1, 1].

        Raises:
          ValueError: if height or width is not a multiple of 4 or
            ``n_blocks`` is negative.
          TypeError: if ``n_blocks`` is not an int.
        """
        del train
        if x.ndim != 4 or x.shape[1] % 4 or x.shape[2] % 4:
            raise ValueError(
                "ResnetGenerator takes images [batch, height, width, channels] with height and"
                f" width multiples of 4, got {x.shape}."
            )
        _validate.check_int(self.n_blocks, "n_blocks", minimum=0)
        h = encoder_layers(x, self.features, self.n_blocks, self.norm_affine)
        return decoder_layers(
            h, self.channels, self.features, range(self.n_blocks, self.n_blocks), self.norm_affine, self.upsample_method
        )


class PatchGANDiscriminator(nn.Module):
    """The 70x70 PatchGAN discriminator ``image -> [batch, h', w', 1]`` logits.

    With ``n_layers = 3`` (the default) the layers are C64-C128-C256-C512
    (for ``features = 64``) and each output sees a 70x70 patch of the input.
    ``n_layers`` stride-2 layers and one stride-1 layer precede the output
    convolution; channels double per layer up to ``8·features``.

    Attributes:
      features: the channel count of the first layer (64 in the paper).
      n_layers: the number of stride-2 convolutions (3: 70x70 patches).
      norm_affine: learn instance norm's scale and bias (the authors' code
        does not).
      spectral_norm: spectrally normalise every convolution kernel (Miyato et
        al. 2018; see :class:`~jgan.models.DCGANDiscriminator`). The power
        iteration's ``u`` and ``sigma`` are model state
        (``model_state["batch_stats"]``, updated when ``train``), so the
        network is then stateful: ``make_apply(module, stateful=True)`` and
        a stateful step such as ``make_gan(..., d_stateful=True)``;
        ``jgan.cyclegan``'s step takes stateless networks only.
    """

    features: int = 64
    n_layers: int = 3
    norm_affine: bool = False
    spectral_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = True) -> jax.Array:
        """Scores every patch of a batch of images.

        Args:
          x: images ``[batch, height, width, channels]``.
          train: with ``spectral_norm``, store the power iteration's ``u``
            and ``sigma`` (``True``) or not (``False``); otherwise ignored
            (instance norm behaves the same in both modes).

        Returns:
          logits ``[batch, h', w', 1]``; for ``n_layers = 3``,
          ``h' = floor(height / 8) - 2`` when ``height`` is a multiple of 8.

        Raises:
          ValueError: if ``n_layers < 1``.
          TypeError: if ``n_layers`` is not an int or ``spectral_norm`` not a bool.
        """
        _validate.check_int(self.n_layers, "n_layers", minimum=1)
        spectral_norm = _validate.check_bool(self.spectral_norm, "spectral_norm")
        sn = functools.partial(_spectrally_normalized, spectral_norm=spectral_norm, train=train)
        pad = ((1, 1), (1, 1))
        # C64: no instance norm on the input layer.
        h = sn(nn.Conv(self.features, (4, 4), strides=(2, 2), padding=pad, kernel_init=_KERNEL_INIT))(x)
        h = nn.leaky_relu(h, _LEAKY_SLOPE)
        for i in range(1, self.n_layers + 1):
            width = self.features * min(2**i, 8)
            stride = 2 if i < self.n_layers else 1
            h = sn(nn.Conv(width, (4, 4), strides=(stride, stride), padding=pad, use_bias=False, kernel_init=_KERNEL_INIT))(h)
            h = nn.leaky_relu(_instance_norm(self.norm_affine)(h), _LEAKY_SLOPE)
        return sn(nn.Conv(1, (4, 4), padding=pad, kernel_init=_KERNEL_INIT, name="logits"))(h)
