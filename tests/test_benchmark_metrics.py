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
