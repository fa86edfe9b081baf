"""Evaluation metrics: jgan versus OTT-JAX and POT.

Sections (each a function returning rows; ``main`` prints each as a markdown
table and collects them into the ``--out`` JSON):

- ``sinkhorn_fixed``: the same epsilon and the same number T of log-domain
  Sinkhorn iterations for all three libraries, from the same start (so the
  same iterates in exact arithmetic): jgan ``sinkhorn(num_iterations=T)`` and
  OTT-JAX ``linear.solve(min_iterations=max_iterations=T)`` jitted, POT
  ``ot.sinkhorn2(method="sinkhorn_log", numItermax=T, stopThr=0)`` on numpy.
  Reported: median wall time of a call (after a warm-up / compile call, with
  ``jax.block_until_ready``), the achieved marginal error
  ``sum_j |sum_i P_ij - b_j|`` (computed by this script from each library's
  plan, in float64) and the transport cost ``<P, C>``.
- ``sinkhorn_converged``: each library's own stopping rule, run to the same
  threshold on its marginal error (checked every 10 iterations by all three;
  POT's is the L2 norm of the same difference, the others' the L1 norm).
- ``kernel_bound``: what bounds an iteration: the time of one jgan iteration
  divided by two passes of a bare ``sum(exp(.))`` over an ``[n, m]`` matrix,
  and the achieved exponentials per second.
- ``frechet``: jgan's ``frechet_distance`` (two symmetric eigendecompositions,
  jitted; float64 and float32) against pytorch-fid's formula (scipy's
  ``sqrtm`` of the non-symmetric product, float64) on the statistics of
  correlated random features, d = 64 and 2048: time and relative difference.
- ``mmd_fid_accuracy``: ``mmd2``, ``kid`` and ``fid`` in float32 (and
  float64) against a float64 reference computed independently on the same
  float32 data, with both samples shifted by 0, 1e3 and 1e6: ``mmd2`` against
  numpy from differences ``a - b`` (exact on float32 inputs), ``kid`` against
  exact rational arithmetic (Python fractions), ``fid`` against numpy's
  covariances and scipy's ``sqrtm`` (pytorch-fid's formula).
- ``sinkhorn_accuracy``: ``sinkhorn_divergence`` and ``sinkhorn(...).cost``
  (epsilon 0.05, threshold 1e-5) in float32 (and float64) with ``y``, or
  both clouds, moved by ``|c|`` = 0, 1e3, 1e6, against float64 OTT-JAX and
  POT values of the unmoved clouds plus the exact translation identity
  ``|c|^2 - 2 <c, x_bar - y_bar>`` of the squared Euclidean cost.

Usage::

    python -m benchmarks.metrics --sizes 256 1024 4096 --dims 2 64 \\
        --iterations 100 --repeats 5 --out runs/metrics
    python -m benchmarks.metrics --sizes 256 --dims 2 --repeats 3   # quick
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from examples import _harness as harness
from examples._harness import option
from jgan.metrics import SinkhornNotConverged, frechet_distance, sinkhorn, sinkhorn_divergence
from jgan.metrics import fid, kid, mmd2

SECTIONS = ("sinkhorn_fixed", "sinkhorn_converged", "kernel_bound", "frechet", "mmd_fid_accuracy",
            "sinkhorn_accuracy")


def _median_time(fn, repeats):
    """Median wall seconds of ``fn()`` after one warm-up call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _problem(n, d, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (rng.normal(size=(n, d)) * 0.8 + 0.5).astype(np.float32)
    return x, y


def _epsilon(d):
    # About 5 % of the mean squared distance (which is about 2 d here).
    return 0.1 * d


def _error_and_cost(plan, x, y):
    plan = np.asarray(plan, np.float64)
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    c = (x64**2).sum(1)[:, None] + (y64**2).sum(1)[None] - 2 * x64 @ y64.T
    b = np.full(plan.shape[1], 1 / plan.shape[1])
    return float(np.abs(plan.sum(0) - b).sum()), float((plan * np.maximum(c, 0)).sum())


def _ott_solve(x, y, epsilon, **kwargs):
    from ott.geometry import pointcloud
    from ott.solvers import linear

    out = linear.solve(pointcloud.PointCloud(x, y, epsilon=epsilon), **kwargs)
    return out.matrix, out.n_iters


def sinkhorn_fixed(sizes, dims, iterations, repeats, pot_max_n):
    """Same epsilon, same iterations: time, marginal error, cost."""
    import ot

    rows = []
    for d in dims:
        for n in sizes:
            x, y = _problem(n, d)
            eps = _epsilon(d)
            t = iterations
            jgan_fn = jax.jit(
                lambda x, y: sinkhorn(x, y, epsilon=eps, num_iterations=t, return_plan=True)
            )
            ott_fn = jax.jit(
                lambda x, y: _ott_solve(
                    x, y, eps, threshold=-1.0, min_iterations=t, max_iterations=t,
                    inner_iterations=t,
                )
            )
            xj, yj = jnp.asarray(x), jnp.asarray(y)
            results = {
                "jgan": (_median_time(lambda: jgan_fn(xj, yj), repeats), jgan_fn(xj, yj).plan),
                "ott": (_median_time(lambda: ott_fn(xj, yj), repeats), ott_fn(xj, yj)[0]),
            }
            if n <= pot_max_n:
                a = np.full(n, 1 / n, np.float32)
                m_cost = ot.dist(x, y)

                def pot_fn():
                    return ot.sinkhorn(a, a, m_cost, eps, method="sinkhorn_log",
                                       numItermax=t, stopThr=0.0, warn=False)

                results["pot"] = (_median_time(pot_fn, max(1, min(repeats, 3))), pot_fn())
            base = results["jgan"][0]
            for lib, (seconds, plan) in results.items():
                error, cost = _error_and_cost(plan, x, y)
                rows.append(dict(
                    n=n, d=d, epsilon=eps, iterations=t, library=lib,
                    time_ms=1e3 * seconds, vs_jgan=seconds / base,
                    marginal_error=error, cost=cost,
                ))
    return rows


def sinkhorn_converged(sizes, dims, threshold, repeats, pot_max_n):
    """Each library's default stopping rule at the same threshold."""
    import ot

    rows = []
    for d in dims:
        for n in sizes:
            x, y = _problem(n, d)
            eps = _epsilon(d)
            xj, yj = jnp.asarray(x), jnp.asarray(y)
            jgan_fn = jax.jit(
                lambda x, y: sinkhorn(x, y, epsilon=eps, threshold=threshold,
                                      max_iterations=10_000, return_plan=True)
            )
            ott_fn = jax.jit(
                lambda x, y: _ott_solve(x, y, eps, threshold=threshold, max_iterations=10_000)
            )
            out = jgan_fn(xj, yj)
            ott_out = ott_fn(xj, yj)
            results = {
                "jgan": (_median_time(lambda: jgan_fn(xj, yj), repeats), out.plan,
                         int(out.iterations)),
                "ott": (_median_time(lambda: ott_fn(xj, yj), repeats), ott_out[0],
                        int(ott_out[1])),
            }
            if n <= pot_max_n:
                a = np.full(n, 1 / n, np.float32)
                m_cost = ot.dist(x, y)

                def pot_fn():
                    return ot.sinkhorn(a, a, m_cost, eps, method="sinkhorn_log",
                                       numItermax=10_000, stopThr=threshold, log=True,
                                       warn=False)

                plan, log = pot_fn()
                results["pot"] = (_median_time(pot_fn, max(1, min(repeats, 3))), plan,
                                  int(log["niter"]) + 1)
            base = results["jgan"][0]
            for lib, (seconds, plan, iters) in results.items():
                error, cost = _error_and_cost(plan, x, y)
                rows.append(dict(
                    n=n, d=d, epsilon=eps, threshold=threshold, library=lib,
                    iterations=iters, time_ms=1e3 * seconds, vs_jgan=seconds / base,
                    marginal_error=error, cost=cost,
                ))
    return rows


def kernel_bound(sizes, iterations, repeats):
    """One jgan iteration versus two bare exp-and-sum passes."""
    rows = []
    for n in sizes:
        x, y = _problem(n, 2)
        xj, yj = jnp.asarray(x), jnp.asarray(y)
        t = iterations
        fn = jax.jit(lambda x, y: sinkhorn(x, y, epsilon=0.2, num_iterations=t).cost)
        one = jax.jit(lambda x, y: sinkhorn(x, y, epsilon=0.2, num_iterations=1).cost)
        per_iteration = (_median_time(lambda: fn(xj, yj), repeats)
                         - _median_time(lambda: one(xj, yj), repeats)) / (t - 1)
        z = jax.random.normal(jax.random.key(0), (n, n))
        bare = jax.jit(lambda z: jnp.sum(jnp.exp(z), axis=1))
        pass_seconds = _median_time(lambda: bare(z), max(repeats, 10))
        rows.append(dict(
            n=n, iteration_ms=1e3 * per_iteration, bare_pass_ms=1e3 * pass_seconds,
            iteration_over_two_passes=per_iteration / (2 * pass_seconds),
            exp_per_s_iteration=2 * n * n / per_iteration,
            exp_per_s_bare=n * n / pass_seconds,
        ))
    return rows


def _frechet_scipy(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's ``calculate_frechet_distance``: scipy's ``sqrtm`` of the product."""
    from scipy import linalg

    diff = mu1 - mu2
    # pytorch-fid passes ``disp=False``, which SciPy 1.16 deprecated and 1.18
    # removed; without it ``sqrtm`` returns the root alone on every SciPy.
    # (SciPy 1.11.2-1.12 returned wrong roots: the dev extra requires 1.13.)
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet(dims, samples, repeats):
    """jgan's ``frechet_distance`` (eigh, jitted) versus pytorch-fid's scipy path.

    Gaussian statistics of ``samples`` random features (correlated, as real
    features are) in ``d`` dimensions; float64 for both, and jgan in float32
    too. ``rel. diff`` is relative to the scipy value.
    """
    rows = []
    for d in dims:
        rng = np.random.default_rng(d)
        mix = rng.normal(size=(d, d)) / np.sqrt(d)
        f1 = rng.normal(size=(samples, d)) @ mix
        f2 = (rng.normal(size=(samples, d)) * 1.1 + 0.1) @ mix
        mu1, mu2 = f1.mean(0), f2.mean(0)
        s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
        _frechet_scipy(np.zeros(2), np.eye(2), np.ones(2), np.eye(2))  # imports, first-call set-up
        times = []
        for _ in range(repeats if d <= 512 else 1):  # sqrtm takes tens of seconds at d = 2048
            start = time.perf_counter()
            reference = _frechet_scipy(mu1, s1, mu2, s2)
            times.append(time.perf_counter() - start)
        scipy_seconds = statistics.median(times)
        row = dict(d=d, samples=samples, scipy_s=scipy_seconds, fid=reference)
        for name, dtype in (("float64", jnp.float64), ("float32", jnp.float32)):
            with jax.enable_x64(dtype == jnp.float64):
                args = [jnp.asarray(a, dtype) for a in (mu1, s1, mu2, s2)]
                fn = jax.jit(frechet_distance)
                seconds = _median_time(lambda: fn(*args), repeats)
                value = float(fn(*args))
            row[f"jgan_{name}_s"] = seconds
            row[f"speedup_{name}"] = scipy_seconds / seconds
            row[f"rel_diff_{name}"] = abs(value - reference) / abs(reference)
        rows.append(row)
    return rows


def _numpy_mmd2(x, y, bandwidth):
    """Unbiased Gaussian MMD² in float64 from differences (exact on float32 inputs)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def k(a, b):
        return np.exp(-np.sum((a[:, None] - b[None]) ** 2, axis=-1) / (2 * bandwidth**2))

    n, m = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1))
                 + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * k(x, y).mean())


def _exact_kid(x, y, gamma, coef0=1, degree=3):
    """The unbiased polynomial MMD² in exact rational arithmetic."""
    from fractions import Fraction

    xs = [[Fraction(float(v)) for v in row] for row in x]
    ys = [[Fraction(float(v)) for v in row] for row in y]
    g, c = Fraction(gamma), Fraction(coef0)

    def k(a, b):
        return (g * sum(p * q for p, q in zip(a, b)) + c) ** degree

    n, m = len(xs), len(ys)
    sxx = sum(k(xs[i], xs[j]) for i in range(n) for j in range(n) if i != j)
    syy = sum(k(ys[i], ys[j]) for i in range(m) for j in range(m) if i != j)
    sxy = sum(k(a, b) for a in xs for b in ys)
    return float(sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2 * sxy / (n * m))


def mmd_fid_accuracy(offsets, seed=0):
    """Float32 (and float64) ``mmd2``, ``kid``, ``fid`` at shared offsets versus float64 references.

    Both samples are drawn near the origin (``y`` slightly wider and shifted,
    so every value is clearly non-zero), shifted by ``offset`` in every
    coordinate and rounded to float32; references are computed in float64
    from those same float32 values. ``rel_err_*`` is ``|jgan - ref| / |ref|``.
    """
    rows = []
    rng = np.random.default_rng(seed)
    base = {
        "mmd2": (rng.normal(size=(256, 8)), rng.normal(size=(256, 8)) * 1.2 + 0.2),
        "kid": (rng.normal(size=(24, 4)), rng.normal(size=(24, 4)) * 1.2 + 0.2),
        "fid": (rng.normal(size=(2000, 64)), rng.normal(size=(2000, 64)) * 1.2 + 0.05),
    }
    for name, (a, b) in base.items():
        n, d = a.shape
        for offset in offsets:
            x32, y32 = (a + offset).astype(np.float32), (b + offset).astype(np.float32)
            x64, y64 = x32.astype(np.float64), y32.astype(np.float64)
            if name == "mmd2":
                reference = _numpy_mmd2(x64, y64, 1.0)
                run = lambda x, y: mmd2(x, y, bandwidth=1.0)  # noqa: E731
                how = "numpy f64, differences; bandwidth 1"
            elif name == "kid":
                reference = _exact_kid(x64, y64, gamma=1 / d)
                run = lambda x, y: kid(x, y, subsets=1, subset_size=n, key=jax.random.key(0)).mean  # noqa: E731
                how = "exact fractions; one subset of all rows"
            else:
                reference = _frechet_scipy(x64.mean(0), np.cov(x64, rowvar=False),
                                           y64.mean(0), np.cov(y64, rowvar=False))
                run = fid
                how = "numpy cov + scipy sqrtm, f64"
            row = dict(metric=name, offset=float(offset), n=n, d=d, reference=reference)
            for dtype_name, x, y in (("float32", x32, y32), ("float64", x64, y64)):
                with jax.enable_x64(dtype_name == "float64"):
                    value = float(run(x, y))
                row[f"jgan_{dtype_name}"] = value
                row[f"rel_err_{dtype_name}"] = abs(value - reference) / abs(reference)
            row["reference_from"] = how
            rows.append(row)
    return rows


def _sinkhorn_references(x, y, epsilon):
    """``{"divergence": S, "transport_cost": <P, C>}`` in float64: OTT-JAX and POT.

    Their thresholds (1e-6 on OTT's L1, 1e-7 on POT's L2 marginal error)
    leave relative errors below 1e-6 here (against 1e-8 and 1e-9: 1.4e-7 and
    4e-7 at n = 256, epsilon = 0.05), far below float32's.
    """
    import ot
    from ott.geometry import pointcloud
    from ott.tools import sinkhorn_divergence as ott_divergence

    with jax.enable_x64(True):
        divergence, _ = ott_divergence.sinkhorn_divergence(
            pointcloud.PointCloud, jnp.asarray(x), jnp.asarray(y), epsilon=epsilon,
            solve_kwargs=dict(threshold=1e-6, max_iterations=100_000),
        )
    n, m = len(x), len(y)
    transport = ot.sinkhorn2(np.full(n, 1 / n), np.full(m, 1 / m), ot.dist(x, y), epsilon,
                             method="sinkhorn_log", numItermax=200_000, stopThr=1e-7)
    return {"divergence": float(divergence), "transport_cost": float(transport)}


def sinkhorn_accuracy(offsets, epsilon=0.05, n=256, threshold=1e-5, seed=0):
    """Float32 (and float64) ``sinkhorn_divergence`` and ``sinkhorn(...).cost`` far from the origin.

    ``x``, ``y`` ~ N(0, 1) ``[n, 2]``; ``y`` (or both clouds) is moved by
    ``c`` with ``|c| = offset`` and rounded to float32. The reference is
    exact for those float32 points: the float64 value (OTT-JAX's
    ``sinkhorn_divergence``, POT's ``sinkhorn2``) of
    ``x`` and ``y~ = y32 - c`` (in float64), plus the translation identity
    of the squared Euclidean cost, ``|c|^2 - 2 <c, mean(x) - mean(y~)>``
    (0 when both moved). jgan runs at ``threshold`` 1e-5 (the default 1e-3
    leaves a convergence error of about 1e-3 in the transport cost, in
    float64 as in float32, which would hide float32's own), otherwise at its
    defaults. ``rel_err_*`` is ``|jgan - ref| / |ref|``; ``converged`` is
    float32's.
    """
    rng = np.random.default_rng(seed)
    x0, y0 = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
    direction = np.array([0.6, 0.8])
    cases = [(0.0, "-")] + [(o, moved) for o in offsets if o != 0 for moved in ("y", "x and y")]
    rows = []
    for offset, moved in cases:
        c = offset * direction
        x32 = (x0 + c if moved == "x and y" else x0).astype(np.float32)
        y32 = (y0 + c).astype(np.float32)
        x_back = x32.astype(np.float64) - (c if moved == "x and y" else 0)
        y_back = y32.astype(np.float64) - c
        shift = 0.0 if moved == "x and y" else float(c @ c - 2 * c @ (x_back.mean(0) - y_back.mean(0)))
        references = _sinkhorn_references(x_back, y_back, epsilon)
        runs = {
            "divergence": lambda x, y: sinkhorn_divergence(x, y, epsilon=epsilon,
                                                           threshold=threshold),
            "transport_cost": lambda x, y: sinkhorn(x, y, epsilon=epsilon, threshold=threshold),
        }
        for metric, run in runs.items():
            reference = references[metric] + shift
            row = dict(metric=metric, moved=moved, offset=float(offset), n=n, epsilon=epsilon,
                       threshold=threshold, reference=reference)
            for dtype_name, x, y in (("float32", x32, y32),
                                     ("float64", x32.astype(np.float64), y32.astype(np.float64))):
                with jax.enable_x64(dtype_name == "float64"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", SinkhornNotConverged)  # reported as a column
                    out = run(x, y)
                value = float(out.divergence if metric == "divergence" else out.cost)
                row[f"jgan_{dtype_name}"] = value
                row[f"rel_err_{dtype_name}"] = abs(value - reference) / abs(reference)
                if dtype_name == "float32":
                    row["converged"] = bool(out.converged)
            rows.append(row)
    return rows


def _format(value):
    if isinstance(value, float):
        if value == 0 or 1e-2 <= abs(value) < 1e5:
            return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
        return f"{value:.2e}"
    return str(value)


def print_table(title, rows):
    """Prints ``rows`` (dicts with the same keys) as a markdown table."""
    print(f"\n### {title}\n")
    if not rows:
        print("(no rows)")
        return
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("| " + " | ".join("---:" for _ in keys) + " |")
    for row in rows:
        print("| " + " | ".join(_format(row[k]) for k in keys) + " |")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The benchmark's command line."""

    sizes: tuple[int, ...] = option((256, 1024, 4096), "the point-cloud sizes n (= m)")
    dims: tuple[int, ...] = option((2, 64), "the point dimensions d")
    iterations: int = option(100, "Sinkhorn iterations of the fixed-iteration rows")
    threshold: float = option(1e-3, "the marginal-error threshold of the converged rows")
    repeats: int = option(5, "timed calls per measurement (the median is reported)")
    pot_max_n: int = option(1024, "skip POT above this n (it is slow at 4096)")
    frechet_dims: tuple[int, ...] = option((64, 2048), "feature dimensions of the Fréchet rows")
    frechet_samples: int = option(4096, "features per set in the Fréchet rows")
    sections: tuple[str, ...] = option(
        SECTIONS, "the sections to run", choices=SECTIONS)
    accuracy_offsets: tuple[float, ...] = option((0.0, 1e3, 1e6), "shared offsets of the accuracy section")
    out: str | None = option(None, "write metrics.json here (none: print only)")


def main(argv: Sequence[str] | None = None) -> dict:
    """The command line (``python -m benchmarks.metrics --help`` lists the flags); returns the rows."""
    return harness.main(Settings, _benchmark, argv=argv, doc=__doc__, prog="python -m benchmarks.metrics",
                        out=None, resume=False, quiet=False)


def _benchmark(args: Settings, _, stop) -> dict:
    print(f"jax {jax.__version__} on {jax.default_backend()}, {os.cpu_count()} CPU cores, "
          f"{platform.machine()}, Python {platform.python_version()}; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    sections = {
        "sinkhorn_fixed": (
            f"Sinkhorn, same epsilon and {args.iterations} iterations (float32)",
            lambda: sinkhorn_fixed(args.sizes, args.dims, args.iterations, args.repeats,
                                   args.pot_max_n),
        ),
        "sinkhorn_converged": (
            f"Sinkhorn, each library's stopping rule at threshold {args.threshold} (float32)",
            lambda: sinkhorn_converged(args.sizes, args.dims, args.threshold, args.repeats,
                                       args.pot_max_n),
        ),
        "kernel_bound": (
            "Sinkhorn iteration versus two bare sum(exp) passes (d = 2, float32)",
            lambda: kernel_bound(args.sizes, args.iterations, args.repeats),
        ),
        "frechet": (
            "Fréchet distance: jgan (eigh, jitted) versus pytorch-fid's scipy sqrtm path",
            lambda: frechet(args.frechet_dims, args.frechet_samples, args.repeats),
        ),
        "mmd_fid_accuracy": (
            "MMD², KID and FID at shared offsets: float32 and float64 versus float64 references",
            lambda: mmd_fid_accuracy(args.accuracy_offsets),
        ),
        "sinkhorn_accuracy": (
            "Sinkhorn divergence and transport cost (epsilon 0.05, threshold 1e-5) with y or both "
            "clouds moved by |c| = offset: float32 and float64 versus float64 references",
            lambda: sinkhorn_accuracy(args.accuracy_offsets),
        ),
    }
    results = {}
    for name in args.sections:
        title, run = sections[name]
        rows = run()
        print_table(title, rows)
        results[name] = rows
    if args.out is not None:
        harness.write_json(Path(args.out) / "metrics.json", results)
    return results


if __name__ == "__main__":
    main()
