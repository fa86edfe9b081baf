"""The main job as two processes on localhost (``--coordinator-address``), against one process.

``python -m examples.unrolled_mog`` run as 2 processes with 1 CPU device each
must write the same ``samples.npy`` as 1 process with 2 devices: the same
2-device mesh, the state replicated and each step's batch split over it,
only process 0 writing. A few steps of small networks, so that it compiles
quickly; the processes are killed when the test ends.
"""

import json

import numpy as np
import pytest

from processes import cpu_env, free_port, run_together

# Small, so that the sharded unrolled step compiles quickly; K = 1 with the baseline.
FLAGS = ["-m", "examples.unrolled_mog", "--steps", "6", "--unroll-steps", "1", "--hidden", "16", "16",
         "--batch-size", "32", "--snapshots", "2", "--eval-every", "3", "--quiet"]
TIMEOUT = 900


def _check(done):
    for process in done:
        assert process.returncode == 0, f"{process.args} failed:\n{process.stderr[-3000:]}"


def test_two_processes_write_what_one_process_with_two_devices_writes(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    port = free_port()
    commands = [[*FLAGS, "--out", str(one)]] + [
        [*FLAGS, "--out", str(two), "--coordinator-address", f"localhost:{port}", "--num-processes", "2",
         "--process-id", str(i)]
        for i in range(2)
    ]
    # The single process with 2 devices and the two processes with 1 each, side by side.
    single = run_together(commands[:1], env=cpu_env(2), timeout=TIMEOUT)
    pair = run_together(commands[1:], env=cpu_env(1), timeout=TIMEOUT)
    _check(single + pair)

    np.testing.assert_array_equal(np.load(two / "samples.npy"), np.load(one / "samples.npy"))
    result = json.loads((two / "metrics.json").read_text())
    assert result["processes"] == 2 and len(result["devices"]) == 2
    assert json.loads((one / "metrics.json").read_text())["processes"] == 1
    for name in ("samples.png", "metrics.jsonl"):
        assert (two / name).exists()
    # One writer: every record logged once, and the summary printed by process 0 only.
    steps = [json.loads(line)["step"] for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert steps == [json.loads(line)["step"] for line in (one / "metrics.jsonl").read_text().splitlines()]
    assert "Wrote" in pair[0].stdout and "Wrote" not in pair[1].stdout


@pytest.mark.parametrize("flags, message", [
    (["--num-processes", "2"], "missing --coordinator-address, --process-id"),
    (["--coordinator-address", "localhost:1", "--num-processes", "2", "--process-id", "2"],
     "--process-id must be below --num-processes = 2, got 2"),
])
def test_incomplete_process_flags_are_a_usage_error(tmp_path, flags, message):
    done = run_together([[*FLAGS, "--out", str(tmp_path / "run"), *flags]], env=cpu_env(1), timeout=300)[0]
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "run").exists()  # Refused before anything was written.
