"""Mixtures of isotropic Gaussians in 2-D: the ring and the grid.

These are the synthetic targets of the mode-collapse literature. Each sample
picks one of ``M`` modes uniformly at random and adds isotropic Gaussian noise
of standard deviation ``std`` around that mode's centre.

The number of samples ``n`` and the number of modes (``modes``, ``side``)
decide array shapes, so they are static Python ints: under ``jax.jit`` mark
them static (``static_argnames=("n", "modes")``) or bind them with
``functools.partial``. ``radius``, ``spacing`` and ``std`` may be traced.

References:
  Metz et al., "Unrolled Generative Adversarial Networks", ICLR 2017, sec. 3.1
  (ring: 8 modes, radius 2, std 0.02).
  Srivastava et al., "VEEGAN", NeurIPS 2017, sec. 5.1, and Lin et al.,
  "PacGAN", NeurIPS 2018, sec. 4.1 (ring: 8 modes, radius 1, std 0.01;
  grid: 25 modes on {-4, -2, 0, 2, 4}^2, std 0.05).
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jgan import _validate


class MixtureSpec(NamedTuple):
    """A uniform mixture of isotropic Gaussians.

    Attributes:
      name: the preset this spec was built from (``"ring"``, ``"grid"``, ...).
      centers: the mode centres, ``[modes, 2]``.
      std: the standard deviation of every mode (isotropic), a float.
    """

    name: str
    centers: jax.Array  # [modes, 2]
    std: float


# ---------------------------------------------------------------------------
# Centres.


def _scale(unit: np.ndarray, scale: Any, dtype: Any) -> jax.Array:
    """``unit * scale`` in ``dtype``; in float64 numpy when ``scale`` is concrete."""
    value = _validate.concrete_float(scale)
    if value is None:  # traced
        return jnp.asarray(unit, dtype) * jnp.asarray(scale, dtype)
    return jnp.asarray(unit * value, dtype)


def ring_centers(
    *, modes: int = 8, radius: float = 2.0, dtype: Any = jnp.float32
) -> jax.Array:
    """The centres of a ring of ``modes`` Gaussians.

    Centre ``i`` sits at angle ``2 pi i / modes`` for ``i < modes``: the first
    is ``(radius, 0)`` and there is no duplicate at ``2 pi``.

    Args:
      modes: the number of modes, a static int ``>= 1``.
      radius: the radius of the ring, ``> 0``.
      dtype: the floating dtype of the result.

    Returns:
      The centres, ``[modes, 2]``.
    """
    modes = _validate.check_int(modes, "modes", minimum=1, static=True)
    _validate.check_positive_scalar(radius, "radius")
    angles = 2.0 * np.pi * np.arange(modes) / modes  # float64, exact as numpy's
    unit = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    return _scale(unit, radius, dtype)


def grid_centers(
    *, side: int = 5, spacing: float = 2.0, dtype: Any = jnp.float32
) -> jax.Array:
    """The centres of a ``side x side`` grid of Gaussians centred on the origin.

    The coordinates along each axis are ``(k - (side - 1) / 2) * spacing`` for
    ``k < side`` ({-4, -2, 0, 2, 4} for the defaults). Centre ``side * i + j``
    is ``(c_i, c_j)`` (``numpy.meshgrid(c, c, indexing="ij")`` order).

    Args:
      side: the number of modes along each axis, a static int ``>= 1``.
      spacing: the distance between neighbouring centres, ``> 0``.
      dtype: the floating dtype of the result.

    Returns:
      The centres, ``[side**2, 2]``.
    """
    side = _validate.check_int(side, "side", minimum=1, static=True)
    _validate.check_positive_scalar(spacing, "spacing")
    coords = np.arange(side) - (side - 1) / 2.0
    xx, yy = np.meshgrid(coords, coords, indexing="ij")
    unit = np.stack([xx.ravel(), yy.ravel()], axis=-1)
    return _scale(unit, spacing, dtype)


# ---------------------------------------------------------------------------
# Sampling.


def _sample_from_centers(
    key: jax.Array, n: int, centers: jax.Array, std: Any
) -> jax.Array:
    """``n`` draws from the uniform mixture of ``N(centers[m], std^2 I)``."""
    n = _validate.check_int(n, "n", minimum=1, static=True)
    _validate.check_nonnegative_scalar(std, "std")
    centers = jnp.asarray(centers)
    if centers.ndim != 2 or centers.shape[0] < 1:
        raise ValueError(f"centers must be [modes, dim], got {centers.shape}.")
    return _sample(key, n, centers, jnp.asarray(std, centers.dtype))


# Compiled once per (n, centres shape), so eager calls cost one dispatch;
# inlined when the caller is itself under jax.jit.
@functools.partial(jax.jit, static_argnames="n")
def _sample(key: jax.Array, n: int, centers: jax.Array, std: jax.Array):
    mode_key, noise_key = jax.random.split(key)
    assignment = jax.random.randint(mode_key, (n,), 0, centers.shape[0])
    noise = jax.random.normal(noise_key, (n, centers.shape[1]), centers.dtype)
    return centers[assignment] + std * noise  # [n, dim]


def ring(
    key: jax.Array,
    n: int,
    *,
    modes: int = 8,
    radius: float = 2.0,
    std: float = 0.02,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """Samples a ring of ``modes`` equally weighted isotropic Gaussians.

    Args:
      key: a PRNG key.
      n: the number of samples, a static int ``>= 1``.
      modes: the number of modes, a static int ``>= 1`` (see ``ring_centers``).
      radius: the radius of the ring, ``> 0``.
      std: the standard deviation of each mode, ``>= 0``.
      dtype: the floating dtype of the samples.

    Returns:
      The samples, ``[n, 2]``.

    References:
      Metz et al. 2017 (radius 2, std 0.02); VEEGAN / PacGAN (radius 1, std 0.01).
    """
    centers = ring_centers(modes=modes, radius=radius, dtype=dtype)
    return _sample_from_centers(key, n, centers, std)


def grid(
    key: jax.Array,
    n: int,
    *,
    side: int = 5,
    spacing: float = 2.0,
    std: float = 0.05,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """Samples a ``side x side`` grid of equally weighted isotropic Gaussians.

    Args:
      key: a PRNG key.
      n: the number of samples, a static int ``>= 1``.
      side: the number of modes along each axis, a static int ``>= 1``.
      spacing: the distance between neighbouring centres, ``> 0``.
      std: the standard deviation of each mode, ``>= 0``.
      dtype: the floating dtype of the samples.

    Returns:
      The samples, ``[n, 2]``.

    References:
      VEEGAN / PacGAN: 25 modes on {-4, -2, 0, 2, 4}^2, std 0.05.
    """
    centers = grid_centers(side=side, spacing=spacing, dtype=dtype)
    return _sample_from_centers(key, n, centers, std)


# ---------------------------------------------------------------------------
# Named presets.

_PRESETS = {
    "ring": (ring_centers, {"modes": 8, "radius": 2.0}, 0.02),
    "ring_pacgan": (ring_centers, {"modes": 8, "radius": 1.0}, 0.01),
    "grid": (grid_centers, {"side": 5, "spacing": 2.0}, 0.05),
}


def mixture(name: str, **overrides: Any) -> MixtureSpec:
    """Builds a named mixture of Gaussians, optionally overriding its settings.

    Presets: ``"ring"`` (Metz et al.: 8 modes, radius 2, std 0.02),
    ``"ring_pacgan"`` (VEEGAN / PacGAN: 8 modes, radius 1, std 0.01) and
    ``"grid"`` (25 modes on {-4, -2, 0, 2, 4}^2, std 0.05).

    Args:
      name: the preset.
      **overrides: ``std`` and the keyword arguments of ``ring_centers``
        (``modes``, ``radius``, ``dtype``) or ``grid_centers`` (``side``,
        ``spacing``, ``dtype``), e.g. ``mixture("ring", modes=16)``.

    Returns:
      A ``MixtureSpec`` to pass to ``sample_mixture`` and ``mode_coverage``.

    Raises:
      ValueError: for an unknown ``name`` (the message lists the known ones) or
        an unknown override.
    """
    if name not in _PRESETS:
        raise ValueError(
            f"unknown mixture {name!r}; known mixtures: {sorted(_PRESETS)}."
        )
    centers_fn, defaults, std = _PRESETS[name]
    kwargs = dict(defaults, dtype=jnp.float32)
    std = overrides.pop("std", std)
    unknown = sorted(set(overrides) - set(kwargs))
    if unknown:
        raise ValueError(
            f"unknown settings {unknown} for mixture {name!r}; allowed: "
            f"{sorted(set(kwargs) | {'std'})}."
        )
    kwargs.update(overrides)
    _validate.check_nonnegative_scalar(std, "std")
    return MixtureSpec(name=name, centers=centers_fn(**kwargs), std=std)


def sample_mixture(key: jax.Array, n: int, spec: MixtureSpec) -> jax.Array:
    """Samples the uniform mixture described by ``spec``.

    Under ``jax.jit`` bind ``n`` and ``spec`` with ``functools.partial`` (the
    spec holds a string, so it cannot be a traced argument).

    Args:
      key: a PRNG key.
      n: the number of samples, a static int ``>= 1``.
      spec: a ``MixtureSpec`` (see ``mixture``).

    Returns:
      The samples, ``[n, dim]`` in the dtype of ``spec.centers``.

    Raises:
      TypeError: if ``spec`` is not a ``MixtureSpec`` (a preset's name is
        refused: build it with ``mixture(name)``).
    """
    if not isinstance(spec, MixtureSpec):
        hint = f" (build it with jgan.data.mixture({spec!r}))" if isinstance(spec, str) else ""
        raise TypeError(
            f"spec must be a MixtureSpec{hint}, got {type(spec).__name__} {spec!r}."
        )
    return _sample_from_centers(key, n, spec.centers, spec.std)
