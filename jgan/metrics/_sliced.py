"""The sliced Wasserstein distance: 1-D optimal transport along random directions."""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jgan import _validate

_HIGHEST = jax.lax.Precision.HIGHEST


def _check_weights(w: Any, size: int, name: str, points: str) -> jax.Array:
    w = jnp.asarray(w)
    _validate.check_real_dtype(w, name)
    if w.shape != (size,):
        raise ValueError(
            f"{name} must have shape [{size}] (one weight per point of {points}), got {w.shape}."
        )
    if isinstance(w, jax.core.Tracer):
        return w  # traced: checked only in eager calls
    values = np.asarray(w, np.float64)
    if not np.all(np.isfinite(values)) or np.min(values) < 0:
        raise ValueError(f"{name} must be finite and non-negative, got min {np.min(values)}.")
    total = float(np.sum(values))
    if abs(total - 1.0) > 1e-5:
        raise ValueError(f"{name} must sum to 1, got {total}.")
    return w


def sliced_wasserstein_projections(
    key: jax.Array,
    dim: int,
    *,
    num_projections: int = 50,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """The random directions of ``sliced_wasserstein``: unit vectors, one per column.

    Standard normal vectors are drawn in float32 (so a key gives the same
    directions whatever the data's dtype), cast to ``dtype`` and normalised
    to unit length there: uniform on the sphere, as POT's
    ``get_random_projections``. The layout ``[dim, num_projections]`` is
    POT's, so the result can be passed as ``projections=`` to
    ``ot.sliced_wasserstein_distance``; ``sliced_wasserstein(..., key=key,
    num_projections=P)`` uses exactly
    ``sliced_wasserstein_projections(key, d, num_projections=P, dtype=...)``
    with the data's float dtype (at least float32).

    Args:
      key: a ``jax.random`` key.
      dim: the dimension ``d`` of the data, an int ``>= 1``.
      num_projections: the number of directions ``P``, an int ``>= 1``.
      dtype: a float dtype for the result.

    Returns:
      ``[dim, num_projections]`` of ``dtype``, columns of unit norm.

    Raises:
      TypeError: if ``key`` is not a PRNG key, ``dim`` or ``num_projections``
        is not an int, or ``dtype`` is not a float dtype.
      ValueError: if ``dim`` or ``num_projections`` is below 1.
    """
    _validate.check_key(key)
    dim = _validate.check_int(dim, "dim", minimum=1, static=True)
    num_projections = _validate.check_int(
        num_projections, "num_projections", minimum=1, static=True
    )
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a float dtype, got {dtype}.")
    return _projections(key, dim, num_projections, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _projections(key, dim, num_projections, dtype):
    directions = jax.random.normal(key, (dim, num_projections), jnp.float32).astype(dtype)
    return directions / jnp.sqrt(jnp.sum(jnp.square(directions), axis=0, keepdims=True))


def sliced_wasserstein(
    x: jax.typing.ArrayLike,
    y: jax.typing.ArrayLike,
    *,
    key: jax.Array,
    num_projections: int = 50,
    p: jax.typing.ArrayLike = 2,
    a: jax.typing.ArrayLike | None = None,
    b: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """The Monte-Carlo sliced p-Wasserstein distance, in POT's convention.

        SW_p(mu, nu) = ( (1/P) sum_l W_p^p(theta_l # mu, theta_l # nu) )^(1/p),

    ``theta_l`` the ``P`` unit directions ``sliced_wasserstein_projections(key,
    d, num_projections=P)`` and ``theta # mu`` the projection of the weighted
    point cloud onto the line. Each 1-D ``W_p^p`` is exact, computed from
    sorted projections as the integral of ``|F^-1(q) - G^-1(q)|^p`` over
    ``q`` in ``[0, 1]``, the quantile functions ``F^-1``, ``G^-1`` being
    step functions of the cumulative weights: the same value, step for step,
    as POT's ``ot.sliced_wasserstein_distance`` (``ot.lp.wasserstein_1d``)
    given the same projections. Points may be weighted, and ``n != m``.

    Memory is O((n + m) · P) and time O((n + m) · (d + log(n + m)) · P).
    Differentiable with respect to ``x`` and ``y`` (through the sort); the
    gradient of the 1/p-th power is infinite where the distance is 0 (use
    ``SW_p^p`` as a loss there). Works under ``jax.jit`` with
    ``num_projections`` static; ``p``, ``a`` and ``b`` may be traced.

    NaN or inf in ``x`` or ``y`` is an error in eager calls; under
    ``jax.jit`` the result is NaN.

    Args:
      x: points of the first measure, ``[n, d]``.
      y: points of the second measure, ``[m, d]``.
      key: a ``jax.random`` key for the directions (required: the value is a
        Monte-Carlo estimate, reproducible only with the key).
      num_projections: the number of directions ``P``, an int ``>= 1``
        (POT's default, 50).
      p: the order, a real scalar ``>= 1`` (checked when concrete).
      a: weights of ``x``, ``[n]``, non-negative, summing to 1; uniform when
        None.
      b: weights of ``y``, ``[m]``, non-negative, summing to 1; uniform when
        None.

    Returns:
      A float scalar, ``>= 0``.

    Raises:
      ValueError: on shapes other than ``[n, d]`` / ``[m, d]`` with the same
        ``d >= 1`` and ``n, m >= 1``; complex inputs; ``num_projections <
        1``; a concrete ``p`` below 1 or not finite; weights of the wrong
        shape or (concrete) negative, not finite or not summing to 1; NaN or
        inf in ``x`` or ``y`` (eager calls).
      TypeError: if ``key`` is not a PRNG key, ``num_projections`` not an
        int, or ``p`` not a real number.

    References:
      Bonneel et al., "Sliced and Radon Wasserstein Barycenters of Measures",
      JMIV 51, 2015, sec. 2 (the sliced Wasserstein distance).
      Peyré and Cuturi, "Computational Optimal Transport", 2019, Remark 2.30
      (1-D optimal transport by quantile functions).
      Flamary et al., "POT: Python Optimal Transport", JMLR 22, 2021
      (``ot.sliced_wasserstein_distance``, the convention followed).
    """
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    for name, points, rows in (("x", x, "n"), ("y", y, "m")):
        _validate.check_real_dtype(points, name)
        if points.ndim != 2:
            raise ValueError(f"{name} must be [{rows}, d], got shape {points.shape}.")
        if points.shape[0] < 1 or points.shape[1] < 1:
            raise ValueError(
                f"{name} must hold at least one point of dimension d >= 1, "
                f"got shape {points.shape}."
            )
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same dimension d, got x {x.shape} and y {y.shape}."
        )
    _validate.check_key(key)
    num_projections = _validate.check_int(
        num_projections, "num_projections", minimum=1, static=True
    )
    p_value = _validate.check_real_scalar(p, "p")
    if p_value is not None and p_value < 1:
        raise ValueError(f"p must be >= 1 (W_p is a distance only for p >= 1), got {p_value}.")
    n, m = x.shape[0], y.shape[0]
    if a is not None:
        a = _check_weights(a, n, "a", "x")
    if b is not None:
        b = _check_weights(b, m, "b", "y")
    _validate.check_finite_array(x, "x")
    _validate.check_finite_array(y, "y")
    dtype = jnp.promote_types(
        jnp.result_type(*[v for v in (x, y, a, b) if v is not None]), jnp.float32
    )
    a = jnp.full((n,), 1.0 / n, dtype) if a is None else a.astype(dtype)
    b = jnp.full((m,), 1.0 / m, dtype) if b is None else b.astype(dtype)
    projections = _projections(key, x.shape[1], num_projections, jnp.dtype(dtype))
    return _sliced_wasserstein(
        x.astype(dtype), y.astype(dtype), a, b, projections, jnp.asarray(p, dtype)
    )


def _quantiles(values, cumulative, levels):
    """The quantile function of a sorted weighted 1-D sample at ``levels``.

    ``values`` ``[n]`` sorted, ``cumulative`` their cumulative weights:
    the first value whose cumulative weight is ``>= q`` (``searchsorted``,
    left), the last one past the end, as POT's ``quantile_function``.
    """
    index = jnp.searchsorted(cumulative, levels, side="left")
    return values[jnp.clip(index, 0, values.shape[0] - 1)]


@jax.jit
def _sliced_wasserstein(x, y, a, b, projections, p):
    """``SW_p`` on validated inputs of one dtype; ``projections`` ``[d, P]``."""
    u = jnp.matmul(x, projections, precision=_HIGHEST)  # [n, P]
    v = jnp.matmul(y, projections, precision=_HIGHEST)  # [m, P]

    def wasserstein_1d_p(u_values, v_values):
        """``W_p^p`` between ``(u_values, a)`` and ``(v_values, b)`` on the line."""
        u_order = jnp.argsort(u_values)
        v_order = jnp.argsort(v_values)
        u_sorted, v_sorted = u_values[u_order], v_values[v_order]
        u_cumulative = jnp.cumsum(a[u_order])
        v_cumulative = jnp.cumsum(b[v_order])
        levels = jnp.sort(jnp.concatenate([u_cumulative, v_cumulative]))  # [n + m]
        steps = jnp.diff(levels, prepend=jnp.zeros((1,), levels.dtype))
        gaps = jnp.abs(
            _quantiles(u_sorted, u_cumulative, levels) - _quantiles(v_sorted, v_cumulative, levels)
        )
        return jnp.sum(steps * gaps**p)

    per_direction = jax.vmap(wasserstein_1d_p, in_axes=(1, 1))(u, v)  # [P]
    return jnp.mean(per_direction) ** (1 / p)
