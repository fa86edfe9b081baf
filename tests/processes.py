"""Child JAX processes for the multi-process tests: free ports, a CPU environment, clean-up.

The pytest process forces 8 CPU devices (conftest.py); a child gets its own
device count. Every child is killed when the test ends, passing or not.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port that was free a moment ago on localhost (for a coordinator)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def cpu_env(devices: int) -> dict[str, str]:
    """The environment of a child JAX process on ``devices`` CPU devices, importing this repository."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_together(commands: list[list[str]], *, envs: list[dict[str, str]], timeout: float, logs: Path,
                 stop_on_failure: bool = True) -> list[tuple[int, str]]:
    """Runs ``python *command`` for every command at once; returns each one's (exit code, output).

    ``envs[i]`` is command ``i``'s environment (e.g. :func:`cpu_env`); its
    stdout and stderr go to ``logs/<i>.log``. With ``stop_on_failure``, once
    one fails the others are killed (in a multi-process run they would wait
    for it at their next collective). Every one still running at
    ``timeout`` seconds, or when this returns or raises, is killed with
    SIGKILL (``jax.distributed`` takes SIGTERM for a preemption notice).

    Raises:
      pytest.fail.Exception: some command ran past ``timeout`` (the tail of
        every log is in the message).
    """
    logs.mkdir(parents=True, exist_ok=True)
    children, files = [], []
    try:
        for i, (command, env) in enumerate(zip(commands, envs, strict=True)):
            files.append(open(logs / f"{i}.log", "w+"))
            children.append(subprocess.Popen([sys.executable, *command], cwd=ROOT, env=env,
                                              stdout=files[-1], stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout
        while any(child.poll() is None for child in children):
            if stop_on_failure and any(child.poll() not in (None, 0) for child in children):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the processes ran past {timeout} s:\n" + _tails(files))
            time.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait()
        outputs = []
        for f in files:
            f.seek(0)
            outputs.append(f.read())
            f.close()
    return [(child.returncode, output) for child, output in zip(children, outputs)]


def _tails(files) -> str:
    texts = []
    for i, f in enumerate(files):
        f.flush()
        texts.append(f"--- process {i} ---\n" + Path(f.name).read_text()[-3000:])
    return "\n".join(texts)
