"""FID statistics of a whole dataset, and the ``.npz`` files that hold them.

``dataset_statistics`` runs a feature function over an iterable of batches
and accumulates the mean and covariance of the features in one pass (the
streaming accumulator of ``jgan.metrics._frechet``), with a progress bar.
``save_fid_statistics`` / ``load_fid_statistics`` write and read them as the
``.npz`` files of pytorch-fid and clean-fid (keys ``mu`` and ``sigma``), plus
the number of feature vectors (``count``), so published reference statistics
load as they are.

Example::

    model = models.InceptionV3(resize="clean", input_range=(0.0, 255.0))
    features_fn = models.make_inception_features(variables, model=model, chunk_size=50)
    extract = lambda images: features_fn(images).features
    save_fid_statistics("cifar10_train.npz", dataset_statistics(extract, real_batches))
    ...
    reference = load_fid_statistics("cifar10_train.npz")
    mu, sigma = finalize_gaussian_statistics(dataset_statistics(extract, sample_batches))
    frechet_distance(mu, sigma, reference.mu, reference.sigma)
"""

from __future__ import annotations

import os
import pathlib
import secrets
import zipfile
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jgan import _validate
from jgan.metrics._frechet import GaussianStatistics
from jgan.metrics._frechet import _float_dtype
from jgan.metrics._frechet import finalize_gaussian_statistics
from jgan.metrics._frechet import init_gaussian_statistics
from jgan.metrics._frechet import update_gaussian_statistics


class FIDStatistics(NamedTuple):
    """The Gaussian fit of a feature set that FID compares, as a statistics file holds it.

    Attributes:
      mu: the mean of the features, ``[d]`` (a numpy array, float32 or float64
        as stored).
      sigma: their unbiased (``n - 1``) covariance, ``[d, d]``.
      count: the number of feature vectors behind them, or ``None`` when
        unknown (pytorch-fid's and clean-fid's files do not store it).
    """

    mu: np.ndarray  # [d] float
    sigma: np.ndarray  # [d, d] float
    count: int | None = None


# ----------------------------------------------------------------------------
# A dataset's statistics, streamed.


def _progress_bar(total: int | None, enabled: bool) -> Any:
    """A tqdm bar counting batches, or ``None`` (disabled, or tqdm not installed)."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm  # The examples extra, not a core dependency.
    except ImportError:
        return None
    return tqdm(total=total, desc="features", unit="batch", dynamic_ncols=True)


def _batch_features(features: Any, index: int, dim: int | None) -> jax.Array:
    """``features`` as a ``[b, d]`` array, or an error naming the batch."""
    if not hasattr(features, "shape") and hasattr(features, "features"):
        raise TypeError(
            f"extract_features must return an array of features [b, d]; batch {index} gave a "
            f"{type(features).__name__}. For jgan.models.make_inception_features, pass "
            "lambda images: features_fn(images).features."
        )
    features = jnp.asarray(features)
    _validate.check_real_dtype(features, f"the features of batch {index}")
    if features.ndim != 2 or (dim is not None and features.shape[1] != dim):
        want = "[b, d]" if dim is None else f"[b, {dim}] (the dimension of the first batch)"
        raise ValueError(
            f"extract_features must return features {want}; batch {index} gave shape {features.shape}."
        )
    return features


def dataset_statistics(
    extract_features: Callable[[Any], jax.typing.ArrayLike],
    batches: Iterable[Any],
    *,
    total: int | None = None,
    progress: bool = True,
    dtype: Any = None,
) -> GaussianStatistics:
    """The streaming mean / covariance of the features of every batch of a dataset.

    Each batch goes through ``extract_features`` as it is and its features
    are added to a ``GaussianStatistics`` accumulator with
    ``update_gaussian_statistics`` (compiled; Chan et al.'s pairwise update
    of the mean and centred scatter, so the result equals
    ``gaussian_statistics`` of all the features concatenated, up to
    round-off, for batches of any sizes). Only one batch of features is held
    at a time. A last batch of another size compiles ``extract_features``
    and the update once more.

    A progress bar counting batches is shown on stderr when ``progress`` is
    true and ``tqdm`` (in the ``examples`` extra) can be imported; without
    tqdm nothing is shown and nothing is said.

    Args:
      extract_features: ``batch -> features [b, d]``, e.g.
        ``lambda images: features_fn(images).features`` with
        ``features_fn = jgan.models.make_inception_features(...)``.
      batches: an iterable of batches (arrays or anything
        ``extract_features`` takes), read once.
      total: the number of batches, for the progress bar; by default
        ``len(batches)`` when it has one.
      progress: show a progress bar (when tqdm is installed).
      dtype: the float dtype to accumulate in; by default the features',
        promoted to at least float32. ``jnp.float64`` needs
        ``jax_enable_x64``.

    Returns:
      The ``GaussianStatistics`` of all the features: read it with
      ``finalize_gaussian_statistics``, combine it with
      ``merge_gaussian_statistics`` or save it with ``save_fid_statistics``.

    Raises:
      ValueError: if ``batches`` yields nothing, if a batch's features are not
        ``[b, d]`` with the first batch's ``d``, or (as
        ``update_gaussian_statistics``) hold NaN or inf.
      TypeError: if ``extract_features`` is not callable, ``batches`` is not
        iterable, ``extract_features`` returns something that is not an
        array, or ``total`` / ``progress`` have the wrong type.
    """
    _validate.check_callable(extract_features, "extract_features", "(batch) -> features [b, d]")
    progress = _validate.check_bool(progress, "progress")
    if total is not None:
        total = _validate.check_int(total, "total", minimum=0)
    else:
        try:
            total = len(batches)  # type: ignore[arg-type]
        except TypeError:
            total = None
    try:
        iterator = iter(batches)
    except TypeError:
        raise TypeError(
            f"batches must be an iterable of batches, got {type(batches).__name__}."
        ) from None
    state = None
    count = 0
    bar = _progress_bar(total, progress)
    try:
        for index, batch in enumerate(iterator):
            features = _batch_features(
                extract_features(batch), index, None if state is None else state.mean.shape[0]
            )
            if state is None:
                state = init_gaussian_statistics(features.shape[1], _float_dtype(features, dtype=dtype))
            state = update_gaussian_statistics(state, features)
            count += features.shape[0]
            if bar is not None:
                bar.set_postfix(features=count, refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if state is None:
        raise ValueError(
            "batches yielded no batch: there are no features to take statistics of "
            "(an exhausted iterator, or an empty dataset?)."
        )
    return state


# ----------------------------------------------------------------------------
# Statistics files.


def _as_numpy(value: Any, name: str, source: str) -> np.ndarray:
    array = np.asarray(jax.device_get(value))
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{source}: {name} must hold real numbers, got dtype {array.dtype}.")
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    return array


def _checked(mu: Any, sigma: Any, count: Any, source: str) -> FIDStatistics:
    """Validated numpy statistics: mu ``[d]``, symmetric finite sigma ``[d, d]``, count ``>= 2`` or None."""
    mu = _as_numpy(mu, "mu", source)
    sigma = _as_numpy(sigma, "sigma", source)
    if mu.ndim != 1 or mu.shape[0] == 0:
        raise ValueError(f"{source}: mu must be a non-empty vector [d], got shape {mu.shape}.")
    d = mu.shape[0]
    if sigma.shape != (d, d):
        raise ValueError(f"{source}: sigma must be [d, d] = [{d}, {d}] to match mu, got shape {sigma.shape}.")
    for name, array in (("mu", mu), ("sigma", sigma)):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{source}: {name} holds NaN or inf.")
    # Round-off allowance: sqrt(eps) of sigma's dtype, relative to its largest entry.
    asymmetry = float(np.max(np.abs(sigma - sigma.T)))
    allowance = float(np.sqrt(np.finfo(sigma.dtype).eps)) * float(np.max(np.abs(sigma)))
    if asymmetry > allowance:
        raise ValueError(
            f"{source}: sigma is not symmetric (max |sigma - sigma^T| = {asymmetry:.3g}, beyond the "
            f"round-off allowance {allowance:.3g}): it is not a covariance matrix."
        )
    if count is not None:
        count_array = np.asarray(count)
        if count_array.ndim != 0 or not np.issubdtype(count_array.dtype, np.integer):
            raise ValueError(
                f"{source}: count must be an integer scalar, got {count_array.dtype} of shape {count_array.shape}."
            )
        count = int(count_array)
        if count < 2:
            raise ValueError(f"{source}: count must be >= 2 (a covariance needs two samples), got {count}.")
    return FIDStatistics(mu=mu, sigma=sigma, count=count)


def save_fid_statistics(
    path: str | os.PathLike,
    statistics: GaussianStatistics | FIDStatistics | tuple[Any, Any],
) -> pathlib.Path:
    """Writes FID statistics as an ``.npz`` that pytorch-fid and clean-fid read too.

    The file holds ``mu`` ``[d]`` and ``sigma`` ``[d, d]`` (the keys of
    pytorch-fid's and clean-fid's statistics files; ``sigma`` is the unbiased
    covariance, as theirs) in the statistics' own dtype, and ``count`` (an
    int64 scalar) when the number of feature vectors is known. The write is
    atomic: a temporary file in the same directory, renamed over ``path``, so
    a reader never sees half a file.

    Args:
      path: the file (``.npz`` is appended when missing; its directory is
        created if needed).
      statistics: a ``GaussianStatistics`` accumulator (finalized here; its
        count is stored), an ``FIDStatistics``, or a ``(mu, sigma)`` pair (no
        count).

    Returns:
      The path written.

    Raises:
      TypeError: if ``statistics`` is none of those, or ``path`` is not a path.
      ValueError: if ``mu`` is not ``[d]``, ``sigma`` not a symmetric ``[d, d]``,
        either is not finite, the count is below 2.
    """
    path = pathlib.Path(_validate.check_path(path, "path"))
    if isinstance(statistics, GaussianStatistics):
        mu, sigma = finalize_gaussian_statistics(statistics)
        count = int(statistics.count)
    elif isinstance(statistics, FIDStatistics):
        mu, sigma, count = statistics
    elif isinstance(statistics, (tuple, list)) and len(statistics) == 2:
        (mu, sigma), count = statistics, None
    else:
        raise TypeError(
            "statistics must be a GaussianStatistics, an FIDStatistics or a (mu, sigma) pair, "
            f"got {type(statistics).__name__}."
        )
    checked = _checked(mu, sigma, count, "statistics")
    arrays = {"mu": checked.mu, "sigma": checked.sigma}
    if checked.count is not None:
        arrays["count"] = np.asarray(checked.count, np.int64)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name opened exclusively (created with the umask's permissions, unlike mkstemp's 0600).
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if temporary.exists():
            temporary.unlink()
        raise
    return path


def load_fid_statistics(path: str | os.PathLike) -> FIDStatistics:
    """Reads FID statistics from an ``.npz``: jgan's, pytorch-fid's or clean-fid's.

    The keys ``mu`` and ``sigma`` are required and ``count`` is read when
    present (pytorch-fid's and clean-fid's files have none); other keys are
    ignored. Nothing is unpickled. The arrays are returned as numpy arrays in
    their stored dtype (pytorch-fid's are float64), so that
    ``frechet_distance(..., dtype=jnp.float64)`` sees every stored digit.

    Args:
      path: the ``.npz`` file (compressed or not).

    Returns:
      ``FIDStatistics(mu [d], sigma [d, d], count or None)``.

    Raises:
      FileNotFoundError: if there is no file at ``path``.
      ValueError: if the file is not an ``.npz`` archive, lacks ``mu`` or
        ``sigma``, holds pickled objects, or its ``mu`` is not ``[d]``, its
        ``sigma`` not a symmetric ``[d, d]``, either not finite, or its
        ``count`` not an integer ``>= 2``.
    """
    path = pathlib.Path(_validate.check_path(path, "path"))
    if not path.is_file():
        raise FileNotFoundError(f"no FID statistics file at {str(path)!r}.")
    source = str(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not an .npz archive with mu and sigma")
        with loaded as archive:
            keys = set(archive.files)
            missing = [key for key in ("mu", "sigma") if key not in keys]
            if missing:
                raise ValueError(f"it has no {' and no '.join(missing)} (its keys: {sorted(keys)})")
            mu, sigma = archive["mu"], archive["sigma"]
            count = archive["count"] if "count" in keys else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"cannot read {source!r} as FID statistics: {str(error).rstrip('.')}.") from error
    return _checked(mu, sigma, count, source)
