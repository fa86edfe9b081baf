"""Transposed convolutions computed in the form that is fastest on the backend.

:class:`ConvTranspose` is ``flax.linen.ConvTranspose`` (a subclass: the same
attributes, parameter names, shapes, layout and initial values, so param
trees and checkpoints do not change) with a ``method`` attribute that chooses
how the same function is computed. :func:`subpixel_conv_transpose` is
``lax.conv_transpose`` computed as a sub-pixel convolution.

The sub-pixel form. A transposed convolution with stride ``s`` correlates the
kernel ``k`` with the input dilated by ``s`` (``s - 1`` zeros between pixels)
and padded by ``(lo, hi)``: with ``transpose_kernel=False`` (flax's default;
the kernel is not flipped), per spatial axis

    y[o] = sum_{i, t : s·i + lo = o + t} x[i] · k[t].

Write the output index as ``o = s·m + p`` with the phase ``p in [0, s)``. Then
``t = s·j + lo - p`` with ``i = m + j``, so each phase is an ordinary stride-1
correlation of the *undilated* input with the sub-kernel
``k_p[j] = k[s·j + lo - p]``:

    y[s·m + p] = sum_j x[m + j] · k_p[j].

Stacking the ``s²`` phases of a 2-D layer as ``s²·features`` output channels
(taps a phase does not use are zero) gives one stride-1
``lax.conv_general_dilated`` on the undilated input, whose output is
rearranged depth-to-space (pixel shuffle) into the strided output. The
rearranged kernel is a zero-pad, reshape, flip and transpose of ``k``; no
values are copied or approximated, so the function is the same up to the
order of floating-point summation.

Why only the kernel derivative, and only on CPU. On XLA:CPU (jax 0.10.2) the
forward ``lax.conv_transpose`` and its input derivative (a strided
convolution) are fast. Its kernel derivative is compiled to a convolution
with dimension labels ``01fb_o01i->f01b``, which XLA:CPU does not run on its
fast (Eigen, ``b01f_01io->b01f``) path: at the models' sizes it takes 8 to 19
times as long as the same derivative in the sub-pixel form (whose
convolutions are all in the fast form) and dominates a generator's backward
pass. The sub-pixel forward and input derivative, on the other hand, are
slower than ``conv_transpose``'s (the stacked kernel has more taps than any
phase uses: 36 for 16 with a 4x4 kernel, stride 2). So ``method="auto"``
computes the value and the input derivative with ``lax.conv_transpose`` and
only the kernel derivative in the sub-pixel form, on CPU: a
``jax.custom_jvp`` whose kernel term is chosen by ``lax.platform_dependent``,
i.e. when the program is lowered for a platform. Other backends keep
``conv_transpose`` throughout: no accelerator could be measured here.
``python -m benchmarks.conv_transpose`` measured, on a shared 2-core CPU, the
gradient of DCGANGenerator (32x32x1, ``features`` 16, batch 64) at 34.4 ms
with ``"transpose"``, 11.4 ms with ``"auto"`` (3.0x) and 14.4 ms with
``"subpixel"`` (2.4x).

References:
  Shi, Caballero, Huszár, Totz, Aitken, Bishop, Rueckert, Wang, "Real-Time
  Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
  Convolutional Neural Network", CVPR 2016, sec. 2.2 (eq. 4, the periodic
  shuffle).
  Shi, Caballero, Theis, Huszár, Aitken, Ledig, Wang, "Is the deconvolution
  layer the same as a convolutional layer?", arXiv:1609.07009, 2016 (a
  transposed convolution with stride s equals a convolution with s² times
  the channels in low resolution followed by the periodic shuffle).
  Dumoulin, Visin, "A guide to convolution arithmetic for deep learning",
  arXiv:1603.07285, 2016, sec. 4 (transposed convolution arithmetic).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.linear import canonicalize_padding
from jax import lax
from jax.typing import ArrayLike

__all__ = ["METHODS", "ConvTranspose", "subpixel_conv_transpose"]

METHODS = ("auto", "subpixel", "transpose")


def _transpose_padding(kernel_size: int, stride: int, padding) -> tuple[int, int]:
    """``(lo, hi)`` padding of the dilated input, as ``lax.conv_transpose`` resolves it.

    ``padding`` is ``"SAME"``, ``"VALID"`` or a ``(lo, hi)`` pair (taken as it
    is: ``lax.conv_transpose``'s default ``use_consistent_padding=False``, which
    flax uses). ``kernel_size`` is the dilated kernel's.
    """
    if padding == "SAME":
        total = kernel_size + stride - 2
        lo = kernel_size - 1 if stride > kernel_size - 1 else -(-total // 2)
        return lo, total - lo
    if padding == "VALID":
        total = kernel_size + stride - 2 + max(kernel_size - stride, 0)
        return kernel_size - 1, total - (kernel_size - 1)
    lo, hi = padding
    return int(lo), int(hi)


def _dimension_numbers(ndim: int) -> lax.ConvDimensionNumbers:
    """Channels last: inputs ``[batch, *spatial, in]``, kernel ``[*spatial, in, out]``."""
    spatial = tuple(range(1, ndim - 1))
    lhs = (0, ndim - 1) + spatial
    return lax.ConvDimensionNumbers(lhs, (ndim - 1, ndim - 2) + tuple(range(ndim - 2)), lhs)


def _phase_geometry(size: int, kernel_size: int, stride: int, pads: tuple[int, int]) -> dict[str, int]:
    """One spatial axis of the sub-pixel form (see the module doc).

    Phase ``p`` uses window offsets ``j`` with ``0 <= s·j + lo - p < k``; the
    shared window runs from ``j_min = ceil(-lo / s)`` (phase 0) to
    ``j_max = floor((k + s - 2 - lo) / s)`` (phase s - 1), ``taps`` offsets in
    all. The kernel, zero-padded by ``kernel_pads`` to ``s·taps`` entries, then
    reshapes to ``[taps, s]`` with phase ``s - 1 - r`` in column ``r``.
    """
    lo, hi = pads
    length = stride * (size - 1) + lo + hi - kernel_size + 2  # The transposed convolution's output.
    j_min = -(lo // stride)
    j_max = (kernel_size + stride - 2 - lo) // stride
    taps = j_max - j_min + 1
    before = stride - 1 - (stride * j_min + lo)  # In [0, s): s·j_min + lo is in [0, s).
    phase_length = -(-length // stride)  # Outputs per phase, rounded up; the excess is cut off.
    return dict(
        length=length,
        phase_length=phase_length,
        taps=taps,
        kernel_pads=(before, stride * taps - kernel_size - before),
        input_pads=(-j_min, phase_length + j_max - size),
    )


def subpixel_conv_transpose(
    inputs: ArrayLike,
    kernel: ArrayLike,
    strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    *,
    precision: lax.PrecisionLike = None,
    preferred_element_type=None,
) -> jax.Array:
    """``lax.conv_transpose`` (channels last, unflipped kernel) as one stride-1 convolution.

    Computes ``lax.conv_transpose(inputs, kernel, strides, padding)`` with
    ``transpose_kernel=False`` and no kernel dilation, as flax's
    ``ConvTranspose`` calls it, by the sub-pixel identity of the module doc:
    one ``lax.conv_general_dilated`` with stride 1 on the undilated input and
    ``prod(strides)·out_features`` output channels, then depth-to-space. The
    result equals ``conv_transpose``'s up to the order of summation.

    Args:
      inputs: ``[batch, *spatial, in_features]`` (1 to 3 spatial axes).
      kernel: ``[*kernel_size, in_features, out_features]``.
      strides: the stride of each spatial axis, ints >= 1.
      padding: ``"SAME"``, ``"VALID"`` (the padding of the forward
        convolution, as ``lax.conv_transpose`` reads them) or one ``(low,
        high)`` pair per spatial axis: the padding of the dilated input
        (``lax.conv_transpose``'s default ``use_consistent_padding=False``).
      precision: passed to ``lax.conv_general_dilated``.
      preferred_element_type: passed to ``lax.conv_general_dilated``.

    Returns:
      ``[batch, *out_spatial, out_features]`` with, per axis,
      ``out = s·(n - 1) + lo + hi - k + 2`` for the resolved padding
      ``(lo, hi)`` (``s·n`` for ``"SAME"``).

    Raises:
      ValueError: for ranks that do not match, a kernel whose input features
        are not the inputs', strides that are not ints >= 1, a padding that
        is not ``"SAME"``, ``"VALID"`` or one pair per axis, or an empty
        output.

    References:
      Shi et al., CVPR 2016, sec. 2.2; Shi et al., arXiv:1609.07009, 2016.
    """
    inputs, kernel = jnp.asarray(inputs), jnp.asarray(kernel)
    ndim = inputs.ndim
    if ndim not in (3, 4, 5) or kernel.ndim != ndim:
        raise ValueError(
            "subpixel_conv_transpose takes inputs [batch, *spatial, in_features] and a kernel"
            " [*kernel_size, in_features, out_features] of the same rank, 3 to 5; got shapes"
            f" {inputs.shape} and {kernel.shape}."
        )
    n = ndim - 2
    if kernel.shape[-2] != inputs.shape[-1]:
        raise ValueError(
            f"The kernel {kernel.shape} takes {kernel.shape[-2]} input features; the inputs"
            f" {inputs.shape} have {inputs.shape[-1]}."
        )
    strides = tuple(strides)
    if len(strides) != n or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1
                                    for s in strides):
        raise ValueError(f"strides must be {n} ints >= 1, got {strides!r}.")
    if isinstance(padding, str):
        if padding not in ("SAME", "VALID"):
            raise ValueError(f"padding must be 'SAME', 'VALID' or (low, high) pairs, got {padding!r}.")
        axis_padding = [padding] * n
    else:
        axis_padding = [tuple(p) for p in padding]
        if len(axis_padding) != n or any(len(p) != 2 for p in axis_padding):
            raise ValueError(f"padding must have one (low, high) pair per spatial axis ({n}), got {padding!r}.")
    spatial, kernel_size = inputs.shape[1:-1], kernel.shape[:n]
    axes = [
        _phase_geometry(size, k, s, _transpose_padding(k, s, p))
        for size, k, s, p in zip(spatial, kernel_size, strides, axis_padding)
    ]
    if min(spatial) < 1 or min(a["length"] for a in axes) < 1:
        raise ValueError(
            f"The transposed convolution of inputs {inputs.shape} with kernel size {kernel_size},"
            f" strides {strides} and padding {padding!r} is empty."
        )
    in_features, out_features = kernel.shape[-2:]
    phases = int(np.prod(strides))

    # The kernel [*k, in, out] -> [*taps, in, (phase_1, ..., phase_n, out)].
    stacked = jnp.pad(kernel, [a["kernel_pads"] for a in axes] + [(0, 0), (0, 0)])
    stacked = stacked.reshape([d for a, s in zip(axes, strides) for d in (a["taps"], s)] + [in_features, out_features])
    stacked = jnp.flip(stacked, axis=tuple(range(1, 2 * n, 2)))  # Column r holds phase s - 1 - r.
    stacked = jnp.transpose(stacked, [*range(0, 2 * n, 2), 2 * n, *range(1, 2 * n, 2), 2 * n + 1])
    stacked = stacked.reshape([a["taps"] for a in axes] + [in_features, phases * out_features])

    out = lax.conv_general_dilated(
        inputs,
        stacked,
        window_strides=(1,) * n,
        padding=[a["input_pads"] for a in axes],
        dimension_numbers=_dimension_numbers(ndim),
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    # Depth-to-space: [batch, *m, (phase_1, ..., phase_n, out)] -> [batch, m_1·s_1, ..., out].
    batch = out.shape[0]
    out = out.reshape([batch] + [a["phase_length"] for a in axes] + list(strides) + [out_features])
    out = jnp.transpose(out, [0, *(i for d in range(1, n + 1) for i in (d, d + n)), 2 * n + 1])
    out = out.reshape([batch] + [a["phase_length"] * s for a, s in zip(axes, strides)] + [out_features])
    return out[(slice(None), *(slice(0, a["length"]) for a in axes))]


def _prepare_kernel(kernel: jax.Array, rhs_dilation: tuple[int, ...], transpose_kernel: bool) -> jax.Array:
    """The kernel that ``lax.conv_transpose`` correlates: flipped and swapped if asked, then dilated."""
    n = kernel.ndim - 2
    if transpose_kernel:
        kernel = jnp.swapaxes(jnp.flip(kernel, axis=tuple(range(n))), -1, -2)
    if any(d != 1 for d in rhs_dilation):
        zero = jnp.zeros((), kernel.dtype)
        kernel = lax.pad(kernel, zero, [(0, 0, d - 1) for d in rhs_dilation] + [(0, 0, 0)] * 2)
    return kernel


class _Options(NamedTuple):
    """``lax.conv_transpose``'s static arguments, as ``nn.ConvTranspose`` passes them."""

    strides: tuple[int, ...]
    padding: str | tuple[tuple[int, int], ...]
    rhs_dilation: tuple[int, ...]
    transpose_kernel: bool
    precision: lax.PrecisionLike
    preferred_element_type: object


def _conv_transpose(inputs: jax.Array, kernel: jax.Array, options: _Options) -> jax.Array:
    """``lax.conv_transpose`` exactly as ``nn.ConvTranspose`` calls it."""
    return lax.conv_transpose(
        inputs, kernel, options.strides, options.padding, rhs_dilation=options.rhs_dilation,
        transpose_kernel=options.transpose_kernel, precision=options.precision,
        preferred_element_type=options.preferred_element_type,
    )


def _subpixel(inputs: jax.Array, kernel: jax.Array, options: _Options) -> jax.Array:
    """The same function as :func:`_conv_transpose`, in the sub-pixel form."""
    n = len(options.strides)
    return subpixel_conv_transpose(
        inputs,
        _prepare_kernel(kernel, options.rhs_dilation, options.transpose_kernel),
        options.strides,
        _explicit_padding(options.padding, kernel.shape[:n], options.strides, options.rhs_dilation),
        precision=options.precision,
        preferred_element_type=options.preferred_element_type,
    )


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _conv_transpose_subpixel_kernel_derivative(inputs: jax.Array, kernel: jax.Array, options: _Options) -> jax.Array:
    """``lax.conv_transpose`` whose derivative in ``kernel`` runs in the sub-pixel form on CPU.

    The value is :func:`_conv_transpose`'s. The derivative ``T(dx, k) +
    T(x, dk)`` of the bilinear ``T`` computes ``T(dx, k)`` with this function
    again (its transpose, the input's cotangent, is a strided convolution)
    and ``T(x, dk)`` in the sub-pixel form when the program is lowered for
    CPU, ``conv_transpose``'s elsewhere. Both are the true derivative, so
    derivatives of every order are exact (where JAX inlines the rule's
    ``T(dx, k)`` into a linear function, the next order differentiates
    ``conv_transpose`` itself: exact, at its speed).
    """
    return _conv_transpose(inputs, kernel, options)


@functools.partial(_conv_transpose_subpixel_kernel_derivative.defjvp, symbolic_zeros=True)
def _conv_transpose_subpixel_kernel_derivative_jvp(options, primals, tangents):
    inputs, kernel = primals
    d_inputs, d_kernel = tangents
    out = _conv_transpose_subpixel_kernel_derivative(inputs, kernel, options)
    terms = []
    if not isinstance(d_inputs, jax.custom_derivatives.SymbolicZero):
        terms.append(_conv_transpose_subpixel_kernel_derivative(d_inputs, kernel, options))
    if not isinstance(d_kernel, jax.custom_derivatives.SymbolicZero):
        terms.append(lax.platform_dependent(
            inputs, d_kernel,
            cpu=functools.partial(_subpixel, options=options),
            default=functools.partial(_conv_transpose, options=options),
        ))
    return out, functools.reduce(jnp.add, terms)


def _broadcast(value: int | Sequence[int] | None, n: int) -> tuple[int, ...]:
    """A stride or dilation per spatial axis (``None`` is 1), as flax reads it."""
    if value is None:
        return (1,) * n
    return (value,) * n if isinstance(value, int) else tuple(value)


def _explicit_padding(padding, kernel_size: Sequence[int], strides: Sequence[int],
                      dilation: Sequence[int]) -> list[tuple[int, int]] | None:
    """``lax.conv_transpose``'s ``(lo, hi)`` padding of the dilated input per axis.

    ``None`` for a padding that ``conv_transpose`` does not resolve itself
    (flax's ``"CIRCULAR"``, which flax computes as ``"VALID"`` and wraps).
    """
    n = len(kernel_size)
    padding = canonicalize_padding(padding, n)
    if isinstance(padding, str):
        if padding not in ("SAME", "VALID"):
            return None
        padding = [padding] * n
    return [_transpose_padding((k - 1) * d + 1, s, p) for k, s, d, p in zip(kernel_size, strides, dilation, padding)]


def _subpixel_unsupported(layer: nn.ConvTranspose, inputs_shape: tuple[int, ...],
                          kernel_size: tuple[int, ...]) -> str | None:
    """Why the sub-pixel form cannot compute ``layer`` on these inputs, or ``None`` when it can."""
    n = len(kernel_size)
    if n not in (1, 2, 3):
        return f"{n} spatial axes (it covers 1 to 3)"
    strides, dilation = _broadcast(layer.strides, n), _broadcast(layer.kernel_dilation, n)
    pads = _explicit_padding(layer.padding, kernel_size, strides, dilation)
    if pads is None:
        return f"padding {layer.padding!r}"
    for size, k, s, d, (lo, hi) in zip(inputs_shape[-n - 1:-1], kernel_size, strides, dilation, pads):
        if size < 1 or s * (size - 1) + lo + hi - (k - 1) * d + 1 < 1:
            return f"an empty output (inputs {inputs_shape})"
    return None


# nn.ConvTranspose's own __call__ without flax's method wrapper: called from inside this
# subclass's compact __call__, it creates the parameters in the same scope, and method
# interceptors (nn.intercept_methods) see one call of the layer, not two.
_flax_conv_transpose = inspect.unwrap(nn.ConvTranspose.__call__)


class ConvTranspose(nn.ConvTranspose):
    """``flax.linen.ConvTranspose`` with a choice of how it is computed; the same function and parameters.

    A drop-in subclass: every attribute of ``nn.ConvTranspose`` means what it
    means there, the parameters (``kernel``, then ``bias``) have its names,
    shapes, layout and initial values, and the automatic module name is still
    ``ConvTranspose_<i>``. Only ``method`` is new:

    - ``"auto"`` (default): ``lax.conv_transpose`` for the value and the
      derivative in the inputs; the derivative in the kernel in the sub-pixel
      form when the program is lowered for CPU (where ``conv_transpose``'s
      kernel derivative is the slow part, see the module doc),
      ``conv_transpose``'s own on other backends (unmeasured here). The value
      is bitwise ``nn.ConvTranspose``'s.
    - ``"subpixel"``: everything through :func:`subpixel_conv_transpose` (one
      stride-1 convolution and depth-to-space), on every backend.
    - ``"transpose"``: exactly ``nn.ConvTranspose``.

    The sub-pixel form covers 1 to 3 spatial axes, any strides, ``"SAME"``,
    ``"VALID"`` and explicit padding, ``kernel_dilation``,
    ``transpose_kernel`` and ``mask``. For anything else (``"CIRCULAR"``
    padding, an empty output) ``"auto"`` computes ``nn.ConvTranspose`` as it
    is, and ``"subpixel"`` raises ``ValueError``.

    Attributes:
      method: ``"auto"``, ``"subpixel"`` or ``"transpose"``.
    """

    method: str = "auto"

    @nn.compact
    def __call__(self, inputs: ArrayLike) -> jax.Array:
        """Applies the transposed convolution.

        Args:
          inputs: ``[*batch, *spatial, in_features]`` (channels last), with
          any number of batch axes (none included), as ``nn.ConvTranspose``.

        Returns:
          ``nn.ConvTranspose``'s output, ``[*batch, *out_spatial, features]``.

        Raises:
          ValueError: for an unknown ``method``, inputs with fewer axes than
            the kernel's spatial axes plus features, or ``method="subpixel"``
            on a layer the sub-pixel form does not cover.
        """
        if self.method not in METHODS:
            raise ValueError(f"ConvTranspose method must be one of {METHODS}, got {self.method!r}.")
        kernel_size = (self.kernel_size,) if isinstance(self.kernel_size, int) else tuple(self.kernel_size)
        n = len(kernel_size)
        inputs = jnp.asarray(inputs)
        if inputs.ndim < n + 1:
            raise ValueError(
                f"ConvTranspose with kernel_size {kernel_size} takes inputs [*batch, {n} spatial axes,"
                f" features], at least {n + 1} axes; got shape {inputs.shape}."
            )
        unsupported = _subpixel_unsupported(self, inputs.shape, kernel_size)
        if unsupported is not None and self.method == "subpixel":
            raise ValueError(
                f"ConvTranspose(method='subpixel') does not cover {unsupported}; use method='auto' or 'transpose'."
            )
        if self.method == "transpose" or unsupported is not None:
            return _flax_conv_transpose(self, inputs)

        # Parameters exactly as nn.ConvTranspose creates them (names, shapes, order).
        batch_axes = inputs.ndim - (n + 1)
        batch_shape = inputs.shape[:batch_axes]
        if batch_axes != 1:
            inputs = jnp.reshape(inputs, (-1,) + inputs.shape[batch_axes:])
        in_features = inputs.shape[-1]
        kernel_shape = kernel_size + ((self.features, in_features) if self.transpose_kernel
                                      else (in_features, self.features))
        if self.mask is not None and self.mask.shape != kernel_shape:
            raise ValueError(
                "Mask needs to have the same shape as weights. "
                f"Shapes are: {self.mask.shape}, {kernel_shape}"
            )
        kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
        if self.mask is not None:
            kernel *= self.mask
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)

        padding = canonicalize_padding(self.padding, n)  # As nn.ConvTranspose passes it on.
        options = _Options(
            strides=_broadcast(self.strides, n),
            padding=padding if isinstance(padding, str) else tuple(tuple(p) for p in padding),
            rhs_dilation=_broadcast(self.kernel_dilation, n),
            transpose_kernel=self.transpose_kernel,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
        )
        if self.method == "subpixel":
            y = _subpixel(inputs, kernel, options)
        else:
            y = _conv_transpose_subpixel_kernel_derivative(inputs, kernel, options)
        if bias is not None:
            y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
        if batch_axes != 1:
            y = jnp.reshape(y, batch_shape + y.shape[1:])
        return y
