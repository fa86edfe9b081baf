"""examples/_harness.py: flags from a config, the resume policy, the metrics log, the training loop's chunks and interrupts."""

import dataclasses
import json
import os
import signal

import numpy as np
import pytest

from examples import _harness as harness
from examples._harness import option


@dataclasses.dataclass(frozen=True)
class _Config:
    """A config documented in its docstring.

    Attributes:
      steps: generator updates.
      hidden: the widths, one per layer.
      rate / decay: a shared entry
        continued on a second line.
      ema: the EMA's decay (none: no EMA).
    """

    steps: int = 10
    hidden: tuple[int, ...] = (8, 8)
    rate: float = 1e-3
    decay: float = 0.5
    ema: float | None = 0.99
    baseline: bool = option(True, "also train the baseline")
    kind: str = option("a", "the kind", choices=("a", "b"))

    def validate(self):
        if self.steps < 1:
            raise ValueError("--steps must be >= 1.")


def test_help_texts_from_docstring_and_metadata():
    texts = harness.help_texts(_Config)
    assert texts["steps"] == "generator updates."
    assert texts["rate"] == texts["decay"] == "a shared entry continued on a second line."
    assert texts["baseline"] == "also train the baseline"


def test_flags_types_and_defaults():
    config, args = harness.parse_config(_Config, ["--out", "x"], description="")
    assert config == _Config() and args.out == "x" and not args.resume
    config, _ = harness.parse_config(
        _Config, ["--out", "x", "--steps", "3", "--hidden", "4", "5", "6", "--ema", "none", "--no-baseline",
                  "--kind", "b"], description="")  # fmt: skip
    assert config == _Config(steps=3, hidden=(4, 5, 6), ema=None, baseline=False, kind="b")


def test_help_lists_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit) as raised:
        harness.parse_config(_Config, ["--help"], description="A test.")
    assert raised.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for piece in ("--steps STEPS generator updates (default: 10)", "(default: 8 8)", "(default: 0.99)",
                  "--baseline, --no-baseline also train the baseline (default: true)", "--out OUT", "--resume"):
        assert piece in text, piece


def test_a_field_without_help_is_refused():
    @dataclasses.dataclass
    class Undocumented:
        steps: int = 1

    with pytest.raises(TypeError, match="Undocumented.steps has no help text"):
        harness.make_parser(Undocumented, description="")


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "error: --steps must be >= 1."),  # The config's validate: one line.
    (["--kind", "c"], "invalid choice: 'c'"),  # argparse's own errors: one line too.
    (["--steps", "x"], "invalid int value: 'x'"),
])  # fmt: skip
def test_usage_errors_are_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as raised:
        harness.main(_Config, lambda *a: None, argv=["--out", "x", *argv], doc="A test.")
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_guard_exit_codes(capsys):
    def fails(error):
        def fn():
            raise error

        return fn

    cases = [
        (harness.Interrupted(signal.SIGINT, 7, "dir"), 130, "interrupted by SIGINT at step 7: checkpoint saved in dir"),
        (harness.Interrupted(signal.SIGTERM, 7, "dir"), 143, "interrupted by SIGTERM"),
        (harness.UsageError("bad\nflag"), 2, "error: bad flag"),
        (FloatingPointError("x"), None, None),  # Not the harness's to handle: a bug surfaces as one.
        (ValueError("broken"), 1, "error: broken"),
        (KeyboardInterrupt(), 130, "interrupted: stopped at once"),
    ]
    for error, code, message in cases:
        if code is None:
            with pytest.raises(FloatingPointError):
                harness.guard(fails(error))
            continue
        with pytest.raises(SystemExit) as raised:
            harness.guard(fails(error))
        err = capsys.readouterr().err
        assert raised.value.code == code and err.startswith(message) and err.count("\n") == 1, err
    assert harness.guard(lambda: 5) == 5


def test_prepare_run_dir_refuses_a_non_empty_directory_without_resume(tmp_path):
    assert harness.prepare_run_dir(tmp_path / "new", resume=False) == str(tmp_path / "new")
    assert harness.prepare_run_dir(tmp_path / "new", resume=False)  # Empty: allowed.
    (tmp_path / "new" / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(harness.UsageError, match="already holds a run .*metrics.jsonl.*pass --resume"):
        harness.prepare_run_dir(tmp_path / "new", resume=False)
    assert harness.prepare_run_dir(tmp_path / "new", resume=True)
    assert (tmp_path / "new" / "metrics.jsonl").read_text() == "{}\n"
    with pytest.raises(harness.UsageError, match="is a file"):
        harness.prepare_run_dir(tmp_path / "new" / "metrics.jsonl", resume=True)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "out.json"
    harness.write_json(path, {"a": np.float32(1.5), "b": (1, 2)})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [1, 2]}

    def broken(temporary):
        with open(temporary, "w") as file:
            file.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        harness.atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [1, 2]}
    assert sorted(os.listdir(tmp_path)) == ["out.json"]  # No temporary file left behind.
    harness.save_npy(tmp_path / "x.npy", np.arange(3))
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), np.arange(3))


def test_metrics_log_drops_what_a_resumed_run_logs_again(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    a = harness.MetricsLog(path, series={"k": 0})
    for step in (0, 1, 5, 10):
        a.write(step, {"loss": np.float32(step)})
    b = harness.MetricsLog(path, series={"k": 2})
    b.write(1, {"loss": 1.0})
    b.write(5, {"loss": 5.0})
    with open(path, "a") as file:
        file.write('{"step": 6, "k": 2, "lo')  # Cut short by a killed process.
    resumed = harness.MetricsLog(path, resume_step=1, series={"k": 2})
    assert [r["step"] for r in resumed.records()] == [1]  # Series k=2 after step 1 dropped...
    assert [r["step"] for r in harness.MetricsLog(path, resume_step=10, series={"k": 0}).records()] == [0, 1, 5, 10]
    assert all(json.loads(line) for line in open(path))  # ...the broken line too; the other series kept.


class _FakeCheckpoints:
    directory = "ckpt"

    def __init__(self):
        self.saved = []

    def save(self, state):
        if not self.saved or self.saved[-1] != state.step:
            self.saved.append(state.step)


@dataclasses.dataclass
class _State:
    step: int


def _run(start, steps, *, chunk, events=(), checkpoint_steps=(), log_every=4, stop=None, on_event=None, tmp_path):
    calls = []

    def advance(state, step, n):
        assert step == state.step
        calls.append((step, n))
        return _State(step + n), {"loss": np.arange(step + 1, step + n + 1, dtype=np.float32)}

    log = harness.MetricsLog(str(tmp_path / "m.jsonl"), resume_step=start)
    checkpoints = _FakeCheckpoints()
    state = harness.train(
        _State(start), start=start, steps=steps, advance=advance, log=log, log_every=log_every,
        stop=stop or harness.StopRequest(), checkpoints=checkpoints, checkpoint_steps=checkpoint_steps,
        events=events, on_event=on_event or (lambda state, step: {"eval": step}), chunk_steps=chunk,
    )  # fmt: skip
    return state, calls, log.records(), checkpoints.saved


def test_train_chunks_logs_and_checkpoints(tmp_path):
    state, calls, records, saved = _run(0, 23, chunk=5, events=(7, 20), checkpoint_steps=(10,), tmp_path=tmp_path)
    assert state.step == 23
    # Chunks end at multiples of 5 and at every event or checkpoint step.
    assert calls == [(0, 5), (5, 2), (7, 3), (10, 5), (15, 5), (20, 3)]
    assert [r["step"] for r in records] == [1, 4, 7, 8, 12, 16, 20, 23]  # First, every 4, events, last.
    assert all(r["loss"] == r["step"] for r in records)  # Each step's own metrics.
    assert [r["step"] for r in records if "eval" in r] == [7, 20]
    assert saved == [10, 23]


def test_train_with_log_every_beyond_the_last_step_logs_the_first_and_the_last(tmp_path):
    _, _, records, _ = _run(0, 3, chunk=2, log_every=50, tmp_path=tmp_path)
    assert [r["step"] for r in records] == [1, 3]


def test_a_resumed_run_takes_the_uninterrupted_chunks(tmp_path):
    _, straight, _, _ = _run(0, 23, chunk=5, events=(7,), tmp_path=tmp_path / "a")
    _, resumed, _, _ = _run(10, 23, chunk=5, events=(7,), tmp_path=tmp_path / "b")
    assert resumed == [c for c in straight if c[0] >= 10]


def test_a_signal_stops_training_after_saving_a_checkpoint(tmp_path):
    with harness.StopRequest() as stop:

        def on_event(state, step):
            os.kill(os.getpid(), signal.SIGTERM)  # Arrives during step 7's evaluation.
            return {}

        with pytest.raises(harness.Interrupted) as raised:
            _run(0, 23, chunk=5, events=(7,), stop=stop, on_event=on_event, tmp_path=tmp_path)
    assert raised.value.signum == signal.SIGTERM and raised.value.step == 7 and raised.value.exit_code == 143
    assert "checkpoint saved in ckpt" in str(raised.value)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # The handlers are restored.


def test_a_second_sigint_stops_at_once():
    with harness.StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
