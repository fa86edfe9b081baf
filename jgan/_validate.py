"""Argument validators shared by every jgan module (the bottom layer).

Each raises a clear error that names the argument and what it got, and
returns the value normalised (a Python ``int`` or ``float``). Checks of
values that may be traced (``positive_scalar``) pass silently under
``jax.jit`` where the value is not concrete.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_int",
    "check_bool",
    "check_nonnegative",
    "check_positive",
    "check_in_range",
    "check_instance",
    "check_callable",
    "check_optimizer",
    "concrete_float",
    "check_real_scalar",
    "check_positive_scalar",
    "check_nonnegative_scalar",
    "check_real_dtype",
    "check_path",
    "check_finite_array",
    "check_mapped_axis",
]


def check_int(value: Any, name: str, *, minimum: int | None = None, static: bool = False) -> int:
    """``value`` as a Python int, or a ``TypeError``/``ValueError`` naming ``name``.

    Args:
      value: a Python or numpy integer (``bool`` is refused).
      name: the argument's name, for the message.
      minimum: the smallest allowed value, if any.
      static: say in the message that the value fixes a shape or a program
        (so a traced value cannot stand in for it).
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        hint = (
            " (it is static: it fixes an array shape or a program; under jax.jit"
            " bind it with functools.partial or static_argnames)"
            if static
            else ""
        )
        raise TypeError(
            f"{name} must be a Python int{hint}, got {type(value).__name__} {value!r}."
        )
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


def check_bool(value: Any, name: str, *, optional: bool = False) -> bool | None:
    """``value`` if it is a ``bool`` (numpy's included); a ``TypeError`` naming ``name`` if not.

    A string such as ``"False"`` or a number is refused: both would switch an
    option on by truthiness. With ``optional``, ``None`` is allowed too (and
    returned as is).
    """
    if optional and value is None:
        return None
    if not isinstance(value, (bool, np.bool_)):
        allowed = "a bool or None (True, False or None)" if optional else "a bool (True or False)"
        raise TypeError(f"{name} must be {allowed}, got {type(value).__name__} {value!r}.")
    return bool(value)


def _as_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}.")
    return float(value)


def check_nonnegative(value: Any, name: str) -> float:
    """``value`` as a float if it is finite and >= 0; a clear error if not."""
    v = _as_float(value, name)
    if not (math.isfinite(v) and v >= 0):  # Also rejects NaN.
        raise ValueError(f"{name} must be >= 0 and finite, got {value}.")
    return v


def check_positive(value: Any, name: str) -> float:
    """``value`` as a float if it is finite and > 0; a clear error if not."""
    v = _as_float(value, name)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be > 0 and finite, got {value}.")
    return v


def check_in_range(value: Any, name: str, low: float, high: float, *, closed_high: bool = False) -> float:
    """``value`` as a float if ``low <= value < high`` (``<= high`` if ``closed_high``)."""
    v = _as_float(value, name)
    inside = low <= v <= high if closed_high else low <= v < high
    if not inside:
        bracket = "]" if closed_high else ")"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {value}.")
    return v


def check_instance(value: Any, name: str, types: type | tuple[type, ...], what: str) -> Any:
    """``value`` if it is an instance of ``types``; else a ``TypeError`` saying ``what`` is expected."""
    if not isinstance(value, types):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r}.")
    return value


def check_callable(value: Any, name: str, signature: str) -> Any:
    """``value`` if it is callable; else a ``TypeError`` showing the expected ``signature``."""
    if not callable(value):
        raise TypeError(f"{name} must be a callable {signature}, got {type(value).__name__} {value!r}.")
    return value


def check_optimizer(value: Any, name: str) -> Any:
    """``value`` if it is an ``optax.GradientTransformation``; a ``TypeError`` naming ``name`` if not."""
    import optax  # A core dependency; imported here to keep this module's import light.

    if not isinstance(value, optax.GradientTransformation):
        raise TypeError(
            f"{name} must be an optax.GradientTransformation (e.g. optax.adam(1e-4)),"
            f" got {type(value).__name__} {value!r}."
        )
    return value


def concrete_float(value: Any) -> float | None:
    """``value`` as a float when it is concrete, ``None`` when it is traced."""
    try:
        return float(value)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def _is_real_number_type(value: Any) -> bool:
    """Whether ``value`` is a real number or an array (traced or not) of real numbers, by type alone."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, numbers.Real):  # Python and numpy ints and floats (not complex).
        return True
    dtype = getattr(value, "dtype", None)  # numpy and jax arrays, tracers
    if dtype is None:
        return False
    try:
        return bool(jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating))
    except TypeError:  # Not a dtype at all.
        return False


def _check_real_scalar_type(value: Any, name: str) -> None:
    """A ``TypeError`` if ``value`` is not a real number or array; a ``ValueError`` if it is not 0-d."""
    if not _is_real_number_type(value):
        what = f"dtype {value.dtype}" if hasattr(value, "dtype") else f"{type(value).__name__} {value!r}"
        raise TypeError(
            f"{name} must be a real number (a Python or numpy int or float, or a 0-d array), got {what}."
        )
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {np.shape(value)}.")


def check_real_scalar(value: Any, name: str) -> float | None:
    """A real scalar, finite when concrete: its value as a float, or ``None`` when it is traced.

    Python and numpy ints and floats and 0-d integer or floating arrays are
    accepted; a traced value passes (its value cannot be inspected, its
    dtype is checked). ``bool`` (``True`` would silently mean 1.0), strings
    (``"0.5"``), ``None`` and complex values raise a ``TypeError`` naming
    ``name``; an array that is not 0-d a ``ValueError``.
    """
    _check_real_scalar_type(value, name)
    v = concrete_float(value)
    if v is not None and not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}.")
    return v


def check_positive_scalar(value: Any, name: str) -> None:
    """A real scalar that is finite and > 0 when concrete (a traced one passes).

    Types are accepted and refused as by ``check_real_scalar``.
    """
    _check_real_scalar_type(value, name)
    v = concrete_float(value)
    if v is not None and not (math.isfinite(v) and v > 0):  # Also rejects NaN.
        raise ValueError(f"{name} must be finite and > 0, got {v}.")


def check_nonnegative_scalar(value: Any, name: str) -> None:
    """A real scalar that is finite and >= 0 when concrete (a traced one passes).

    Types are accepted and refused as by ``check_real_scalar``.
    """
    _check_real_scalar_type(value, name)
    v = concrete_float(value)
    if v is not None and not (math.isfinite(v) and v >= 0):  # Also rejects NaN.
        raise ValueError(f"{name} must be finite and >= 0, got {v}.")


def check_real_dtype(value: Any, name: str) -> None:
    """Raises a ``ValueError`` naming ``name`` if the array ``value`` holds complex numbers.

    Integer, boolean and floating arrays pass (the metrics promote them to a
    float dtype); a complex one has no meaningful real value to measure.
    """
    dtype = jnp.result_type(value)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise ValueError(f"{name} must be real, got dtype {dtype}.")


def check_path(value: Any, name: str) -> str:
    """``value`` as a ``str`` path if it is a ``str`` or ``os.PathLike``; a ``TypeError`` naming ``name`` if not."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise TypeError(
            f"{name} must be a path (str or os.PathLike), got {type(value).__name__} {value!r}."
        )
    return value


def check_finite_array(value: Any, name: str, *, where: Any = None) -> None:
    """Raises a ``ValueError`` naming ``name`` if a concrete array holds NaN or inf.

    For the eager use of metrics: a NaN or inf input has no meaningful value
    to report. A traced ``value`` (under ``jax.jit``, ``vmap``, ``grad``)
    cannot be inspected, so the check passes silently and non-finite values
    propagate into the result as the caller's function defines.

    Args:
      value: an array (jax, numpy or nested lists); integer and boolean
        arrays are always finite.
      name: the argument's name, for the message.
      where: optional booleans broadcastable to ``value``; only the entries
        where it is true are checked (e.g. the rows a mask keeps, whose
        padding may hold anything).
    """
    if isinstance(value, jax.core.Tracer) or isinstance(where, jax.core.Tracer):
        return
    if isinstance(value, jax.Array):
        if not jnp.issubdtype(value.dtype, jnp.inexact):
            return
        # A concrete array captured by a function being traced (a closure
        # constant under jax.jit) is checked now, not staged into the trace.
        with jax.ensure_compile_time_eval():
            finite = jnp.isfinite(value)
            if where is not None:
                finite = finite | ~jnp.asarray(where, bool)
            all_finite = bool(jnp.all(finite))  # One reduction on the device; no copy unless it fails.
        if all_finite:
            return
        if not value.is_fully_addressable:  # Sharded across hosts: no local copy to search.
            raise ValueError(
                f"{name} holds non-finite values (NaN or inf): there is nothing meaningful to "
                "measure. (Checked in eager calls only: under jax.jit non-finite values propagate.)"
            )
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.inexact):
        return
    bad = ~np.isfinite(array)
    if where is not None:
        bad &= np.broadcast_to(np.asarray(where, bool), bad.shape)
    count = int(np.count_nonzero(bad))
    if count == 0:
        return
    nan = int(np.count_nonzero(bad & np.isnan(array)))
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    raise ValueError(
        f"{name} holds {count} non-finite value{'s' if count > 1 else ''} ({nan} NaN, "
        f"{count - nan} inf; the first at index {first}): there is nothing meaningful to "
        "measure. (Checked in eager calls only: under jax.jit non-finite values propagate.)"
    )


def check_key(key: Any, name: str = "key") -> None:
    """A ``TypeError`` naming ``name`` unless ``key`` is a PRNG key (typed, or a raw ``uint32[2]``)."""
    typed = isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    raw = isinstance(key, (jax.Array, np.ndarray)) and key.shape == (2,) and key.dtype == jnp.uint32
    if not (typed or raw):
        raise TypeError(
            f"{name} must be a PRNG key (jax.random.key(seed)), got {type(key).__name__}"
            f" {getattr(key, 'dtype', '')} {getattr(key, 'shape', '')}."
        )


def check_mapped_axis(axis_name: str | None, what: str) -> None:
    """A ``ValueError`` unless ``axis_name`` is ``None`` or a mapped axis bound where ``what`` is traced.

    A step built with ``axis_name`` averages over that axis of ``jax.shard_map``
    or ``jax.pmap``; traced anywhere else (plain ``jax.jit``, an eager call, a
    mesh whose axis is named otherwise) its first collective would fail deep
    inside with ``NameError: unbound axis name``.
    """
    if axis_name is None:
        return
    try:
        jax.lax.axis_size(axis_name)
    except NameError:
        mapped = tuple(jax.sharding.get_abstract_mesh().manual_axes)
        where = f"the mapped axes here are {mapped}" if mapped else "no axis is mapped here"
        raise ValueError(
            f"{what} was built with axis_name={axis_name!r}, but it runs outside a mapped axis of"
            f" that name ({where}): map it with jax.shard_map over a mesh axis named {axis_name!r}"
            f" or jax.pmap(..., axis_name={axis_name!r}), or build it with axis_name=None to run"
            " it under jax.jit on sharded inputs."
        ) from None
