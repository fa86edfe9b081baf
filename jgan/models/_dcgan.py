"""DCGAN generator and discriminator for 28x28, 32x32 and 64x64 images.

The networks follow the architecture guidelines of Radford et al.:

- no pooling: the discriminator downsamples with strided convolutions and the
  generator upsamples with fractionally-strided (transposed) convolutions;
- BatchNorm in both networks, except on the generator's output layer and the
  discriminator's input layer;
- no fully connected hidden layers: the generator's first layer projects the
  latent vector (a matrix multiplication) and reshapes it into a small feature
  map, and the discriminator's last layer is a convolution covering its whole
  final feature map, which gives one logit per example;
- ReLU in the generator with a tanh output, LeakyReLU(0.2) in the discriminator;
- weights drawn from N(0, 0.02) and BatchNorm scales from N(1, 0.02).

Layer plans (spatial size and channels, ``f = features``):

- 64x64: G 4 (8f) -> 8 (4f) -> 16 (2f) -> 32 (f) -> 64 (channels);
  D 64 -> 32 (f) -> 16 (2f) -> 8 (4f) -> 4 (8f) -> logit.
- 32x32: G 4 (4f) -> 8 (2f) -> 16 (f) -> 32 (channels);
  D 32 -> 16 (f) -> 8 (2f) -> 4 (4f) -> logit.
- 28x28: G 7 (2f) -> 14 (f) -> 28 (channels);
  D 28 -> 14 (f) -> 7 (2f) -> logit.

Both networks carry BatchNorm statistics, so they use the stateful apply
convention (``make_apply(module, stateful=True)``); ``train=True`` normalises
with batch statistics and updates the running averages, ``train=False`` uses
the running averages.

Spectral normalisation (``DCGANDiscriminator(spectral_norm=True)``, also on
:class:`~jgan.models.ProjectionDiscriminator` and
:class:`~jgan.models.PatchGANDiscriminator`) divides every convolution and
dense kernel by an estimate of its largest singular value, a kernel
``[kh, kw, in, out]`` taken as the matrix ``[kh·kw·in, out]`` (Miyato et al.,
sec. 2.1 and appendix A; :class:`SpectralNorm` computes what flax's
``nn.SpectralNorm`` does, except at init). The estimate comes from one power
iteration per call, started from a vector ``u`` kept in the model state
(``model_state["batch_stats"]``, beside ``sigma``, the estimate of the last
training-mode call); ``train=True`` stores the new ``u`` and ``sigma``,
``train=False`` iterates from the stored ``u`` without storing it. So a
spectrally normalised discriminator is stateful
(``make_apply(module, stateful=True)``, ``make_gan(..., d_stateful=True)``)
whatever its ``normalization``. In a ``make_gan`` step each discriminator
update calls the network twice in training mode (real, then generated
samples, threading the state) and the generator's pass once more, so ``u``
takes ``2·d_steps + 1`` iterations per step; under ``unroll=Unrolled(K)`` the
look-ahead passes read the stored ``u`` and store nothing, leaving
``2·d_steps``. Biases, BatchNorm and LayerNorm parameters are not
normalised, and the parameters (names, shapes and initial values) are those
of the same network without spectral normalisation.

References:
  Radford, Metz, Chintala, "Unsupervised Representation Learning with Deep
  Convolutional Generative Adversarial Networks", ICLR 2016, sec. 3
  (architecture guidelines) and sec. 4 (training details: N(0, 0.02) init,
  LeakyReLU slope 0.2).
  Miyato, Kataoka, Koyama, Yoshida, "Spectral Normalization for Generative
  Adversarial Networks", ICLR 2018, eq. 8 and Algorithm 1 (one power
  iteration per update) and appendix A (convolution kernels as matrices).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgan import _validate
from jgan.models._upsample import ConvTranspose

_KERNEL_INIT = nn.initializers.normal(stddev=0.02)
_LEAKY_SLOPE = 0.2
_SN_EPSILON = 1e-12  # flax's nn.SpectralNorm default
# Spatial size of the projected latent feature map, and how many times the
# generator doubles it, for each supported image size.
_GENERATOR_PLANS = {64: (4, 4), 32: (4, 3), 28: (7, 2)}


def _batch_norm_scale_init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """Draws BatchNorm scales from N(1, 0.02) (Radford et al., sec. 4)."""
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def _batch_norm(train: bool, momentum: float, axis_name: str | None) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=momentum,
        epsilon=1e-5,
        scale_init=_batch_norm_scale_init,
        axis_name=axis_name,
    )


def _l2_normalize(x: jax.Array) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.sum(x * x) + _SN_EPSILON)


def _spectrally_normalize(module: nn.Module, name: str, value: jax.Array, *, update_stats: bool) -> jax.Array:
    """``value`` divided by an estimate of its largest singular value.

    ``value`` is taken as the matrix ``[prod(shape[:-1]), shape[-1]]`` (a
    convolution kernel ``[kh, kw, in, out]`` as ``[kh·kw·in, out]``). One
    power iteration starts from ``u`` ``[1, shape[-1]]``, the variable
    ``"batch_stats"/"{name}/u"`` of ``module`` (drawn from N(0, 1) with the
    ``"params"`` key when first created), and gives
    ``sigma = v W uᵀ``; ``u`` and ``v`` carry no gradient. With
    ``update_stats`` the new ``u`` and ``sigma`` are stored (``"{name}/sigma"``).

    Args:
      module: the module in whose compact method this runs (it owns ``u``).
      name: the weight's name, e.g. ``"Conv_0/kernel"``.
      value: the weight, two or more axes.
      update_stats: store the new ``u`` and ``sigma``.

    Returns:
      ``value / sigma``, of ``value``'s shape.

    References:
      Miyato et al. 2018, Algorithm 1 and appendix A.
    """
    shape = value.shape
    w = jnp.reshape(value, (-1, shape[-1]))
    u_name, sigma_name = f"{name}/u", f"{name}/sigma"
    u_key = None if module.has_variable("batch_stats", u_name) else module.make_rng("params")
    u_var = module.variable("batch_stats", u_name, jax.random.normal, u_key, (1, shape[-1]), jnp.float32)
    sigma_var = module.variable("batch_stats", sigma_name, jnp.ones, (), jnp.float32)
    v = jax.lax.stop_gradient(_l2_normalize(u_var.value @ w.T))
    u = jax.lax.stop_gradient(_l2_normalize(v @ w))
    sigma = (v @ w @ u.T)[0, 0]
    if update_stats:
        u_var.value = u
        sigma_var.value = sigma
    return jnp.reshape(w / jnp.where(sigma != 0, sigma, 1), shape)


class SpectralNorm(nn.Module):
    """A layer whose weights (every parameter with two or more axes) are spectrally normalised.

    The computation and the state layout of flax's ``nn.SpectralNorm``
    (``"batch_stats"/"SpectralNorm_i"/"<layer>/kernel/u"`` and ``.../sigma``),
    with one difference: ``init`` stores the layer's initial weights, whereas
    ``nn.SpectralNorm`` stores them divided by a first estimate of ``sigma``
    (measured: a DCGAN kernel drawn with std 0.02 came back with std 0.21).
    So the parameters are those of the layer without normalisation, as in the
    paper's reparameterisation ``W / sigma(W)`` of a trainable ``W``.

    Attributes:
      layer: the wrapped layer (``nn.Conv``, ``nn.Dense``), created in the
        caller's compact method so its parameters keep their place.
    """

    layer: nn.Module

    @nn.compact
    def __call__(self, x: jax.Array, *, update_stats: bool) -> jax.Array:
        """The layer's output with normalised weights; ``update_stats`` stores ``u`` and ``sigma``."""
        initial = []

        def normalize(variables):
            initial.append(variables)

            def one(path, value):
                if jnp.ndim(value) < 2:
                    return value
                name = "/".join([self.layer.name, *(str(getattr(k, "key", k)) for k in path[1:])])
                return _spectrally_normalize(self, name, value, update_stats=update_stats)

            return jax.tree_util.tree_map_with_path(one, variables)

        initializing = self.is_initializing()
        return nn.map_variables(
            lambda layer, h: layer(h),
            "params",
            trans_in_fn=normalize,
            # At init flax writes the mapped (normalised) weights back: keep the initial ones.
            trans_out_fn=lambda variables: initial[-1] if initial else variables,
            init=initializing,
            mutable=initializing,
        )(self.layer, x)


def _spectrally_normalized(layer: nn.Module, spectral_norm: bool, train: bool) -> Callable[..., jax.Array]:
    """``layer``, or ``layer`` under :class:`SpectralNorm` (storing ``u`` and ``sigma`` when ``train``).

    Args:
      layer: an ``nn.Conv`` or ``nn.Dense`` created in the caller's compact
        method (so it is named in the caller's scope).
      spectral_norm: whether to normalise.
      train: store the power iteration's ``u`` and ``sigma``.

    Returns:
      a callable ``x -> layer output``.
    """
    if not spectral_norm:
        return layer
    return functools.partial(SpectralNorm(layer), update_stats=train)


class DCGANGenerator(nn.Module):
    """The DCGAN generator ``z -> image``.

    Attributes:
      image_size: the output height and width, one of 28, 32 and 64.
      channels: the output channels (1 for MNIST, 3 for colour images).
      features: the channel count of the last hidden layer; earlier layers
        have 2, 4 and 8 times as many (the paper's 64x64 model uses 128,
        i.e. 1024 channels in the 4x4 map; PyTorch's example uses 64).
      momentum: BatchNorm momentum of the running averages (0.9 is
        PyTorch's 0.1 in flax's convention).
      axis_name: if set, BatchNorm statistics are averaged over this mapped
        axis (synchronised BatchNorm under ``pmap`` / ``shard_map``).
      upsample_method: how the transposed convolutions are computed
        (:class:`~jgan.models.ConvTranspose`'s ``method``): ``"auto"`` (the
        kernel derivative in the sub-pixel form on CPU), ``"subpixel"`` or
        ``"transpose"``; the same function and parameters in every case.
    """

    image_size: int
    channels: int = 3
    features: int = 64
    momentum: float = 0.9
    axis_name: str | None = None
    upsample_method: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = True) -> jax.Array:
        """Maps latents to images.

        Args:
          x: latents ``[batch, latent_dim]``.
          train: normalise with batch statistics and update the running
            averages (``True``) or use the running averages (``False``).

        Returns:
          images ``[batch, image_size, image_size, channels]`` in [-1, 1].

        Raises:
          ValueError: if ``image_size`` is not 28, 32 or 64.
        """
        if self.image_size not in _GENERATOR_PLANS:
            raise ValueError(f"image_size must be one of {sorted(_GENERATOR_PLANS)}, got {self.image_size}.")
        start, doublings = _GENERATOR_PLANS[self.image_size]
        width = self.features * 2 ** (doublings - 1)
        # Project and reshape: one matrix multiplication into a start x start map.
        x = nn.Dense(start * start * width, use_bias=False, kernel_init=_KERNEL_INIT, name="project")(x)
        x = jnp.reshape(x, (x.shape[0], start, start, width))
        x = nn.relu(_batch_norm(train, self.momentum, self.axis_name)(x))
        for _ in range(doublings - 1):
            width //= 2
            x = ConvTranspose(
                width, (4, 4), strides=(2, 2), padding="SAME", use_bias=False, kernel_init=_KERNEL_INIT,
                method=self.upsample_method,
            )(x)
            x = nn.relu(_batch_norm(train, self.momentum, self.axis_name)(x))
        x = ConvTranspose(
            self.channels, (4, 4), strides=(2, 2), padding="SAME", kernel_init=_KERNEL_INIT, method=self.upsample_method
        )(x)
        return jnp.tanh(x)


class DCGANDiscriminator(nn.Module):
    """The DCGAN discriminator ``image -> logit``.

    The number of layers follows the input: stride-2 convolutions halve the
    spatial size while it exceeds 7 (64 -> 4, 32 -> 4, 28 -> 7), then a
    convolution covering the whole remaining map gives one logit. Channels are
    not fixed, so a PacGAN-packed batch (``pack * channels`` channels) is
    accepted.

    Attributes:
      features: the channel count of the first layer; each later layer
        doubles it.
      momentum: BatchNorm momentum of the running averages.
      axis_name: if set, BatchNorm statistics are averaged over this mapped
        axis (synchronised BatchNorm under ``pmap`` / ``shard_map``).
      normalization: ``"batch"`` (DCGAN; the stateful apply convention),
        ``"layer"`` (per-example LayerNorm over each feature map, the
        WGAN-GP critic's choice: a gradient penalty is per example, which
        batch statistics would couple) or ``"none"``; the last two hold
        parameters only (the stateless convention) unless ``spectral_norm``.
      spectral_norm: spectrally normalise every convolution kernel (Miyato et
        al.; see the module docstring). Independent of ``normalization``: the
        SN-GAN discriminators use none, ``normalization="none",
        spectral_norm=True``. The power iteration's ``u`` and ``sigma`` are
        model state, so the network is stateful with any ``normalization``.
    """

    features: int = 64
    momentum: float = 0.9
    axis_name: str | None = None
    normalization: str = "batch"
    spectral_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = True) -> jax.Array:
        """Scores a batch of images.

        Args:
          x: images ``[batch, height, width, channels]``, e.g. 28x28, 32x32
            or 64x64 with any channel count.
          train: normalise with batch statistics and update the running
            averages (``True``) or use the running averages (``False``);
            with ``spectral_norm``, also store the power iteration's ``u``
            and ``sigma`` (``True``) or not (``False``).

        Returns:
          logits ``[batch]``.

        Raises:
          ValueError: for an unknown ``normalization``.
          TypeError: if ``spectral_norm`` is not a bool.
        """
        if self.normalization not in ("batch", "layer", "none"):
            raise ValueError(f"normalization must be 'batch', 'layer' or 'none', got {self.normalization!r}.")
        spectral_norm = _validate.check_bool(self.spectral_norm, "spectral_norm")
        sn = functools.partial(_spectrally_normalized, spectral_norm=spectral_norm, train=train)
        width = self.features
        # The input layer has no BatchNorm or LayerNorm.
        x = sn(nn.Conv(width, (4, 4), strides=(2, 2), padding="SAME", kernel_init=_KERNEL_INIT))(x)
        x = nn.leaky_relu(x, _LEAKY_SLOPE)
        while max(x.shape[1:3]) > 7:
            width *= 2
            x = sn(nn.Conv(
                width, (4, 4), strides=(2, 2), padding="SAME", use_bias=self.normalization == "none", kernel_init=_KERNEL_INIT
            ))(x)
            if self.normalization == "batch":
                x = _batch_norm(train, self.momentum, self.axis_name)(x)
            elif self.normalization == "layer":
                x = nn.LayerNorm(reduction_axes=(-3, -2, -1), feature_axes=-1)(x)
            x = nn.leaky_relu(x, _LEAKY_SLOPE)
        x = sn(nn.Conv(1, x.shape[1:3], padding="VALID", kernel_init=_KERNEL_INIT, name="logit"))(x)
        return jnp.reshape(x, (x.shape[0],))
