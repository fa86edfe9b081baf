"""Entropic optimal transport by log-domain Sinkhorn iterations."""

import functools
import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

from jgan import _validate

_COSTS = ("sqeuclidean", "euclidean")


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
      converged: whether ``error <= threshold``, a bool scalar.
      iterations: the number of Sinkhorn iterations run (each one updates
        ``g`` then ``f``), an int32 scalar.
      error: the marginal error of ``P``, ``sum_j |sum_i P_ij - b_j|`` (the
        row marginal of ``P`` equals ``a`` by construction), a scalar.
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
    if jnp.shape(w) != (size,):
        raise ValueError(
            f"{name} must have shape [{size}] (one weight per point of "
            f"{points}), got {jnp.shape(w)}."
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
             num_iterations):
    """Validates the inputs and casts the arrays to one floating dtype.

    Returns ``(x, y, a, b, epsilon, threshold, static)``, ``static`` the
    keyword arguments of the jitted solvers that are compile-time constants.
    """
    count = functools.partial(_validate.check_int, minimum=1, static=True)
    static = dict(
        cost=cost,
        max_iterations=count(max_iterations, "max_iterations"),
        inner_iterations=count(inner_iterations, "inner_iterations"),
        num_iterations=(
            None if num_iterations is None else count(num_iterations, "num_iterations")
        ),
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


# ----------------------------------------------------------------- kernels


def _cost_matrix(x, y, cost):
    """``[n, m]`` ground costs ``|x_i - y_j|^2`` or ``|x_i - y_j|``."""
    # The cost is translation invariant: centring both clouds on their common
    # mean first keeps the expansion |x|^2 + |y|^2 - 2 x.y accurate for clouds
    # far from the origin (the cancellation is relative to their spread).
    center = lax.stop_gradient(
        (jnp.sum(x, 0) + jnp.sum(y, 0)) / (x.shape[0] + y.shape[0])
    )
    x = x - center
    y = y - center
    cross = jnp.matmul(x, y.T, precision=lax.Precision.HIGHEST)
    sq = jnp.sum(x * x, 1)[:, None] + jnp.sum(y * y, 1)[None, :] - 2 * cross
    sq = jnp.maximum(sq, 0)
    if cost == "sqeuclidean":
        return sq
    # sqrt has an infinite derivative at 0; use 0 there (a subgradient).
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1)), 0)


def _self_cost_matrix(x, cost):
    """``[n, n]`` ground costs of ``x`` to itself, with an exact zero diagonal.

    The expansion ``|x|^2 + |x|^2 - 2 x.x`` leaves rounding noise on the
    diagonal; for ``"euclidean"`` its square root would be ``O(sqrt(eps))``
    instead of 0, with a spurious, large derivative.
    """
    c = _cost_matrix(x, x, cost)
    return jnp.where(jnp.eye(x.shape[0], dtype=bool), 0, c)


def _safe_log(w):
    positive = w > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, w, 1)), -jnp.inf)


def _expand(v, axis):
    """Broadcasts a vector indexed by the non-reduced axis to ``[n, m]``."""
    return v[:, None] if axis == 1 else v[None, :]


def _expand_other(v, axis):
    """Broadcasts a vector indexed by the reduced axis to ``[n, m]``."""
    return v[None, :] if axis == 1 else v[:, None]


def _logsumexp_exact(h, c_hat, axis):
    """``LSE over axis of (h - c_hat)``, stabilised by the exact maximum."""
    # The maximum is written as -min(c_hat - h) rather than max(h - c_hat):
    # XLA would otherwise share (materialise) the [n, m] difference between
    # the two passes instead of recomputing it from c_hat in each.
    top = -jnp.min(c_hat - _expand_other(h, axis), axis=axis)
    top = jnp.where(jnp.isfinite(top), top, 0)
    total = jnp.sum(jnp.exp(_expand_other(h, axis) - c_hat - _expand(top, axis)), axis=axis)
    return top + jnp.log(total)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _logsumexp(h, c_hat, shift, axis):
    """``LSE over axis of (h - c_hat)`` in one pass over ``c_hat``.

    ``shift`` (a vector over the kept axis) is a guess of the result: the
    previous iterate's value. The sum ``exp(h - c_hat - shift)`` then takes a
    single pass over the ``[n, m]`` matrix, instead of the two (maximum, then
    sum) of a textbook log-sum-exp. Where the guess is too far off for the
    sum to be accurate in floating point (it overflows, or falls below
    ``exp(-|log tiny| / 2)``), the exact two-pass form is used instead. That
    fallback is a ``while_loop`` of 0 or 1 trips, so under ``vmap`` it runs
    only when some problem of the batch needs it (a ``cond`` would run both
    branches for every problem).
    """
    total = jnp.sum(
        jnp.exp(_expand_other(h, axis) - c_hat - _expand(shift, axis)), axis=axis
    )
    out = shift + jnp.log(total)
    floor = 0.5 * math.log(jnp.finfo(c_hat.dtype).tiny)
    bad = jnp.any(~(jnp.isfinite(out) & (out - shift > floor)))

    def fallback(carry):
        return _logsumexp_exact(h, c_hat, axis), jnp.zeros_like(carry[1])

    out, _ = lax.while_loop(lambda carry: carry[1], fallback, (out, bad))
    return out


def _logsumexp_fwd(h, c_hat, shift, axis):
    out = _logsumexp(h, c_hat, shift, axis)
    return out, (h, c_hat, shift, out)


def _logsumexp_bwd(axis, res, out_bar):
    # The softmax weights are recomputed here rather than saved, so reverse
    # mode through a lax.scan of T iterations stores O(T (n + m)), not
    # O(T n m).
    h, c_hat, shift, out = res
    weights = jnp.exp(_expand_other(h, axis) - c_hat - _expand(out, axis))
    weighted = weights * _expand(out_bar, axis)
    h_bar = jnp.sum(weighted, axis=1 - axis)
    return h_bar, -weighted, jnp.zeros_like(shift)


_logsumexp.defvjp(_logsumexp_fwd, _logsumexp_bwd)


def _g_update(f_hat, g_hat, c_hat, log_a):
    """``g / epsilon`` from ``f / epsilon``; the column-marginal half step."""
    return -_logsumexp(f_hat + log_a, c_hat, -g_hat, 0)


def _f_update(f_hat, g_hat, c_hat, log_b):
    """``f / epsilon`` from ``g / epsilon``; the row-marginal half step."""
    return -_logsumexp(g_hat + log_b, c_hat, -f_hat, 1)


def _column_error(g_old, g_new, b):
    """``sum_j |sum_i P_ij - b_j|`` for the plan of ``(f, g_old)``.

    ``g_new`` is the column update from that ``f``, so the plan's column sums
    are ``b_j exp(g_old_j - g_new_j)``: the error costs no extra pass.
    """
    ratio = jnp.exp(jnp.where(b > 0, g_old - g_new, 0))
    return jnp.sum(b * jnp.abs(ratio - 1))


def _initial_potentials(a, b, dtype):
    """``f / epsilon = -log a``, ``g = 0``: the scalings ``u = v = 1``.

    The start of Algorithm 1 (``b = 1``), of OTT-JAX and of POT, so that a
    fixed number of iterations gives the same iterates as theirs.
    """
    f_hat = jnp.where(a > 0, -_safe_log(a), 0).astype(dtype)
    return f_hat, jnp.zeros(b.shape, dtype)


def _fix_gauge(f, g, a, b):
    shift = 0.5 * (jnp.vdot(a, f) - jnp.vdot(b, g))
    return f - shift, g + shift


def _iterate_to_threshold(c, a, b, epsilon, threshold, max_iterations, inner_iterations):
    """Sinkhorn in a ``while_loop`` until the marginal error is ``<= threshold``.

    Returns ``(f, g, error, iterations)`` with ``f``, ``g`` unscaled and in the
    gauge ``<a, f> = <b, g>``.
    """
    c_hat = c / epsilon
    log_a, log_b = _safe_log(a), _safe_log(b)
    f_start, g_start = _initial_potentials(a, b, c.dtype)

    def iteration(f_hat, g_hat):
        g_hat = _g_update(f_hat, g_hat, c_hat, log_a)
        return _f_update(f_hat, g_hat, c_hat, log_b), g_hat

    # Invariant of the carry: f_hat is the row update of g_hat, g_next is the
    # column update of f_hat and error the marginal error of (f_hat, g_hat),
    # found while computing g_next. A block of inner_iterations iterations
    # therefore costs exactly 2 * inner_iterations passes, error check included.
    def body(carry):
        f_hat, _, g_next, _, it = carry
        g_hat = g_next
        f_hat = _f_update(f_hat, g_hat, c_hat, log_b)
        f_hat, g_hat = lax.fori_loop(
            0, inner_iterations - 1, lambda _, fg: iteration(*fg), (f_hat, g_hat)
        )
        g_next = _g_update(f_hat, g_hat, c_hat, log_a)
        error = _column_error(g_hat, g_next, b)
        return f_hat, g_hat, g_next, error, it + inner_iterations

    def cond(carry):
        error, it = carry[3], carry[4]
        return (it < max_iterations) & ~(error <= threshold)

    g_first = _g_update(f_start, g_start, c_hat, log_a)
    init = (f_start, g_start, g_first, jnp.asarray(jnp.inf, c.dtype), jnp.int32(0))
    f_hat, g_hat, _, error, it = lax.while_loop(cond, body, init)
    f, g = _fix_gauge(epsilon * f_hat, epsilon * g_hat, a, b)
    return f, g, error, it


def _iterate_fixed(c, a, b, epsilon, num_iterations):
    """Exactly ``num_iterations`` Sinkhorn iterations in a ``lax.scan``."""
    c_hat = c / epsilon
    log_a, log_b = _safe_log(a), _safe_log(b)

    def step(fg, _):
        f_hat, g_hat = fg
        g_hat = _g_update(f_hat, g_hat, c_hat, log_a)
        f_hat = _f_update(f_hat, g_hat, c_hat, log_b)
        return (f_hat, g_hat), None

    init = _initial_potentials(a, b, c.dtype)
    (f_hat, g_hat), _ = lax.scan(step, init, None, length=num_iterations)
    return _fix_gauge(epsilon * f_hat, epsilon * g_hat, a, b)


def _symmetric_step(f_hat, c_hat, log_a):
    """``(f + T(f)) / 2`` (over ``epsilon``): one symmetric Sinkhorn update.

    ``T(f)`` is the row update from ``g = f`` (``_f_update``), so an update
    costs one pass over ``c_hat``.
    """
    return 0.5 * (f_hat + _f_update(f_hat, f_hat, c_hat, log_a))


def _iterate_symmetric_to_threshold(c, a, epsilon, threshold, max_iterations,
                                    inner_iterations):
    """Symmetric Sinkhorn in a ``while_loop`` until the marginal error is ``<= threshold``.

    Returns ``(f, error, iterations)`` with ``f`` unscaled.
    """
    c_hat = c / epsilon
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
        return (it < max_iterations) & ~(error <= threshold)

    t_first = _f_update(f_start, f_start, c_hat, log_a)
    init = (f_start, t_first, jnp.asarray(jnp.inf, c.dtype), jnp.int32(0))
    f_hat, _, error, it = lax.while_loop(cond, body, init)
    return epsilon * f_hat, error, it


def _iterate_symmetric_fixed(c, a, epsilon, num_iterations):
    """Exactly ``num_iterations`` symmetric Sinkhorn updates in a ``lax.scan``."""
    c_hat = c / epsilon
    log_a = _safe_log(a)
    f_start, _ = _initial_potentials(a, a, c.dtype)
    f_hat, _ = lax.scan(
        lambda f, _: (_symmetric_step(f, c_hat, log_a), None), f_start, None,
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
    plan = a[:, None] * b[None, :] * jnp.exp((f[:, None] + g[None, :] - c) / epsilon)
    gauge = (jnp.vdot(a, f) - jnp.vdot(b, g)) / epsilon
    return jnp.sum(plan, 1) - a + a * gauge, jnp.sum(plan, 0) - b - b * gauge


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _solve_implicit(max_iterations, inner_iterations, c, a, b, epsilon, threshold):
    return _iterate_to_threshold(
        c, a, b, epsilon, threshold, max_iterations, inner_iterations
    )


def _solve_implicit_fwd(max_iterations, inner_iterations, c, a, b, epsilon, threshold):
    out = _solve_implicit(max_iterations, inner_iterations, c, a, b, epsilon, threshold)
    f, g = out[0], out[1]
    return out, (f, g, c, a, b, epsilon, threshold)


def _solve_implicit_bwd(max_iterations, inner_iterations, res, out_bar):
    # Implicit function theorem at the root of _optimality:
    #   theta_bar = -(dE/dtheta)^T lam,   J lam = (f_bar, g_bar),
    # J = (H + v v^T) / eps. J is solved by conjugate gradients after a
    # diagonal (Jacobi) scaling by D = diag(P 1, P^T 1), which leaves
    # D^-1/2 H D^-1/2 = [[I, K], [K^T, I]] with eigenvalues 1 +- sigma_k(K)
    # in [0, 2] and the gauge direction at 2.
    f, g, c, a, b, epsilon, threshold = res
    f_bar, g_bar = out_bar[0], out_bar[1]
    plan = a[:, None] * b[None, :] * jnp.exp((f[:, None] + g[None, :] - c) / epsilon)
    row, col = jnp.sum(plan, 1), jnp.sum(plan, 0)
    # A zero-weight point has an empty row / column: keep J invertible there.
    row = jnp.where(row > 0, row, 1)
    col = jnp.where(col > 0, col, 1)
    inv_sqrt_row, inv_sqrt_col = lax.rsqrt(row), lax.rsqrt(col)
    k = inv_sqrt_row[:, None] * plan * inv_sqrt_col[None, :]
    s_a, s_b = a * inv_sqrt_row, -b * inv_sqrt_col

    def matvec(y):
        y1, y2 = y
        proj = jnp.vdot(s_a, y1) + jnp.vdot(s_b, y2)
        return (y1 + k @ y2 + s_a * proj, y2 + k.T @ y1 + s_b * proj)

    rhs = (epsilon * inv_sqrt_row * f_bar, epsilon * inv_sqrt_col * g_bar)
    tol = 1e-12 if c.dtype == jnp.float64 else 1e-6
    maxiter = max(max_iterations, 100)
    y, _ = jax.scipy.sparse.linalg.cg(matvec, rhs, tol=tol, maxiter=maxiter)
    lam = (inv_sqrt_row * y[0], inv_sqrt_col * y[1])
    _, vjp = jax.vjp(lambda c, a, b, eps: _optimality(f, g, c, a, b, eps), c, a, b, epsilon)
    c_bar, a_bar, b_bar, eps_bar = vjp(lam)
    return -c_bar, -a_bar, -b_bar, -eps_bar, jnp.zeros_like(threshold)


_solve_implicit.defvjp(_solve_implicit_fwd, _solve_implicit_bwd)


def _symmetric_optimality(f, c, a, epsilon):
    """The residual ``P 1 - a`` of the symmetric plan ``a_i a_j exp((f_i + f_j - C_ij) / eps)``.

    Its Jacobian in ``f`` is ``(diag(P 1) + P) / eps``, symmetric positive
    definite when ``P`` has a positive diagonal (``C_ii = 0``): no gauge is
    left once ``g = f``.
    """
    plan = a[:, None] * a[None, :] * jnp.exp((f[:, None] + f[None, :] - c) / epsilon)
    return jnp.sum(plan, 1) - a


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
    plan = a[:, None] * a[None, :] * jnp.exp((f[:, None] + f[None, :] - c) / epsilon)
    row = jnp.sum(plan, 1)
    inv_sqrt_row = lax.rsqrt(jnp.where(row > 0, row, 1))  # a zero weight: empty row
    k = inv_sqrt_row[:, None] * plan * inv_sqrt_row[None, :]
    tol = 1e-12 if c.dtype == jnp.float64 else 1e-6
    y, _ = jax.scipy.sparse.linalg.cg(
        lambda y: y + k @ y, epsilon * inv_sqrt_row * f_bar, tol=tol,
        maxiter=max(max_iterations, 100),
    )
    _, vjp = jax.vjp(lambda c, a, eps: _symmetric_optimality(f, c, a, eps), c, a, epsilon)
    c_bar, a_bar, eps_bar = vjp(inv_sqrt_row * y)
    return -c_bar, -a_bar, -eps_bar, jnp.zeros_like(threshold)


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
        "return_plan",
    ),
)
def _sinkhorn(
    x, y, a, b, epsilon, threshold, *, cost, max_iterations, inner_iterations,
    num_iterations, return_plan,
):
    """``sinkhorn`` on validated inputs of one dtype."""
    c = _cost_matrix(x, y, cost)
    if num_iterations is None:
        f, g, error, iterations = _solve_implicit(
            max_iterations, inner_iterations, c, a, b, epsilon, threshold
        )
    else:
        f, g = _iterate_fixed(c, a, b, epsilon, num_iterations)
        error, iterations = None, jnp.int32(num_iterations)
    return _output(c, a, b, f, g, epsilon, threshold, error, iterations, return_plan)


@functools.partial(
    jax.jit,
    static_argnames=("cost", "max_iterations", "inner_iterations", "num_iterations"),
)
def _self_transport(
    x, a, epsilon, threshold, *, cost, max_iterations, inner_iterations, num_iterations,
):
    """``sinkhorn(x, x, a=a, b=a)`` by symmetric updates, on validated inputs.

    The potentials ``f = g`` come from the symmetric fixed point
    ``f = T(f)``, ``T(f)_i = -eps log sum_j a_j exp((f_j - C_ij) / eps)``,
    reached by the averaged updates ``f <- (f + T(f)) / 2`` (Feydy et al.,
    eq. 25) from ``f = -eps log a``: a few dozen updates where the
    alternating ones, whose plan is nearly diagonal here, take thousands.
    ``iterations`` counts these updates (one pass over ``C`` each).
    """
    c = _self_cost_matrix(x, cost)
    if num_iterations is None:
        f, error, iterations = _solve_symmetric_implicit(
            max_iterations, inner_iterations, c, a, epsilon, threshold
        )
    else:
        f = _iterate_symmetric_fixed(c, a, epsilon, num_iterations)
        error, iterations = None, jnp.int32(num_iterations)
    return _output(c, a, a, f, f, epsilon, threshold, error, iterations, False)


def _output(c, a, b, f, g, epsilon, threshold, error, iterations, return_plan):
    """The ``SinkhornOutput`` of potentials ``f``, ``g``; ``error`` None: from the plan."""
    # One pass over the plan for its cost, mass and column marginal. The
    # plan's entries are at most about a_i (its rows sum to about a), so the
    # exponential cannot overflow.
    plan = a[:, None] * b[None, :] * jnp.exp((f[:, None] + g[None, :] - c) / epsilon)
    transport_cost = jnp.sum(plan * c)
    mass = jnp.sum(plan)
    regularized_cost = jnp.vdot(a, f) + jnp.vdot(b, g) - epsilon * (mass - 1)
    if error is None:
        error = jnp.sum(jnp.abs(jnp.sum(plan, 0) - b))
    error = lax.stop_gradient(error)
    return SinkhornOutput(
        cost=transport_cost,
        regularized_cost=regularized_cost,
        f=f,
        g=g,
        converged=error <= threshold,
        iterations=iterations,
        error=error,
        plan=plan if return_plan else None,
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
    return_plan: bool = False,
) -> SinkhornOutput:
    """Entropic optimal transport between two point clouds (Sinkhorn).

    Solves ``min_P <P, C> + epsilon KL(P || a b^T)`` over plans ``P`` with
    marginals ``a`` and ``b``, by Sinkhorn's alternating updates in the log
    domain (stable for any ``epsilon``)::

        g_j = -epsilon log sum_i a_i exp((f_i - C_ij) / epsilon)
        f_i = -epsilon log sum_j b_j exp((g_j - C_ij) / epsilon)

    starting from the scalings ``u = v = 1`` (``f = -epsilon log a``,
    ``g = 0``), ``g`` first, as OTT-JAX and POT's ``sinkhorn_log`` do: a
    fixed number of iterations gives their iterates. Each iteration is one of Algorithm 1's
    ``a = 1 / K b, b = 1 / K^T a`` steps, with ``u = exp(f / epsilon)``.

    Two modes:

    * convergence (the default, ``num_iterations=None``): iterates in a
      ``lax.while_loop`` until the marginal error ``sum_j |sum_i P_ij - b_j|``
      is at most ``threshold``, checked every ``inner_iterations`` iterations
      (at no extra cost: it falls out of the next ``g`` update), for at most
      ``max_iterations`` (rounded up to a multiple of ``inner_iterations``).
      Gradients use implicit differentiation of the fixed point (a
      ``custom_vjp``; a conjugate-gradient solve in the backward pass), so
      they cost about as much as a few dozen iterations and are exact at the
      solution (accurate to about ``threshold`` for the returned one).
    * fixed iterations (``num_iterations=T``): exactly ``T`` iterations in a
      ``lax.scan``, which ``vmap``s over batches of problems without waiting
      for the slowest. Gradients differentiate the ``T`` iterations
      themselves (unrolled reverse mode, storing O(T (n + m))).
      ``threshold`` only sets ``converged``; ``max_iterations`` is unused.

    Both modes support reverse-mode differentiation (``jax.grad``,
    ``jax.vjp``) with respect to ``x``, ``y``, ``a``, ``b`` and ``epsilon``
    (gradients in ``a``, ``b`` are meaningful along the simplex, i.e. up to
    an additive constant); forward mode (``jax.jvp``) is not supported.
    The potentials ``f``, ``g`` are fixed in the gauge ``<a, f> = <b, g>``.

    Each iteration takes two passes over the ``[n, m]`` cost matrix (one
    ``exp`` per entry each), which is computed and divided by ``epsilon``
    once. The log-sum-exps are stabilised by the previous iterate instead of
    a separate maximum pass (see ``_logsumexp``).

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
      return_plan: also return the ``[n, m]`` plan.

    Returns:
      A ``SinkhornOutput``: ``cost`` (``<P, C>``), ``regularized_cost``,
      potentials ``f`` ``[n]`` and ``g`` ``[m]``, ``converged``,
      ``iterations``, ``error`` and ``plan`` (``[n, m]`` or None).

    References:
      Cuturi, "Sinkhorn Distances: Lightspeed Computation of Optimal
      Transport", NeurIPS 2013, Algorithm 1.
      Peyré and Cuturi, "Computational Optimal Transport", 2019, sec. 4.4
      (log-domain updates, eq. 4.43) and 9.1.3 (implicit differentiation).
      Feydy et al., "Interpolating between Optimal Transport and MMD using
      Sinkhorn Divergences", AISTATS 2019, eq. 5 (the dual objective).
    """
    x, y, a, b, epsilon, threshold, static = _prepare(
        x, y, a, b, epsilon, cost, threshold, max_iterations, inner_iterations,
        num_iterations,
    )
    return _sinkhorn(x, y, a, b, epsilon, threshold, return_plan=bool(return_plan),
                     **static)


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
) -> SinkhornDivergenceOutput:
    """The debiased Sinkhorn divergence between two point clouds.

    ``S = OT_eps(x, y) - OT_eps(x, x) / 2 - OT_eps(y, y) / 2``, where
    ``OT_eps`` is the *regularised* cost (``SinkhornOutput.regularized_cost``,
    the entropic OT value including ``epsilon KL``), as in Feydy et al. and
    OTT-JAX's ``sinkhorn_divergence``. With that choice ``S >= 0``,
    ``S(x, x) = 0``, ``S`` is symmetric and metrises weak convergence; with
    the transport cost ``<P, C>`` instead, ``S`` can be negative.

    ``OT_eps(x, y)`` is solved by ``sinkhorn``. The two self-transport
    problems are solved by symmetric updates of a single potential
    (``f = g``)::

        f <- (f + T(f)) / 2,   T(f)_i = -epsilon log sum_j a_j exp((f_j - C_ij) / epsilon)

    starting from ``f = -epsilon log a`` (OTT-JAX's ``symmetric_sinkhorn``:
    parallel updates with momentum 1/2, the same iterates), until the
    marginal error of the plan ``a_i a_j exp((f_i + f_j - C_ij) / epsilon)``
    is at most ``threshold``. This needs a few dozen updates, one pass over
    the ``[n, n]`` cost each. Gradients: in the convergence mode, implicit
    differentiation of the fixed point ``f = T(f)`` (a conjugate-gradient
    solve with ``I + K``, ``K`` the Jacobi-scaled plan); in the
    fixed-iteration mode, the ``num_iterations`` updates are differentiated.

    All keyword arguments are those of ``sinkhorn``, shared by the three
    problems (``num_iterations`` counts symmetric updates for the two
    self-transport problems).

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

    Returns:
      A ``SinkhornDivergenceOutput``: ``divergence`` (a scalar), the three
      ``SinkhornOutput``s ``xy``, ``xx``, ``yy``, and ``converged``.

    References:
      Feydy et al., "Interpolating between Optimal Transport and MMD using
      Sinkhorn Divergences", AISTATS 2019, eq. 6 and Theorem 1 (the
      divergence), eq. 25 (the symmetric update).
      Genevay et al., "Learning Generative Models with Sinkhorn
      Divergences", AISTATS 2018, eq. 5.
    """
    x, y, a, b, epsilon, threshold, static = _prepare(
        x, y, a, b, epsilon, cost, threshold, max_iterations, inner_iterations,
        num_iterations,
    )
    xy = _sinkhorn(x, y, a, b, epsilon, threshold, return_plan=False, **static)
    xx = _self_transport(x, a, epsilon, threshold, **static)
    yy = _self_transport(y, b, epsilon, threshold, **static)
    divergence = xy.regularized_cost - 0.5 * (xx.regularized_cost + yy.regularized_cost)
    return SinkhornDivergenceOutput(
        divergence=divergence,
        xy=xy,
        xx=xx,
        yy=yy,
        converged=xy.converged & xx.converged & yy.converged,
    )
