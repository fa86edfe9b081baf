"""The harness every example and benchmark runs on.

One implementation of what a command-line training program needs, so that
every program in ``examples/`` and ``benchmarks/`` behaves the same way:

- **Flags from a config dataclass** (:func:`parse_config`): every field is a
  flag (``batch_size`` -> ``--batch-size``) with its default and its help
  text (the field's ``help`` metadata, see :func:`option`, or its entry in the
  class docstring's ``Attributes:`` section); booleans are ``--flag`` /
  ``--no-flag``, tuples take several values, ``none`` spells ``None``.
  ``--help`` lists every flag with its default.
- **One resume policy** (:func:`prepare_run_dir`, :class:`Checkpoints`): a
  training program refuses to write into a non-empty ``--out`` unless
  ``--resume`` is given (exit code 2, one line). ``--resume`` continues from
  the latest checkpoint, with the same settings (a config may name the few
  that can change, such as ``steps``), and gives the state and the metrics
  log of an uninterrupted run; with no checkpoint yet it starts afresh.
- **Interrupts** (:class:`StopRequest`): SIGINT (Ctrl-C) or SIGTERM stops
  training at the next step (or compiled chunk), saves a checkpoint there and
  exits with one line on stderr and code 130 (SIGINT) or 143 (SIGTERM), the
  shell's 128 + the signal's number. A second Ctrl-C stops at once without
  saving (exit code 130); the last checkpoint is kept.
- **A metrics log** (:class:`MetricsLog`): ``metrics.jsonl``, one JSON
  object per logged step: always the first step and the last, every
  ``log_every`` steps, and every step with an evaluation.
- **Atomic writes** (:func:`atomic_write` and its helpers): a temporary file
  renamed over the target, so a killed program never leaves half a file.
- **Errors** (:func:`guard`): what a user can fix is one line on stderr and
  an exit code (2: usage, such as a bad flag or a refused ``--out``; 1: a
  failure, such as training that diverged), never a traceback.
- **Training** (:func:`train`): the loop that takes a state to its last step
  in compiled chunks, logging, evaluating and checkpointing on the way, and
  honouring interrupts.
- **State from flax modules** through ``make_gan``'s ``init``
  (:func:`init_gan`); samples from the EMA weights when the state keeps them
  (``GAN.sample``, :func:`generator_params`).

Only jgan's public API is used here.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import inspect
import json
import os
import re
import signal
import sys
import tempfile
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from jgan import checkpoint, models, parallel
from jgan import steps as jgan_steps

EXIT_FAILURE = 1
EXIT_USAGE = 2
SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


# ---------------------------------------------------------------------------
# Errors and exit codes.


class UsageError(ValueError):
    """A problem with the program's arguments or its ``--out`` (exit code 2)."""


class Interrupted(Exception):
    """Training stopped on a signal after saving a checkpoint (exit code 128 + the signal's number)."""

    def __init__(self, signum: int, step: int, saved_in: str | None):
        self.signum, self.step, self.saved_in = signum, step, saved_in
        where = f"checkpoint saved in {saved_in}" if saved_in else "nothing saved"
        super().__init__(
            f"interrupted by {SIGNAL_NAMES.get(signum, signum)} at step {step}: {where};"
            " run the same command with --resume to continue."
        )

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def guard(fn: Callable[[], Any]) -> Any:
    """Runs ``fn()`` and turns what a user can fix into one line on stderr and an exit code.

    - :class:`Interrupted`: 130 (SIGINT) or 143 (SIGTERM);
    - ``KeyboardInterrupt`` (a second Ctrl-C): 130;
    - :class:`UsageError`: 2;
    - ``jgan.steps.NonFiniteError`` (training diverged), ``ValueError``,
      ``OSError``: 1.

    Returns:
      What ``fn`` returned.

    Raises:
      SystemExit: with the exit code above, after printing the line.
    """
    try:
        return fn()
    except Interrupted as error:
        _exit(str(error), error.exit_code)
    except KeyboardInterrupt:
        _exit("interrupted: stopped at once, without saving (the last checkpoint is kept).", 128 + signal.SIGINT)
    except UsageError as error:
        _exit(f"error: {error}", EXIT_USAGE)
    except jgan_steps.NonFiniteError as error:
        _exit(f"error: training diverged: {error}", EXIT_FAILURE)
    except (ValueError, OSError) as error:
        _exit(f"error: {error}", EXIT_FAILURE)


def _exit(message: str, code: int) -> typing.NoReturn:
    print(" ".join(message.split()), file=sys.stderr, flush=True)  # One line.
    raise SystemExit(code) from None


# ---------------------------------------------------------------------------
# Flags from a config dataclass.


def option(default: Any, help: str, *, choices: Iterable[Any] | None = None, positional: bool = False) -> Any:
    """A config field with its help text (and the values it may take).

    ``positional=True`` makes it a required positional argument (``default``
    is then only the dataclass's).

    Example::

        @dataclasses.dataclass
        class Config:
            steps: int = option(2000, "generator updates")
    """
    metadata = {"help": help, "positional": positional}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    return dataclasses.field(default=default, metadata=metadata)


def help_texts(config_type: type) -> dict[str, str]:
    """The help text of each field: its ``help`` metadata, else its docstring entry.

    The docstring entries are those of the ``Attributes:`` sections of the
    class and its bases (``name: text``, continued on more-indented lines;
    ``a / b: text`` documents both ``a`` and ``b``).
    """
    texts: dict[str, str] = {}
    for klass in reversed(config_type.__mro__):
        texts.update(_docstring_attributes(klass.__dict__.get("__doc__")))
    for field in dataclasses.fields(config_type):
        if "help" in field.metadata:
            texts[field.name] = field.metadata["help"]
    return {name: text.replace("``", "") for name, text in texts.items()}


def _docstring_attributes(doc: str | None) -> dict[str, str]:
    lines = inspect.cleandoc(doc or "").splitlines()
    entries: dict[str, str] = {}
    inside, names, indent = False, [], None
    for line in lines:
        if line.strip() == "Attributes:":
            inside, names, indent = True, [], None
            continue
        if not inside:
            continue
        if line.strip() and not line.startswith(" "):
            inside = False  # The next section.
            continue
        width = len(line) - len(line.lstrip())
        match = re.match(r"\s+([\w /]+?):\s*(.*)$", line)
        if match and (indent is None or width <= indent):
            indent = width
            names = [name.strip() for name in match.group(1).split("/")]
            for name in names:
                entries[name] = match.group(2).strip()
        elif names and line.strip():
            for name in names:
                entries[name] = f"{entries[name]} {line.strip()}".strip()
    return entries


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def show_default(value: Any) -> str:
    """How a default is spelled on the command line."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return " ".join(show_default(v) for v in value) if value else "empty"
    return str(value)


def _converter(kind: Any) -> Callable[[str], Any]:
    if kind is bool:
        return lambda text: {"true": True, "false": False}[text.lower()]
    return kind


def _optional(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names it in errors.
    return parse


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (exit code 2)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=32)


def make_parser(
    config_type: type,
    *,
    description: str,
    prog: str | None = None,
    out: str | None = "required",
    resume: bool = True,
    quiet: bool = True,
    processes: bool = False,
) -> argparse.ArgumentParser:
    """An argument parser with a flag for every field of ``config_type``.

    Args:
      config_type: a dataclass whose every field has a default and a help
        text (see :func:`help_texts`).
      description: what ``--help`` prints above the flags.
      prog: the program's name in messages (``python -m examples.dcgan``).
      out: ``--out``'s default (``"required"``: the flag must be given;
        ``None``: no ``--out`` flag).
      resume: add ``--resume``.
      quiet: add ``--quiet``.
      processes: add ``--coordinator-address``, ``--num-processes`` and
        ``--process-id`` (a program that runs as several processes; see
        :func:`main`).

    Raises:
      TypeError: a field has no default, no help text or a type with no flag.
    """
    parser = _Parser(prog=prog, description=description, formatter_class=_Formatter)
    group = parser.add_argument_group("settings")
    texts = help_texts(config_type)
    hints = typing.get_type_hints(config_type)
    defaults = config_type()
    for field in dataclasses.fields(config_type):
        if not field.init:
            continue
        if field.name not in texts:
            raise TypeError(f"{config_type.__name__}.{field.name} has no help text (option(...) or its docstring).")
        # The declared default, not the instance's: a None that __post_init__
        # resolves from another field (e.g. a dataset's steps) must stay None.
        default = field.default if field.default is not dataclasses.MISSING else getattr(defaults, field.name)
        if field.metadata.get("positional"):
            group.add_argument(field.name, type=hints[field.name], help=texts[field.name].replace("%", "%%"))
            continue
        help_text = f"{texts[field.name].rstrip('.')} (default: {show_default(default)})".replace("%", "%%")
        kwargs: dict[str, Any] = {"default": default, "help": help_text, "dest": field.name}
        if "choices" in field.metadata:
            kwargs["choices"] = field.metadata["choices"]
        kind, optional = _unwrap_optional(hints[field.name])
        if kind is bool and not optional:
            group.add_argument(_flag(field.name), action=argparse.BooleanOptionalAction, **kwargs)
            continue
        origin = typing.get_origin(kind)
        if origin in (tuple, list):
            element = typing.get_args(kind)[0]
            kwargs.update(nargs="*" if not default else "+", type=_converter(element), metavar=field.name.upper())
        elif kind in (int, float, str):
            kwargs.update(type=_optional(kind) if optional else kind, metavar=field.name.upper())
        else:
            raise TypeError(f"{config_type.__name__}.{field.name}: no flag for the type {kind!r}.")
        group.add_argument(_flag(field.name), **kwargs)
    run = parser.add_argument_group("run")
    if out == "required":
        run.add_argument("--out", required=True, help="the output directory (required)")
    elif out is not None:
        run.add_argument("--out", default=out, help=f"the output directory (default: {out})")
    if resume:
        run.add_argument(
            "--resume", action="store_true",
            help="continue the run in --out from its latest checkpoint, exactly as if it had not stopped"
            " (without it, a non-empty --out is refused) (default: false)",
        )  # fmt: skip
    if quiet:
        run.add_argument("--quiet", action="store_true", help="no progress bar (default: false)")
    if processes:
        group = parser.add_argument_group(
            "processes", "one run as several processes (jax.distributed.initialize's arguments; "
            "all three or none; --out on a filesystem every process shares)")
        group.add_argument("--coordinator-address", default=None, metavar="HOST:PORT",
                           help="where process 0 listens (default: one process)")
        group.add_argument("--num-processes", type=int, default=None, metavar="N",
                           help="the number of processes (default: one process)")
        group.add_argument("--process-id", type=int, default=None, metavar="I",
                           help="this process's index, 0 to N - 1 (default: one process)")
        group.add_argument("--devices", type=_devices, default=1, metavar="N",
                           help="devices of each process to train on, data-parallel: a number or 'all'"
                           " (default: 1)")
    return parser


def _devices(text: str) -> int | str:
    if text == "all":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 1 or 'all', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1 or 'all', got {value}")
    return value


def data_mesh(args: argparse.Namespace) -> jax.sharding.Mesh | None:
    """The mesh a program trains over: ``--devices`` of every process; None for one device.

    A program built with ``processes=True`` calls this after :func:`main`
    has joined the processes. None (one process, one device) runs the plain
    single-device program.

    Raises:
      UsageError: ``--devices`` is more than a process has.
    """
    local = jax.local_device_count()
    count = local if args.devices == "all" else args.devices
    if count > local:
        raise UsageError(f"--devices {count}: this process has {local} device(s) ({jax.local_devices()[0].platform}).")
    if count == 1 and jax.process_count() == 1:
        return None
    # The first ``count`` devices of each process, process by process.
    devices = [d for p in range(jax.process_count())
               for d in [d for d in jax.devices() if d.process_index == p][:count]]
    return parallel.batch_mesh(devices)


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None`` / ``Optional[X]``, else ``(hint, False)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def parse_config(
    config_type: type, argv: Sequence[str] | None, *, description: str, **parser_kwargs: Any
) -> tuple[Any, argparse.Namespace]:
    """Builds ``config_type`` from its defaults and ``--field value`` flags.

    Args:
      config_type: the program's config dataclass.
      argv: the arguments (``None``: ``sys.argv[1:]``).
      description: what ``--help`` prints above the flags.
      **parser_kwargs: :func:`make_parser`'s options (``prog``, ``out``,
        ``resume``, ``quiet``).

    Returns:
      ``(config, args)``; ``config.validate()`` (when the config has one) has
      passed; ``args`` also holds the run flags (``out``, ``resume``, ``quiet``).

    Raises:
      SystemExit: ``--help`` (code 0) or an unknown flag or value (code 2).
      UsageError: the config's ``validate`` refused the settings.
    """
    parser = make_parser(config_type, description=description, **parser_kwargs)
    args = parser.parse_args(argv)
    values = {}
    for field in dataclasses.fields(config_type):
        if field.init:
            value = getattr(args, field.name)
            values[field.name] = tuple(value) if isinstance(value, list) else value
    config = config_type(**values)
    if hasattr(config, "validate"):
        try:
            config.validate()
        except ValueError as error:
            raise UsageError(str(error)) from None
    return config, args


def description(doc: str | None) -> str:
    """A module docstring's first paragraph, for ``--help``."""
    return (doc or "").strip().split("\n\n")[0]


def to_json(value: Any) -> Any:
    """``value`` with arrays, tuples and numpy scalars made JSON-able."""
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    array = np.asarray(value)
    return array.item() if array.ndim == 0 else array.tolist()


def settings_of(config: Any, resumable: Iterable[str] = ()) -> dict[str, Any]:
    """The config's fields as JSON, but for those named in ``resumable``."""
    skip = set(resumable)
    return {k: to_json(v) for k, v in dataclasses.asdict(config).items() if k not in skip}


# ---------------------------------------------------------------------------
# Files: atomic writes and the run directory.


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> str:
    """Calls ``write(temporary_path)``, then renames the file over ``path``.

    The temporary file lies beside ``path`` with the same extension (what
    matplotlib and numpy read the format from), so the rename is atomic: a
    reader sees the old file or the new one, never half of one. In a
    multi-process run only process 0 writes (the others return at once).

    Returns:
      ``path``.
    """
    path = os.fspath(path)
    if not parallel.is_main_process():
        return path
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    root, extension = os.path.splitext(os.path.basename(path))
    temporary = os.path.join(directory, f".{root}.{os.getpid()}.tmp{extension}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def write_text(path: str | os.PathLike, text: str) -> str:
    """Writes ``text`` to ``path`` atomically."""

    def write(temporary):
        with open(temporary, "w") as file:
            file.write(text)

    return atomic_write(path, write)


def write_json(path: str | os.PathLike, value: Any, *, indent: int | None = 2) -> str:
    """Writes ``value`` as JSON to ``path`` atomically (arrays become lists)."""
    return write_text(path, json.dumps(to_json(value), indent=indent) + "\n")


def save_npy(path: str | os.PathLike, array: Any) -> str:
    """Writes an array to ``path`` (``.npy``) atomically."""
    return atomic_write(path, lambda temporary: np.save(temporary, np.asarray(array)))


def save_figure(path: str | os.PathLike, figure: Any, **kwargs: Any) -> str:
    """Writes a matplotlib figure to ``path`` atomically and closes it."""
    import matplotlib.pyplot as plt

    try:
        return atomic_write(path, lambda temporary: figure.savefig(temporary, **kwargs))
    finally:
        plt.close(figure)


def pyplot():
    """matplotlib's pyplot with the non-interactive backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def prepare_run_dir(workdir: str | os.PathLike, *, resume: bool) -> str:
    """Applies the resume policy to ``--out`` and creates it.

    A fresh run needs a new or empty directory; a non-empty one is refused
    unless ``resume`` (then the program continues what it holds).

    Returns:
      The directory's absolute path.

    Raises:
      UsageError: ``workdir`` is not empty and ``resume`` is false, is a
        file, or cannot be created or written.
    """
    workdir = os.path.abspath(os.fspath(workdir))
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UsageError(f"--out {workdir} is a file, not a directory.")
    if not resume and os.path.isdir(workdir) and os.listdir(workdir):
        shown = ", ".join(sorted(os.listdir(workdir))[:4])
        raise UsageError(
            f"{workdir} already holds a run ({shown}, ...): pass --resume to continue it,"
            " or choose another --out."
        )
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_test_"):
            pass
    except OSError as error:
        raise UsageError(f"Cannot write the output directory {workdir!r}: {error.strerror or error}.") from None
    if jax.process_count() > 1:  # Every process checks the directory before any writes to it.
        multihost_utils.sync_global_devices(f"prepare_run_dir {workdir}")
    return workdir


# ---------------------------------------------------------------------------
# Checkpoints with the resume rules.


class Checkpoints:
    """A run's orbax checkpoints (``jgan.checkpoint``), tagged with the program and its settings.

    Args:
      directory: the checkpoint directory.
      program: the program's name; another program's checkpoints are refused.
      settings: the settings a resumed run must share with its checkpoint
        (JSON-able; e.g. :func:`settings_of`).
      max_to_keep: how many of the newest checkpoints to keep.
    """

    def __init__(self, directory: str, *, program: str, settings: Mapping[str, Any], max_to_keep: int | None = 3):
        self.directory = os.fspath(directory)
        self.program = program
        self.settings = json.loads(json.dumps(to_json(settings)))
        self.max_to_keep = max_to_keep

    def latest(self) -> int | None:
        return checkpoint.latest_step(self.directory)

    def save(self, state: Any) -> None:
        """Saves ``state`` at its step (nothing when that step is already saved)."""
        step = int(state.step)
        latest = self.latest()
        if latest is not None and latest >= step:
            return
        metadata = {"program": self.program, "settings": self.settings}
        checkpoint.save(self.directory, state, step=step, metadata=metadata, max_to_keep=self.max_to_keep)

    def restore_or_init(self, initial: Any, *, resume: bool) -> tuple[Any, int]:
        """``(state, start)``: the latest checkpoint's state when resuming, else ``(initial, 0)``.

        Raises:
          UsageError: the checkpoint belongs to another program or model, or
            was written with other settings.
        """
        if not resume or self.latest() is None:
            return initial, 0
        try:
            state, meta = checkpoint.restore(self.directory, initial)
        except ValueError as error:
            raise UsageError(
                f"{self.directory} holds checkpoints of another model or program ({error}); use another --out."
            ) from None
        if meta.get("program") != self.program:
            raise UsageError(
                f"{self.directory} holds a {meta.get('program')!r} run, not {self.program!r}; use another --out."
            )
        saved = meta.get("settings", {})
        changed = sorted(k for k in set(saved) | set(self.settings) if saved.get(k) != self.settings.get(k))
        if changed:
            before = ", ".join(
                f"--{k.replace('_', '-')} {show_default(saved.get(k))} (now {show_default(self.settings.get(k))})"
                for k in changed
            )
            raise UsageError(
                f"{self.directory} was trained with other settings: {before}; resume with the same ones"
                " or use another --out."
            )
        return state, int(state.step)


# ---------------------------------------------------------------------------
# Interrupts.


class StopRequest:
    """SIGINT and SIGTERM as a request to stop at the next step (a context manager).

    Inside the ``with`` block a first SIGINT or SIGTERM only sets
    :attr:`signum`; :func:`train` checks it after every step (or chunk),
    saves a checkpoint and raises :class:`Interrupted`. A second SIGINT
    raises ``KeyboardInterrupt`` at once. The previous handlers are restored
    on exit. Outside the main thread (where Python cannot install handlers)
    it does nothing.
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        try:
            for signum in SIGNAL_NAMES:
                self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # Not the main thread.
            self._previous.clear()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None


# ---------------------------------------------------------------------------
# The metrics log.


def is_logged(step: Any, every: int, last: int) -> Any:
    """Whether ``step`` is logged: the first, every ``every``-th and the last (works on traced values)."""
    return (step == 1) | (step % every == 0) | (step == last)


class MetricsLog:
    """``metrics.jsonl``: one JSON object per logged step (``{"step": s, ...}``).

    Args:
      path: the log file (appended to).
      resume_step: the step a run starts from; the records of later steps
        (logged by an interrupted run after its last checkpoint) are dropped,
        so a resumed run's log is that of an uninterrupted one.
      series: fields that tag every record (e.g. ``{"unroll_steps": 10}``)
        when several runs share one log; ``resume_step`` then applies to this
        series only.
      tensorboard: a directory for TensorBoard event files too (needs
        ``tensorboard`` or ``tensorflow``; a note is printed otherwise).
    """

    def __init__(
        self, path: str, *, resume_step: int = 0, series: Mapping[str, Any] | None = None, tensorboard: str | None = None
    ):
        self.path = os.fspath(path)
        self.series = dict(series or {})
        kept = [r for r in _read_records(self.path) if not self._mine(r) or r["step"] <= resume_step]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        # The records are kept here too: in a multi-process run only process 0
        # writes the file, and every process must see the same records.
        self._records = [r for r in kept if self._mine(r)]
        self._main = parallel.is_main_process()
        self.writer = None
        if tensorboard is not None and self._main:
            try:
                from flax.metrics import tensorboard as flax_tensorboard

                self.writer = flax_tensorboard.SummaryWriter(tensorboard)
            except ImportError:
                print("note: --tensorboard needs tensorflow or tensorboard installed; logging to metrics.jsonl only")

    def _mine(self, record: Mapping[str, Any]) -> bool:
        return all(record.get(k) == v for k, v in self.series.items())

    def write(self, step: int, values: Mapping[str, Any]) -> dict[str, Any]:
        """Appends the record of ``step`` and returns it."""
        record = {"step": int(step), **self.series, **to_json(dict(values))}
        self._records.append(record)
        if self._main:
            with open(self.path, "a") as file:
                file.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for name, value in record.items():
                if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.scalar(name, value, step)
            self.writer.flush()
        return record

    def records(self) -> list[dict[str, Any]]:
        """This series' records, in the order written."""
        return list(self._records)


def _read_records(path: str) -> list[dict[str, Any]]:
    """The log's records; a line cut short by a killed process is skipped."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as file:
        for line in file:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
    return records


# ---------------------------------------------------------------------------
# The training loop.


def progress_bar(total: int, initial: int, desc: str, enabled: bool):
    """A tqdm progress bar (disabled: ``--quiet``, and on every process but process 0)."""
    from tqdm import tqdm

    enabled = enabled and parallel.is_main_process()
    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not enabled, dynamic_ncols=True)


def train(
    state: Any,
    *,
    start: int,
    steps: int,
    advance: Callable[[Any, int, int], tuple[Any, Mapping[str, Any]]],
    log: MetricsLog,
    log_every: int,
    stop: StopRequest,
    checkpoints: Checkpoints,
    checkpoint_steps: Iterable[int] = (),
    events: Iterable[int] = (),
    on_event: Callable[[Any, int], Mapping[str, Any]] | None = None,
    chunk_steps: int = 1,
    bar: Any = None,
    shown: Sequence[str] = ("d_loss", "g_loss"),
) -> Any:
    """Advances ``state`` from step ``start`` to step ``steps``.

    Chunks end at multiples of ``chunk_steps`` and at every event and
    checkpoint step, so an interrupted and resumed run takes the same chunks
    as an uninterrupted one. After each chunk:

    1. the metrics of its logged steps (:func:`is_logged`) go to ``log``; at
       an event, ``on_event(state, step)``'s values (an evaluation) join the
       step's record, which is logged whatever ``log_every``;
    2. a checkpoint is saved at the checkpoint steps and the last step;
    3. if ``stop`` was requested, a checkpoint is saved and
       :class:`Interrupted` raised.

    Args:
      state: the state at step ``start`` (a pytree with an integer ``step``).
      start: the first step's index (0, or a resumed checkpoint's step).
      steps: the last step.
      advance: ``(state, step, n) -> (state, metrics)``: ``n`` train steps
        from ``step``; ``metrics[name]`` is ``[n]``, one value per step. It
        raises ``jgan.steps.NonFiniteError`` when training diverged.
      log: the metrics log.
      log_every: log every this many steps (and the first and the last).
      stop: the interrupt request to honour.
      checkpoints: where to save.
      checkpoint_steps: steps to checkpoint at (the last step always is).
      events: steps at which to call ``on_event``.
      on_event: ``(state, step) -> values`` for the step's record.
      chunk_steps: the most steps per ``advance`` call.
      bar: a tqdm progress bar, or ``None``.
      shown: the record's values shown on the bar.

    Returns:
      The state at step ``steps``.

    Raises:
      Interrupted: a signal arrived (the checkpoint is saved).
    """
    events, checkpoint_steps = set(events), set(checkpoint_steps)
    boundaries = sorted({s for s in events | checkpoint_steps if start < s < steps} | {steps})
    step = start
    while step < steps:
        upcoming = boundaries[bisect.bisect_right(boundaries, step)]
        n = min(chunk_steps - step % chunk_steps, upcoming - step)
        state, metrics = advance(state, step, n)
        values = {k: np.asarray(v) for k, v in jax.device_get(dict(metrics)).items()}
        for i in range(n):
            s = step + 1 + i
            record = {k: v[i] for k, v in values.items()}
            if s in events and on_event is not None:
                record.update(on_event(state, s))
            if is_logged(s, log_every, steps) or s in events:
                record = log.write(s, record)
            if bar is not None and i == n - 1:
                bar.set_postfix({k: _short(record[k]) for k in shown if k in record}, refresh=False)
        step += n
        if bar is not None:
            bar.update(n)
        if step in checkpoint_steps or step == steps:
            checkpoints.save(state)
        if _any_process(stop.requested) and step < steps:
            checkpoints.save(state)
            raise Interrupted(stop.signum, step, checkpoints.directory)
    return state


def _any_process(flag: bool) -> bool:
    """Whether ``flag`` is set on any process: all stop together (a signal may reach only one)."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def _short(value: Any) -> str:
    return f"{float(value):.3f}" if isinstance(value, (float, np.floating)) else str(value)


# ---------------------------------------------------------------------------
# GAN state from flax modules.


def init_gan(
    gan: jgan_steps.GAN,
    key: jax.Array,
    generator: Any,
    discriminator: Any,
    g_inputs: Sequence[Any],
    d_inputs: Sequence[Any],
    *,
    g_stateful: bool = False,
    d_stateful: bool = False,
) -> jgan_steps.GANState:
    """The state at step 0 of a GAN of flax linen modules, through ``gan.init``.

    ``key`` is split in three: the generator's initialisation, the
    discriminator's and the state's own key.

    Args:
      gan: the GAN, from ``jgan.steps.make_gan``.
      key: a PRNG key.
      generator / discriminator: the flax modules.
      g_inputs / d_inputs: sample inputs of each (shapes only), e.g.
        ``(jnp.zeros((1, latent_dim)),)``; labels too for conditional networks.
      g_stateful / d_stateful: whether the network keeps a model state
        (BatchNorm statistics), as given to ``make_gan``.
    """
    g_key, d_key, state_key = jax.random.split(key, 3)
    g_params, g_state = models.init_model(generator, g_key, *g_inputs)
    d_params, d_state = models.init_model(discriminator, d_key, *d_inputs)
    return gan.init(
        state_key, g_params, d_params,
        g_model_state=g_state if g_stateful else None, d_model_state=d_state if d_stateful else None,
    )  # fmt: skip


def generator_params(state: jgan_steps.GANState) -> Any:
    """The generator weights to sample and evaluate: the EMA when the state keeps one."""
    return state.g_params if state.g_ema_params is None else state.g_ema_params


# ---------------------------------------------------------------------------
# A program's entry point.


def main(
    config_type: type,
    program: Callable[[Any, argparse.Namespace, StopRequest], Any],
    *,
    argv: Sequence[str] | None,
    doc: str | None,
    prog: str | None = None,
    **parser_kwargs: Any,
) -> Any:
    """A program's command line: flags -> config -> ``program(config, args, stop)``, under :func:`guard`.

    Args:
      config_type: the program's config dataclass.
      program: the program itself; ``stop`` is the interrupt request, active
        while it runs.
      argv: the arguments (``None``: ``sys.argv[1:]``).
      doc: the program's docstring (its first paragraph heads ``--help``).
      prog: the program's name in messages, e.g. ``python -m examples.dcgan``.
      **parser_kwargs: :func:`make_parser`'s ``out``, ``resume``, ``quiet``
        and ``processes`` (with it, the process flags join the run through
        ``jgan.parallel.initialize`` before the program starts).

    Returns:
      What ``program`` returned.

    Raises:
      SystemExit: on ``--help`` (0) and on the errors :func:`guard` handles.
    """

    def body():
        config, args = parse_config(config_type, argv, description=description(doc), prog=prog, **parser_kwargs)
        if parser_kwargs.get("processes"):
            try:
                parallel.initialize(args.coordinator_address, args.num_processes, args.process_id)
            except (ValueError, TypeError) as error:
                raise UsageError(
                    str(error).replace("coordinator_address", "--coordinator-address")
                    .replace("num_processes", "--num-processes").replace("process_id", "--process-id")
                ) from None
        with StopRequest() as stop:
            return program(config, args, stop)

    return guard(body)
