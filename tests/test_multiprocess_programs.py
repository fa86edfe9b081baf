"""Programs as two processes on localhost (``--coordinator-address``), against one process.

``python -m examples.unrolled_mog`` run as 2 processes with 1 CPU device each
must write the same ``samples.npy`` as 1 process with ``--devices 2``: the same
2-device mesh, the state replicated and each step's batch split over it,
only process 0 writing. So must ``python -m examples.dcgan``, whose
processes each read their rows of every global batch. A few steps of small
networks, so that they compile quickly; the processes are killed when the
test ends.
"""

import json

import numpy as np
import pytest

from processes import cpu_env, free_port, run_together

# Small, so that the sharded unrolled step compiles quickly; K = 1 with the baseline.
FLAGS = ["-m", "examples.unrolled_mog", "--steps", "6", "--unroll-steps", "1", "--hidden", "16", "16",
         "--batch-size", "32", "--snapshots", "2", "--eval-every", "3", "--quiet"]
TIMEOUT = 900


def _run(commands, devices, logs, timeout=TIMEOUT):
    """``(exit code, output)`` of each command, run at once on ``devices`` CPU devices each."""
    return run_together(commands, envs=[cpu_env(devices)] * len(commands), timeout=timeout, logs=logs)


def _check(done):
    for code, output in done:
        assert code == 0, output[-3000:]


def _one_and_two_processes(flags, tmp_path):
    """Runs ``flags`` as 1 process with ``--devices 2`` and as 2 processes with 1 device each."""
    one, two = tmp_path / "one", tmp_path / "two"
    port = free_port()
    single = _run([[*flags, "--out", str(one), "--devices", "2"]], 2, tmp_path / "logs_one")
    pair = _run(
        [[*flags, "--out", str(two), "--coordinator-address", f"localhost:{port}", "--num-processes", "2",
          "--process-id", str(i)] for i in range(2)],
        1, tmp_path / "logs_two",
    )
    _check(single + pair)
    return one, two, pair


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_processes_write_what_one_process_with_two_devices_writes(tmp_path):
    one, two, pair = _one_and_two_processes(FLAGS, tmp_path)
    np.testing.assert_array_equal(np.load(two / "samples.npy"), np.load(one / "samples.npy"))
    result = json.loads((two / "metrics.json").read_text())
    assert result["processes"] == 2 and len(result["devices"]) == 2
    assert json.loads((one / "metrics.json").read_text())["processes"] == 1
    assert (two / "samples.png").exists()
    # One writer: every record logged once, and the summary printed by process 0 only.
    assert _records(two / "metrics.jsonl") == _records(one / "metrics.jsonl")
    assert "Wrote" in pair[0][1] and "Wrote" not in pair[1][1]


def test_an_image_gan_as_two_processes_reads_each_process_rows(tmp_path):
    """jgan.data's pipelines give each process its rows of the global batch; the runs agree step for step."""
    flags = ["-m", "examples.dcgan", "--steps", "3", "--batch-size", "16", "--features", "8", "--image-size", "28",
             "--log-every", "1", "--sample-every", "3", "--eval-every", "3", "--quiet"]
    one, two, _ = _one_and_two_processes(flags, tmp_path)
    assert [r["step"] for r in _records(two / "metrics.jsonl")] == [1, 2, 3]
    assert _records(two / "metrics.jsonl") == _records(one / "metrics.jsonl")
    assert json.loads((two / "summary.json").read_text())["final_metrics"] == json.loads(
        (one / "summary.json").read_text())["final_metrics"]
    assert (two / "samples.png").exists()


@pytest.mark.parametrize("flags, message", [
    (["--devices", "2"], "--devices 2: this process has 1 device(s) (cpu)"),
    (["--devices", "0"], "expected a number >= 1 or 'all', got 0"),
    (["--num-processes", "2"], "missing --coordinator-address, --process-id"),
    (["--coordinator-address", "localhost:1", "--num-processes", "2", "--process-id", "2"],
     "--process-id must be below --num-processes = 2, got 2"),
])
def test_incomplete_process_flags_are_a_usage_error(tmp_path, flags, message):
    code, output = _run([[*FLAGS, "--out", str(tmp_path / "run"), *flags]], 1, tmp_path / "logs", timeout=300)[0]
    assert code == 2, output
    assert message in output
    assert not (tmp_path / "run").exists()  # Refused before anything was written.
