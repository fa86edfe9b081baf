"""Every program on the harness: --help, interrupts in a real process, resume, the metrics log, refusals.

The interrupt tests start ``python -m examples.unrolled_mog`` as a real
subprocess with a tiny config, send it SIGINT (or SIGTERM) once its first
checkpoint is on disk, and check the exit code, the one line on stderr, and
that ``--resume`` gives the state, metrics and outputs of an uninterrupted run.
"""

import dataclasses
import importlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from examples import _harness as harness
from examples import mog
from examples import unrolled_mog as um
from jgan import checkpoint

REPO = pathlib.Path(__file__).resolve().parents[1]

# Every program, and the dataclass its flags come from.
PROGRAMS = [
    ("examples.dcgan", "Config"),
    ("examples.wgan_gp", "Config"),
    ("examples.conditional_gan", "Config"),
    ("examples.cyclegan", "Config"),
    ("examples.unrolled_mog", None),  # mog.Config
    ("examples.train_digits_classifier", "Config"),
    ("examples.convert_fid_inception", "Config"),
    ("examples.stacked_digits", "Config"),
    ("benchmarks.mog_table", "Settings"),
    ("benchmarks.stacked_table", "Settings"),
    ("benchmarks.unroll_k", "Settings"),
    ("benchmarks.train_speed", "Settings"),
    ("benchmarks.conv_transpose", "Settings"),
    ("benchmarks.metrics", "Settings"),
]


def _option_blocks(help_text: str) -> dict[str, str]:
    """``--flag`` -> the text of its entry in ``--help`` (whitespace normalised)."""
    blocks, current = {}, None
    for line in help_text.splitlines():
        metavar = r"(?: (?:[A-Z0-9_]+|\[[A-Z0-9_]+ \.\.\.\])(?: \[[A-Z0-9_]+ \.\.\.\])?)?"
        match = re.match(rf"  (-[-\w]+(?:, --[-\w]+)?){metavar}(?:\s{{2,}}|$)(.*)", line)
        if match and line.startswith("  -"):
            current = match.group(1).split(", ")[0]
            blocks[current] = match.group(2)
        elif current and line.startswith("    "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return {k: " ".join(v.split()) for k, v in blocks.items()}


@pytest.mark.parametrize("module_name, config_name", PROGRAMS, ids=[p[0] for p in PROGRAMS])
def test_help_lists_each_flag_with_its_default(module_name, config_name, capsys):
    module = importlib.import_module(module_name)
    config_type = mog.Config if config_name is None else getattr(module, config_name)
    with pytest.raises(SystemExit) as raised:
        module.main(["--help"])
    assert raised.value.code == 0
    blocks = _option_blocks(capsys.readouterr().out)
    defaults = config_type()
    fields = [f for f in dataclasses.fields(config_type) if not f.metadata.get("positional")]
    assert fields
    for field in fields:
        flag = "--" + field.name.replace("_", "-")
        assert flag in blocks, f"{module_name}: {flag} is not in --help"
        # The declared default (a None resolved per dataset in __post_init__ is shown as none).
        declared = field.default if field.default is not dataclasses.MISSING else getattr(defaults, field.name)
        shown = harness.show_default(declared)
        assert blocks[flag].endswith(f"(default: {shown})"), (flag, blocks[flag])
        assert len(blocks[flag]) > len(f"(default: {shown})") + 5, f"{flag} has no help text"
    for flag, text in blocks.items():  # The program's own flags too (--out, --resume, --quiet).
        if flag not in ("-h", "--help"):
            assert "(default: " in text or "(required)" in text, (flag, text)


# ---------------------------------------------------------------------------
# unrolled_mog in a real process.

STEPS = 48
TINY = ["--steps", str(STEPS), "--unroll-steps", "2", "--hidden", "8", "--latent-dim", "4", "--batch-size", "16",
        "--snapshots", "3", "--chunk-steps", "4", "--eval-every", "16", "--log-every", "10", "--quiet"]  # fmt: skip
EVALUATED = [0, 16, 24, 32, 48]  # Every 16 steps and the figure's snapshots (0, 24, 48); checkpoints at each.


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run, in this process: (output directory, metrics.json)."""
    out = tmp_path_factory.mktemp("straight")
    return out, um.main([*TINY, "--out", str(out)])


def _interrupt(out: pathlib.Path, signum: int, wait_for: str) -> tuple[subprocess.CompletedProcess, int]:
    """Starts the program, sends ``signum`` once ``wait_for`` holds a checkpoint; returns the process and that step."""
    process = subprocess.Popen(
        [sys.executable, "-m", "examples.unrolled_mog", *TINY, "--out", str(out)],
        cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    directory = out / "checkpoints" / wait_for
    deadline = time.monotonic() + 300
    while not (directory.is_dir() and any(name.isdigit() for name in os.listdir(directory))):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no checkpoint in {directory} before the run ended: {process.communicate()}")
        time.sleep(0.02)
    seen = max(int(name) for name in os.listdir(directory) if name.isdigit())
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), seen


def _restore(directory, k):
    template = mog.make_experiment(harness.parse_config(mog.Config, TINY, description="", out=None)[0], k).init(
        jax.random.key(0))
    state, _ = checkpoint.restore(directory, template)
    return jax.tree.map(lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, state)


def _deterministic(result):
    """metrics.json without wall times, resume bookkeeping and the command line."""
    runs = {k: {key: v for key, v in run.items() if key not in ("train_seconds", "resumed_from")}
            for k, run in result["runs"].items()}  # fmt: skip
    return {**{k: v for k, v in result.items() if k not in ("wall_time_s", "command_line", "resumed")}, "runs": runs}


@pytest.mark.parametrize("signum, code", [
    (signal.SIGINT, 130),  # Ctrl-C.
    (signal.SIGTERM, 143),  # A scheduler's SIGTERM.
], ids=["SIGINT", "SIGTERM"])  # fmt: skip
def test_a_signal_saves_a_checkpoint_and_resume_continues_exactly(straight, tmp_path, signum, code):
    straight_out, straight_result = straight
    out = tmp_path / "run"
    wait_for = "k0"  # The baseline's first checkpoint: the K = 2 GAN (and its compilation) is still to come.
    process, seen = _interrupt(out, signum, wait_for)

    # The documented exit code and one line of explanation, no traceback.
    assert process.returncode == code, process.stderr
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1, process.stderr
    name = "SIGINT" if signum == signal.SIGINT else "SIGTERM"
    match = re.fullmatch(rf"interrupted by {name} at step (\d+): checkpoint saved in (\S+); run the same command"
                         r" with --resume to continue\.", lines[0])
    assert match, lines[0]
    step, saved_in = int(match.group(1)), pathlib.Path(match.group(2))
    assert seen <= step < STEPS and saved_in == out / "checkpoints" / wait_for
    assert checkpoint.latest_step(saved_in) == step  # The checkpoint at the step it stopped.
    assert not (out / "metrics.json").exists()

    # Without --resume the run is not overwritten; with it, it ends as the uninterrupted run.
    with pytest.raises(SystemExit) as raised:
        um.main([*TINY, "--out", str(out)])
    assert raised.value.code == 2
    resumed = um.main([*TINY, "--out", str(out), "--resume"])
    assert resumed["runs"][wait_for[1:]]["resumed_from"] == step
    assert _deterministic(resumed) == _deterministic(json.loads(json.dumps(straight_result)))
    np.testing.assert_array_equal(np.load(out / "samples.npy"), np.load(straight_out / "samples.npy"))
    assert (out / "metrics.jsonl").read_text() == (straight_out / "metrics.jsonl").read_text()
    for k in (0, 2):
        chex.assert_trees_all_equal(_restore(out / "checkpoints" / f"k{k}", k),
                                    _restore(straight_out / "checkpoints" / f"k{k}", k))


def test_metrics_log_has_the_first_and_last_steps(straight):
    out, _ = straight
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for k in (0, 2):
        mine = [r for r in records if r["unroll_steps"] == k]
        trained = [r["step"] for r in mine if "d_loss" in r]
        # --log-every 10: the first step, every 10th and the last; and the evaluated steps.
        assert trained == sorted({1, STEPS} | set(range(10, STEPS, 10)) | set(EVALUATED[1:]))
        assert [r["step"] for r in mine if "modes" in r] == EVALUATED


def test_metrics_log_with_log_every_beyond_the_steps(tmp_path):
    short = [*TINY, "--steps", "6", "--log-every", "100", "--eval-every", "none", "--snapshots", "2",
             "--no-baseline"]  # fmt: skip
    um.main([*short, "--out", str(tmp_path)])
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "d_loss" in r] == [1, 6]  # The first and the last step.
    assert [r["step"] for r in records if "modes" in r] == [0, 6]


def test_a_run_directory_is_not_overwritten_without_resume(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as raised:
        um.main([*TINY, "--out", str(tmp_path)])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "already holds a run (notes.txt, ...): pass --resume to continue it, or choose another --out" in err
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "mine"


def test_resume_of_a_finished_run_rewrites_the_same_outputs(straight, tmp_path, capsys):
    out, result = straight
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    capsys.readouterr()
    again = um.main([*TINY, "--out", str(copy), "--resume"])
    assert all(run["resumed_from"] == STEPS for run in again["runs"].values())
    assert _deterministic(again) == _deterministic(json.loads(json.dumps(result)))
    assert (copy / "metrics.jsonl").read_text() == (out / "metrics.jsonl").read_text()
    # The summary prints both distances to the data for each K, and the data's own floor.
    printed = capsys.readouterr().out.splitlines()
    for k in ("0", "2"):
        run = again["runs"][k]
        assert np.isfinite(run["sliced_wasserstein"]) and run["sliced_wasserstein"] > 0
        line = next(line for line in printed if line.startswith(f"K = {k:>2}:"))
        assert f"Sinkhorn divergence {run['sinkhorn']['divergence']:.2f}, sliced W2 {run['sliced_wasserstein']:.3f}" in line
    floor = again["sliced_wasserstein"]["data_floor"]
    assert any(line.startswith("Two samples of the data:") and f"sliced W2 {floor:.3f}" in line for line in printed)
