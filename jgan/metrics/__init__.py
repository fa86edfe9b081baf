"""Evaluation metrics for generative models, in jax.numpy.

Every metric is a pure function that works under ``jax.jit``; the file and
dataset helpers (``save_fid_statistics``, ``load_fid_statistics``,
``dataset_statistics``) run eagerly around them.
"""

from jgan.metrics._fid_statistics import FIDStatistics
from jgan.metrics._fid_statistics import dataset_statistics
from jgan.metrics._fid_statistics import load_fid_statistics
from jgan.metrics._fid_statistics import save_fid_statistics
from jgan.metrics._frechet import GaussianStatistics
from jgan.metrics._frechet import fid
from jgan.metrics._frechet import finalize_gaussian_statistics
from jgan.metrics._frechet import frechet_distance
from jgan.metrics._frechet import gaussian_statistics
from jgan.metrics._frechet import init_gaussian_statistics
from jgan.metrics._frechet import merge_gaussian_statistics
from jgan.metrics._frechet import update_gaussian_statistics
from jgan.metrics._inception_score import InceptionScore
from jgan.metrics._inception_score import inception_score
from jgan.metrics._inception_score import inception_score_from_logits
from jgan.metrics._mmd import KernelInceptionDistance
from jgan.metrics._mmd import kid
from jgan.metrics._mmd import mmd2
from jgan.metrics._mode_coverage import ModeCoverage
from jgan.metrics._mode_coverage import mode_coverage
from jgan.metrics._neighbours import DensityCoverage
from jgan.metrics._neighbours import PrecisionRecall
from jgan.metrics._neighbours import density_coverage
from jgan.metrics._neighbours import precision_recall
from jgan.metrics._sinkhorn import EpsilonScaling
from jgan.metrics._sinkhorn import KernelDomain
from jgan.metrics._sinkhorn import Online
from jgan.metrics._sinkhorn import Overrelaxation
from jgan.metrics._sinkhorn import SinkhornDivergenceOutput
from jgan.metrics._sinkhorn import SinkhornNotConverged
from jgan.metrics._sinkhorn import SinkhornOutput
from jgan.metrics._sinkhorn import sinkhorn
from jgan.metrics._sinkhorn import sinkhorn_divergence
from jgan.metrics._sliced import sliced_wasserstein
from jgan.metrics._sliced import sliced_wasserstein_projections
from jgan.metrics._stacked import StackedModes
from jgan.metrics._stacked import classify_channels
from jgan.metrics._stacked import stacked_mode_coverage

__all__ = [
    "classify_channels",
    "dataset_statistics",
    "density_coverage",
    "DensityCoverage",
    "EpsilonScaling",
    "fid",
    "FIDStatistics",
    "finalize_gaussian_statistics",
    "frechet_distance",
    "gaussian_statistics",
    "GaussianStatistics",
    "inception_score",
    "inception_score_from_logits",
    "InceptionScore",
    "init_gaussian_statistics",
    "KernelDomain",
    "KernelInceptionDistance",
    "kid",
    "load_fid_statistics",
    "merge_gaussian_statistics",
    "mmd2",
    "mode_coverage",
    "ModeCoverage",
    "Online",
    "Overrelaxation",
    "precision_recall",
    "PrecisionRecall",
    "save_fid_statistics",
    "sinkhorn",
    "sinkhorn_divergence",
    "SinkhornDivergenceOutput",
    "SinkhornNotConverged",
    "SinkhornOutput",
    "sliced_wasserstein",
    "sliced_wasserstein_projections",
    "stacked_mode_coverage",
    "StackedModes",
    "update_gaussian_statistics",
]
