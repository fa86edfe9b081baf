"""Evaluation metrics for generative models, in jax.numpy.

Every metric is a pure function that works under ``jax.jit``.
"""

from jgan.metrics._mode_coverage import ModeCoverage
from jgan.metrics._mode_coverage import mode_coverage
