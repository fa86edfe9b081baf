"""Ground costs of the Sinkhorn solvers: an ``[n, m]`` matrix, stored or recomputed.

The solvers in ``_sinkhorn`` see a cost only through the operations below
(sums of exponentials along an axis, plan marginals, plan-vector products),
so one solver serves both storages:

* ``Matrix``: the ``[n, m]`` matrix, computed once and read at every pass
  (fastest while it fits in memory);
* ``Points``: the clouds alone; every pass recomputes the matrix in blocks
  of rows (``O(block (m + d))`` memory per pass, never ``n m``), the
  "online" mode of GeomLoss and of OTT-JAX's ``PointCloud(batch_size=...)``.

Both are pytrees (their arrays are leaves), so ``jax.vjp`` through an
operation gives the cotangent of the stored matrix or of the points.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

# Up to this dimension the [n, m] costs are summed coordinate by coordinate
# from the differences x_ik - y_jk (exact: no cancellation, 0 on identical
# points, one fused elementwise pass per coordinate); above it the squared
# Euclidean cost uses the expansion |x|^2 + |y|^2 - 2 x.y (a matrix product)
# on centred clouds, and the Euclidean cost the differences reduced over d.
_COORDINATE_SUM_MAX_DIM = 8

# Dot products are written as sums of products: on GPUs a float32 jnp.dot
# may run in reduced precision (TF32), and these feed costs of any size.


def inner(x, v):
    """``[n]`` inner products ``<x_i, v>``, in full precision."""
    return jnp.sum(x * v, axis=-1)


def weighted_mean(x, w):
    """``sum_i w_i x_i``, ``[d]``."""
    return jnp.sum(w[:, None] * x, axis=0)


def squared_distances(x, y):
    """``[n, m]`` squared distances ``|x_i - y_j|^2``.

    Summed coordinate by coordinate from the differences when ``d`` is small
    (exact up to rounding of each term: no cancellation, exactly 0 on
    identical points); otherwise expanded as ``|x|^2 + |y|^2 - 2 x.y``, a
    matrix product whose cancellation is relative to ``|x|^2 + |y|^2``: the
    callers centre the clouds first.
    """
    d = x.shape[1]
    if d <= _COORDINATE_SUM_MAX_DIM:
        total = jnp.zeros((x.shape[0], y.shape[0]), x.dtype)
        for k in range(d):
            total = total + jnp.square(x[:, k, None] - y[None, :, k])
        return total
    cross = jnp.matmul(x, y.T, precision=lax.Precision.HIGHEST)
    sq = jnp.sum(x * x, 1)[:, None] + jnp.sum(y * y, 1)[None, :] - 2 * cross
    return jnp.maximum(sq, 0)


def safe_sqrt(sq):
    """``sqrt`` with derivative 0 (a subgradient of the norm) at 0, not inf."""
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1)), 0)


def distances(x, y):
    """``[n, m]`` distances ``|x_i - y_j|``, from the differences (exactly 0 on identical points)."""
    if x.shape[1] <= _COORDINATE_SUM_MAX_DIM:
        sq = squared_distances(x, y)
    else:
        sq = jnp.sum(jnp.square(x[:, None, :] - y[None, :, :]), axis=-1)
    return safe_sqrt(sq)


def expand(v, axis):
    """Broadcasts a vector indexed by the non-reduced axis to ``[n, m]``."""
    return v[:, None] if axis == 1 else v[None, :]


def expand_other(v, axis):
    """Broadcasts a vector indexed by the reduced axis to ``[n, m]``."""
    return v[None, :] if axis == 1 else v[:, None]


def _scaled(c, scale):
    return c if scale is None else scale * c


def _plan(c, f, g, a, b, epsilon):
    return a[:, None] * b[None, :] * jnp.exp((f[:, None] + g[None, :] - c) / epsilon)


# ------------------------------------------------------------ log-sum-exp


def logsumexp_exact(h, storage, axis, scale=None):
    """``LSE over axis of (h - scale c)``, stabilised by the exact maximum (two passes)."""
    top = -storage.min_cost(h, axis, scale)
    top = jnp.where(jnp.isfinite(top), top, 0)
    return top + jnp.log(storage.sum_exp(h, top, axis, scale))


def shifted_logsumexp(h, storage, shift, axis, scale=None):
    """``LSE over axis of (h - scale c)`` in one pass over the cost.

    ``shift`` (a vector over the kept axis) is a guess of the result: the
    previous iterate's value. The sum ``exp(h - c - shift)`` then takes a
    single pass over the ``[n, m]`` costs, instead of the two (maximum, then
    sum) of a textbook log-sum-exp. Where the guess is too far off for the
    sum to be accurate in floating point (it overflows, or falls below
    ``exp(-|log tiny| / 2)``), the exact two-pass form is used instead. That
    fallback is a ``while_loop`` of 0 or 1 trips, so under ``vmap`` it runs
    only when some problem of the batch needs it (a ``cond`` would run both
    branches for every problem). ``scale`` (a scalar, None for 1) multiplies
    the cost inside the pass, so epsilon-scaling needs no rescaled copy.
    (The minimum of the exact form is written as ``min(c - h)`` rather than
    ``max(h - c)``: XLA would otherwise share, i.e. materialise, the
    ``[n, m]`` difference between the two passes.)
    """
    out = shift + jnp.log(storage.sum_exp(h, shift, axis, scale))
    floor = 0.5 * math.log(jnp.finfo(storage.dtype).tiny)
    bad = jnp.any(~(jnp.isfinite(out) & (out - shift > floor)))

    def fallback(carry):
        return logsumexp_exact(h, storage, axis, scale), jnp.zeros_like(carry[1])

    out, _ = lax.while_loop(lambda carry: carry[1], fallback, (out, bad))
    return out


# --------------------------------------------------------------- a matrix


@functools.partial(jax.tree_util.register_dataclass, data_fields=("c",), meta_fields=())
@dataclasses.dataclass(frozen=True)
class Matrix:
    """A stored ``[n, m]`` cost matrix ``c``."""

    c: jax.Array

    @property
    def shape(self):
        return self.c.shape

    @property
    def dtype(self):
        return self.c.dtype

    def divided(self, epsilon):
        """The cost ``c / epsilon`` (computed and stored once)."""
        return Matrix(self.c / epsilon)

    def range(self):
        """``max c - min c``."""
        return jnp.max(self.c) - jnp.min(self.c)

    def sum_exp(self, h, shift, axis, scale=None):
        """``sum over axis of exp(h - scale c - shift)``: one pass over ``c``."""
        return jnp.sum(
            jnp.exp(expand_other(h, axis) - _scaled(self.c, scale) - expand(shift, axis)),
            axis=axis,
        )

    def min_cost(self, h, axis, scale=None):
        """``min over axis of (scale c - h)``: one pass over ``c``."""
        return jnp.min(_scaled(self.c, scale) - expand_other(h, axis), axis=axis)

    def logsumexp(self, h, shift, axis):
        """``LSE over axis of (h - c)``, differentiable, with ``shift`` a guess of the result."""
        return _matrix_logsumexp(h, self.c, shift, axis)

    def plan_sums(self, f, g, a, b, epsilon):
        """``(P 1, P^T 1, <P, c>)`` of ``P = a b^T exp((f + g - c) / epsilon)``, differentiable."""
        plan = _plan(self.c, f, g, a, b, epsilon)
        return jnp.sum(plan, 1), jnp.sum(plan, 0), jnp.sum(plan * self.c)

    def plan_products(self, f, g, a, b, epsilon):
        """``(v -> P v, u -> P^T u)`` for the plan of ``plan_sums`` (computed once)."""
        plan = _plan(self.c, f, g, a, b, epsilon)
        return (lambda v: jnp.matmul(plan, v, precision=lax.Precision.HIGHEST),
                lambda u: jnp.matmul(plan.T, u, precision=lax.Precision.HIGHEST))

    def plan(self, f, g, a, b, epsilon):
        return _plan(self.c, f, g, a, b, epsilon)

    def iteration(self, step):
        """``step``, the body of a scan over iterations, as is.

        Reverse mode stores what each iteration's log-sum-exps keep: vectors
        (``_matrix_logsumexp``), the matrix being shared by all of them.
        """
        return step


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _matrix_logsumexp(h, c, shift, axis):
    """``shifted_logsumexp`` with a backward pass that stores no ``[n, m]`` array."""
    return shifted_logsumexp(h, Matrix(c), shift, axis)


def _matrix_logsumexp_fwd(h, c, shift, axis):
    out = _matrix_logsumexp(h, c, shift, axis)
    return out, (h, c, shift, out)


def _matrix_logsumexp_bwd(axis, res, out_bar):
    # The softmax weights are recomputed here rather than saved, so reverse
    # mode through a lax.scan of T iterations stores O(T (n + m)), not
    # O(T n m).
    h, c, shift, out = res
    weights = jnp.exp(expand_other(h, axis) - c - expand(out, axis))
    weighted = weights * expand(out_bar, axis)
    h_bar = jnp.sum(weighted, axis=1 - axis)
    return h_bar, -weighted, jnp.zeros_like(shift)


_matrix_logsumexp.defvjp(_matrix_logsumexp_fwd, _matrix_logsumexp_bwd)


# ----------------------------------------------------------------- points


def block_rows(n, m, itemsize, block_bytes):
    """Rows per block so that a ``[rows, m]`` block takes about ``block_bytes``; at most ``n``."""
    return max(1, min(n, block_bytes // max(1, m * itemsize)))


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=("x", "y", "u", "v", "factor"),
    meta_fields=("n", "block", "cost", "zero_diagonal"),
)
@dataclasses.dataclass(frozen=True)
class Points:
    """A cost ``factor * (k(x_i, y_j) - u_i - v_j)`` recomputed in blocks of ``block`` rows.

    ``k`` is ``|x_i - y_j|^2`` (``cost = "sqeuclidean"``) or ``|x_i - y_j|``
    (``"euclidean"``). ``x`` is padded with zero rows (and ``u`` with zeros)
    to a whole number of blocks; the operations take and return vectors over
    the ``n`` real rows, the padded rows carrying no mass (their ``h`` is
    ``-inf`` in column sums, their outputs dropped). ``zero_diagonal``: the
    cost of ``x`` to itself, with ``c_ii = 0`` exactly.
    """

    x: jax.Array  # [blocks * block, d]
    y: jax.Array  # [m, d]
    u: jax.Array  # [blocks * block]
    v: jax.Array  # [m]
    factor: jax.Array  # []
    n: int
    block: int
    cost: str
    zero_diagonal: bool

    @classmethod
    def create(cls, x, y, u, v, *, cost, block, zero_diagonal=False):
        n = x.shape[0]
        block = max(1, min(block, n))
        pad = -n % block
        return cls(
            x=jnp.pad(x, ((0, pad), (0, 0))), y=y, u=jnp.pad(u, (0, pad)), v=v,
            factor=jnp.ones((), x.dtype), n=n, block=block, cost=cost,
            zero_diagonal=zero_diagonal,
        )

    @property
    def shape(self):
        return (self.n, self.y.shape[0])

    @property
    def dtype(self):
        return self.x.dtype

    @property
    def _blocks(self):
        return self.x.shape[0] // self.block

    def divided(self, epsilon):
        return dataclasses.replace(self, factor=self.factor / epsilon)

    def _cost(self, k):
        """The ``[block, m]`` costs of the rows of block ``k``."""
        start = k * self.block
        xb = lax.dynamic_slice_in_dim(self.x, start, self.block)
        if self.cost == "sqeuclidean":
            c = squared_distances(xb, self.y)
        else:
            ub = lax.dynamic_slice_in_dim(self.u, start, self.block)
            c = distances(xb, self.y) - ub[:, None] - self.v[None, :]
        if self.zero_diagonal:
            rows = start + jnp.arange(self.block)
            c = jnp.where(rows[:, None] == jnp.arange(c.shape[1])[None, :], 0, c)
        return self.factor * c

    def _rows(self, v, fill):
        """``[n]`` to the padded ``[blocks, block]``."""
        return jnp.pad(v, (0, self.x.shape[0] - self.n), constant_values=fill).reshape(
            self._blocks, self.block)

    def _unrows(self, blocks):
        return blocks.reshape(-1)[: self.n]

    def range(self):
        def body(k, lo_hi):
            c = self._cost(k)
            valid = (k * self.block + jnp.arange(self.block) < self.n)[:, None]
            lo = jnp.minimum(lo_hi[0], jnp.min(jnp.where(valid, c, jnp.inf)))
            hi = jnp.maximum(lo_hi[1], jnp.max(jnp.where(valid, c, -jnp.inf)))
            return lo, hi

        inf = jnp.asarray(jnp.inf, self.dtype)
        lo, hi = lax.fori_loop(0, self._blocks, body, (inf, -inf))
        return hi - lo

    def _over_blocks(self, h, shift, axis, row_fill, block_fn, combine, init):
        """Applies ``block_fn(c_block, h_rows_or_cols, shift_...)`` per block.

        axis 0 (reduce over rows): ``combine``s the blocks' ``[m]`` results
        from ``init``; axis 1 (reduce over columns): one ``[block]`` result
        per block, returned as ``[n]``.
        """
        if axis == 0:
            hs = self._rows(h, row_fill)

            def body(k, acc):
                return combine(acc, block_fn(self._cost(k), hs[k][:, None], shift[None, :], 0))

            return lax.fori_loop(0, self._blocks, body, init)
        shifts = self._rows(shift, 0)
        out = lax.map(
            lambda k: block_fn(self._cost(k), h[None, :], shifts[k][:, None], 1),
            jnp.arange(self._blocks),
        )
        return self._unrows(out)

    def sum_exp(self, h, shift, axis, scale=None):
        return self._over_blocks(
            h, shift, axis, -jnp.inf,
            lambda c, hh, s, ax: jnp.sum(jnp.exp(hh - _scaled(c, scale) - s), axis=ax),
            jnp.add, jnp.zeros(shift.shape, self.dtype),
        )

    def min_cost(self, h, axis, scale=None):
        return self._over_blocks(
            h, jnp.zeros(self.y.shape[0] if axis == 0 else self.n, self.dtype), axis, -jnp.inf,
            lambda c, hh, s, ax: jnp.min(_scaled(c, scale) - hh, axis=ax),
            jnp.minimum, jnp.full(self.y.shape[0], jnp.inf, self.dtype),
        )

    def logsumexp(self, h, shift, axis):
        """``LSE over axis of (h - c)``, exact (each block stabilised by its maximum).

        Differentiable by plain reverse mode: each block is recomputed in the
        backward pass (``jax.checkpoint``), so reverse mode through ``T``
        iterations stores ``O(T (n + m blocks))``, no ``[n, m]`` array.
        """
        if axis == 0:
            hs = self._rows(h, -jnp.inf)

            @jax.checkpoint
            def body(acc, k):
                block = jax.nn.logsumexp(hs[k][:, None] - self._cost(k), axis=0)
                return jnp.logaddexp(acc, block), None

            init = jnp.full(self.y.shape[0], -jnp.inf, self.dtype)
            out, _ = lax.scan(body, init, jnp.arange(self._blocks))
            return out

        @jax.checkpoint
        def row_block(k):
            return jax.nn.logsumexp(h[None, :] - self._cost(k), axis=1)

        return self._unrows(lax.map(row_block, jnp.arange(self._blocks)))

    def plan_sums(self, f, g, a, b, epsilon):
        fs, as_ = self._rows(f, 0), self._rows(a, 0)

        @jax.checkpoint
        def body(carry, k):
            col, total = carry
            c = self._cost(k)
            plan = _plan(c, fs[k], g, as_[k], b, epsilon)
            return (col + jnp.sum(plan, 0), total + jnp.sum(plan * c)), jnp.sum(plan, 1)

        zero = jnp.zeros((), self.dtype)
        (col, total), row = lax.scan(
            body, (jnp.zeros(self.y.shape[0], self.dtype), zero), jnp.arange(self._blocks))
        return self._unrows(row), col, total

    def plan_products(self, f, g, a, b, epsilon):
        fs, as_ = self._rows(f, 0), self._rows(a, 0)

        def block_plan(k):
            return _plan(self._cost(k), fs[k], g, as_[k], b, epsilon)

        def matvec(v):
            return self._unrows(lax.map(
                lambda k: jnp.matmul(block_plan(k), v, precision=lax.Precision.HIGHEST),
                jnp.arange(self._blocks)))

        def rmatvec(u):
            us = self._rows(u, 0)
            return lax.fori_loop(
                0, self._blocks,
                lambda k, acc: acc + jnp.matmul(us[k], block_plan(k),
                                                precision=lax.Precision.HIGHEST),
                jnp.zeros(self.y.shape[0], self.dtype))

        return matvec, rmatvec

    def iteration(self, step):
        """``step``, the body of a scan over iterations, recomputed in the backward pass.

        Without it, reverse mode through a ``lax.scan`` of blocked passes
        kept ``O(T n m)`` (200 MiB of temporaries at n = 2,048, m = 8,192 and
        T = 4, where the matrix takes 64 MiB): every block's cost depends
        only on the points, and the scan's backward holds them for all
        blocks. Under ``jax.checkpoint`` it keeps the carried potentials
        (``O(T (n + m))``), at the price of one more forward pass per
        iteration in the backward.
        """
        return jax.checkpoint(step)

    def plan(self, f, g, a, b, epsilon):
        raise ValueError(
            "return_plan=True needs the [n, m] plan, which the online mode never stores: "
            "use online=None (a stored cost matrix) to get it."
        )


