"""benchmarks/metrics.py: its independent references and a short run of its sections."""

import warnings

import numpy as np
import pytest

from benchmarks import metrics

pytest.importorskip("scipy")


def test_scipy_frechet_reference_is_the_closed_form_on_every_scipy():
    # Diagonal covariances commute: FD = |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2.
    # Run with warnings as errors: the reference must not lean on SciPy's
    # deprecated (1.16) and removed (1.18) ``disp`` argument.
    rng = np.random.default_rng(0)
    s1, s2 = rng.uniform(0.5, 2.0, 16), rng.uniform(0.5, 2.0, 16)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = metrics._frechet_scipy(mu1, np.diag(s1), mu2, np.diag(s2))
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert got == pytest.approx(expected, rel=1e-9)


def test_sinkhorn_sections_short_run(tmp_path):
    # Every Sinkhorn section at toy sizes: the competitors run, and each
    # plan's marginal error is recomputed and reported.
    pytest.importorskip("geomloss")
    results = metrics.main([
        "--sections", "sinkhorn_fixed", "sinkhorn_scaling", "sinkhorn_online", "kernel_bound",
        "--sizes", "64", "--dims", "2", "--iterations", "200", "--repeats", "1",
        "--scaling-ring", "0", "--scaling-sizes", "64", "--online-sizes", "300",
        "--online-dims", "2", "--online-iterations", "3", "--out", str(tmp_path),
    ])
    fixed = {row["library"]: row for row in results["sinkhorn_fixed"]}
    assert set(fixed) == {"jgan", "ott", "ott_matrix", "jgan_kernel", "ott_kernel",
                          "pot_float32", "pot_float64"}
    # 200 iterations: every library's plan is the entropic optimum's
    # (jgan starts from the centred cost's scalings, so early iterates differ).
    for row in fixed.values():
        assert row["cost"] == pytest.approx(fixed["jgan"]["cost"], rel=1e-3)
        assert row["floor_fraction"] > 0
    scaling = {row["library"]: row for row in results["sinkhorn_scaling"]}
    assert {"jgan", "jgan eps-scaling", "ott", "geomloss", "pot sinkhorn_log"} <= set(scaling)
    assert scaling["jgan"]["met"] and scaling["jgan"]["marginal_error"] <= 1e-3
    (online,) = results["sinkhorn_online"]
    assert online["n"] == 300 and online["peak_rss_gib"] > 0 and np.isfinite(online["grad_time_s"])
    assert (tmp_path / "metrics.json").exists()
