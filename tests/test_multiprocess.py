"""Training and checkpoints on two processes (jax.distributed on localhost) against one process.

tests/multiprocess_worker.py runs as two processes with 2 CPU devices each
(one 4-device mesh across the processes, each process giving its rows of
every global batch) and, side by side, as one process with 4 CPU devices.
Each trains the mixture-of-Gaussians GAN (flax MLPs, unrolled, EMA) and a
tiny DCGAN (BatchNorm) for 2N steps, checkpointing each of the first N,
then restores the latest checkpoint into a template of another seed and
trains the last N steps again. The assertions:

- the two processes hold the same state, bit for bit;
- two processes train what one process with four devices trains, to float
  round-off: the whole state (parameters, Adam moments, EMA, BatchNorm
  statistics, step, PRNG key) and every step's metrics;
- N steps, save, restore, N more steps equal 2N steps bit for bit, and the
  restored arrays are global (replicated over the 4-device mesh);
- the checkpoint clean-up (run by process 0) leaves the newest two steps,
  which both processes list; an incomplete step found there is removed.

And processes that disagree on the process count stop with an error
instead of waiting forever.

One set of processes does all the training (their start, JAX's import and
the compilations dominate; see TIMEOUT). Every child is killed when a test
ends, passing or not.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from processes import cpu_env, free_port, run_together

WORKER = Path(__file__).resolve().parent / "multiprocess_worker.py"
STEPS = 3  # N: steps before and after the checkpoint.
# Seconds for the whole run: far above what it takes (the three processes use
# about 100 s of CPU in all, measured; about a minute on two idle cores),
# far below what a hang would cost.
TIMEOUT = 600

pytestmark = pytest.mark.slow  # Subprocesses that start JAX and compile (about a minute).


def _run(commands: list[list[str]], logs: Path, *, timeout: float, stop_on_failure: bool = True) -> list[tuple[int, str]]:
    """Runs the worker once per argument list, all at once, each on as many CPU devices as its ``--devices``."""
    envs = [cpu_env(int(command[command.index("--devices") + 1])) for command in commands]
    return run_together([[str(WORKER), *command] for command in commands], envs=envs, timeout=timeout, logs=logs,
                        stop_on_failure=stop_on_failure)


def _worker_flags(process_id: int, num_processes: int, port: int, devices: int, out: Path, checkpoints: Path) -> list[str]:
    return ["--process-id", str(process_id), "--num-processes", str(num_processes), "--port", str(port),
            "--devices", str(devices), "--out", str(out), "--checkpoints", str(checkpoints),
            "--steps", str(STEPS)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The results and facts of the two-process run (``"pair"``: one per process) and the single process."""
    root = tmp_path_factory.mktemp("multiprocess")
    port = free_port()
    # A step directory without orbax's finish markers (what an interrupted
    # clean-up leaves): the first save must remove it.
    (root / "pair_checkpoints" / "0").mkdir(parents=True)
    commands = [_worker_flags(i, 2, port, 2, root / "pair", root / "pair_checkpoints") for i in range(2)]
    commands.append(_worker_flags(0, 1, 0, 4, root / "single", root / "single_checkpoints"))
    done = _run(commands, root / "logs", timeout=TIMEOUT)
    for i, (code, output) in enumerate(done):
        assert code == 0, f"process {i} of {commands[i]} failed (exit {code}):\n{output[-4000:]}"

    def load(out, process):
        with np.load(out / f"process_{process}.npz") as arrays:
            results = dict(arrays)
        return results, json.loads((out / f"process_{process}.json").read_text())

    return {"pair": [load(root / "pair", i) for i in range(2)], "single": load(root / "single", 0)}


def _select(results, prefix):
    return {k: v for k, v in results.items() if k.startswith(prefix)}


def test_the_two_processes_hold_the_same_state(runs):
    (first, _), (second, _) = runs["pair"]
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


@pytest.mark.parametrize("run", ["straight", "resumed"])
def test_two_processes_train_what_one_process_with_four_devices_trains(runs, run):
    (pair, _), _ = runs["pair"]
    single, _ = runs["single"]
    assert pair.keys() == single.keys()
    for prefix in (f"['{run}']", "['metrics']" if run == "straight" else "['resumed_metrics']"):
        names = _select(pair, prefix)
        assert names
        for name in names:
            if np.issubdtype(pair[name].dtype, np.floating):
                np.testing.assert_allclose(pair[name], single[name], rtol=1e-5, atol=1e-6, err_msg=name)
            else:  # Steps, PRNG keys' bits: exactly.
                np.testing.assert_array_equal(pair[name], single[name], err_msg=name)
    for gan in ("mog", "image"):
        assert pair[f"['{run}']['{gan}'].step"] == 2 * STEPS
    # Both GANs trained: every metric finite, no non-finite step.
    metrics = _select(pair, "['metrics']")
    assert len(metrics) > 0 and all(np.isfinite(v).all() for v in metrics.values())
    assert not any(v for k, v in metrics.items() if k.endswith("['nonfinite']"))


def test_each_process_reads_its_half_of_every_batch(runs):
    facts = [facts for _, facts in runs["pair"]]
    assert [f["process_count"] for f in facts] == [2, 2]
    assert [f["device_count"] for f in facts] == [4, 4]
    assert [f["mog_rows"] for f in facts] == [[0, 32], [32, 64]]
    assert runs["single"][1]["mog_rows"] == [0, 64]


@pytest.mark.parametrize("run", ["pair", "single"])
def test_training_resumed_from_a_checkpoint_equals_training_straight_through(runs, run):
    results, facts = runs["pair"][0] if run == "pair" else runs["single"]
    straight = _select(results, "['straight']")
    assert straight
    for name in straight:
        np.testing.assert_array_equal(results[name.replace("straight", "resumed", 1)], straight[name], err_msg=name)
    for i in range(STEPS):
        for name in _select(results, f"['resumed_metrics'][{i}]"):
            np.testing.assert_array_equal(results[name], results[name.replace(f"['resumed_metrics'][{i}]", f"['metrics'][{STEPS + i}]")],
                                          err_msg=name)
    assert facts["metadata"] == {"saved_by": 2 if run == "pair" else 1}


def test_restored_arrays_are_global(runs):
    for _, facts in runs["pair"]:
        assert facts["restored_replicated"]  # NamedSharding(4-device mesh, P()), as the template.
        assert not facts["restored_fully_addressable"]  # Spanning both processes.
    assert runs["single"][1]["restored_replicated"]


def test_the_clean_up_leaves_the_newest_steps_and_every_process_lists_them(runs):
    for _, facts in runs["pair"]:
        # Each save returns once the older steps are deleted (on process 0,
        # made slow by the worker), on every process.
        for saved, listed in enumerate(facts["listed_after_each_save"], start=1):
            newest = list(range(max(1, saved - 1), saved + 1))
            assert listed == {"steps": newest, "entries": [str(s) for s in newest]}
        assert facts["all_steps"] == [STEPS - 1, STEPS]  # max_to_keep=2
        # The incomplete step 0 is gone, and so is the directory of deleted steps.
        assert facts["entries"] == [str(STEPS - 1), str(STEPS)]


def test_a_process_local_leaf_is_refused_with_a_clear_error(runs):
    for _, facts in runs["pair"]:
        message = facts["local_leaf_error"]
        assert message is not None and "['local'] is a numpy array" in message
        assert "jgan.parallel.replicate" in message
    assert runs["single"][1]["local_leaf_error"] is None  # One process: a local leaf is fine.


@pytest.mark.parametrize("counts, expected, timeout", [
    # Process 1 joins process 0's run of 2 although told 3: both stop at once.
    ((2, 3), "the processes disagree on num_processes: process 0 says 2, process 1 says 3", 60),
    # Process 0 waits for a third process that never comes: jax.distributed
    # aborts both (SIGABRT, not an exception) after initialization_timeout.
    ((3, 2), "DEADLINE_EXCEEDED", 5),
], ids=["process_1_says_more", "process_0_says_more"])
def test_processes_that_disagree_on_the_process_count_stop(tmp_path, counts, expected, timeout):
    port = free_port()
    commands = [["--process-id", str(i), "--num-processes", str(n), "--port", str(port), "--devices", "1",
                 "--only-initialize", "--initialization-timeout", str(timeout)] for i, n in enumerate(counts)]
    start = time.monotonic()
    done = _run(commands, tmp_path, timeout=120, stop_on_failure=False)
    for i, (code, output) in enumerate(done):
        assert code != 0, f"process {i} did not fail:\n{output[-3000:]}"
        assert expected in output, f"process {i}:\n{output[-3000:]}"
    assert time.monotonic() - start < 120
