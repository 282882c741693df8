"""Starting and watching the service's processes (``kernelwatch up`` and ``kernelwatch worker``).

Each child is a plain subprocess. Ctrl-C or SIGTERM stops them all: SIGTERM first (Celery
workers hand their run back to the queue, uvicorn drains), SIGKILL after a grace period. A
child that exits on its own is reported; workers are restarted (their run resumes), any other
child takes the whole group down, because half a service is worse than a clear stop.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

import click

GRACE_SECONDS = 15.0
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 600.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added to os.environ
    restart: bool = False
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        # Its own process group: a Ctrl-C at the terminal reaches only the supervisor, which
        # stops each child exactly once. PDEATHSIG: a killed supervisor leaves no orphan.
        self.proc = subprocess.Popen(self.argv, env={**os.environ, **self.env},
                                     process_group=0, preexec_fn=_die_with_parent)
        click.echo(f"kernelwatch: started {self.name} (pid {self.proc.pid})", err=True)


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def kernelwatch_argv(*args: str) -> list[str]:
    """Run a ``kernelwatch`` subcommand with this very interpreter (no PATH lookup)."""
    return [sys.executable, "-m", "kernelwatch", *args]


class Supervisor:
    def __init__(self, children: list[Child], grace: float = GRACE_SECONDS,
                 echo: Callable[[str], None] | None = None) -> None:
        self.children = children
        self.grace = grace
        self.echo = echo or (lambda m: click.echo(m, err=True))
        self._stopping = False

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self._stopping:
            self.echo(f"kernelwatch: {signal.Signals(signum).name}, stopping everything")
        self._stopping = True

    def run(self) -> int:
        """Start every child, watch them until a signal or a fatal exit; return an exit code."""
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            for child in self.children:
                child.start()
            while not self._stopping:
                time.sleep(0.3)
                for child in self.children:
                    assert child.proc is not None
                    rc = child.proc.poll()
                    if rc is None or self._stopping:
                        continue
                    self.echo(f"kernelwatch: {child.name} exited with code {rc}")
                    if child.restart and self._may_restart(child):
                        self.echo(f"kernelwatch: restarting {child.name}")
                        child.start()
                    else:
                        code = rc or 1
                        self._stopping = True
                        break
        finally:
            self.stop_all()
            for s, h in old.items():
                signal.signal(s, h)
        return code

    def _may_restart(self, child: Child) -> bool:
        now = time.monotonic()
        child.restarts = [t for t in child.restarts if now - t < RESTART_WINDOW_SECONDS]
        if len(child.restarts) >= MAX_RESTARTS:
            self.echo(f"kernelwatch: {child.name} died {MAX_RESTARTS} times in "
                      f"{RESTART_WINDOW_SECONDS:.0f} s; giving up")
            return False
        child.restarts.append(now)
        return True

    def stop_all(self) -> None:
        live = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for c in live:
            assert c.proc is not None
            with contextlib.suppress(ProcessLookupError):
                c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for c in live:
            assert c.proc is not None
            try:
                c.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.echo(f"kernelwatch: {c.name} did not stop in {self.grace:.0f} s; killed")
                c.proc.kill()
                c.proc.wait()
        for c in live:
            self.echo(f"kernelwatch: stopped {c.name}")
