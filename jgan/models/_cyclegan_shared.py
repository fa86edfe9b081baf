"""A CycleGAN translator with one shared encoder and a decoder per domain.

The variant of the seed notes (sec. 6.1): instead of two separate ResNet
generators G: A -> B and F: B -> A, one encoder is shared by both directions
and each domain has its own decoder,

    G = decoder_b ∘ encoder,    F = decoder_a ∘ encoder.

It is a partition of :class:`~jgan.models.ResnetGenerator`'s layers, for
``f = features``, ``k = shared_blocks`` (``n_blocks // 2`` by default) and
``n = n_blocks``:

    encoder:   c7s1-f, d2f, d4f, R4f x k
    decoder:   R4f x (n - k), u2f, uf, c7s1-channels, tanh

The notes describe the generator as "a pair of convolution networks followed
by 6 residual blocks and finally a pair of transposed convolution networks",
and the encoder as "the first two convolution networks followed by 3
residual blocks": their "pair of convolutions" is the two downsampling layers
``d2f, d4f``, and the 7x7 stem ``c7s1-f`` before them goes with them into the
encoder (it reads the image, as the encoder must), while the 7x7 output layer
``c7s1-channels`` after the two transposed convolutions goes into each
decoder. Every layer of the generator thus lies in exactly one part, and with
the same weights ``G`` and ``F`` compute exactly what two ResnetGenerators
do whose first ``c7s1, down_0, down_1, res_0 .. res_{k-1}`` hold the same
(shared) weights.

Parameters: ``{"encoder": {"c7s1", "down_0", "down_1", "res_0", ...},
"decoder_a": {"res_k", ..., "up_0", "up_1", "output"}, "decoder_b": {...}}``
(the residual blocks keep ResnetGenerator's numbering; with
``norm_affine=True`` each part also has its instance norms,
``InstanceNorm_0..2`` in the encoder and ``InstanceNorm_0..1`` in a decoder,
ResnetGenerator's ``InstanceNorm_3..4``). The encoder's parameters exist
once, so the pair has one encoder fewer than two generators; train it with
``jgan.cyclegan.make_cyclegan_train_step(..., shared_generator_params=True)``
and the apply functions of :func:`make_shared_generators`, which sum the
gradients of both directions into the one encoder.

Both domains must have the same number of channels (the encoder's first
layer reads either); height and width must be multiples of 4.

References:
  The seed notes, sec. 6.1 ("Proposed modification to the Cycle GAN
  architecture"): about twice as fast to train, poorer images.
  Zhu, Park, Isola, Efros, "Unpaired Image-to-Image Translation using
  Cycle-Consistent Adversarial Networks", ICCV 2017, appendix 7.2 (the
  generator partitioned here).
  Johnson, Alahi, Fei-Fei, "Perceptual Losses for Real-Time Style Transfer
  and Super-Resolution", ECCV 2016.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax

from jgan import _validate
from jgan.models._cyclegan import decoder_layers, encoder_layers


class _Encoder(nn.Module):
    """``c7s1-f, d2f, d4f, R4f x blocks``: images ``[b, h, w, c]`` to features ``[b, h/4, w/4, 4f]``."""

    features: int
    blocks: int
    norm_affine: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return encoder_layers(x, self.features, self.blocks, self.norm_affine)


class _Decoder(nn.Module):
    """``R4f x (n_blocks - first_block), u2f, uf, c7s1-channels, tanh``: features to images."""

    channels: int
    features: int
    first_block: int
    n_blocks: int
    norm_affine: bool
    upsample_method: str

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        return decoder_layers(
            h, self.channels, self.features, range(self.first_block, self.n_blocks), self.norm_affine,
            self.upsample_method,
        )


class SharedEncoderTranslator(nn.Module):
    """CycleGAN's two generators with one shared encoder: ``G = decoder_b ∘ encoder``, ``F = decoder_a ∘ encoder``.

    ``__call__`` returns both translations of its input (and so, under
    ``init``, creates all three parts' parameters); :meth:`translate_ab` and
    :meth:`translate_ba` compute one direction, :func:`make_shared_generators`
    turns them into the ``(params, x) -> y`` functions of the CycleGAN step.

    Attributes:
      channels: the output channels of both decoders (the input's too: the
        encoder reads both domains).
      features: the width of the first layer; the downsampling layers have 2
        and 4 times as many channels (as ResnetGenerator's).
      n_blocks: residual blocks of each direction, shared and own together
        (as ResnetGenerator's ``n_blocks``).
      shared_blocks: how many of them are in the shared encoder; ``None``:
        ``n_blocks // 2`` (the notes' 3 of 6).
      norm_affine: learn instance norm's scale and bias.
      upsample_method: the ``uk`` layers' transposed convolutions
        (:class:`~jgan.models.ConvTranspose`'s ``method``).
    """

    channels: int = 3
    features: int = 64
    n_blocks: int = 6
    shared_blocks: int | None = None
    norm_affine: bool = False
    upsample_method: str = "auto"

    def setup(self) -> None:
        n_blocks = _validate.check_int(self.n_blocks, "n_blocks", minimum=0)
        shared = n_blocks // 2 if self.shared_blocks is None else _validate.check_int(
            self.shared_blocks, "shared_blocks", minimum=0)
        if shared > n_blocks:
            raise ValueError(f"shared_blocks must be at most n_blocks = {n_blocks}, got {shared}.")
        self.encoder = _Encoder(self.features, shared, self.norm_affine)
        decoder = dict(
            channels=self.channels, features=self.features, first_block=shared, n_blocks=n_blocks,
            norm_affine=self.norm_affine, upsample_method=self.upsample_method,
        )  # fmt: skip
        self.decoder_a = _Decoder(**decoder)
        self.decoder_b = _Decoder(**decoder)

    def __call__(self, x: jax.Array, *, train: bool = True) -> tuple[jax.Array, jax.Array]:
        """Translates a batch both ways (the encoder runs once).

        Args:
          x: images ``[batch, height, width, channels]``, height and width
            multiples of 4.
          train: ignored (instance norm behaves the same in both modes).

        Returns:
          ``(G(x), F(x))``: ``decoder_b(encoder(x))`` and
          ``decoder_a(encoder(x))``, each ``[batch, height, width, channels]``
          in [-1, 1].

        Raises:
          ValueError: if height or width is not a multiple of 4, or
            ``shared_blocks`` is negative or above ``n_blocks``.
          TypeError: if ``n_blocks`` or ``shared_blocks`` is not an int.
        """
        del train
        h = self.encode(x)
        return self.decoder_b(h), self.decoder_a(h)

    def encode(self, x: jax.Array) -> jax.Array:
        """The shared encoder: images ``[batch, height, width, c]`` to ``[batch, height/4, width/4, 4·features]``."""
        if x.ndim != 4 or x.shape[1] % 4 or x.shape[2] % 4:
            raise ValueError(
                "SharedEncoderTranslator takes images [batch, height, width, channels] with height and"
                f" width multiples of 4, got {x.shape}."
            )
        return self.encoder(x)

    def translate_ab(self, x: jax.Array) -> jax.Array:
        """G: A -> B, ``decoder_b(encoder(x))``, images ``[batch, height, width, channels]``."""
        return self.decoder_b(self.encode(x))

    def translate_ba(self, x: jax.Array) -> jax.Array:
        """F: B -> A, ``decoder_a(encoder(x))``, images ``[batch, height, width, channels]``."""
        return self.decoder_a(self.encode(x))


def make_shared_generators(module: SharedEncoderTranslator) -> tuple[Callable, Callable]:
    """The CycleGAN step's generator functions of a :class:`SharedEncoderTranslator`.

    Both read the one parameter tree ``{"encoder", "decoder_a", "decoder_b"}``
    (what ``init_model(module, key, x)`` returns), as
    ``make_cyclegan_train_step(..., shared_generator_params=True)`` calls
    them.

    Args:
      module: the translator.

    Returns:
      ``(generator_ab, generator_ba)``: ``generator_ab(params, a) -> G(a)``
      and ``generator_ba(params, b) -> F(b)``, images ``[batch, height,
      width, channels]``; pure, closing over ``module`` only.

    Raises:
      TypeError: if ``module`` is not a SharedEncoderTranslator.
    """
    if not isinstance(module, SharedEncoderTranslator):
        raise TypeError(f"module must be a SharedEncoderTranslator, got {type(module).__name__} {module!r}.")

    def generator_ab(params, x):
        return module.apply({"params": params}, x, method=SharedEncoderTranslator.translate_ab)

    def generator_ba(params, x):
        return module.apply({"params": params}, x, method=SharedEncoderTranslator.translate_ba)

    return generator_ab, generator_ba
