"""Child processes of the lab: started in their own process group, always reaped.

Orchestration layer (asyncio edge). :class:`ProcessSet` starts ``meshfleet``
sub-commands (optionally inside a network namespace), keeps their output in
log files, and on :meth:`ProcessSet.stop` sends SIGTERM, waits, then SIGKILLs
the whole process group, so nothing outlives the demo, also on Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


class LabError(RuntimeError):
    """The lab could not finish; the message says where and why."""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on ``::1`` right now (TCP by default, or SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET6, kind) as sock:
        sock.bind(("::1", 0))
        return int(sock.getsockname()[1])


def run_meshfleet(args: Sequence[str], prefix: Sequence[str] = ()) -> None:
    """Run a short ``meshfleet`` command to its end; :class:`LabError` if it fails."""
    done = subprocess.run(
        [*prefix, *meshfleet_command(*args)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise LabError(f"meshfleet {' '.join(args)} failed:\n{done.stderr.strip()}")


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 20) -> str:
        """The last lines of the child's log (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def meshfleet_command(*args: str) -> list[str]:
    """Run ``meshfleet ARGS`` with this interpreter (works without the script).

    Children log at INFO into their log files; MESHFLEET_CHILD_DEBUG=1 makes
    them log at DEBUG.
    """
    level = "-vv" if os.environ.get("MESHFLEET_CHILD_DEBUG") == "1" else "-v"
    return [sys.executable, "-m", "emulator.cli.main", level, *args]


class ProcessSet:
    """The lab's child processes."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []

    def start(
        self,
        name: str,
        command: list[str],
        *,
        env: dict[str, str] | None = None,
        prefix: list[str] | None = None,
    ) -> Child:
        log_path = self.log_dir / f"{name}.log"
        full = [*(prefix or []), *command]
        logger.info("starting %s: %s", name, " ".join(full))
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        child = Child(name, process, log_path)
        self.children.append(child)
        return child

    def tails(self, lines: int = 12) -> str:
        """The last log lines of every child, for an error message."""
        return "".join(
            f"\n--- last lines of {c.name} ({c.log_path}) ---\n{c.tail(lines)}"
            for c in self.children
        )

    def dead(self) -> Child | None:
        """A child that has exited, if any."""
        return next((c for c in self.children if c.process.poll() is not None), None)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every child's group, wait, SIGKILL what is left."""
        for child in self.children:
            _signal_group(child.process, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.process.wait(remaining)
            except subprocess.TimeoutExpired:
                logger.warning("%s ignored SIGTERM; killing it", child.name)
        for child in self.children:
            _signal_group(child.process, signal.SIGKILL)
            try:
                child.process.wait(5)
            except subprocess.TimeoutExpired:
                logger.error("%s (pid %d) did not die", child.name, child.process.pid)
        self.children.clear()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
