"""Tests for FID that reproduces published numbers: clean-fid's resize, dataset
statistics with a progress bar, and FID statistics files.

The independent references are PIL itself (``Image.resize`` in mode "F" with
``Image.BICUBIC``, what clean-fid's "clean" mode calls per channel), clean-fid's
preprocessing re-typed from its source (``cleanfid/resize.py``:
``make_resizer("PIL", False, "bicubic", (299, 299))`` with its ``clip(0, 255)``;
``cleanfid/inception_torchscript.py``: ``(x - 128) / 128``), ``numpy`` for the
statistics, and ``numpy.savez`` for pytorch-fid's and clean-fid's files.
"""

import os
import sys
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from PIL import Image

from jgan import metrics
from jgan import models
from jgan.models import _inception

# ----------------------------------------------------------------------------
# resize="clean" against PIL.


def _pil_resize(channel, size):
    """clean-fid's per-channel resize, without its clip: PIL bicubic on float32 ("F")."""
    image = Image.fromarray(np.asarray(channel, np.float32), mode="F")
    return np.asarray(image.resize((size[1], size[0]), resample=Image.BICUBIC))


def _test_images(height, width):
    """Three [0, 255] test images as channels: uniform noise, a checkerboard, a smooth gradient."""
    rng = np.random.default_rng(height * 1000 + width)
    noise = rng.integers(0, 256, (height, width)).astype(np.float32)
    yy, xx = np.mgrid[:height, :width]
    cell = max(1, min(height, width) // 8)
    checker = 255.0 * ((yy // cell + xx // cell) % 2)
    gradient = 255.0 * (0.6 * yy / max(height - 1, 1) + 0.4 * xx / max(width - 1, 1))
    return np.stack([noise, checker, gradient], axis=-1).astype(np.float32)  # [h, w, 3]


@pytest.mark.parametrize(
    "in_shape, out_shape",
    [
        ((28, 28), (299, 299)),  # MNIST-sized, upsampling
        ((32, 32), (299, 299)),  # CIFAR-sized
        ((64, 64), (299, 299)),
        ((512, 512), (299, 299)),  # downsampling: the stretched (antialiased) kernel
        ((8, 600), (299, 299)),  # up in one axis, strongly down in the other
        ((37, 45), (20, 70)),  # non-square, non-integer factors
    ],
)
def test_clean_resize_matches_pil(in_shape, out_shape):
    images = _test_images(*in_shape)
    expected = np.stack([_pil_resize(images[..., c], out_shape) for c in range(3)], axis=-1)
    resized = np.asarray(_inception._resize_clean(jnp.asarray(images)[None], out_shape))[0]
    # Measured: at most 3e-7 of the largest value (float32 round-off; PIL
    # accumulates in double). jax.image.resize(method="bicubic",
    # antialias=True), whose weights are computed in float32, is up to 2.3e-5
    # off (7e-3 on this scale), so this bound also tells the two apart.
    np.testing.assert_allclose(resized, expected, rtol=0, atol=1e-3)
    assert np.max(np.abs(resized - expected)) <= 1e-4 * 255
    # The bicubic kernel overshoots: what clean-fid's clip(0, 255) is for.
    if in_shape[0] < out_shape[0]:
        assert expected.min() < -1 and expected.max() > 256


def test_clean_resize_identity_and_jit():
    images = jnp.asarray(_test_images(299, 299))[None]
    np.testing.assert_array_equal(_inception._resize_clean(images, (299, 299)), images)  # PIL skips both passes
    small = jnp.asarray(_test_images(32, 32))[None]
    jitted = jax.jit(_inception._resize_clean, static_argnums=1)
    np.testing.assert_allclose(jitted(small, (299, 299)), _inception._resize_clean(small, (299, 299)), rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("sizes", [(32, 299), (512, 299), (3, 5), (1, 299)])
def test_pil_bicubic_matrix_rows_sum_to_one(sizes):
    matrix = _inception._pil_bicubic_matrix(*sizes)
    chex.assert_shape(matrix, (sizes[1], sizes[0]))
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def _clean_fid_preprocess(pixels):
    """clean-fid's "clean" mode from uint8 pixels [b, h, w, 3] to the network's input (float64)."""
    out = []
    for image in pixels:
        channels = [np.clip(_pil_resize(image[..., c].astype(np.float32), (299, 299)), 0, 255) for c in range(3)]
        out.append(np.stack(channels, axis=-1).astype(np.float32))
    return (np.asarray(out, np.float64) - 128) / 128


@pytest.mark.parametrize("resize_input", [True, False])
def test_clean_preprocess_is_clean_fid(resize_input):
    """uint8 in [0, 255], floats in [0, 1] and in [-1, 1] all reach the network as clean-fid's input."""
    side = 28 if resize_input else 299
    pixels = np.random.default_rng(1).integers(0, 256, (2, side, side, 3), dtype=np.uint8)
    pixels[0, :4] = 255  # saturated rows next to dark ones: the resize overshoots, the clip matters
    pixels[0, 4:8] = 0
    expected = _clean_fid_preprocess(pixels)

    def preprocess(x, input_range):
        out = _inception._preprocess(
            jnp.asarray(x), resize_input=resize_input, input_range=input_range, dtype=jnp.float32, resize="clean"
        )
        return np.asarray(out)

    unit = pixels.astype(np.float32) / 255.0
    for x, input_range in ((pixels, (0.0, 255.0)), (unit, (0.0, 1.0)), (2.0 * unit - 1.0, (-1.0, 1.0))):
        np.testing.assert_allclose(preprocess(x, input_range), expected, rtol=0, atol=2e-6)
    # (v - 128) / 128, not pytorch-fid's v / 127.5 - 1: 255 maps to 127/128, 0 to -1.
    assert float(expected.max()) == 127 / 128 and float(expected.min()) == -1.0


def test_bilinear_stays_the_default():
    pixels = np.random.default_rng(2).random((1, 40, 40, 3), np.float32)
    default = _inception._preprocess(jnp.asarray(pixels), resize_input=True, input_range=(0.0, 1.0), dtype=jnp.float32)
    bilinear = _inception._preprocess(
        jnp.asarray(pixels), resize_input=True, input_range=(0.0, 1.0), dtype=jnp.float32, resize="bilinear"
    )
    np.testing.assert_array_equal(default, bilinear)
    assert models.InceptionV3().resize == "bilinear"


@pytest.mark.parametrize("resize", ["bicubic", "Clean", None, 1])
def test_rejects_unknown_resize(resize):
    with pytest.raises(ValueError, match='resize must be "bilinear" .* or "clean"'):
        models.InceptionV3(resize=resize)
    with pytest.raises(ValueError, match="resize must be"):
        _inception._preprocess(jnp.zeros((1, 8, 8, 3)), resize_input=True, input_range=(0.0, 1.0), dtype=jnp.float32, resize=resize)


def _abstract_variables():
    shapes = _inception._expected_shapes()
    flat = {key: jax.ShapeDtypeStruct(shape, jnp.float32) for key, shape in shapes.items()}
    return traverse_util.unflatten_dict(flat, sep="/")


def test_inception_passes_resize_to_preprocessing(monkeypatch):
    """InceptionV3(resize="clean") and make_inception_features(model=...) preprocess with "clean"."""
    variables = _abstract_variables()  # before patching: builds a bilinear InceptionV3 once for its shapes
    seen = []
    original = _inception._preprocess

    def recording(x, **kwargs):
        seen.append(kwargs["resize"])
        return original(x, **kwargs)

    monkeypatch.setattr(_inception, "_preprocess", recording)
    model = models.InceptionV3(resize="clean", input_range=(0.0, 255.0))
    sample = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.uint8)
    out = jax.eval_shape(model.apply, variables, sample)
    chex.assert_shape(out.features, (2, 2048))
    features_fn = models.make_inception_features(variables, model=model, chunk_size=1)
    chex.assert_shape(jax.eval_shape(features_fn, sample).features, (2, 2048))
    assert seen and set(seen) == {"clean"}


# ----------------------------------------------------------------------------
# dataset_statistics.


def _feature_fn(d=5):
    weights = jnp.asarray(np.random.default_rng(3).normal(size=(4, d)))
    return lambda batch: jnp.tanh(batch @ weights) + 3.0


def _batches(sizes, seed=4):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, 4)) for n in sizes]


def test_dataset_statistics_equals_gaussian_statistics_of_all_features(x64):
    extract = _feature_fn()
    batches = _batches([7, 7, 7, 3])  # an uneven last batch
    state = metrics.dataset_statistics(extract, iter(batches), progress=False, dtype=jnp.float64)
    assert isinstance(state, metrics.GaussianStatistics)
    assert int(state.count) == 24 and state.mean.dtype == jnp.float64
    mean, cov = metrics.finalize_gaussian_statistics(state)
    expected_mean, expected_cov = metrics.gaussian_statistics(extract(np.concatenate(batches)), dtype=jnp.float64)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(cov, expected_cov, rtol=1e-12, atol=1e-14)
    features = np.asarray(extract(np.concatenate(batches)))
    np.testing.assert_allclose(cov, np.cov(features, rowvar=False), rtol=1e-12, atol=1e-14)


def test_dataset_statistics_default_dtype_is_float32():
    state = metrics.dataset_statistics(_feature_fn(), _batches([4, 4]), progress=False)
    assert state.mean.dtype == jnp.float32 and int(state.count) == 8


def test_dataset_statistics_refuses_no_batches():
    with pytest.raises(ValueError, match="no batch"):
        metrics.dataset_statistics(_feature_fn(), iter([]), progress=False)
    with pytest.raises(ValueError, match="no batch"):
        metrics.dataset_statistics(_feature_fn(), [], progress=False)


def test_dataset_statistics_refuses_bad_features():
    batches = _batches([3, 3])
    dims = iter([5, 6])
    with pytest.raises(ValueError, match=r"batch 1 gave shape \(3, 6\)"):
        metrics.dataset_statistics(lambda b: jnp.ones((b.shape[0], next(dims))), batches, progress=False)
    with pytest.raises(ValueError, match=r"\[b, d\]; batch 0 gave shape \(3,\)"):
        metrics.dataset_statistics(lambda b: jnp.ones(b.shape[0]), batches, progress=False)
    output = models.InceptionOutput(features=jnp.ones((3, 5)), logits=jnp.ones((3, 7)))
    with pytest.raises(TypeError, match=r"features_fn\(images\).features"):
        metrics.dataset_statistics(lambda b: output, batches, progress=False)
    with pytest.raises(ValueError, match="non-finite"):
        metrics.dataset_statistics(lambda b: jnp.full((3, 5), jnp.nan), batches, progress=False)
    with pytest.raises(TypeError, match="extract_features must be a callable"):
        metrics.dataset_statistics("inception", batches)
    with pytest.raises(TypeError, match="batches must be an iterable"):
        metrics.dataset_statistics(_feature_fn(), 3, progress=False)
    with pytest.raises(TypeError, match="progress must be a bool"):
        metrics.dataset_statistics(_feature_fn(), batches, progress="no")


class _FakeBar:
    instances = []

    def __init__(self, total=None, **kwargs):
        self.total, self.kwargs, self.updates, self.closed, self.postfix = total, kwargs, 0, False, None
        _FakeBar.instances.append(self)

    def update(self, n):
        self.updates += n

    def set_postfix(self, refresh=True, **kwargs):
        self.postfix = kwargs

    def close(self):
        self.closed = True


@pytest.fixture
def fake_tqdm(monkeypatch):
    _FakeBar.instances = []
    monkeypatch.setitem(sys.modules, "tqdm.auto", types.SimpleNamespace(tqdm=_FakeBar))
    return _FakeBar.instances


def test_progress_bar_counts_batches(fake_tqdm):
    metrics.dataset_statistics(_feature_fn(), _batches([3, 3, 2]), progress=True)
    (bar,) = fake_tqdm
    assert (bar.total, bar.updates, bar.closed, bar.postfix) == (3, 3, True, {"features": 8})
    metrics.dataset_statistics(_feature_fn(), iter(_batches([3, 3])), total=10)  # no len: the given total
    assert fake_tqdm[1].total == 10 and fake_tqdm[1].updates == 2
    metrics.dataset_statistics(_feature_fn(), iter(_batches([3, 3])))
    assert fake_tqdm[2].total is None
    metrics.dataset_statistics(_feature_fn(), _batches([3, 3]), progress=False)
    assert len(fake_tqdm) == 3


def test_progress_bar_closes_on_error(fake_tqdm):
    def failing(batch):
        raise RuntimeError("the feature network failed")

    with pytest.raises(RuntimeError, match="failed"):
        metrics.dataset_statistics(failing, _batches([3]))
    assert fake_tqdm[0].closed


def test_without_tqdm_no_bar_and_no_complaint(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import tqdm.auto raises ImportError
    state = metrics.dataset_statistics(_feature_fn(), _batches([3, 3]), progress=True)
    assert int(state.count) == 6
    assert capsys.readouterr().err == ""


def test_real_tqdm_bar(capsys):
    pytest.importorskip("tqdm")
    metrics.dataset_statistics(_feature_fn(), _batches([3, 3]), progress=True)
    assert "2/2" in capsys.readouterr().err


# ----------------------------------------------------------------------------
# Statistics files.


def _statistics(d=6, n=40, seed=5):
    x = np.random.default_rng(seed).normal(size=(n, d)) @ np.diag(np.arange(1.0, d + 1)) + 2.0
    return np.mean(x, axis=0), np.cov(x, rowvar=False)


def test_round_trip_from_the_accumulator(tmp_path):
    state = metrics.dataset_statistics(_feature_fn(), _batches([7, 5]), progress=False)
    path = metrics.save_fid_statistics(tmp_path / "stats.npz", state)
    loaded = metrics.load_fid_statistics(path)
    mu, sigma = metrics.finalize_gaussian_statistics(state)
    np.testing.assert_array_equal(loaded.mu, mu)
    np.testing.assert_array_equal(loaded.sigma, sigma)
    assert loaded.count == 12 and loaded.mu.dtype == np.float32
    assert sorted(os.listdir(tmp_path)) == ["stats.npz"]  # no temporary left behind
    with np.load(path) as archive:  # what pytorch-fid and clean-fid read
        assert sorted(archive.files) == ["count", "mu", "sigma"]


def test_round_trip_float64_and_pairs(tmp_path):
    mu, sigma = _statistics()
    path = metrics.save_fid_statistics(tmp_path / "sub" / "ref", metrics.FIDStatistics(mu, sigma, 40))
    assert path == tmp_path / "sub" / "ref.npz"
    loaded = metrics.load_fid_statistics(path)
    assert loaded.mu.dtype == np.float64 and loaded.count == 40
    np.testing.assert_array_equal(loaded.mu, mu)
    np.testing.assert_array_equal(loaded.sigma, sigma)
    metrics.save_fid_statistics(path, (jnp.asarray(mu, jnp.float32), jnp.asarray(sigma, jnp.float32)))  # overwrites
    loaded = metrics.load_fid_statistics(path)
    assert loaded.count is None and loaded.sigma.dtype == np.float32
    np.testing.assert_allclose(loaded.sigma, sigma, rtol=1e-6)


@pytest.mark.parametrize("write", [np.savez, np.savez_compressed])
def test_loads_pytorch_fid_and_clean_fid_files(tmp_path, write):
    """pytorch-fid's --save-stats (np.savez) and clean-fid's (np.savez_compressed): mu and sigma only."""
    mu, sigma = _statistics()
    write(tmp_path / "fid_stats.npz", mu=mu, sigma=sigma)
    loaded = metrics.load_fid_statistics(tmp_path / "fid_stats.npz")
    assert loaded.count is None
    np.testing.assert_array_equal(loaded.mu, mu)
    np.testing.assert_array_equal(loaded.sigma, sigma)
    assert float(metrics.frechet_distance(loaded.mu, loaded.sigma, mu, sigma)) < 1e-4


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    mu, sigma = _statistics()
    path = metrics.save_fid_statistics(tmp_path / "ref.npz", (mu, sigma))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        metrics.save_fid_statistics(path, (mu + 1, sigma))
    monkeypatch.undo()
    np.testing.assert_array_equal(metrics.load_fid_statistics(path).mu, mu)
    assert sorted(os.listdir(tmp_path)) == ["ref.npz"]


def _bad_file(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


def test_rejects_bad_files(tmp_path):
    mu, sigma = _statistics()
    cases = [
        (dict(mu=mu), "no sigma"),
        (dict(sigma=sigma, mean=mu), "no mu"),
        (dict(mu=mu[:, None], sigma=sigma), r"mu must be a non-empty vector \[d\]"),
        (dict(mu=mu, sigma=sigma[:-1]), r"sigma must be \[d, d\] = \[6, 6\]"),
        (dict(mu=mu, sigma=sigma + np.triu(np.ones_like(sigma), 1)), "not symmetric"),
        (dict(mu=np.where(np.arange(6) == 2, np.nan, mu), sigma=sigma), "mu holds NaN"),
        (dict(mu=mu, sigma=sigma, count=np.int64(1)), "count must be >= 2"),
        (dict(mu=mu, sigma=sigma, count=np.float64(50.0)), "count must be an integer"),
        (dict(mu=mu.astype(complex), sigma=sigma), "real numbers"),
        (dict(mu=np.array([{"a": 1}], dtype=object), sigma=sigma), "cannot read"),
    ]
    for arrays, match in cases:
        path = _bad_file(tmp_path, **arrays)
        with pytest.raises(ValueError, match=match):
            metrics.load_fid_statistics(path)
    with pytest.raises(FileNotFoundError, match="no FID statistics file"):
        metrics.load_fid_statistics(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("mu, sigma")
    with pytest.raises(ValueError, match="cannot read"):
        metrics.load_fid_statistics(tmp_path / "text.npz")
    np.save(tmp_path / "single.npy", mu)
    with pytest.raises(ValueError, match="single array"):
        metrics.load_fid_statistics(tmp_path / "single.npy")
    path = metrics.save_fid_statistics(tmp_path / "good.npz", (mu, sigma))
    (tmp_path / "truncated.npz").write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="cannot read"):
        metrics.load_fid_statistics(tmp_path / "truncated.npz")


def test_save_refuses_bad_statistics(tmp_path):
    mu, sigma = _statistics()
    with pytest.raises(TypeError, match="GaussianStatistics, an FIDStatistics or a"):
        metrics.save_fid_statistics(tmp_path / "s.npz", {"mu": mu, "sigma": sigma})
    with pytest.raises(ValueError, match="not symmetric"):
        metrics.save_fid_statistics(tmp_path / "s.npz", (mu, sigma + np.triu(np.ones_like(sigma), 1)))
    one = metrics.update_gaussian_statistics(metrics.init_gaussian_statistics(6), np.ones((1, 6)))
    with pytest.raises(ValueError, match="at least two samples"):
        metrics.save_fid_statistics(tmp_path / "s.npz", one)
    with pytest.raises(TypeError, match="path must be a path"):
        metrics.save_fid_statistics(3, (mu, sigma))
    assert not any(tmp_path.iterdir())
