"""Running the harness subprocess for one run and streaming what it measures.

The harness (``python -m kernelwatch_harness``, see ``kernelwatch_harness.protocol``) runs in the
interpreter of the run's FlashInfer environment. It may die in the middle of a point (a
segfault in a kernel, the OOM killer): the point in flight is then recorded as an errored
point with the exit code and the end of stderr, and a fresh harness measures what is left,
so one bad point never ends the sweep.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from kernelwatch_harness.protocol import (
    PROTOCOL_VERSION,
    ClockIdentity,
    CrosscheckMessage,
    CrosscheckRequest,
    EnvMessage,
    LogMessage,
    PointMessage,
    PointRequest,
    ProtocolError,
    Request,
    TimingConfig,
    error_point,
    parse_message,
    version_mismatch,
)

log = logging.getLogger(__name__)

STDERR_TAIL_LINES = 30
# Longest wait for the harness's next message. Generous: a first FlashInfer call compiles its
# kernel (seconds to minutes) and a large torch-math point on CPU is slow; a hung kernel is
# killed after this and recorded as an errored point.
POINT_TIMEOUT_SECONDS = 1800.0
STARTUP_TIMEOUT_SECONDS = 900.0  # imports, CUDA context, NVML, before the env message

# Started through this shim rather than ``-m kernelwatch_harness`` so that the harness dies with
# the worker (PR_SET_PDEATHSIG): a killed worker must not leave a harness measuring on the
# GPU while its restarted self starts another.
_SHIM = (
    "import ctypes, signal, runpy\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"
    "except Exception:\n"
    "    pass\n"
    # The harness comes from the interpreter's own site-packages (installed into each version
    # env), never from whatever folder the worker happens to run in.
    "import os, sys\n"
    "sys.path[:] = [p for p in sys.path if p not in ('', os.getcwd())]\n"
    "runpy.run_module('kernelwatch_harness', run_name='__main__', alter_sys=True)\n"
)

Pair = tuple[int, str]
# What the runner hands on: start, fatal and done are the runner's own business.
Yielded = EnvMessage | PointMessage | CrosscheckMessage | LogMessage


@dataclass
class HarnessRequest:
    kernel: str
    device: str  # "cuda" | "cpu"
    backends: list[str]
    timing: TimingConfig
    # (point_index, completed params by backend: SweepSpec.backend_points)
    points: list[tuple[int, dict[str, dict[str, Any]]]]
    skip: set[Pair] = field(default_factory=set)
    crosscheck: CrosscheckRequest | None = None  # flashinfer_benchmark.py after each unit

    def params(self, point_index: int, backend: str) -> dict[str, Any]:
        """What the harness runs ``backend`` with at the point, and what the point stores."""
        return dict(dict(self.points)[point_index][backend])

    def pairs(self) -> list[Pair]:
        """Every (point_index, backend) still to measure, in the order the harness goes
        through them: point by point, each point with every backend."""
        return [(i, b) for i, _ in self.points for b in self.backends if (i, b) not in self.skip]

    def to_json(self, skip: set[Pair]) -> str:
        request = Request(
            protocol=PROTOCOL_VERSION,
            kernel=self.kernel,
            device=self.device,
            backends=self.backends,
            timing=self.timing,
            points=[PointRequest(point_index=i, params_by_backend=p) for i, p in self.points],
            skip=sorted(skip),
            crosscheck=self.crosscheck,
        )
        return json.dumps(request)


def harness_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment (CUDA_VISIBLE_DEVICES included, as this process has it) for
    the harness subprocess, unbuffered so every message arrives the moment it is written."""
    env = dict(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def kill_harness(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the harness and whatever it started: it leads its own session (``_spawn``), and
    a harness building FlashInfer's JIT modules has ninja and nvcc children, which would go on
    compiling, beside the measurements that follow, if only the harness were killed."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


class HarnessRunner:
    """Yields the harness's messages (``env`` once, ``point`` for every pair, ``log``), with a
    synthesised error ``point`` for a pair the harness died on. ``stop()`` (from another
    thread or a signal handler) ends it without blaming any point; ``close()`` also reaps
    the process, for whoever stops consuming the messages early."""

    def __init__(self, python: str, request: HarnessRequest,
                 env: dict[str, str] | None = None,
                 point_timeout_s: float = POINT_TIMEOUT_SECONDS,
                 startup_timeout_s: float = STARTUP_TIMEOUT_SECONDS,
                 niceness: int = 0) -> None:
        self.python = python
        self.niceness = niceness  # the harness's CPU priority, inherited by what it starts
        self.point_timeout_s = point_timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.request = request
        self.env = harness_env(env)
        if request.device == "cpu":
            # One thread: torch's CPU thread pool, competing with the worker and anything
            # else on the host, moved medians 10-100x between runs of the same point. A
            # pinned thread count makes CPU runs comparable; an operator can override it.
            self.env.setdefault("OMP_NUM_THREADS", "1")
        self.proc: subprocess.Popen[str] | None = None
        self.stopped = False
        self.restarts = 0
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)

    def stop(self) -> None:
        self.stopped = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            kill_harness(proc)

    def close(self) -> None:
        """Stop and reap the harness (no zombie left) and close its pipes."""
        self.stop()
        proc = self.proc
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            self.proc = None

    def _spawn(self, skip: set[Pair]) -> subprocess.Popen[str]:
        self._stderr.clear()
        proc = subprocess.Popen(
            [self.python, "-c", _SHIM],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1, env=self.env,
            # Its own session: a Ctrl-C at the terminal reaches the worker, which decides;
            # it must not kill the harness behind its back and look like a crashed point.
            start_new_session=True,
        )
        if self.niceness:
            # Set before the request is written: the harness compiles nothing before it
            # reads it, so every compiler it starts inherits this priority.
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, proc.pid, self.niceness)
        assert proc.stdin is not None and proc.stderr is not None
        threading.Thread(target=self._drain, args=(proc.stderr,), daemon=True).start()
        proc.stdin.write(self.request.to_json(skip))
        proc.stdin.close()
        return proc

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            self._stderr.append(line.rstrip("\n"))
            log.debug("harness: %s", line.rstrip("\n"))

    def stderr_tail(self) -> str:
        return "\n".join(self._stderr)

    def messages(self) -> Iterator[Yielded]:
        try:
            yield from self._messages()
        finally:
            # Also when the consumer stops early (cancel, shutdown): the generator is closed
            # and the harness is killed and reaped here, leaving no zombie behind.
            self.close()

    def _messages(self) -> Iterator[Yielded]:
        done: set[Pair] = set(self.request.skip)
        todo = self.request.pairs()
        env_sent = False
        clock: ClockIdentity | None = None  # the harness's clock discipline, once it said it
        while not self.stopped:
            remaining = [p for p in todo if p not in done]
            if not remaining:
                return
            proc = self.proc = self._spawn(done)
            assert proc.stdout is not None
            saw_env = finished = False
            fatal: str | None = None
            hung: float | None = None
            in_flight: Pair | None = None  # the unit the harness said it started last
            lines: queue.Queue[str | None] = queue.Queue()
            threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
            while True:
                # A point that never ends (a hung kernel) must not stall the sweep forever.
                wait = self.point_timeout_s if saw_env else self.startup_timeout_s
                try:
                    line = lines.get(timeout=wait)
                except queue.Empty:
                    hung = wait
                    kill_harness(proc)
                    break
                if line is None:
                    break
                try:
                    msg = parse_message(line)
                except ProtocolError as exc:
                    # A harness that speaks another protocol cannot be trusted with the rest.
                    fatal = str(exc)
                    kill_harness(proc)
                    break
                if msg is None:
                    continue
                if msg["type"] == "env":
                    mismatch = version_mismatch(msg["protocol"])
                    if mismatch:
                        fatal = mismatch
                        kill_harness(proc)
                        break
                    saw_env = True
                    clock = msg.get("clock") or clock
                    if not env_sent:
                        env_sent = True
                        yield msg
                elif msg["type"] == "start":
                    in_flight = (msg["point_index"], msg["backend"])
                elif msg["type"] == "point":
                    pair = (msg["point_index"], msg["backend"])
                    if pair in done:
                        log.warning("harness reported %s twice; kept the first", pair)
                        continue
                    done.add(pair)
                    yield msg
                elif msg["type"] == "fatal":
                    fatal = msg["error"] or "harness failed"
                elif msg["type"] == "done":
                    finished = True
                else:
                    yield msg
            code = proc.wait()
            self.proc = None
            if self.stopped:
                return
            remaining = [p for p in todo if p not in done]
            if not remaining:
                return
            if fatal is not None or not saw_env:
                # It cannot start (import error, broken environment): restarting would fail
                # the same way, so every pair left is errored with the reason.
                why = fatal or (f"harness did not start within {hung:g} s" if hung else
                                f"harness exited with code {code} before starting")
                tail = self.stderr_tail()
                for pair in remaining:
                    done.add(pair)
                    yield error_point(*pair, f"{why}\n{tail}".strip(), clock)
                return
            # It died in the middle of the unit it started last. (Not the first unreported
            # one: repeats are interleaved, so every unit of a window is unreported until the
            # last round, and blaming the first would error innocent points one restart at a
            # time until reaching the culprit.) Between a point and the next start nothing is
            # in flight; the first unreported pair is then the one it was about to start.
            pair = in_flight if in_flight is not None and in_flight not in done else remaining[0]
            done.add(pair)
            how = ("said done without measuring it" if finished else
                   f"hung (no result within {hung:g} s) and was killed" if hung else
                   f"exited with code {code}")
            yield error_point(
                *pair, f"harness {how} while measuring this point; stderr tail:\n"
                f"{self.stderr_tail()}".strip(), clock)
            self.restarts += 1
            log.warning("harness %s on point %s/%s; restarting for %d pairs left", how,
                        pair[0], pair[1], len(remaining) - 1)


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    """Hand the harness's stdout lines to the reader, then None at the end of the stream."""
    try:
        for line in stream:
            lines.put(line)
    except (OSError, ValueError):  # closed under us: the process was killed
        pass
    lines.put(None)
