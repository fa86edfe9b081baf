"""Tests for jgan.metrics.inception_score and inception_score_from_logits."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from jgan.metrics import InceptionScore, inception_score, inception_score_from_logits


def _reference(probs, splits):
    """The original code of Salimans et al. (openai/improved-gan), with
    0 log 0 = 0 (scipy's ``rel_entr``) so that exact zeros are allowed."""
    probs = np.asarray(probs, np.float64)
    n = probs.shape[0]
    scores = []
    for i in range(splits):
        part = probs[(i * n // splits) : ((i + 1) * n // splits), :]
        marginal = np.mean(part, axis=0, keepdims=True)
        kl = np.mean(np.sum(special.rel_entr(part, marginal), axis=1))
        scores.append(np.exp(kl))
    return np.mean(scores), np.std(scores)  # numpy's default std: ddof = 0


def _dirichlet(seed, n, classes, alpha=0.3, zeros=False):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(classes, alpha), size=n)
    if zeros:  # exact zeros, including classes no row in a split predicts
        p[:, :3] = 0.0
        p[rng.random(p.shape) < 0.3] = 0.0
        p[p.sum(1) == 0, 5] = 1.0
        p /= p.sum(1, keepdims=True)
    return p


# ------------------------------------------------------------ closed forms


def test_uniform_predictions_score_one():
    out = inception_score(np.full((50, 7), 1 / 7), splits=5)
    assert isinstance(out, InceptionScore)
    np.testing.assert_allclose(out.mean, 1.0, rtol=1e-6)
    np.testing.assert_allclose(out.std, 0.0, atol=1e-6)


def test_identical_one_hot_predictions_score_one():
    probs = np.zeros((40, 10))
    probs[:, 3] = 1.0  # confident, but collapsed onto a single class
    mean, std = inception_score(probs, splits=4)
    np.testing.assert_allclose(mean, 1.0, rtol=1e-6)
    np.testing.assert_allclose(std, 0.0, atol=1e-6)


@pytest.mark.parametrize("classes", [2, 10, 100])
def test_balanced_one_hot_predictions_score_classes(classes):
    probs = np.tile(np.eye(classes), (5, 1))  # each split holds every class once
    mean, std = inception_score(probs, splits=5)
    np.testing.assert_allclose(mean, classes, rtol=1e-5)
    np.testing.assert_allclose(std, 0.0, atol=1e-5 * classes)


def test_one_split_per_sample_scores_one():
    mean, std = inception_score(_dirichlet(0, 12, 5), splits=12)  # KL(p || p) = 0
    np.testing.assert_allclose(mean, 1.0, rtol=1e-6)
    np.testing.assert_allclose(std, 0.0, atol=1e-6)


def test_two_unequal_splits_hand_computed():
    # Split 0 (rows 0..1): two one-hots on classes 0 and 1 -> score 2.
    # Split 1 (rows 2..4): three identical rows -> score 1.
    probs = np.array([[1, 0, 0], [0, 1, 0], [0.2, 0.3, 0.5], [0.2, 0.3, 0.5], [0.2, 0.3, 0.5]])
    mean, std = inception_score(probs, splits=2)  # n = 5: parts of 2 and 3 rows
    np.testing.assert_allclose(mean, 1.5, rtol=1e-6)
    np.testing.assert_allclose(std, 0.5, rtol=1e-6)  # population std of {2, 1}


# ------------------------------------------------------ independent reference


@pytest.mark.parametrize(
    "n, classes, splits, zeros",
    [(1000, 10, 10, False), (1003, 10, 10, False), (517, 37, 7, True), (64, 1000, 3, False)],
)
def test_matches_numpy_reference_float64(n, classes, splits, zeros, x64):
    probs = _dirichlet(n + classes, n, classes, zeros=zeros)
    ref_mean, ref_std = _reference(probs, splits)
    mean, std = inception_score(probs, splits=splits)
    assert mean.dtype == jnp.float64
    assert 1 < ref_mean < classes and ref_std > 0  # a non-trivial case
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-12)
    np.testing.assert_allclose(std, ref_std, rtol=1e-9)


def test_matches_numpy_reference_float32():
    probs = _dirichlet(1, 2000, 20, zeros=True).astype(np.float32)
    ref_mean, ref_std = _reference(probs, 10)
    mean, std = inception_score(probs, splits=10)
    assert mean.dtype == jnp.float32
    assert np.isfinite(mean) and np.isfinite(std)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-5)
    np.testing.assert_allclose(std, ref_std, rtol=1e-3)


def test_from_logits_matches_probs(x64):
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=3.0, size=(300, 50))
    probs = special.softmax(logits, axis=1)
    ref = _reference(probs, 6)
    chex.assert_trees_all_close(
        tuple(inception_score_from_logits(logits, splits=6)), ref, rtol=1e-10
    )
    chex.assert_trees_all_close(tuple(inception_score(probs, splits=6)), ref, rtol=1e-10)


def test_from_logits_extreme_values_are_finite():
    logits = np.zeros((16, 4), np.float32)
    logits[np.arange(16), np.arange(16) % 4] = 1e4  # softmax underflows to exact 0
    mean, std = inception_score_from_logits(logits, splits=2)
    np.testing.assert_allclose(mean, 4.0, rtol=1e-5)
    assert np.isfinite(std)


def test_permuting_classes_changes_nothing_and_default_splits():
    probs = _dirichlet(3, 200, 12).astype(np.float32)
    perm = np.random.default_rng(0).permutation(12)
    chex.assert_trees_all_close(
        inception_score(probs[:, perm]), inception_score(probs), rtol=1e-6
    )
    chex.assert_trees_all_close(
        tuple(inception_score(probs)), _reference(probs, 10), rtol=1e-5
    )  # splits=10 by default


# ---------------------------------------------------------------------- jit


class InceptionScoreJitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_variants(self):
        probs = _dirichlet(4, 101, 8, zeros=True).astype(np.float32)
        ref = _reference(probs, 4)
        out = self.variant(lambda p: inception_score(p, splits=4))(probs)
        chex.assert_trees_all_close(tuple(out), ref, rtol=1e-5)
        logits = np.log(_dirichlet(5, 101, 8)).astype(np.float32)
        out = self.variant(lambda z: inception_score_from_logits(z, splits=4))(logits)
        chex.assert_trees_all_close(
            tuple(out), _reference(special.softmax(logits.astype(np.float64), 1), 4), rtol=1e-5
        )

    def test_no_retrace(self):
        @jax.jit
        @chex.assert_max_traces(n=1)
        def f(p):
            return inception_score(p, splits=5)

        for seed in range(3):
            probs = _dirichlet(seed, 50, 6).astype(np.float32)
            chex.assert_trees_all_close(tuple(f(probs)), _reference(probs, 5), rtol=1e-5)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "probs, splits, match",
    [
        (np.full(10, 0.1), 1, r"\[n, classes\]"),
        (np.full((2, 3, 4), 0.25), 1, r"\[n, classes\]"),
        (np.zeros((0, 3)), 1, r"\[n, classes\]"),
        (np.array([[0.5, 0.6, -0.1], [0.2, 0.3, 0.5]]), 1, "non-negative"),
        (np.array([[0.5, 0.6, 0.1], [0.2, 0.3, 0.5]]), 1, "sum to 1"),
        (np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.4]]), 1, "row 1 sums to"),
        (np.array([[0.5, 0.5, np.nan], [0.2, 0.3, 0.5]]), 1, "finite"),
        (np.array([[0.5, 0.5, np.inf], [0.2, 0.3, 0.5]]), 1, "finite"),
        (np.full((4, 2), 0.5), 0, "splits"),
        (np.full((4, 2), 0.5), 5, "splits"),
    ],
)
def test_bad_input_raises(probs, splits, match):
    with pytest.raises(ValueError, match=match):
        inception_score(probs, splits=splits)


@pytest.mark.parametrize("splits", [2.0, True, np.float32(2)])
def test_non_int_splits_raise_type_error(splits):
    with pytest.raises(TypeError, match="splits must be a Python int"):
        inception_score(np.full((4, 2), 0.5), splits=splits)
    with pytest.raises(TypeError, match="splits must be a Python int"):
        inception_score_from_logits(np.zeros((4, 2)), splits=splits)


def test_bad_logits_raise():
    with pytest.raises(ValueError, match="finite"):
        inception_score_from_logits(np.array([[0.0, np.nan], [1.0, 2.0]]), splits=1)
    with pytest.raises(ValueError, match="splits"):
        inception_score_from_logits(np.zeros((3, 2)), splits=4)
    with pytest.raises(ValueError, match=r"\[n, classes\]"):
        inception_score_from_logits(np.zeros(3), splits=1)


def test_splits_is_keyword_only():
    with pytest.raises(TypeError):
        inception_score(np.full((4, 2), 0.5), 2)
