"""Child JAX processes for the multi-process tests: free ports, a CPU environment, clean-up.

The pytest process forces 8 CPU devices (conftest.py); a child gets its own
device count. Every child is killed when the test ends, passing or not.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

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


def run_together(commands: list[list[str]], *, env: dict[str, str], timeout: float) -> list[subprocess.CompletedProcess]:
    """Starts every command at once (``python`` prepended), waits for all; kills all on a timeout.

    Returns each command's completed process (stdout and stderr as text),
    in order; the caller checks the return codes.

    Raises:
      subprocess.TimeoutExpired: some command ran past ``timeout`` seconds
        (every command is killed first).
    """
    children = [
        subprocess.Popen([sys.executable, *command], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for command in commands
    ]
    try:
        outputs = [child.communicate(timeout=timeout) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate()
    return [subprocess.CompletedProcess(child.args, child.returncode, out, err)
            for child, (out, err) in zip(children, outputs)]
