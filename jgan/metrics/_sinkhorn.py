"""Entropic optimal transport by log-domain Sinkhorn iterations."""

import dataclasses
import functools
import math
import warnings
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jgan import _validate
from jgan.metrics import _ot_costs
from jgan.metrics._ot_costs import Matrix, Points

_COSTS = ("sqeuclidean", "euclidean")

# The convergence loops stop at a marginal error <= _STOP * threshold, as
# estimated inside the loop (from the next update, at no extra pass). The
# error reported is recomputed from the returned plan, whose rounding differs
# (in float32, ~1e-6 of the mass, more when C / epsilon is large): the margin
# keeps a loop that stopped from reporting a hair over the threshold.
_STOP = 0.9


class SinkhornNotConverged(UserWarning):
    """Warned by an eager ``sinkhorn`` / ``sinkhorn_divergence`` that did not converge.

    Under ``jax.jit`` (or ``vmap``, or any other trace) no warning can be
    raised: check the ``converged`` field of the output. Silence it with
    ``warnings.filterwarnings("ignore", category=SinkhornNotConverged)``.
    """


@dataclasses.dataclass(frozen=True)
class EpsilonScaling:
    """Epsilon-scaling (annealing) for the convergence mode of ``sinkhorn``.

    The iterations start at a large epsilon, ``initial``, where the plan is
    spread out and Sinkhorn converges in a few iterations, and run at each
    of ``initial, initial * decay, initial * decay^2, ...`` (while larger
    than ``epsilon``) until the marginal error is at most
    ``max(threshold, sinkhorn's threshold)`` there, then at ``epsilon``
    until it is at most ``sinkhorn``'s ``threshold``: each scale
    warm-starts the next, so mass that must travel far is already in place
    when epsilon is small. Once half of ``max_iterations`` is spent, the
    iterations move straight to ``epsilon``. The result is the same fixed
    point (and the same implicit gradient) as without scaling.

    Attributes:
      decay: the ratio of two successive epsilons, in ``(0, 1)``; GeomLoss's
        default (its ``scaling = 0.5`` of the blur ``epsilon^(1/2)``).
      initial: the first epsilon, ``> 0``; None: the range
        ``max c - min c`` of the cost matrix once its separable part is
        removed (see ``sinkhorn``), the scale at which the plan is nearly
        uniform (GeomLoss starts at the squared diameter of the clouds).
      threshold: the marginal error at which an intermediate epsilon hands
        over to the next, ``> 0`` (a warm start need not be converged
        tightly; ``sinkhorn``'s ``threshold`` when that is larger).

    References:
      Kosowsky and Yuille, "The invisible hand algorithm: solving the
      assignment problem with statistical physics", Neural Networks 1994.
      Schmitzer, "Stabilized sparse scaling algorithms for entropy
      regularized transport problems", SIAM J. Sci. Comput. 2019, sec. 3.2.
      Feydy, "Geometric data analysis, beyond convolutions", PhD thesis,
      2020, sec. 3.3 (GeomLoss's schedule).
    """

    decay: float = 0.25
    initial: Optional[float] = None
    threshold: float = 1e-3

    def __post_init__(self):
        decay = _validate.check_in_range(self.decay, "EpsilonScaling decay", 0.0, 1.0)
        if decay == 0.0:
            raise ValueError(f"EpsilonScaling decay must be in (0, 1), got {self.decay}.")
        object.__setattr__(self, "decay", decay)
        if self.initial is not None:
            object.__setattr__(
                self, "initial", _validate.check_positive(self.initial, "EpsilonScaling initial")
            )
        object.__setattr__(
            self, "threshold", _validate.check_positive(self.threshold, "EpsilonScaling threshold")
        )


@dataclasses.dataclass(frozen=True)
class Overrelaxation:
    """Adaptive over-relaxation of the updates of ``sinkhorn``'s convergence mode.

    Each update ``g <- G(f)`` becomes ``g <- g + omega (G(f) - g)`` (and
    likewise ``f``), in the log domain. ``omega`` starts at 1 (plain
    Sinkhorn) at each epsilon; once two consecutive blocks of
    ``inner_iterations`` plain iterations have shrunk the marginal error by
    a factor ``rho`` per iteration, ``omega = 2 / (1 + sqrt(1 - rho))``
    (Lehmann et al.'s rule: the best relaxation of an iteration whose
    linear rate is ``rho``), at most ``max_omega``. A relaxed block that
    does not reduce the error sets ``omega`` back to 1 and the rate is
    estimated again: far from the solution relaxation need not converge.
    The last ``f`` update of each block is plain, so the row marginal is
    exact and the error checked is that of the plan returned. Slow
    problems (clustered data at a small epsilon: thousands of iterations)
    take several times fewer iterations; fast ones are unchanged (``rho``
    small gives ``omega`` near 1).

    Attributes:
      max_omega: the largest relaxation, in ``[1, 2)``.

    References:
      Thibault, Chizat, Dossal and Papadakis, "Overrelaxed Sinkhorn-Knopp
      algorithm for regularized optimal transport", Algorithms 2021.
      Lehmann, von Renesse, Sambale and Uschmajew, "A note on
      overrelaxation in the Sinkhorn algorithm", Optimization Letters 2022.
    """

    max_omega: float = 1.9

    def __post_init__(self):
        object.__setattr__(
            self, "max_omega",
            _validate.check_in_range(self.max_omega, "Overrelaxation max_omega", 1.0, 2.0),
        )


@dataclasses.dataclass(frozen=True)
class Online:
    """Never store the ``[n, m]`` cost matrix: recompute it from the points at every pass.

    Each pass over the cost (a Sinkhorn half-iteration, a marginal, a
    plan-vector product of the implicit gradient) recomputes it in blocks of
    rows, each block about ``block_bytes`` large, and keeps only vectors
    between blocks: memory is ``O((n + m) d + block_bytes)``, never
    ``O(n m)``, so clouds of 50,000 points or more (a 10 GB matrix in
    float32) fit on a laptop. Each pass then costs the ground cost (``d``
    operations per entry) on top of its exponential, and the log-sum-exps
    are the exact two-pass ones (each block stabilised by its own maximum).
    Gradients need no stored matrix either: in the convergence mode
    implicit differentiation through blocked plan-vector products (5 MiB of
    temporaries at n = 2,048, m = 8,192, where the matrix takes 64 MiB), in
    the fixed mode reverse mode through the iterations, each recomputed in
    the backward pass (7.6 MiB there, against 213 MiB before the iterations
    were recomputed). ``return_plan`` is refused.

    ``sinkhorn``'s default, ``online="auto"``, stores the matrix when it
    takes at most ``AUTO_ONLINE_BYTES`` (512 MiB: 11,585 points per cloud in
    float32) and uses ``Online()`` above that; ``online=None`` always
    stores it.

    Attributes:
      block_bytes: the memory of one block of rows of the cost, ``> 0``
        (at least one row). The default, 4 MiB, keeps a block in cache:
        measured on 2 idle CPU cores (a one-off sweep of
        ``jax.jit(lambda x, y: sinkhorn(x, y, epsilon=0.1 * d,
        num_iterations=T, online=Online(block_bytes=B)))``, compiled ahead,
        one timed call, on ``benchmarks/metrics.py``'s Gaussian clouds), one
        iteration plus the final pass at
        n = m = 50,000, d = 2 took 24.8 s with 4 MiB blocks, 28.1 s with
        8 MiB, 25.7 s with 1 MiB and 49.7 s with 64 MiB (the previous
        default); two iterations at n = m = 20,000, d = 64: 5.3 s with
        4 or 8 MiB, 10.0 s with 64 MiB.
    """

    block_bytes: int = 4 * 2**20

    def __post_init__(self):
        _validate.check_int(self.block_bytes, "Online block_bytes", minimum=1)

    def rows(self, n: int, m: int, dtype: Any) -> int:
        """The rows of one block of an ``[n, m]`` cost of ``dtype``."""
        return _ot_costs.block_rows(n, m, jnp.dtype(dtype).itemsize, self.block_bytes)


@dataclasses.dataclass(frozen=True)
class KernelDomain:
    """Run ``sinkhorn``'s fixed-iteration mode on the kernel, with absorption (Schmitzer).

    The log-domain default takes an exponential per matrix entry at every
    half-iteration, and that bounds it (see ``sinkhorn``). In the kernel
    domain the potentials are split as ``f = f_0 + epsilon log u`` (likewise
    ``g``): the kernel ``K_ij = exp((f_0i + g_0j - C_ij) / epsilon)`` is
    computed once, and each iteration is two sums against it,
    ``v = 1 / K^T (a u)``, ``u = 1 / K (b v)``, with no exponential. When a
    scaling leaves ``[1 / absorb_threshold, absorb_threshold]`` (or is not
    finite: an underflowed column of ``K``), that iteration is done again in
    the log domain from the last scalings, the result is absorbed into
    ``f_0``, ``g_0`` and ``K`` is recomputed. The iterates are the
    log-domain ones (equal in exact arithmetic; in float64 to round-off),
    whatever ``epsilon``: a small one only costs more absorptions.

    Not the default, and only for the fixed mode (``num_iterations=T``):
    it stores the kernel beside the cost (twice the memory; no ``Online``),
    and its float32 plans are slightly less accurate where ``C / epsilon``
    spans a wide range (they are products of three rounded factors, not one
    exponential). Gradients are implicit, at the returned potentials (the
    convergence mode's: exact when the ``T`` iterations have converged),
    not those of the ``T`` iterations themselves as in the log domain.

    Attributes:
      absorb_threshold: the largest scaling kept before absorption, ``> 1``.

    References:
      Schmitzer, "Stabilized sparse scaling algorithms for entropy
      regularized transport problems", SIAM J. Sci. Comput. 2019, sec. 3.1
      (absorption).
    """

    absorb_threshold: float = 1e3

    def __post_init__(self):
        threshold = _validate.check_positive(self.absorb_threshold,
                                             "KernelDomain absorb_threshold")
        if threshold <= 1:
            raise ValueError(
                f"KernelDomain absorb_threshold must be > 1, got {self.absorb_threshold}."
            )
        object.__setattr__(self, "absorb_threshold", threshold)


# The dense cost matrix largest under online="auto" (bytes).
AUTO_ONLINE_BYTES = 512 * 2**20


def _block(online, n, m, dtype):
    """The online mode's block rows for an ``[n, m]`` cost, or None to store the matrix."""
    if online == "auto":
        online = Online() if n * m * jnp.dtype(dtype).itemsize > AUTO_ONLINE_BYTES else None
    return None if online is None else online.rows(n, m, dtype)


class SinkhornOutput(NamedTuple):
    """The result of ``sinkhorn``.

    The entropic plan is ``P_ij = a_i b_j exp((f_i + g_j - C_ij) / epsilon)``.

    Attributes:
      cost: the transport cost of the entropic plan, ``<P, C>`` (what
        Cuturi's Algorithm 1 and POT's ``ot.sinkhorn2`` return), a scalar.
      regularized_cost: the entropic OT cost ``OT_eps``, the dual objective
        ``<a, f> + <b, g> - epsilon (sum(P) - 1)`` (OTT-JAX's
        ``reg_ot_cost``); at the fixed point it equals the primal
        ``<P, C> + epsilon KL(P || a b^T)``. A scalar.
      f: the dual potential of ``x``, ``[n]``.
      g: the dual potential of ``y``, ``[m]``. ``f`` and ``g`` are returned in
        the gauge ``<a, f> = <b, g>`` (they are otherwise defined up to
        ``f + c``, ``g - c``).
      converged: whether ``error <= threshold`` and ``cost``,
        ``regularized_cost``, ``f`` and ``g`` are finite, a bool scalar.
      iterations: the number of Sinkhorn iterations run (each one updates
        ``g`` then ``f``; epsilon-scaling's iterations included), an int32
        scalar.
      error: the marginal error of the returned plan ``P``,
        ``sum_i |sum_j P_ij - a_i| + sum_j |sum_i P_ij - b_j|`` (the first
        term is rounding only: the last update makes the row sums ``a``), a
        scalar.
      plan: the plan ``P``, ``[n, m]``, with ``return_plan=True``; else None.
    """

    cost: jax.Array  # []
    regularized_cost: jax.Array  # []
    f: jax.Array  # [n]
    g: jax.Array  # [m]
    converged: jax.Array  # [] bool
    iterations: jax.Array  # [] int32
    error: jax.Array  # []
    plan: Optional[jax.Array] = None  # [n, m] or None


class SinkhornDivergenceOutput(NamedTuple):
    """The result of ``sinkhorn_divergence``.

    Attributes:
      divergence: ``OT_eps(x, y) - OT_eps(x, x) / 2 - OT_eps(y, y) / 2``, a
        scalar.
      xy: the ``SinkhornOutput`` of ``x`` to ``y``.
      xx: the ``SinkhornOutput`` of ``x`` to itself, solved by symmetric
        updates: ``f == g``, and ``iterations`` counts symmetric updates
        (one pass over the cost matrix each, not two).
      yy: the ``SinkhornOutput`` of ``y`` to itself, likewise.
      converged: whether all three problems converged, a bool scalar.
    """

    divergence: jax.Array  # []
    xy: SinkhornOutput
    xx: SinkhornOutput
    yy: SinkhornOutput
    converged: jax.Array  # [] bool


# --------------------------------------------------------------- validation


def _check_weights(w: Any, size: int, name: str, points: str) -> None:
    if np.shape(w) != (size,):
        raise ValueError(
            f"{name} must have shape [{size}] (one weight per point of "
            f"{points}), got {np.shape(w)}."
        )
    try:
        total = float(jnp.sum(w))
        smallest = float(jnp.min(w))
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return  # traced: cannot be checked at trace time
    if not math.isfinite(total) or smallest < 0:
        raise ValueError(f"{name} must be finite and non-negative.")
    if abs(total - 1.0) > 1e-5:
        raise ValueError(f"{name} must sum to 1, got {total}.")


def _prepare(x, y, a, b, epsilon, cost, threshold, max_iterations, inner_iterations,
             num_iterations, epsilon_scaling, overrelaxation, online, kernel=None):
    """Validates the inputs and casts the arrays to one floating dtype.

    Returns ``(x, y, a, b, epsilon, threshold, static)``, ``static`` the
    keyword arguments of the jitted solvers that are compile-time constants.
    """
    count = functools.partial(_validate.check_int, minimum=1, static=True)
    if epsilon_scaling is not None:
        _validate.check_instance(epsilon_scaling, "epsilon_scaling", EpsilonScaling,
                                 "an EpsilonScaling or None")
    if overrelaxation is not None:
        _validate.check_instance(overrelaxation, "overrelaxation", Overrelaxation,
                                 "an Overrelaxation or None")
    if not (online is None or online == "auto" or isinstance(online, Online)):
        raise TypeError(f"online must be 'auto', None or an Online, got {online!r}.")
    if kernel is not None:
        _validate.check_instance(kernel, "kernel", KernelDomain, "a KernelDomain or None")
        if num_iterations is None:
            raise ValueError(
                "kernel=KernelDomain() runs the fixed-iteration mode only: pass "
                "num_iterations=T, or drop kernel for the convergence mode.")
        if isinstance(online, Online):
            raise ValueError("kernel=KernelDomain() stores the [n, m] kernel, which "
                             "online=Online(...) never does: use one or the other.")
    static = dict(
        cost=cost,
        online=online,
        max_iterations=count(max_iterations, "max_iterations"),
        inner_iterations=count(inner_iterations, "inner_iterations"),
        num_iterations=(
            None if num_iterations is None else count(num_iterations, "num_iterations")
        ),
        epsilon_scaling=epsilon_scaling,
        overrelaxation=overrelaxation,
        kernel=kernel,
    )
    _validate.check_positive_scalar(threshold, "threshold")
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.ndim != 2:
        raise ValueError(f"x must be [n, d], got shape {x.shape}.")
    if y.ndim != 2:
        raise ValueError(f"y must be [m, d], got shape {y.shape}.")
    if x.shape[0] < 1 or y.shape[0] < 1:
        raise ValueError(
            f"x and y must hold at least one point each, got {x.shape} and {y.shape}."
        )
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same dimension d, got x {x.shape} and y {y.shape}."
        )
    if cost not in _COSTS:
        raise ValueError(f"cost must be one of {_COSTS}, got {cost!r}.")
    _validate.check_positive_scalar(epsilon, "epsilon")
    # Eager calls refuse NaN and inf points (under jit they propagate, and
    # converged is False).
    _validate.check_finite_array(x, "x")
    _validate.check_finite_array(y, "y")
    n, m = x.shape[0], y.shape[0]
    if a is not None:
        _check_weights(a, n, "a", "x")
    if b is not None:
        _check_weights(b, m, "b", "y")
    dtypes = [x, y] + [w for w in (a, b) if w is not None]
    dtype = jnp.promote_types(jnp.result_type(*dtypes), jnp.float32)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"x, y, a and b must be real, got {dtype}.")
    a = jnp.full((n,), 1.0 / n, dtype) if a is None else jnp.asarray(a, dtype)
    b = jnp.full((m,), 1.0 / m, dtype) if b is None else jnp.asarray(b, dtype)
    return (x.astype(dtype), y.astype(dtype), a, b, jnp.asarray(epsilon, dtype),
            jnp.asarray(threshold, dtype), static)


# ------------------------------------------------------------ ground costs


def _ground_cost(x, y, a, b, cost, block):
    """The cost ``C_ij = c_ij + u_i + v_j``, split into ``(c, u, v)``.

    ``u_i + v_j`` is a separable part that does not change the plan (it
    shifts the potentials: ``f = f_c + u``, ``g = g_c + v``) and ``c`` is
    what is left, small whatever the clouds' position, stored as a
    ``Matrix`` (``block`` None) or as ``Points`` recomputed in blocks of
    ``block`` rows (the online mode). With ``p``, ``q``
    the weighted means of ``x`` and ``y``, ``x~ = x - p``, ``y~ = y - q``
    and ``delta = p - q``:

    * ``"sqeuclidean"``: exactly ``|x_i - y_j|^2 = |x~_i - y~_j|^2 +
      (2 <delta, x~_i> + |delta|^2) - 2 <delta, y~_j>``, so
      ``c = |x~_i - y~_j|^2`` is computed from centred clouds with no
      cancellation, however far apart they are.
    * ``"euclidean"``: ``u_i + v_j = |delta| + <e, x~_i - y~_j>`` with
      ``e = delta / |delta|`` (the tangent plane of the norm at ``delta``,
      a lower bound), and ``c = |x_i - y_j| - u_i - v_j >= 0``; its
      rounding error is that of ``|x_i - y_j|`` itself.
    """
    p, q = _ot_costs.weighted_mean(x, a), _ot_costs.weighted_mean(y, b)
    xc, yc = x - p, y - q
    delta = p - q
    if cost == "sqeuclidean":
        u = 2 * _ot_costs.inner(xc, delta) + jnp.sum(delta * delta)
        v = -2 * _ot_costs.inner(yc, delta)
        if block is not None:
            return Points.create(xc, yc, jnp.zeros_like(u), jnp.zeros_like(v), cost=cost,
                                 block=block), u, v
        return Matrix(_ot_costs.squared_distances(xc, yc)), u, v
    norm = _ot_costs.safe_sqrt(jnp.sum(delta * delta))
    e = jnp.where(norm > 0, delta / jnp.where(norm > 0, norm, 1), 0)
    u = norm + _ot_costs.inner(xc, e)
    v = -_ot_costs.inner(yc, e)
    if block is not None:
        return Points.create(x, y, u, v, cost=cost, block=block), u, v
    return Matrix(_ot_costs.distances(x, y) - u[:, None] - v[None, :]), u, v


def _self_cost(x, a, cost, block):
    """The ``[n, n]`` ground costs of ``x`` to itself, with an exact zero diagonal.

    A ``Matrix`` (``block`` None) or ``Points`` in blocks of ``block`` rows.
    """
    if cost == "sqeuclidean":
        x = x - _ot_costs.weighted_mean(x, a)
    if block is not None:
        zero = jnp.zeros(x.shape[0], x.dtype)
        return Points.create(x, x, zero, zero, cost=cost, block=block, zero_diagonal=True)
    c = _ot_costs.squared_distances(x, x) if cost == "sqeuclidean" else _ot_costs.distances(x, x)
    # Exact already when computed from the differences; the expansion leaves
    # rounding noise on the diagonal.
    return Matrix(jnp.where(jnp.eye(x.shape[0], dtype=bool), 0, c))


# ----------------------------------------------------------------- kernels


def _safe_log(w):
    positive = w > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, w, 1)), -jnp.inf)




def _g_update(f_hat, g_hat, c_hat, log_a):
    """``g / epsilon`` from ``f / epsilon``; the column-marginal half step (differentiable)."""
    return -c_hat.logsumexp(f_hat + log_a, -g_hat, 0)


def _f_update(f_hat, g_hat, c_hat, log_b):
    """``f / epsilon`` from ``g / epsilon``; the row-marginal half step (differentiable)."""
    return -c_hat.logsumexp(g_hat + log_b, -f_hat, 1)


def _column_error(g_old, g_new, b):
    """``sum_j |sum_i P_ij - b_j|`` for the plan of ``(f, g_old)``.

    ``g_new`` is the column update from that ``f``, so the plan's column sums
    are ``b_j exp(g_old_j - g_new_j)``: the error costs no extra pass.
    """
    ratio = jnp.exp(jnp.where(b > 0, g_old - g_new, 0))
    return jnp.sum(b * jnp.abs(ratio - 1))


def _initial_potentials(a, b, dtype):
    """``f / epsilon = -log a``, ``g = 0``: the scalings ``u = v = 1``.

    The start of Algorithm 1 (``b = 1``), of OTT-JAX and of POT, applied to
    the cost ``c`` left once ``_ground_cost`` has removed the separable part
    ``u_i + v_j`` of ``C``: for ``C`` it is the start ``f = u - epsilon log
    a``, ``g = v``. The iterates are those of POT and OTT-JAX on ``c`` (or
    on ``C`` from that start) and do not depend on where the clouds are.
    """
    f_hat = jnp.where(a > 0, -_safe_log(a), 0).astype(dtype)
    return f_hat, jnp.zeros(b.shape, dtype)


def _fix_gauge(f, g, a, b):
    shift = 0.5 * (jnp.sum(a * f) - jnp.sum(b * g))
    return f - shift, g + shift



# ----------------------------------------------------------------- solvers


def _epsilon_schedule(c, epsilon, scaling):
    """The first epsilon and the number of scales of epsilon-scaling.

    The scales are ``first * decay^k`` for ``k < count``, all ``> epsilon``
    (``first * decay^count <= epsilon``); ``count = 0`` when ``first <=
    epsilon``.
    """
    if scaling.initial is None:
        first = c.range()
    else:
        first = jnp.asarray(scaling.initial, c.dtype)
    ratio = first / epsilon
    count = jnp.ceil(jnp.log(jnp.where(ratio > 1, ratio, 1)) / -math.log(scaling.decay))
    # A non-finite cost (NaN or inf inputs) gives no scales.
    count = jnp.where(jnp.isfinite(count), count, 0)
    return first, count.astype(jnp.int32)


def _times(s, v):
    return v if s is None else s * v


def _relax(old, new, omega):
    """``old + omega (new - old)``; ``new`` when ``omega`` is None (plain Sinkhorn)."""
    return new if omega is None else old + omega * (new - old)


def _iterate_to_threshold(c, a, b, epsilon, threshold, max_iterations, inner_iterations,
                          scaling, relaxation):
    """Sinkhorn in a ``while_loop`` until the marginal error is ``<= threshold``.

    ``scaling``: an ``EpsilonScaling`` or None; ``relaxation``: an
    ``Overrelaxation`` or None. Returns ``(f, g, iterations)`` with ``f``,
    ``g`` unscaled and in the gauge ``<a, f> = <b, g>``.

    The potentials are carried over ``epsilon`` (``f_hat = f / epsilon``)
    at every scale: at ``epsilon_k = epsilon / s`` the updates are
    ``g_hat = -LSE_i(log a_i + s (f_hat_i - c_hat_ij)) / s`` (``s = 1`` at
    the target), so the matrix ``c_hat = c / epsilon`` is computed once.
    """
    dtype = c.dtype
    c_hat = c.divided(epsilon)
    log_a, log_b = _safe_log(a), _safe_log(b)
    if scaling is not None:
        first, count = _epsilon_schedule(c, epsilon, scaling)
        decay = jnp.asarray(scaling.decay, dtype)

    def scale(k):
        """``epsilon / epsilon_k``, 1 from ``k = count`` on; None without scaling."""
        if scaling is None:
            return None
        epsilon_k = first * decay ** k.astype(dtype)
        return jnp.where(k < count, epsilon / epsilon_k, 1).astype(dtype)

    def g_update(f_hat, g_hat, s):
        h = _times(s, f_hat) + log_a
        return -_ot_costs.shifted_logsumexp(h, c_hat, -_times(s, g_hat), 0, s) / (
            1 if s is None else s)

    def f_update(f_hat, g_hat, s):
        h = _times(s, g_hat) + log_b
        return -_ot_costs.shifted_logsumexp(h, c_hat, -_times(s, f_hat), 1, s) / (
            1 if s is None else s)

    def gauge(f_hat, g_hat, g_next):
        # <a, f> = <b, g>: without it the start -log(a) / s_0 of epsilon-scaling
        # would leave opposite offsets of ~log(n) epsilon_0 / epsilon in f and
        # g, whose cancellation in f + g - c costs precision. g_next, the
        # column update of f_hat, moves with f_hat.
        shift = 0.5 * (jnp.sum(a * f_hat) - jnp.sum(b * g_hat))
        return f_hat - shift, g_hat + shift, g_next + shift

    # Invariant of the carry: f_hat is the (plain) row update of g_hat,
    # g_next the column update of f_hat and error the marginal error of
    # (f_hat, g_hat), found while computing g_next, all at scale k. A block
    # of inner_iterations iterations therefore costs exactly
    # 2 * inner_iterations passes, error check included. omega (the
    # relaxation), prev (the last error) and plain_prev (the last error of a
    # plain block) steer Overrelaxation.
    def body(state):
        f_hat, g_hat, g_next, _, it, k, omega, prev, plain_prev = state
        s = scale(k)
        w = None if relaxation is None else omega
        g_hat = _relax(g_hat, g_next, w)
        # The block's last f update is plain: the row marginal is then exact
        # and error the marginal error of the plan (f_hat, g_hat).
        f_hat = _relax(f_hat, f_update(f_hat, g_hat, s), w if inner_iterations > 1 else None)

        def iteration(i, fg):
            f_hat, g_hat = fg
            g_hat = _relax(g_hat, g_update(f_hat, g_hat, s), w)
            f_new = f_update(f_hat, g_hat, s)
            if w is None:
                return f_new, g_hat
            return jnp.where(i == inner_iterations - 1, f_new, _relax(f_hat, f_new, w)), g_hat

        f_hat, g_hat = lax.fori_loop(1, inner_iterations, iteration, (f_hat, g_hat))
        g_next = g_update(f_hat, g_hat, s)
        error = _column_error(_times(s, g_hat), _times(s, g_next), b)
        f_hat, g_hat, g_next = gauge(f_hat, g_hat, g_next)
        it = it + inner_iterations
        if relaxation is not None:
            worse = (omega > 1) & ~(error <= prev)
            plain = omega == 1
            rho = jnp.minimum(error / plain_prev, 1) ** (1 / inner_iterations)
            estimate = jnp.minimum(2 / (1 + jnp.sqrt(1 - rho)), relaxation.max_omega)
            estimate = jnp.where(jnp.isfinite(estimate), estimate, 1)
            omega = jnp.where(worse, 1, jnp.where(plain & (plain_prev < jnp.inf), estimate,
                                                   omega)).astype(dtype)
            plain_prev = jnp.where(worse, jnp.inf, jnp.where(plain, error, plain_prev))
            prev = error
        if scaling is not None:
            # Converged at an intermediate scale: on to the next one (straight
            # to the target once half the budget is spent), with a fresh
            # g_next (a 0- or 1-trip while_loop: under vmap it runs only for
            # the problems that move on).
            rushed = it >= max_iterations // 2
            advance = ((error <= jnp.maximum(threshold, scaling.threshold)) | rushed) & (k < count)
            k = jnp.where(advance, jnp.where(rushed, count, k + 1), k)
            g_next, _ = lax.while_loop(
                lambda carry: carry[1],
                lambda carry: (g_update(f_hat, g_hat, scale(k)), jnp.zeros_like(carry[1])),
                (g_next, advance),
            )
            error = jnp.where(advance, jnp.inf, error)
            omega = jnp.where(advance, 1, omega).astype(dtype)
            prev = jnp.where(advance, jnp.inf, prev)
            plain_prev = jnp.where(advance, jnp.inf, plain_prev)
        return f_hat, g_hat, g_next, error, it, k, omega, prev, plain_prev

    def cond(state):
        error, it = state[3], state[4]
        # A NaN error (non-finite inputs) stops at once: it cannot converge.
        return (it < max_iterations) & ~(error <= _STOP * threshold) & ~jnp.isnan(error)

    k = jnp.int32(0)
    f_start, g_start = _initial_potentials(a, b, dtype)
    if scaling is not None:
        f_start = f_start / scale(k)  # -log(a) at epsilon_0
    g_first = g_update(f_start, g_start, scale(k))
    f_start, g_start, g_first = gauge(f_start, g_start, g_first)
    inf = jnp.asarray(jnp.inf, dtype)
    init = (f_start, g_start, g_first, inf, jnp.int32(0), k, jnp.ones((), dtype), inf, inf)
    f_hat, g_hat, _, _, it, *_ = lax.while_loop(cond, body, init)
    f, g = _fix_gauge(epsilon * f_hat, epsilon * g_hat, a, b)
    return f, g, it


def _iterate_fixed(c, a, b, epsilon, num_iterations):
    """Exactly ``num_iterations`` Sinkhorn iterations in a ``lax.scan``."""
    c_hat = c.divided(epsilon)
    log_a, log_b = _safe_log(a), _safe_log(b)

    def step(fg, _):
        f_hat, g_hat = fg
        g_hat = _g_update(f_hat, g_hat, c_hat, log_a)
        f_hat = _f_update(f_hat, g_hat, c_hat, log_b)
        return (f_hat, g_hat), None

    init = _initial_potentials(a, b, c.dtype)
    (f_hat, g_hat), _ = lax.scan(c.iteration(step), init, None, length=num_iterations)
    return _fix_gauge(epsilon * f_hat, epsilon * g_hat, a, b)


def _iterate_kernel_fixed(c, a, b, epsilon, num_iterations, kernel):
    """``num_iterations`` Sinkhorn iterations in the kernel domain (see ``KernelDomain``).

    The carry holds the absorbed potentials ``(f_0, g_0)`` over ``epsilon``,
    the kernel ``K = exp(f_0 + g_0 - c / epsilon)`` and the scalings
    ``(u, v)``; the potentials are ``f_0 + log u``, ``g_0 + log v``. An
    iteration whose scalings leave the band is redone in the log domain
    (a 0- or 1-trip ``while_loop``, as ``shifted_logsumexp``'s fallback:
    under ``vmap`` it runs only when some problem needs it).
    """
    c_hat = c.divided(epsilon)
    log_a, log_b = _safe_log(a), _safe_log(b)
    log_band = math.log(kernel.absorb_threshold)

    def kernel_of(f_hat, g_hat):
        return jnp.exp(f_hat[:, None] + g_hat[None, :] - c_hat.c)

    def log_step(f_hat, g_hat):
        """One log-domain iteration from the potentials, absorbed."""
        g_hat = _g_update(f_hat, g_hat, c_hat, log_a)
        f_hat = _f_update(f_hat, g_hat, c_hat, log_b)
        ones = (jnp.ones_like(f_hat), jnp.ones_like(g_hat))
        return f_hat, g_hat, kernel_of(f_hat, g_hat), *ones

    def step(carry, _):
        f_hat, g_hat, k, u, v = carry
        v_new = 1 / jnp.sum(k * (a * u)[:, None], axis=0)
        u_new = 1 / jnp.sum(k * (b * v_new)[None, :], axis=1)
        outside = jnp.maximum(jnp.max(jnp.abs(jnp.log(u_new))), jnp.max(jnp.abs(jnp.log(v_new))))
        redo = ~(outside <= log_band)  # NaN (0 / 0, inf) included

        def again(state):
            return (*log_step(f_hat + jnp.log(u), g_hat + jnp.log(v)), jnp.zeros_like(redo))

        *carry, _ = lax.while_loop(lambda state: state[-1], again,
                                   (f_hat, g_hat, k, u_new, v_new, redo))
        return tuple(carry), None

    f_hat, g_hat = _initial_potentials(a, b, c.dtype)
    ones = (jnp.ones_like(f_hat), jnp.ones_like(g_hat))
    init = (f_hat, g_hat, kernel_of(f_hat, g_hat), *ones)
    (f_hat, g_hat, _, u, v), _ = lax.scan(step, init, None, length=num_iterations)
    return _fix_gauge(epsilon * (f_hat + jnp.log(u)), epsilon * (g_hat + jnp.log(v)), a, b)


def _symmetric_step(f_hat, c_hat, log_a):
    """``(f + T(f)) / 2`` (over ``epsilon``): one symmetric Sinkhorn update.

    ``T(f)`` is the row update from ``g = f`` (``_f_update``), so an update
    costs one pass over ``c_hat``.
    """
    return 0.5 * (f_hat + _f_update(f_hat, f_hat, c_hat, log_a))


def _iterate_symmetric_to_threshold(c, a, epsilon, threshold, max_iterations,
                                    inner_iterations):
    """Symmetric Sinkhorn in a ``while_loop`` until the marginal error is ``<= threshold``.

    Returns ``(f, iterations)`` with ``f`` unscaled. (No epsilon-scaling or
    over-relaxation: the averaged updates converge in a few dozen.)
    """
    c_hat = c.divided(epsilon)
    log_a = _safe_log(a)
    f_start, _ = _initial_potentials(a, a, c.dtype)

    # Invariant of the carry: t_hat = T(f_hat) and error is the marginal error
    # of the plan of (f_hat, f_hat), found while computing t_hat: its column
    # (and row) sums are a exp(f_hat - t_hat). A block of inner_iterations
    # updates costs exactly inner_iterations passes, error check included.
    def body(carry):
        f_hat, t_hat, _, it = carry
        f_hat = 0.5 * (f_hat + t_hat)
        f_hat = lax.fori_loop(
            0, inner_iterations - 1, lambda _, f: _symmetric_step(f, c_hat, log_a), f_hat
        )
        t_hat = _f_update(f_hat, f_hat, c_hat, log_a)
        return f_hat, t_hat, _column_error(f_hat, t_hat, a), it + inner_iterations

    def cond(carry):
        error, it = carry[2], carry[3]
        return (it < max_iterations) & ~(error <= _STOP * threshold) & ~jnp.isnan(error)

    t_first = _f_update(f_start, f_start, c_hat, log_a)
    init = (f_start, t_first, jnp.asarray(jnp.inf, c.dtype), jnp.int32(0))
    f_hat, _, _, it = lax.while_loop(cond, body, init)
    return epsilon * f_hat, it


def _iterate_symmetric_fixed(c, a, epsilon, num_iterations):
    """Exactly ``num_iterations`` symmetric Sinkhorn updates in a ``lax.scan``."""
    c_hat = c.divided(epsilon)
    log_a = _safe_log(a)
    f_start, _ = _initial_potentials(a, a, c.dtype)
    f_hat, _ = lax.scan(
        c.iteration(lambda f, _: (_symmetric_step(f, c_hat, log_a), None)), f_start, None,
        length=num_iterations,
    )
    return epsilon * f_hat


# ------------------------------------------------- implicit differentiation


def _optimality(f, g, c, a, b, epsilon):
    """The fixed-point residual whose root is the Sinkhorn solution.

    ``(P 1 - a + a G / eps, P^T 1 - b - b G / eps)`` with
    ``G = <a, f> - <b, g>``: the marginal conditions plus the gauge. Its
    Jacobian in ``(f, g)`` is ``(H + v v^T) / eps`` with
    ``H = [[diag(P 1), P], [P^T, diag(P^T 1)]]`` and ``v = (a, -b)``:
    symmetric positive definite (``H`` alone is singular along ``(1, -1)``).
    """
    row, col, _ = c.plan_sums(f, g, a, b, epsilon)
    gauge = (jnp.sum(a * f) - jnp.sum(b * g)) / epsilon
    return row - a + a * gauge, col - b - b * gauge


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _solve_implicit(max_iterations, inner_iterations, scaling, relaxation, c, a, b, epsilon,
                    threshold):
    return _iterate_to_threshold(
        c, a, b, epsilon, threshold, max_iterations, inner_iterations, scaling, relaxation
    )


def _solve_implicit_fwd(max_iterations, inner_iterations, scaling, relaxation, c, a, b,
                        epsilon, threshold):
    out = _solve_implicit(max_iterations, inner_iterations, scaling, relaxation, c, a, b,
                          epsilon, threshold)
    f, g = out[0], out[1]
    return out, (f, g, c, a, b, epsilon, threshold)


def _solve_implicit_bwd(max_iterations, inner_iterations, scaling, relaxation, res,
                        out_bar):
    return _implicit_vjp(res, out_bar, max(max_iterations, 100))


def _implicit_vjp(res, out_bar, maxiter):
    """The cotangents of ``(c, a, b, epsilon, threshold)`` of the potentials ``(f, g)``.

    ``res = (f, g, c, a, b, epsilon, threshold)``, ``out_bar`` starts with
    the cotangents of ``f`` and ``g``; ``maxiter`` bounds the solve.
    """
    # Implicit function theorem at the root of _optimality:
    #   theta_bar = -(dE/dtheta)^T lam,   J lam = (f_bar, g_bar),
    # J = (H + v v^T) / eps. J is solved by conjugate gradients after a
    # diagonal (Jacobi) scaling by D = diag(P 1, P^T 1), which leaves
    # D^-1/2 H D^-1/2 = [[I, K], [K^T, I]] with eigenvalues 1 +- sigma_k(K)
    # in [0, 2] and the gauge direction at 2. The fixed point does not depend
    # on how it was reached (epsilon-scaling, over-relaxation or neither).
    f, g, c, a, b, epsilon, threshold = res
    f_bar, g_bar = out_bar[0], out_bar[1]
    row, col, _ = c.plan_sums(f, g, a, b, epsilon)
    matvec_plan, rmatvec_plan = c.plan_products(f, g, a, b, epsilon)
    # A zero-weight point has an empty row / column: keep J invertible there.
    row = jnp.where(row > 0, row, 1)
    col = jnp.where(col > 0, col, 1)
    inv_sqrt_row, inv_sqrt_col = lax.rsqrt(row), lax.rsqrt(col)
    s_a, s_b = a * inv_sqrt_row, -b * inv_sqrt_col

    def matvec(y):
        y1, y2 = y
        proj = jnp.sum(s_a * y1) + jnp.sum(s_b * y2)
        k_y2 = inv_sqrt_row * matvec_plan(inv_sqrt_col * y2)
        kt_y1 = inv_sqrt_col * rmatvec_plan(inv_sqrt_row * y1)
        return (y1 + k_y2 + s_a * proj, y2 + kt_y1 + s_b * proj)

    rhs = (epsilon * inv_sqrt_row * f_bar, epsilon * inv_sqrt_col * g_bar)
    tol = 1e-12 if c.dtype == jnp.float64 else 1e-6
    y, _ = jax.scipy.sparse.linalg.cg(matvec, rhs, tol=tol, maxiter=maxiter)
    lam = (inv_sqrt_row * y[0], inv_sqrt_col * y[1])
    _, vjp = jax.vjp(lambda c, a, b, eps: _optimality(f, g, c, a, b, eps), c, a, b, epsilon)
    c_bar, a_bar, b_bar, eps_bar = vjp(lam)
    return (jax.tree.map(jnp.negative, c_bar), -a_bar, -b_bar, -eps_bar,
            jnp.zeros_like(threshold))


_solve_implicit.defvjp(_solve_implicit_fwd, _solve_implicit_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _solve_kernel(num_iterations, kernel, c, a, b, epsilon, threshold):
    return _iterate_kernel_fixed(c, a, b, epsilon, num_iterations, kernel)


def _solve_kernel_fwd(num_iterations, kernel, c, a, b, epsilon, threshold):
    f, g = _solve_kernel(num_iterations, kernel, c, a, b, epsilon, threshold)
    return (f, g), (f, g, c, a, b, epsilon, threshold)


def _solve_kernel_bwd(num_iterations, kernel, res, out_bar):
    return _implicit_vjp(res, out_bar, max(num_iterations, 100))


_solve_kernel.defvjp(_solve_kernel_fwd, _solve_kernel_bwd)


def _symmetric_optimality(f, c, a, epsilon):
    """The residual ``P 1 - a`` of the symmetric plan ``a_i a_j exp((f_i + f_j - C_ij) / eps)``.

    Its Jacobian in ``f`` is ``(diag(P 1) + P) / eps``, symmetric positive
    definite when ``P`` has a positive diagonal (``C_ii = 0``): no gauge is
    left once ``g = f``.
    """
    return c.plan_sums(f, f, a, a, epsilon)[0] - a


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _solve_symmetric_implicit(max_iterations, inner_iterations, c, a, epsilon, threshold):
    return _iterate_symmetric_to_threshold(
        c, a, epsilon, threshold, max_iterations, inner_iterations
    )


def _solve_symmetric_implicit_fwd(max_iterations, inner_iterations, c, a, epsilon,
                                  threshold):
    out = _solve_symmetric_implicit(
        max_iterations, inner_iterations, c, a, epsilon, threshold
    )
    return out, (out[0], c, a, epsilon, threshold)


def _solve_symmetric_implicit_bwd(max_iterations, inner_iterations, res, out_bar):
    # Implicit function theorem at the root of _symmetric_optimality, as in
    # _solve_implicit_bwd: J = (D + P) / eps with D = diag(P 1); after the
    # Jacobi scaling D^-1/2 J D^-1/2 = (I + K) / eps, K = D^-1/2 P D^-1/2,
    # whose eigenvalues lie in (0, 2] (K's in (-1, 1]). A nearly diagonal
    # plan (the self-transport of a cloud at small eps) gives K ~ I: the
    # solve is then easier, not harder.
    f, c, a, epsilon, threshold = res
    f_bar = out_bar[0]
    row = c.plan_sums(f, f, a, a, epsilon)[0]
    matvec_plan, _ = c.plan_products(f, f, a, a, epsilon)
    inv_sqrt_row = lax.rsqrt(jnp.where(row > 0, row, 1))  # a zero weight: empty row
    tol = 1e-12 if c.dtype == jnp.float64 else 1e-6
    y, _ = jax.scipy.sparse.linalg.cg(
        lambda y: y + inv_sqrt_row * matvec_plan(inv_sqrt_row * y),
        epsilon * inv_sqrt_row * f_bar, tol=tol,
        maxiter=max(max_iterations, 100),
    )
    _, vjp = jax.vjp(lambda c, a, eps: _symmetric_optimality(f, c, a, eps), c, a, epsilon)
    c_bar, a_bar, eps_bar = vjp(inv_sqrt_row * y)
    return jax.tree.map(jnp.negative, c_bar), -a_bar, -eps_bar, jnp.zeros_like(threshold)


_solve_symmetric_implicit.defvjp(_solve_symmetric_implicit_fwd,
                                 _solve_symmetric_implicit_bwd)



# -------------------------------------------------------------- public API


@functools.partial(
    jax.jit,
    static_argnames=(
        "cost",
        "max_iterations",
        "inner_iterations",
        "num_iterations",
        "epsilon_scaling",
        "overrelaxation",
        "online",
        "kernel",
        "return_plan",
    ),
)
def _sinkhorn(
    x, y, a, b, epsilon, threshold, *, cost, max_iterations, inner_iterations,
    num_iterations, epsilon_scaling, overrelaxation, online, kernel, return_plan,
):
    """``sinkhorn`` on validated inputs of one dtype."""
    block = _block(online, x.shape[0], y.shape[0], x.dtype)
    if kernel is not None and block is not None:
        raise ValueError(
            f"kernel=KernelDomain() stores the [{x.shape[0]}, {y.shape[0]}] kernel beside the "
            f"cost, above online='auto''s {AUTO_ONLINE_BYTES // 2**20} MiB budget per matrix: "
            "pass online=None to store both anyway, or drop kernel.")
    c, u, v = _ground_cost(x, y, a, b, cost, block)
    if kernel is not None:
        f, g = _solve_kernel(num_iterations, kernel, c, a, b, epsilon, threshold)
        iterations = jnp.int32(num_iterations)
    elif num_iterations is None:
        f, g, iterations = _solve_implicit(
            max_iterations, inner_iterations, epsilon_scaling, overrelaxation, c, a, b,
            epsilon, threshold,
        )
    else:
        f, g = _iterate_fixed(c, a, b, epsilon, num_iterations)
        iterations = jnp.int32(num_iterations)
    return _output(c, u, v, a, b, f, g, epsilon, threshold, iterations, return_plan)


@functools.partial(
    jax.jit,
    static_argnames=("cost", "max_iterations", "inner_iterations", "num_iterations", "online"),
)
def _self_transport(
    x, a, epsilon, threshold, *, cost, max_iterations, inner_iterations, num_iterations, online,
):
    """``sinkhorn(x, x, a=a, b=a)`` by symmetric updates, on validated inputs.

    The potentials ``f = g`` come from the symmetric fixed point
    ``f = T(f)``, ``T(f)_i = -eps log sum_j a_j exp((f_j - C_ij) / eps)``,
    reached by the averaged updates ``f <- (f + T(f)) / 2`` (Feydy et al.,
    eq. 25) from ``f = -eps log a``: a few dozen updates where the
    alternating ones, whose plan is nearly diagonal here, take thousands.
    ``iterations`` counts these updates (one pass over ``C`` each).
    """
    c = _self_cost(x, a, cost, _block(online, x.shape[0], x.shape[0], x.dtype))
    if num_iterations is None:
        f, iterations = _solve_symmetric_implicit(
            max_iterations, inner_iterations, c, a, epsilon, threshold
        )
    else:
        f = _iterate_symmetric_fixed(c, a, epsilon, num_iterations)
        iterations = jnp.int32(num_iterations)
    zero = jnp.zeros_like(a)
    return _output(c, zero, zero, a, a, f, f, epsilon, threshold, iterations, False)


def _output(c, u, v, a, b, f, g, epsilon, threshold, iterations, return_plan):
    """The ``SinkhornOutput`` of the potentials ``f``, ``g`` of the cost ``c``.

    ``c``, ``f`` and ``g`` are those of the cost less its separable part
    ``u_i + v_j`` (see ``_ground_cost``); the separable part is added to
    the potentials and the costs here.
    """
    # One pass over the plan for its cost and marginals. The plan's entries
    # are at most about a_i (its rows sum to about a), so the exponential
    # cannot overflow.
    row, col, plan_cost = c.plan_sums(f, g, a, b, epsilon)
    plan = c.plan(f, g, a, b, epsilon) if return_plan else None
    mass = jnp.sum(row)
    # <P, C> = <P, c> + <P 1, u> + <P^T 1, v>, and <a, f + u> + <b, g + v>.
    transport_cost = plan_cost + jnp.sum(row * u) + jnp.sum(col * v)
    regularized_cost = (jnp.sum(a * f) + jnp.sum(b * g) - epsilon * (mass - 1)
                        + (jnp.sum(a * u) + jnp.sum(b * v)))
    f, g = _fix_gauge(f + u, g + v, a, b)
    error = lax.stop_gradient(jnp.sum(jnp.abs(row - a)) + jnp.sum(jnp.abs(col - b)))
    finite = (jnp.isfinite(transport_cost) & jnp.isfinite(regularized_cost)
              & jnp.all(jnp.isfinite(f)) & jnp.all(jnp.isfinite(g)))
    return SinkhornOutput(
        cost=transport_cost,
        regularized_cost=regularized_cost,
        f=f,
        g=g,
        converged=(error <= threshold) & finite,
        iterations=iterations,
        error=error,
        plan=plan,
    )


def _concrete(value) -> Any:
    """``value`` as a Python scalar in eager use; None when it is traced (jit, vmap, grad...)."""
    try:
        return value.item()
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError,
            jax.errors.TracerArrayConversionError, jax.errors.TracerIntegerConversionError):
        return None


def _warn_not_converged(function, problems, threshold, static, stacklevel):
    """Warns ``SinkhornNotConverged`` for the unconverged ``(name, output)`` pairs.

    Only in eager use: under a trace ``converged`` has no value yet.
    """
    parts = []
    for name, out in problems:
        converged = _concrete(out.converged)
        if converged is None:
            return  # Traced: cannot warn.
        if converged:
            continue
        error, iterations = _concrete(out.error), _concrete(out.iterations)
        costs = (_concrete(out.cost), _concrete(out.regularized_cost))
        prefix = f"{name}: " if name else ""
        if any(v is not None and not math.isfinite(v) for v in costs + (error,)):
            parts.append(f"{prefix}the result is not finite after {iterations} iterations "
                         f"(cost {costs[0]}, marginal error {error})")
        else:
            parts.append(f"{prefix}marginal error {error:.3g} > threshold "
                         f"{_concrete(threshold):.3g} after {iterations} iterations")
    if not parts:
        return
    if static["num_iterations"] is None:
        fix = (f"raise max_iterations (now {static['max_iterations']})"
               + ("" if static["epsilon_scaling"] is not None
                  else ", use epsilon_scaling=EpsilonScaling()")
               + ("" if static["overrelaxation"] is not None
                  else ", use overrelaxation=Overrelaxation()")
               + ", raise epsilon or loosen threshold")
    else:
        fix = (f"raise num_iterations (now {static['num_iterations']}), or iterate to "
               "convergence with num_iterations=None")
    threshold = _concrete(threshold)
    if (threshold is not None and threshold < 1e-5
            and jnp.finfo(problems[0][1].error.dtype).bits <= 32):
        fix += (" (float32 resolves the marginal error to about 1e-6: thresholds below "
                "1e-5 need float64)")
    warnings.warn(
        SinkhornNotConverged(
            f"{function} did not converge ({'; '.join(parts)}): the value returned is not "
            f"the entropic optimal transport cost it should be. Fix: {fix}. (Check "
            "`converged` under jax.jit, where this cannot warn.)"
        ),
        stacklevel=stacklevel + 1,
    )


def sinkhorn(
    x: jax.typing.ArrayLike,
    y: jax.typing.ArrayLike,
    *,
    epsilon: jax.typing.ArrayLike,
    a: Optional[jax.typing.ArrayLike] = None,
    b: Optional[jax.typing.ArrayLike] = None,
    cost: str = "sqeuclidean",
    threshold: jax.typing.ArrayLike = 1e-3,
    max_iterations: int = 2000,
    inner_iterations: int = 10,
    num_iterations: Optional[int] = None,
    epsilon_scaling: Optional[EpsilonScaling] = None,
    overrelaxation: Optional[Overrelaxation] = Overrelaxation(),
    online: Optional[Online] | str = "auto",
    kernel: Optional[KernelDomain] = None,
    return_plan: bool = False,
) -> SinkhornOutput:
    """Entropic optimal transport between two point clouds (Sinkhorn).

    Solves ``min_P <P, C> + epsilon KL(P || a b^T)`` over plans ``P`` with
    marginals ``a`` and ``b``, by Sinkhorn's alternating updates in the log
    domain (stable for any ``epsilon``)::

        g_j = -epsilon log sum_i a_i exp((f_i - C_ij) / epsilon)
        f_i = -epsilon log sum_j b_j exp((g_j - C_ij) / epsilon)

    ``g`` first, as OTT-JAX and POT's ``sinkhorn_log`` do. Each iteration
    is one of Algorithm 1's ``a = 1 / K b, b = 1 / K^T a`` steps, with
    ``u = exp(f / epsilon)``.

    Any scale: the cost is split as ``C_ij = c_ij + u_i + v_j``, a separable
    part ``u_i + v_j`` (which does not change the plan) and a remainder
    ``c`` computed from the clouds centred on their weighted means; the
    iterations run on ``c`` and the separable part is added to the
    potentials and costs analytically. For ``"sqeuclidean"`` the split is
    exact, ``c_ij = |x~_i - y~_j|^2`` with ``x~``, ``y~`` the centred
    clouds: translating ``y`` by ``t`` leaves the plan unchanged and adds
    exactly ``|t|^2 - 2 <t, x_bar - y_bar>`` (``x_bar``, ``y_bar`` the
    weighted means) to both ``cost`` and ``regularized_cost``, in float32 as
    in float64, however far apart the clouds are. For ``"euclidean"``,
    ``u_i + v_j`` is the tangent plane of the norm at ``x_bar - y_bar``.
    The iterations start from ``f = u - epsilon log a``, ``g = v`` (the
    scalings ``u = v = 1`` of ``c``): a fixed number of iterations gives the
    iterates of OTT-JAX and POT on ``c`` (POT's on ``C`` when it is
    warm-started there), the same wherever the clouds are.

    Two modes:

    * convergence (the default, ``num_iterations=None``): iterates in a
      ``lax.while_loop`` until the marginal error ``sum_j |sum_i P_ij - b_j|``
      is at most ``threshold`` (0.9 ``threshold`` as estimated in the loop,
      so that the error recomputed from the returned plan meets it despite
      rounding), checked every ``inner_iterations`` iterations (at no extra
      cost: it falls out of the next ``g`` update), for at most
      ``max_iterations`` (rounded up to a multiple of ``inner_iterations``).
      The updates are over-relaxed by default (``Overrelaxation``: adaptive,
      a no-op on problems that converge fast), and ``epsilon_scaling``
      (``EpsilonScaling``) runs the same loop at decreasing epsilons first,
      each warm-starting the next (its iterations count in ``iterations``
      and ``max_iterations``); with neither (``overrelaxation=None``) the
      iterates are the fixed mode's. Measured (float32, threshold 1e-3):
      between two 2,500-point samples of ``jgan.data.ring`` at
      ``epsilon = 0.05`` plain Sinkhorn takes 6,700 iterations (28 s on 2
      idle CPU cores), epsilon-scaling alone 4,230, over-relaxation 750
      (3.2 s) and both 560 (2.6 s); OTT-JAX's defaults stop after 6,490
      (52 s) (``benchmarks/metrics.py``'s ``sinkhorn_scaling``).
      Epsilon-scaling is not the default: on problems that converge in
      10-100 plain iterations it adds 30-150 (each scale costs at least
      ``inner_iterations``), and on (near-)identical clouds it can slow the
      last phase; use it for clustered data at a small epsilon (a ring or
      grid of modes: 1.5-2.5 times fewer iterations than over-relaxation
      alone) and for tight thresholds at a tiny epsilon (8 points at
      ``epsilon = 1e-3``, threshold 1e-9 in float64: 140 iterations where
      neither plain nor over-relaxed Sinkhorn gets there in 50,000).
      Gradients use implicit differentiation of the
      fixed point (a ``custom_vjp``; a conjugate-gradient solve in the
      backward pass), so they cost about as much as a few dozen iterations
      and are exact at the solution (accurate to about ``threshold`` for the
      returned one), whichever way it was reached.
    * fixed iterations (``num_iterations=T``): exactly ``T`` iterations in a
      ``lax.scan`` at ``epsilon`` (``epsilon_scaling`` and
      ``overrelaxation`` are not used: plain iterates), which
      ``vmap``s over batches of problems without waiting for the slowest.
      Gradients differentiate the ``T`` iterations themselves (unrolled
      reverse mode, storing O(T (n + m))). ``threshold`` only sets
      ``converged``; ``max_iterations`` is unused. ``kernel=KernelDomain()``
      runs the same iterates on the kernel instead (see ``KernelDomain``).

    Not converged: ``converged`` is False whenever the returned plan's
    marginal error exceeds ``threshold`` or a result is not finite, and an
    eager call then warns ``SinkhornNotConverged`` (naming the iterations,
    the error and the fix). Under ``jax.jit``, ``vmap`` or another trace it
    cannot warn: check ``converged``. Likewise NaN or inf points raise a
    ``ValueError`` in eager calls; under a trace they give NaN, not
    converged (the loop stops at its first check).

    Both modes support reverse-mode differentiation (``jax.grad``,
    ``jax.vjp``) with respect to ``x``, ``y``, ``a``, ``b`` and ``epsilon``
    (gradients in ``a``, ``b`` are meaningful along the simplex, i.e. up to
    an additive constant); forward mode (``jax.jvp``) is not supported.
    The potentials ``f``, ``g`` are fixed in the gauge ``<a, f> = <b, g>``.

    Each iteration takes two passes over the ``[n, m]`` cost matrix (one
    ``exp`` per entry each), which is computed and divided by ``epsilon``
    once: from coordinate differences for ``d <= 8`` (exact, 0 on identical
    points), else by a matrix product of the centred clouds
    (``"sqeuclidean"``) or by differences reduced over ``d``
    (``"euclidean"``, so identical points are exactly 0 apart). The
    log-sum-exps are stabilised by the previous iterate instead of a
    separate maximum pass (see ``_logsumexp``).

    Args:
      x: the source points, ``[n, d]``.
      y: the target points, ``[m, d]``.
      epsilon: the entropic regularisation, absolute (in units of the cost),
        a scalar ``> 0``; may be traced.
      a: the weights of ``x``, ``[n]``, non-negative, summing to 1; uniform
        when None.
      b: the weights of ``y``, ``[m]``, non-negative, summing to 1; uniform
        when None.
      cost: ``"sqeuclidean"``, ``C_ij = |x_i - y_j|^2`` (no 1/2), or
        ``"euclidean"``, ``C_ij = |x_i - y_j|``.
      threshold: the tolerance on the marginal error, a scalar ``> 0``; may
        be traced.
      max_iterations: the iteration budget of the convergence mode.
      inner_iterations: iterations between two convergence checks.
      num_iterations: if set, run exactly this many iterations in
        ``lax.scan`` (fixed-iteration mode).
      epsilon_scaling: an ``EpsilonScaling`` (e.g. ``EpsilonScaling()``:
        decay 0.25 from the cost's range), or None (the default) for none;
        convergence mode only.
      overrelaxation: an ``Overrelaxation`` (the default: adaptive, omega at
        most 1.9), or None for none; convergence mode only.
      online: ``"auto"`` (the default: the cost matrix is stored when it
        takes at most ``AUTO_ONLINE_BYTES``, 512 MiB, else ``Online()``),
        None (always stored) or an ``Online`` (never stored: recomputed in
        blocks of rows at every pass, linear memory; see ``Online``).
      kernel: a ``KernelDomain`` to run the fixed mode on the kernel
        ``exp(-C / epsilon)`` with absorption (no exponential per entry and
        iteration; the same iterates; implicit gradients), or None (the
        default: the log domain). Fixed mode only; not with ``Online``.
      return_plan: also return the ``[n, m]`` plan (not with ``Online``).

    Returns:
      A ``SinkhornOutput``: ``cost`` (``<P, C>``), ``regularized_cost``,
      potentials ``f`` ``[n]`` and ``g`` ``[m]``, ``converged``,
      ``iterations``, ``error`` and ``plan`` (``[n, m]`` or None).

    Raises:
      ValueError: bad shapes, weights or hyper-parameters; in eager use, NaN
        or inf in ``x`` or ``y``.

    Warns:
      SinkhornNotConverged: in eager use, when ``converged`` is False.

    References:
      Cuturi, "Sinkhorn Distances: Lightspeed Computation of Optimal
      Transport", NeurIPS 2013, Algorithm 1.
      Peyré and Cuturi, "Computational Optimal Transport", 2019, sec. 4.4
      (log-domain updates, eq. 4.43), remark 4.22 (a separable change of
      the cost) and 9.1.3 (implicit differentiation).
      Feydy et al., "Interpolating between Optimal Transport and MMD using
      Sinkhorn Divergences", AISTATS 2019, eq. 5 (the dual objective).
      Schmitzer 2019 (epsilon-scaling) and Lehmann et al. 2022
      (over-relaxation): see ``EpsilonScaling`` and ``Overrelaxation``.
    """
    x, y, a, b, epsilon, threshold, static = _prepare(
        x, y, a, b, epsilon, cost, threshold, max_iterations, inner_iterations,
        num_iterations, epsilon_scaling, overrelaxation, online, kernel,
    )
    return_plan = _validate.check_bool(return_plan, "return_plan")
    if return_plan and isinstance(online, Online):
        raise ValueError("return_plan=True needs the [n, m] plan, which online=Online(...) "
                         "never stores: use online=None.")
    out = _sinkhorn(x, y, a, b, epsilon, threshold, return_plan=return_plan, **static)
    _warn_not_converged("sinkhorn", [("", out)], threshold, static, stacklevel=2)
    return out


def sinkhorn_divergence(
    x: jax.typing.ArrayLike,
    y: jax.typing.ArrayLike,
    *,
    epsilon: jax.typing.ArrayLike,
    a: Optional[jax.typing.ArrayLike] = None,
    b: Optional[jax.typing.ArrayLike] = None,
    cost: str = "sqeuclidean",
    threshold: jax.typing.ArrayLike = 1e-3,
    max_iterations: int = 2000,
    inner_iterations: int = 10,
    num_iterations: Optional[int] = None,
    epsilon_scaling: Optional[EpsilonScaling] = None,
    overrelaxation: Optional[Overrelaxation] = Overrelaxation(),
    online: Optional[Online] | str = "auto",
) -> SinkhornDivergenceOutput:
    """The debiased Sinkhorn divergence between two point clouds.

    ``S = OT_eps(x, y) - OT_eps(x, x) / 2 - OT_eps(y, y) / 2``, where
    ``OT_eps`` is the *regularised* cost (``SinkhornOutput.regularized_cost``,
    the entropic OT value including ``epsilon KL``), as in Feydy et al. and
    OTT-JAX's ``sinkhorn_divergence``. With that choice ``S >= 0``,
    ``S(x, x) = 0``, ``S`` is symmetric and metrises weak convergence; with
    the transport cost ``<P, C>`` instead, ``S`` can be negative. With
    ``"sqeuclidean"``, translating ``y`` by ``t`` adds exactly
    ``|t|^2 - 2 <t, x_bar - y_bar>`` (see ``sinkhorn``), at any scale.

    ``OT_eps(x, y)`` is solved by ``sinkhorn``. The two self-transport
    problems are solved by symmetric updates of a single potential
    (``f = g``)::

        f <- (f + T(f)) / 2,   T(f)_i = -epsilon log sum_j a_j exp((f_j - C_ij) / epsilon)

    starting from ``f = -epsilon log a`` (OTT-JAX's ``symmetric_sinkhorn``:
    parallel updates with momentum 1/2, the same iterates), until the
    marginal error of the plan ``a_i a_j exp((f_i + f_j - C_ij) / epsilon)``
    is at most ``threshold``. This needs a few dozen updates, one pass over
    the ``[n, n]`` cost each, whatever epsilon (10 on two 2,500-point ring
    samples at ``epsilon = 0.05``): ``epsilon_scaling`` and
    ``overrelaxation`` apply to ``OT_eps(x, y)`` only. Gradients: in the convergence
    mode, implicit differentiation of the fixed point ``f = T(f)`` (a
    conjugate-gradient solve with ``I + K``, ``K`` the Jacobi-scaled plan);
    in the fixed-iteration mode, the ``num_iterations`` updates are
    differentiated.

    All keyword arguments are those of ``sinkhorn``, shared by the three
    problems (``num_iterations`` counts symmetric updates for the two
    self-transport problems). ``converged`` is False unless all three
    converged; an eager call then warns ``SinkhornNotConverged``.

    When ``y`` is ``x`` (the same array, or tracer under ``jit``) and ``b``
    is ``a``, ``OT_eps(x, y)`` is ``OT_eps(x, x)``: it is solved once, by the
    symmetric updates (``xy``, ``xx`` and ``yy`` are the same output), and
    ``S = 0`` exactly. Between equal copies ``S`` is 0 to the solvers'
    accuracy (about 1e-6 of the costs in float32 at the default
    ``threshold``): ``OT_eps(x, y)`` is then solved by alternating updates.

    Args:
      x: the first point cloud, ``[n, d]``.
      y: the second point cloud, ``[m, d]``.
      epsilon: the entropic regularisation, absolute, a scalar ``> 0``.
      a: the weights of ``x``, ``[n]``; uniform when None.
      b: the weights of ``y``, ``[m]``; uniform when None.
      cost: ``"sqeuclidean"`` or ``"euclidean"``.
      threshold: the tolerance on the marginal error of each problem.
      max_iterations: the iteration budget of each problem.
      inner_iterations: iterations between two convergence checks.
      num_iterations: if set, a fixed number of iterations per problem.
      epsilon_scaling: an ``EpsilonScaling`` or None, for ``OT_eps(x, y)``
        (convergence mode only).
      overrelaxation: an ``Overrelaxation`` or None, for ``OT_eps(x, y)``
        (convergence mode only).
      online: ``"auto"``, None or an ``Online``, for each of the three
        problems (``"auto"`` decides for each by its own size).

    Returns:
      A ``SinkhornDivergenceOutput``: ``divergence`` (a scalar), the three
      ``SinkhornOutput``s ``xy``, ``xx``, ``yy``, and ``converged``.

    Warns:
      SinkhornNotConverged: in eager use, when ``converged`` is False.

    References:
      Feydy et al., "Interpolating between Optimal Transport and MMD using
      Sinkhorn Divergences", AISTATS 2019, eq. 6 and Theorem 1 (the
      divergence), eq. 25 (the symmetric update).
      Genevay et al., "Learning Generative Models with Sinkhorn
      Divergences", AISTATS 2018, eq. 5.
    """
    # y is x (the same array or tracer) with the same weights: OT_eps(x, y)
    # is OT_eps(x, x), solved once by the symmetric updates, and S = 0 exactly.
    same = y is x and b is a
    x, y, a, b, epsilon, threshold, static = _prepare(
        x, y, a, b, epsilon, cost, threshold, max_iterations, inner_iterations,
        num_iterations, epsilon_scaling, overrelaxation, online,
    )
    symmetric = {k: v for k, v in static.items()
                 if k not in ("epsilon_scaling", "overrelaxation", "kernel")}
    xx = _self_transport(x, a, epsilon, threshold, **symmetric)
    if same:
        xy = yy = xx
    else:
        xy = _sinkhorn(x, y, a, b, epsilon, threshold, return_plan=False, **static)
        yy = _self_transport(y, b, epsilon, threshold, **symmetric)
    divergence = xy.regularized_cost - 0.5 * (xx.regularized_cost + yy.regularized_cost)
    out = SinkhornDivergenceOutput(
        divergence=divergence,
        xy=xy,
        xx=xx,
        yy=yy,
        converged=xy.converged & xx.converged & yy.converged,
    )
    _warn_not_converged("sinkhorn_divergence", [("xy", xy), ("xx", xx), ("yy", yy)],
                        threshold, static, stacklevel=2)
    return out
