"""Checkpoints of a training state with orbax: save, find the latest, restore.

A checkpoint directory holds one sub-directory per saved step (``10/``,
``20/``, ...), written by an :class:`orbax.checkpoint.CheckpointManager`. Each
step directory holds two items:

- ``state``: the leaves of the pytree (a :class:`jgan.steps.GANState` or any
  pytree of arrays), stored by orbax as arrays. Typed PRNG keys
  (``jax.random.key``) are stored as their raw ``key_data`` and re-wrapped on
  restore with the implementation recorded at save time;
- ``meta``: JSON: the caller's ``metadata`` dict (e.g. the run's config) and a
  description of every leaf (its path in the tree, shape, dtype, PRNG
  implementation), against which a restore checks its template.

Saves are synchronous and atomic: orbax writes a step into
``<step>.orbax-checkpoint-tmp-<timestamp>/`` and renames it to ``<step>/``
once complete, so a save interrupted mid-write leaves only a temporary
directory, which :func:`latest_step`, :func:`all_steps` and :func:`restore`
ignore: the last complete checkpoint stays the latest. Only the newest
``max_to_keep`` steps are kept.

Clean-up is atomic too: an old step is first renamed into
``<directory>/.jgan-deleted/`` (which is not a step) and only then deleted,
so a kill during the deletion never leaves a half-deleted ``<step>/`` that
looks like a checkpoint. A step is listed as restorable only if it holds the
files that mark it finished (orbax's ``_CHECKPOINT_METADATA`` with its commit
time, and each item's metadata); a step directory without them (a clean-up
interrupted by an older jgan, files deleted by hand) is never listed, asking
for it is a clear error, and the next :func:`save` removes it.

Restoring needs a template of the state (a freshly initialised state, or its
``jax.eval_shape``) for the tree structure, shapes, dtypes and shardings. A
checkpoint is restored bit for bit, so a run of 2N steps equals N steps, save,
restore, N more steps.

In a multi-process run (``jgan.parallel.initialize``) every process calls
:func:`save` and :func:`restore` with the same arguments; the state's
leaves are global arrays (e.g. ``jgan.parallel.replicate(state, mesh)``),
which orbax writes once, and a template of global arrays restores global
arrays. The directory must be one that every process sees (a shared
filesystem). The clean-up (deleting old and incomplete steps) runs on
process 0 only, between barriers: no process lists or writes steps while
another cleans up, and :func:`save` returns on every process once the
clean-up is done, so all processes then list the same steps.

Example::

    state = init_state(key, g_params, d_params, g_optimizer=..., d_optimizer=...)
    if checkpoint.latest_step(workdir) is not None:
        state, config = checkpoint.restore(workdir, state)
    for ...:
        state, metrics = train_step(state, batch)
    checkpoint.save(workdir, state, metadata=config)
"""

from __future__ import annotations

import json
import math
import os
import shutil
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from jgan import _validate

__all__ = ["save", "restore", "latest_step", "all_steps", "FORMAT_VERSION"]

PyTree = Any

FORMAT_VERSION = 1
_STATE = "state"
_META = "meta"
_TRASH = ".jgan-deleted"  # Old steps are renamed here before deletion (not a step name).
# Written by orbax into the temporary directory before the rename that
# completes a save: a step directory without one of them is not a checkpoint.
_STEP_MARKER = "_CHECKPOINT_METADATA"  # JSON with commit_timestamp_nsecs
_ITEM_MARKERS = (os.path.join(_META, "metadata"), os.path.join(_STATE, "_METADATA"))
_NO_ARRAYS = "no_arrays"  # Stored when every leaf is empty (orbax refuses an empty item).


def _is_key(x: Any) -> bool:
    return jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)


def _describe(tree: PyTree) -> tuple[list[Any], list[dict[str, Any]], Any]:
    """The leaves of ``tree``, a JSON description of each, and the tree structure."""
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    leaves, described = [], []
    for path, leaf in leaves_with_paths:
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            leaf = np.asarray(leaf)
        described.append(
            {
                "path": jax.tree_util.keystr(path),
                "shape": list(leaf.shape),
                "dtype": str(leaf.dtype),
            }
        )
        leaves.append(leaf)
    return leaves, described, treedef


def _manager(directory: os.PathLike | str, *, max_to_keep: int | None, write: bool):
    """A synchronous manager; a reading one (``write=False``) creates nothing on disk.

    A writing one deletes old steps by renaming them into ``_TRASH`` first
    (an atomic rename), which ``_empty_trash`` then removes.
    """
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(max_to_keep),
        enable_async_checkpointing=False,
        create=write,
        save_root_metadata=write,
        todelete_subdir=_TRASH if write else None,
    )
    return ocp.CheckpointManager(os.path.abspath(os.fspath(directory)), options=options)


def _missing_markers(directory: str, step: int) -> list[str]:
    """The finish markers step ``step`` lacks (``[]``: a complete checkpoint)."""
    step_dir = os.path.join(directory, str(step))
    missing = [m for m in _ITEM_MARKERS if not os.path.isfile(os.path.join(step_dir, m))]
    try:
        with open(os.path.join(step_dir, _STEP_MARKER)) as f:
            committed = json.load(f).get("commit_timestamp_nsecs") is not None
    except (OSError, ValueError, AttributeError):
        committed = False
    if not committed:
        missing.insert(0, _STEP_MARKER)
    return missing


def _listed_steps(directory: str) -> list[int]:
    """Every step directory orbax sees, complete or not, in increasing order."""
    with _manager(directory, max_to_keep=None, write=False) as manager:
        return sorted(manager.all_steps())


def _sync(name: str) -> None:
    """A barrier across the processes of a multi-process run (nothing in a single process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"jgan.checkpoint.{name}")


def _check_global(leaf: Any, path: str) -> None:
    """In a multi-process run, refuses a leaf that is not an array across the processes.

    orbax writes a global array once; it cannot tell which process's value
    of a process-local array (or numpy array) is meant.
    """
    if jax.process_count() == 1 or (isinstance(leaf, jax.Array) and not leaf.is_fully_addressable):
        return
    kind = (f"an array on this process's devices only ({leaf.sharding})" if isinstance(leaf, jax.Array)
            else "a numpy array" if isinstance(leaf, np.ndarray) else f"a {type(leaf).__name__}")
    raise ValueError(
        f"In a run of {jax.process_count()} processes every leaf of the state must be a global array "
        f"(over the devices of every process), e.g. from jgan.parallel.replicate(state, mesh); "
        f"{path} is {kind}."
    )


def _empty_trash(directory: str) -> None:
    """Deletes what clean-ups renamed into ``_TRASH`` (process 0 only)."""
    if jax.process_index() == 0:
        shutil.rmtree(os.path.join(directory, _TRASH), ignore_errors=True)


def _discard_incomplete(directory: str) -> None:
    """Renames incomplete step directories into ``_TRASH`` (process 0 only).

    They are what an interrupted deletion leaves; orbax would count them
    among the ``max_to_keep`` newest and delete a complete step instead.
    """
    if jax.process_index() != 0 or not os.path.isdir(directory):
        return
    for step in _listed_steps(directory):
        if _missing_markers(directory, step):
            trash = os.path.join(directory, _TRASH)
            os.makedirs(trash, exist_ok=True)
            os.replace(os.path.join(directory, str(step)), os.path.join(trash, f"incomplete-{step}"))


def _check_step(step: Any) -> int:
    """``step`` as an int: a Python/numpy int or a 0-d integer array (``GANState.step``)."""
    is_array = isinstance(step, (jax.Array, np.ndarray))
    if is_array and step.ndim == 0 and jnp.issubdtype(step.dtype, jnp.integer):
        step = step.item()
    return _validate.check_int(step, "step", minimum=0)


def all_steps(directory: os.PathLike | str) -> list[int]:
    """The steps of the complete checkpoints in ``directory``, in increasing order.

    Args:
      directory: a checkpoint directory (it need not exist).

    Returns:
      The steps; ``[]`` if the directory does not exist or holds none.
      Temporary directories of interrupted saves are not checkpoints, nor
      are step directories without the files that mark a finished save
      (what an interrupted clean-up leaves).

    Raises:
      TypeError: ``directory`` is not a str or ``os.PathLike``.
    """
    directory = os.path.abspath(_validate.check_path(directory, "directory"))
    if not os.path.isdir(directory):
        return []
    return [step for step in _listed_steps(directory) if not _missing_markers(directory, step)]


def latest_step(directory: os.PathLike | str) -> int | None:
    """The step of the newest complete checkpoint in ``directory``, or ``None``."""
    steps = all_steps(directory)
    return steps[-1] if steps else None


def save(
    directory: os.PathLike | str,
    state: PyTree,
    *,
    step: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    max_to_keep: int | None = 3,
) -> int:
    """Saves ``state`` and ``metadata`` as checkpoint ``step`` of ``directory``.

    The call returns once the checkpoint is on disk (the write is atomic), then
    deletes all but the newest ``max_to_keep`` checkpoints (each renamed out
    of the way first, so an interrupted deletion leaves nothing that looks
    like a checkpoint). Incomplete step directories found on the way are
    removed.

    In a multi-process run every process calls it with the same arguments
    (see the module's docstring).

    Args:
      directory: the checkpoint directory, created if needed.
      state: a pytree of arrays, e.g. a :class:`jgan.steps.GANState`; typed
        PRNG keys are allowed anywhere in it. In a multi-process run, global
        arrays (``jgan.parallel.replicate``).
      step: the checkpoint's step; by default ``int(state.step)``.
      metadata: a JSON-serialisable dict stored beside the state (e.g. the
        run's configuration), returned by :func:`restore` as JSON gives it
        back (tuples become lists).
      max_to_keep: how many of the newest checkpoints to keep (``None``: all).

    Returns:
      The step saved.

    Raises:
      ValueError: ``step`` is missing and ``state`` has no ``step``, is
        negative, or is not newer than the latest checkpoint of
        ``directory``; ``max_to_keep < 1``; in a multi-process run, a
        leaf is not a global array.
      TypeError: ``directory`` is not a str or ``os.PathLike``; ``step`` is
        not an int (or a 0-d integer array); ``max_to_keep`` is neither None
        nor an int; ``metadata`` is not a JSON-serialisable dict.
    """
    directory = os.path.abspath(_validate.check_path(directory, "directory"))
    if step is None:
        if not hasattr(state, "step"):
            raise ValueError("Give step= (the state has no .step field).")
        step = state.step
    step = _check_step(step)
    if max_to_keep is not None:
        max_to_keep = _validate.check_int(max_to_keep, "max_to_keep", minimum=1)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}.")
    metadata = dict(metadata)

    leaves, described, _ = _describe(state)
    arrays = {}
    for i, (leaf, info) in enumerate(zip(leaves, described)):
        if _is_key(leaf):
            info["key_impl"] = str(jax.random.key_impl(leaf))
            leaf = jax.random.key_data(leaf)
        if math.prod(leaf.shape) == 0:  # Orbax refuses empty arrays; the shape says it all.
            continue
        _check_global(leaf, info["path"])
        arrays[_leaf_name(i)] = jnp.asarray(leaf)
    if not arrays:  # A numpy marker: orbax writes it once in a multi-process run too.
        arrays[_NO_ARRAYS] = np.zeros((), np.int8)
    meta = {"format": FORMAT_VERSION, "step": step, "leaves": described, "metadata": metadata}
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as error:
        raise TypeError(f"metadata must be JSON-serialisable: {error}") from None

    _empty_trash(directory)
    _discard_incomplete(directory)
    _sync("save.cleaned")  # No process lists the steps while process 0 discards some.
    with _manager(directory, max_to_keep=max_to_keep, write=True) as manager:
        latest = manager.latest_step()
        if latest is not None and latest >= step:
            raise ValueError(
                f"{directory!r} already holds a checkpoint at step {latest}"
                f" >= {step}: save to a fresh directory or delete the newer checkpoints."
            )
        saved = manager.save(
            step,
            args=ocp.args.Composite(
                **{_STATE: ocp.args.StandardSave(arrays), _META: ocp.args.JsonSave(meta)}
            ),
        )
        manager.wait_until_finished()
    _empty_trash(directory)
    _sync("save.done")  # Every process returns once the old steps are gone.
    if not saved:  # Orbax's save policy declined; should not happen with these options.
        raise RuntimeError(f"orbax did not save step {step} in {directory!r}.")
    return step


def _leaf_name(i: int) -> str:
    return f"leaf_{i:05d}"


def restore(
    directory: os.PathLike | str,
    template: PyTree,
    *,
    step: int | None = None,
) -> tuple[PyTree, dict[str, Any]]:
    """Restores checkpoint ``step`` (the latest by default) into ``template``'s form.

    Args:
      directory: the checkpoint directory.
      template: a pytree of the same structure, shapes and dtypes as the saved
        state (a freshly initialised state, or ``jax.eval_shape`` of one); its
        leaves' shardings (default: the first local device) place the
        restored arrays: leaves replicated over a mesh of every process's
        devices give global arrays. Typed PRNG keys in the template come
        back as typed keys.
      step: the step to restore (an int, or a 0-d integer array); by default
        the newest complete one.

    Returns:
      ``(state, metadata)``: the state in the template's tree structure and
      the metadata dict given to :func:`save`.

    Raises:
      FileNotFoundError: no checkpoint (or not that ``step``) in
        ``directory``; that step is incomplete (an interrupted clean-up) or
        its files were removed.
      ValueError: the checkpoint does not match the template (another model,
        another optimizer): the message names the first differing leaves.
      TypeError: ``directory`` is not a str or ``os.PathLike``; ``step`` is
        not an int (``0.0`` and ``"0"`` are refused).
    """
    directory = os.path.abspath(_validate.check_path(directory, "directory"))
    if step is not None:
        step = _check_step(step)
    steps = all_steps(directory)
    if step is not None and step not in steps:
        missing = _missing_markers(directory, step) if os.path.isdir(os.path.join(directory, str(step))) else []
        if missing:
            raise FileNotFoundError(
                f"Step {step} in {directory!r} is incomplete and cannot be restored: it lacks "
                f"{', '.join(missing)} (what a clean-up of old checkpoints interrupted by a kill "
                f"leaves; the next save removes it). Complete steps: {steps}."
            )
        raise FileNotFoundError(f"No checkpoint at step {step} in {directory!r}; it holds steps {steps}.")
    if not steps:
        raise FileNotFoundError(f"No checkpoint in {directory!r}.")
    if step is None:
        step = steps[-1]

    with _manager(directory, max_to_keep=None, write=False) as manager:
        meta = manager.restore(step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()}))[_META]
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"{directory!r} step {step} is not a jgan checkpoint of format {FORMAT_VERSION}."
            )
        leaves, expected, treedef = _describe(template)
        _check_matches(meta["leaves"], expected, directory, step)

        abstract = {}
        for i, (leaf, info) in enumerate(zip(leaves, meta["leaves"])):
            if math.prod(info["shape"]) == 0:
                continue
            if "key_impl" in info:
                data = jax.eval_shape(
                    lambda k: jax.random.key_data(k), jax.ShapeDtypeStruct(leaf.shape, leaf.dtype)
                )
                shape, dtype = data.shape, data.dtype
            else:
                shape, dtype = leaf.shape, leaf.dtype
            abstract[_leaf_name(i)] = jax.ShapeDtypeStruct(shape, dtype, sharding=_sharding(leaf))
        if not abstract:
            arrays = {}
        else:
            try:
                arrays = manager.restore(
                    step, args=ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(abstract)})
                )[_STATE]
            except (FileNotFoundError, ValueError) as error:
                if not isinstance(error, FileNotFoundError) and "NOT_FOUND" not in str(error):
                    raise
                raise FileNotFoundError(
                    f"Step {step} in {directory!r} is damaged: files of its arrays are missing "
                    "(deleted by hand, or a clean-up by another tool interrupted). Restore "
                    f"another step (complete steps: {steps}) or delete this one. orbax: "
                    f"{str(error).splitlines()[0][:300]}"
                ) from error

    restored = []
    for i, (leaf, info) in enumerate(zip(leaves, meta["leaves"])):
        if math.prod(info["shape"]) == 0:
            restored.append(jax.device_put(jnp.zeros(leaf.shape, leaf.dtype), _sharding(leaf)))
            continue
        value = arrays[_leaf_name(i)]
        if "key_impl" in info:
            value = jax.random.wrap_key_data(value, impl=info["key_impl"])
        restored.append(value)
    return jax.tree_util.tree_unflatten(treedef, restored), dict(meta["metadata"])


def _sharding(leaf: Any) -> jax.sharding.Sharding:
    """Where a leaf's restored data goes: where the template's leaf lives.

    A typed key's raw data lives where the key does; a template leaf without
    a sharding (numpy, ``ShapeDtypeStruct`` without one) goes to the first
    local device.
    """
    if isinstance(leaf, jax.Array):
        return jax.random.key_data(leaf).sharding if _is_key(leaf) else leaf.sharding
    sharding = getattr(leaf, "sharding", None)
    if sharding is None or (_is_key(leaf) and not isinstance(sharding, jax.sharding.SingleDeviceSharding)):
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return sharding


def _check_matches(saved: list[dict], expected: list[dict], directory: str, step: int) -> None:
    """Raises a ValueError naming the differences between saved and template leaves."""
    problems = []
    saved_by_path = {info["path"]: info for info in saved}
    expected_by_path = {info["path"]: info for info in expected}
    missing = [p for p in expected_by_path if p not in saved_by_path]
    extra = [p for p in saved_by_path if p not in expected_by_path]
    if missing:
        problems.append(f"in the template but not the checkpoint: {_shorten(missing)}")
    if extra:
        problems.append(f"in the checkpoint but not the template: {_shorten(extra)}")
    if not missing and not extra and [i["path"] for i in saved] != [i["path"] for i in expected]:
        problems.append("the same leaves in a different order")
    mismatched = []
    for path, want in expected_by_path.items():
        got = saved_by_path.get(path)
        if got is None:
            continue
        if got["shape"] != want["shape"] or got["dtype"] != want["dtype"]:
            mismatched.append(
                f"{path}: checkpoint {got['dtype']}{got['shape']}, template {want['dtype']}{want['shape']}"
            )
    if mismatched:
        problems.append("different shapes or dtypes: " + _shorten(mismatched))
    if problems:
        raise ValueError(
            f"The checkpoint at step {step} of {directory!r} does not match the template"
            f" ({len(saved)} saved leaves, {len(expected)} in the template; a checkpoint of"
            " another model or optimizer?): " + "; ".join(problems) + "."
        )


def _shorten(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")

