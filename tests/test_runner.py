"""The harness runner on the real CPU harness: streaming, skip, and a harness that dies in the
middle of a point (recorded as an errored point, the rest measured by a fresh harness)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import kernelwatch_harness
from kernelwatch.core.spec import SweepSpec
from kernelwatch.worker.runner import HarnessRequest, HarnessRunner


def _request(skip: set[tuple[int, str]] | None = None) -> HarnessRequest:
    spec = SweepSpec(name="runner", kernel="single_decode", backends=["torch-sdpa", "torch-math"],
                     params={"kv_len": [32, 64, 96], "num_qo_heads": [4], "num_kv_heads": [2],
                             "head_dim": [64]},
                     timing={"warmup": 1, "iterations": 30})
    return HarnessRequest(spec.kernel, "cpu", list(spec.backends), spec.timing.model_dump(),
                          list(enumerate(spec.backend_points())), skip or set())


# Loaded by the harness's interpreter at start-up (``site`` imports any sitecustomize on its
# path): the harness sends itself the signal as it starts the named repeat of the named pair.
# Sent from the test on seeing the first point instead, the signal raced the harness: on a
# loaded machine it had already written later points, or all of them.
_SIGNAL_AT = """
import os, signal
from kernelwatch_harness import measure

_measure = measure.Measurer.measure

def measure_or_signal(self, kernel, index, params, backend, previous=None):
    repeat = 1 + len(previous["repeat_sizes"]) if previous else 1
    if (index, backend, repeat) == (int(os.environ["KW_AT_INDEX"]), os.environ["KW_AT_BACKEND"],
                                    int(os.environ["KW_AT_REPEAT"])):
        os.kill(os.getpid(), int(os.environ["KW_SIGNAL"]))
    return _measure(self, kernel, index, params, backend, previous)

measure.Measurer.measure = measure_or_signal

if os.environ.get("KW_BOOST"):  # as a GPU harness keeps its points: at the boost clock floor
    measure.Measurer.clock_identity = lambda self: {"clock_floor": 0.985, "clock_mode": "boost"}
"""


def _signalled_at(tmp_path: Path, pair: tuple[int, str], repeat: int,
                  sig: int) -> dict[str, str]:
    """The environment of a harness that gets ``sig`` (from itself) as it starts repeat
    ``repeat`` of ``pair``."""
    (tmp_path / "sitecustomize.py").write_text(_SIGNAL_AT)
    return {**os.environ, "PYTHONPATH": str(tmp_path), "KW_AT_INDEX": str(pair[0]),
            "KW_AT_BACKEND": pair[1], "KW_AT_REPEAT": str(repeat), "KW_SIGNAL": str(int(sig))}


def _only_failed(points: list[dict[str, Any]], pair: tuple[int, str]) -> dict[str, Any]:
    """Every pair reported once; ``pair`` alone failed, every other one was measured."""
    by_pair = {(m["point_index"], m["backend"]): m for m in points}
    assert len(by_pair) == len(points) == 6
    assert sorted(by_pair) == [(i, b) for i in range(3) for b in ("torch-math", "torch-sdpa")]
    assert [p for p, m in by_pair.items() if m["status"] != "ok"] == [pair]
    return by_pair[pair]


def test_streams_every_pair_once_and_honours_skip() -> None:
    req = _request(skip={(0, "torch-sdpa"), (2, "torch-math")})
    msgs = list(HarnessRunner(sys.executable, req).messages())
    assert msgs[0]["type"] == "env" and msgs[0]["environment"]["device"] == "cpu"
    points = [(m["point_index"], m["backend"]) for m in msgs if m["type"] == "point"]
    assert points == [(0, "torch-math"), (1, "torch-sdpa"), (1, "torch-math"), (2, "torch-sdpa")]
    for m in msgs[1:]:
        assert m["status"] == "ok" and len(m["samples_us"]) == 30


# Repeats are interleaved: in round 1 no point has been reported yet; in round 3 (the last)
# the points before the signalled one have.
@pytest.mark.parametrize("repeat", [1, 3])
def test_harness_killed_mid_point_is_recorded_and_sweep_goes_on(tmp_path: Path,
                                                                repeat: int) -> None:
    # what the OOM killer would do
    env = _signalled_at(tmp_path, (1, "torch-math"), repeat, signal.SIGKILL)
    runner = HarnessRunner(sys.executable, _request(), env=env)
    seen = list(runner.messages())
    dead = _only_failed([m for m in seen if m["type"] == "point"], (1, "torch-math"))
    assert dead["status"] == "error" and "exited with code -9" in dead["error"]
    assert runner.restarts == 1
    assert len([m for m in seen if m["type"] == "env"]) == 1
    assert all(m["type"] in ("env", "point") for m in seen)  # "start" stays in the runner


def test_a_point_errored_for_a_dead_harness_stays_in_its_series(tmp_path: Path) -> None:
    """The harness says its clock discipline when it starts; the point the worker errors for
    it carries that discipline as the measured points do, so it keeps their series identity
    (a comparison then calls it not comparable, instead of one-sided)."""
    from kernelwatch.core.series import clock_state

    env = {**_signalled_at(tmp_path, (1, "torch-math"), 1, signal.SIGKILL), "KW_BOOST": "1"}
    seen = list(HarnessRunner(sys.executable, _request(), env=env).messages())
    assert seen[0]["type"] == "env"
    assert seen[0]["clock"] == {"clock_floor": 0.985, "clock_mode": "boost"}
    points = [m for m in seen if m["type"] == "point"]
    dead = _only_failed(points, (1, "torch-math"))
    assert "exited with code -9" in dead["error"]
    assert {clock_state(m) for m in points} == {"boost"}
    assert (dead["clock_floor"], dead["clock_mode"]) == (0.985, "boost")


def test_harness_that_cannot_start_errors_every_pair_once() -> None:
    # The system interpreter has no torch: the harness says "fatal" before measuring anything.
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None or subprocess.run([python, "-c", "import torch"],
                                        capture_output=True).returncode == 0:
        pytest.skip("needs an interpreter without torch")
    # The harness itself is importable there (as it is in every version env it is installed
    # into); torch is not.
    harness_src = str(Path(kernelwatch_harness.__file__).resolve().parent.parent)
    runner = HarnessRunner(python, _request(), env={"PYTHONPATH": harness_src})
    msgs = list(runner.messages())
    assert [m["status"] for m in msgs] == ["error"] * 6
    assert all("import failed" in m["error"] and "torch" in m["error"] for m in msgs)
    assert runner.restarts == 0


def test_interpreter_without_the_harness_errors_naming_it() -> None:
    # An env the harness was never installed into: every pair errors, naming the package, and
    # the worker's own folder on disk is no fallback.
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None or subprocess.run([python, "-c", "import kernelwatch_harness"],
                                        capture_output=True).returncode == 0:
        pytest.skip("needs an interpreter without the harness")
    msgs = list(HarnessRunner(python, _request(), env={}).messages())
    assert [m["status"] for m in msgs] == ["error"] * 6
    assert all("kernelwatch_harness" in m["error"] for m in msgs)


def test_consumer_stopping_early_leaves_no_process_behind() -> None:
    runner = HarnessRunner(sys.executable, _request())
    gen = runner.messages()
    first_point = next(m for m in gen if m["type"] == "point")
    assert first_point["status"] == "ok"
    proc = runner.proc
    assert proc is not None and proc.poll() is None
    gen.close()  # what a `break` or `return` out of the loop does
    assert proc.returncode is not None  # killed and reaped: no zombie
    assert runner.proc is None


@pytest.mark.parametrize("repeat", [1, 3])
def test_hung_point_is_killed_after_the_timeout_and_the_sweep_goes_on(tmp_path: Path,
                                                                      repeat: int) -> None:
    # frozen, like a kernel that never ends
    env = _signalled_at(tmp_path, (0, "torch-math"), repeat, signal.SIGSTOP)
    runner = HarnessRunner(sys.executable, _request(), env=env, point_timeout_s=3)
    points = [m for m in runner.messages() if m["type"] == "point"]
    hung = _only_failed(points, (0, "torch-math"))
    assert hung["status"] == "error" and "hung (no result within 3 s)" in hung["error"]
    assert runner.restarts == 1


def test_stopping_a_harness_stops_what_it_started(tmp_path: Path) -> None:
    """A harness building FlashInfer's JIT modules has ninja and nvcc children: stopping it (a
    release's build time limit, a cancel) kills them too, instead of leaving them compiling
    beside the measurements that follow. Here the 'harness' starts a child and waits."""
    import threading
    import time

    child_pid = tmp_path / "child.pid"
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {child_pid}\nsleep 300\n")
    fake.chmod(0o755)
    runner = HarnessRunner(str(fake), _request(), startup_timeout_s=120)
    consumer = threading.Thread(target=lambda: list(runner.messages()), daemon=True)
    consumer.start()
    deadline = time.monotonic() + 30
    while not (child_pid.exists() and child_pid.read_text().strip()):
        assert time.monotonic() < deadline, "the fake harness did not start its child"
        time.sleep(0.05)
    pid = int(child_pid.read_text())
    runner.stop()
    consumer.join(timeout=30)
    assert not consumer.is_alive()

    def gone() -> bool:  # no such process, or a zombie left for init to reap
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return True
        return state in ("Z", "X")

    while not gone():
        assert time.monotonic() < deadline, f"the harness's child {pid} outlived it"
        time.sleep(0.05)


def test_a_harness_runs_at_the_niceness_it_is_given() -> None:
    """A release's builds run their harness, and so its compilers, below the measuring
    harness's CPU priority (worker.prebuild); the measuring harness keeps the worker's."""
    own = os.getpriority(os.PRIO_PROCESS, 0)
    seen = {}
    for niceness in (0, 7):
        runner = HarnessRunner(sys.executable, _request(), niceness=niceness)
        for msg in runner.messages():
            if msg["type"] == "env":
                assert runner.proc is not None
                seen[niceness] = os.getpriority(os.PRIO_PROCESS, runner.proc.pid)
    # an unprivileged worker may raise a niceness, never lower it below its own
    assert seen == {0: own, 7: max(7, own)}
