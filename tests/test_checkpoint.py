"""Tests of jgan.checkpoint: exact resume, retention, atomicity, mismatches, metadata."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from jgan import checkpoint
from jgan import steps
import nets

LATENT = 3
BATCH = 16


def _optimizer():
    # eps_root > 0: the unrolled updates are differentiated through Adam.
    return optax.adam(1e-2, b1=0.5, eps_root=1e-16)


def _init(key=jax.random.key(0), hidden=8, optimizer=None, ema=True):
    optimizer = optimizer or _optimizer()
    g_params = nets.mlp_init(jax.random.key(1), [LATENT, hidden, 2])
    d_params = nets.mlp_init(jax.random.key(2), [2, hidden, 1])
    return steps.init_state(
        key, g_params, d_params, g_optimizer=optimizer, d_optimizer=optimizer, ema=ema
    )


@pytest.fixture(scope="module")
def train_step():
    step = steps.make_train_step(
        generator=nets.generator,
        discriminator=nets.discriminator,
        g_optimizer=_optimizer(),
        d_optimizer=_optimizer(),
        latent_dim=LATENT,
        unroll_steps=2,
        ema_decay=0.9,
    )
    return jax.jit(step)


def _batch(i):
    return jax.random.normal(jax.random.fold_in(jax.random.key(42), i), (BATCH, 2)) + 1.0


def _train(step_fn, state, start, n):
    for i in range(start, start + n):
        state, _ = step_fn(state, _batch(i))
    return state


def _leaves_bits(tree):
    """Every leaf as raw numpy (typed keys as their key data), for bitwise comparison."""
    out = []
    for leaf in jax.tree.leaves(tree):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out.append(np.asarray(leaf))
    return out


def _assert_bitwise_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(_leaves_bits(a), _leaves_bits(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def test_resume_is_exact(tmp_path, train_step):
    n = 4
    straight = _train(train_step, _init(), 0, 2 * n)

    first = _train(train_step, _init(), 0, n)
    checkpoint.save(tmp_path, first, metadata={"run": "a"})
    # The template is a fresh state: its values must not leak into the result.
    template = _init(key=jax.random.key(7))
    restored, metadata = checkpoint.restore(tmp_path, template)
    assert metadata == {"run": "a"}
    assert int(restored.step) == n
    assert isinstance(restored, steps.GANState)
    assert jax.dtypes.issubdtype(restored.key.dtype, jax.dtypes.prng_key)
    _assert_bitwise_equal(restored, first)
    resumed = _train(train_step, restored, n, n)

    _assert_bitwise_equal(resumed, straight)
    # A different run does differ (the comparison can fail).
    other = _train(train_step, _init(key=jax.random.key(7)), 0, 2 * n)
    assert not np.array_equal(_leaves_bits(other.g_params)[0], _leaves_bits(straight.g_params)[0])


def test_restore_into_abstract_template(tmp_path):
    state = _init()
    checkpoint.save(tmp_path, state)
    restored, _ = checkpoint.restore(tmp_path, jax.eval_shape(_init))
    _assert_bitwise_equal(restored, state)


def test_key_implementation_is_kept(tmp_path):
    tree = {"key": jax.random.key(3, impl="rbg"), "x": jnp.arange(3.0)}
    checkpoint.save(tmp_path, tree, step=0)
    restored, _ = checkpoint.restore(tmp_path, {"key": jax.random.key(0, impl="rbg"), "x": jnp.zeros(3)})
    assert str(jax.random.key_impl(restored["key"])) == "rbg"
    _assert_bitwise_equal(restored, tree)
    # A template with another implementation is another state.
    with pytest.raises(ValueError, match="does not match"):
        checkpoint.restore(tmp_path, {"key": jax.random.key(0), "x": jnp.zeros(3)})


def test_keeps_the_last_n(tmp_path):
    state = _init()
    for step in range(1, 6):
        assert checkpoint.save(tmp_path, state._replace(step=jnp.int32(step)), max_to_keep=2) == step
    assert checkpoint.all_steps(tmp_path) == [4, 5]
    assert checkpoint.latest_step(tmp_path) == 5
    assert sorted(p for p in os.listdir(tmp_path) if p.isdigit()) == ["4", "5"]
    restored, _ = checkpoint.restore(tmp_path, state, step=4)
    assert int(restored.step) == 4
    with pytest.raises(FileNotFoundError, match=r"step 1 .*\[4, 5\]"):
        checkpoint.restore(tmp_path, state, step=1)


def test_leftover_temporary_directory_is_ignored(tmp_path):
    state = _init()
    checkpoint.save(tmp_path, state._replace(step=jnp.int32(5)))
    # What a crash mid-write leaves: an unfinished temporary directory.
    partial = tmp_path / "9.orbax-checkpoint-tmp-1700000000000000"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "garbage").write_bytes(b"\0" * 10)
    assert checkpoint.latest_step(tmp_path) == 5
    assert checkpoint.all_steps(tmp_path) == [5]
    restored, _ = checkpoint.restore(tmp_path, state)
    assert int(restored.step) == 5
    # And a later save still works beside it.
    checkpoint.save(tmp_path, state._replace(step=jnp.int32(10)))
    assert checkpoint.latest_step(tmp_path) == 10


def test_interrupted_save_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    state = _init()
    good = state._replace(step=jnp.int32(5))
    checkpoint.save(tmp_path, good, metadata={"good": True})

    async def fail(*args, **kwargs):
        raise OSError("disk full (simulated)")

    # The metadata item fails after the state item has started writing.
    monkeypatch.setattr(ocp.JsonCheckpointHandler, "async_save", fail)
    bad = jax.tree.map(lambda x: x + 1 if jnp.issubdtype(x.dtype, jnp.floating) else x, good)
    with pytest.raises(Exception, match="disk full"):
        checkpoint.save(tmp_path, bad._replace(step=jnp.int32(10)))
    monkeypatch.undo()

    assert not (tmp_path / "10").exists()
    assert any(".orbax-checkpoint-tmp" in name for name in os.listdir(tmp_path))
    assert checkpoint.latest_step(tmp_path) == 5
    restored, metadata = checkpoint.restore(tmp_path, state)
    assert metadata == {"good": True}
    _assert_bitwise_equal(restored, good)


def test_mismatched_template_is_a_clear_error(tmp_path):
    checkpoint.save(tmp_path, _init(hidden=8))
    with pytest.raises(ValueError, match=r"does not match the template.*g_params.*float32\[3, 8\].*float32\[3, 16\]"):
        checkpoint.restore(tmp_path, _init(hidden=16))
    with pytest.raises(ValueError, match="does not match the template.*g_ema_params"):
        checkpoint.restore(tmp_path, _init(ema=False))
    with pytest.raises(ValueError, match="does not match the template.*opt_state"):
        checkpoint.restore(tmp_path, _init(optimizer=optax.sgd(0.1)))


def test_metadata_round_trip(tmp_path):
    metadata = {
        "dataset": "ring",
        "lr": 1e-4,
        "hidden": [128, 128],
        "ema": None,
        "flags": {"resume": True, "nested": {"k": 10}},
    }
    checkpoint.save(tmp_path, _init(), metadata=metadata)
    _, restored = checkpoint.restore(tmp_path, _init())
    assert restored == metadata
    assert json.dumps(restored) == json.dumps(metadata)


def test_bad_calls(tmp_path):
    state = _init()
    assert checkpoint.latest_step(tmp_path / "missing") is None
    assert checkpoint.all_steps(tmp_path / "missing") == []
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        checkpoint.restore(tmp_path, state)
    with pytest.raises(TypeError, match="JSON"):
        checkpoint.save(tmp_path, state, metadata={"f": object()})
    with pytest.raises(ValueError, match="step"):
        checkpoint.save(tmp_path, {"x": jnp.zeros(2)})
    with pytest.raises(ValueError, match=">= 0"):
        checkpoint.save(tmp_path, state, step=-1)
    with pytest.raises(ValueError, match="max_to_keep"):
        checkpoint.save(tmp_path, state, max_to_keep=0)
    with pytest.raises(TypeError, match="step must be a Python int, got float"):
        checkpoint.save(tmp_path, state, step=2.5)
    with pytest.raises(TypeError, match="step must be a Python int"):
        checkpoint.save(tmp_path, state, step=jnp.float32(2))
    with pytest.raises(TypeError, match="max_to_keep must be a Python int"):
        checkpoint.save(tmp_path, state, max_to_keep=2.0)
    checkpoint.save(tmp_path, state._replace(step=jnp.int32(3)))
    with pytest.raises(ValueError, match="already holds a checkpoint at step 3"):
        checkpoint.save(tmp_path, state._replace(step=jnp.int32(3)))


def test_zero_size_arrays_round_trip(tmp_path):
    """An empty buffer (e.g. CycleGAN's image pool of size 0) is saved by its shape alone."""
    state = {"pool": jnp.zeros((0, 4, 4, 3)), "w": jnp.arange(3.0), "count": jnp.zeros((), jnp.int32)}
    checkpoint.save(tmp_path, state, step=1)
    restored, _ = checkpoint.restore(tmp_path, state)
    chex.assert_trees_all_equal(restored, state)
    with pytest.raises(ValueError):  # The empty leaf's shape is still checked.
        checkpoint.restore(tmp_path, {**state, "pool": jnp.zeros((0, 4, 4, 1))})


def _save_steps(directory, steps, **kwargs):
    state = {"w": jnp.arange(3.0), "count": jnp.zeros((), jnp.int32)}
    for step in steps:
        checkpoint.save(directory, {**state, "w": state["w"] + step}, step=step, **kwargs)
    return state


def test_step_emptied_by_an_interrupted_clean_up_is_not_a_checkpoint(tmp_path):
    # What a kill during orbax's own deletion of an old step leaves: the step
    # directory (and some sub-directories) without its files.
    template = _save_steps(tmp_path, [1, 2, 3], max_to_keep=None)
    for step in (1, 3):
        for root, _, files in os.walk(tmp_path / str(step)):
            for name in files:
                os.remove(os.path.join(root, name))
    assert (tmp_path / "3" / "state").is_dir()  # the directories are left
    assert checkpoint.all_steps(tmp_path) == [2]
    assert checkpoint.latest_step(tmp_path) == 2
    restored, _ = checkpoint.restore(tmp_path, template)  # the newest complete step
    np.testing.assert_array_equal(restored["w"], [2.0, 3.0, 4.0])
    with pytest.raises(FileNotFoundError, match=r"Step 3 .* is incomplete .*_CHECKPOINT_METADATA.*Complete steps: \[2\]"):
        checkpoint.restore(tmp_path, template, step=3)
    # The next save removes the remains, and they do not count among max_to_keep.
    checkpoint.save(tmp_path, template, step=4, max_to_keep=2)
    assert sorted(os.listdir(tmp_path)) == ["2", "4"]
    assert checkpoint.all_steps(tmp_path) == [2, 4]


@pytest.mark.parametrize("keep", ["state", "meta"])
def test_step_with_one_item_deleted_is_not_a_checkpoint(tmp_path, keep):
    template = _save_steps(tmp_path, [1, 2], max_to_keep=None)
    import shutil

    for item in ("state", "meta"):
        if item != keep:
            shutil.rmtree(tmp_path / "2" / item)
    assert checkpoint.all_steps(tmp_path) == [1]
    with pytest.raises(FileNotFoundError, match="Step 2 .* is incomplete"):
        checkpoint.restore(tmp_path, template, step=2)


def test_damaged_array_files_are_a_clear_error(tmp_path):
    template = _save_steps(tmp_path, [1, 2], max_to_keep=None)
    data = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "2" / "state") for f in fs
            if os.sep + "d" + os.sep in os.path.join(r, f)]
    assert data
    for path in data:
        os.remove(path)
    with pytest.raises(FileNotFoundError, match=r"Step 2 .* is damaged.*complete steps: \[1, 2\]"):
        checkpoint.restore(tmp_path, template)
    restored, _ = checkpoint.restore(tmp_path, template, step=1)
    np.testing.assert_array_equal(restored["w"], [1.0, 2.0, 3.0])


def test_clean_up_renames_old_steps_before_deleting_them(tmp_path, monkeypatch):
    # A kill in the middle of deleting an old step (simulated: the deletion
    # removes a few files, then the process "dies") leaves no step directory
    # that looks like a checkpoint: the step was renamed out of the way first.
    template = _save_steps(tmp_path, [1, 2], max_to_keep=2)
    real_rmtree = checkpoint.shutil.rmtree

    def killed(path, ignore_errors=False):
        if not os.path.exists(path):
            return
        files = [os.path.join(r, f) for r, _, fs in os.walk(path) for f in fs]
        for name in files[: len(files) // 2]:
            os.remove(name)
        raise KeyboardInterrupt("killed mid-deletion (simulated)")

    monkeypatch.setattr(checkpoint.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, template, step=3, max_to_keep=2)
    monkeypatch.setattr(checkpoint.shutil, "rmtree", real_rmtree)
    assert not (tmp_path / "1").exists()
    assert (tmp_path / ".jgan-deleted").is_dir()  # the half-deleted remains
    assert checkpoint.all_steps(tmp_path) == [2, 3]
    restored, _ = checkpoint.restore(tmp_path, template)
    np.testing.assert_array_equal(restored["w"], template["w"])  # step 3 saved the template
    checkpoint.save(tmp_path, template, step=4, max_to_keep=2)
    assert sorted(os.listdir(tmp_path)) == ["3", "4"]


@pytest.mark.parametrize("step, got", [(0.0, "float 0.0"), ("0", "str '0'"), (True, "bool True"),
                                       (np.float32(2), r"float32 np.float32\(2.0\)"), (None, None)])
def test_restore_step_must_be_an_int(tmp_path, step, got):
    template = _save_steps(tmp_path, [0, 2], max_to_keep=None)
    if got is None:
        assert int(checkpoint.restore(tmp_path, template, step=step)[0]["w"][0]) == 2
        return
    with pytest.raises(TypeError, match=f"step must be a Python int, got {got}"):
        checkpoint.restore(tmp_path, template, step=step)


def test_restore_step_accepts_ints_and_integer_scalars(tmp_path):
    template = _save_steps(tmp_path, [0, 2], max_to_keep=None)
    for step in (0, np.int64(0), jnp.int32(0), np.array(0)):
        np.testing.assert_array_equal(checkpoint.restore(tmp_path, template, step=step)[0]["w"], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="step must be >= 0"):
        checkpoint.restore(tmp_path, template, step=-1)


def test_state_of_empty_arrays_only_round_trips(tmp_path):
    state = {"pool": jnp.zeros((0, 4, 4, 3))}
    checkpoint.save(tmp_path, state, step=1)
    restored, _ = checkpoint.restore(tmp_path, state)
    chex.assert_trees_all_equal(restored, state)


def test_a_state_with_regularizer_states_round_trips(tmp_path):
    """GANState.d_regularizer_state (LeCam's anchors, a stateless R1's None) saves and restores into a fresh state."""
    from jgan.penalties import LeCam, LeCamState, R1

    gan = steps.make_gan(generator=nets.generator, discriminator=nets.discriminator, g_optimizer=_optimizer(),
                         d_optimizer=_optimizer(), prior=LATENT, d_regularizers=[LeCam(0.3), R1(1.0)])
    g_params = nets.mlp_init(jax.random.key(1), [LATENT, 8, 2])
    d_params = nets.mlp_init(jax.random.key(2), [2, 8, 1])
    state, _ = gan.step(gan.init(jax.random.key(0), g_params, d_params), _batch(0))
    assert float(state.d_regularizer_state[0].weight) > 0  # The anchors moved.
    checkpoint.save(tmp_path, state)
    restored, _ = checkpoint.restore(tmp_path, gan.init(jax.random.key(7), g_params, d_params))
    assert isinstance(restored.d_regularizer_state[0], LeCamState) and restored.d_regularizer_state[1] is None
    _assert_bitwise_equal(restored, state)
