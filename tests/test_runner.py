"""The harness runner on the real CPU harness: streaming, skip, and a harness that dies in the
middle of a point (recorded as an errored point, the rest measured by a fresh harness)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from typing import Any

import pytest

from core.spec import SweepSpec
from worker.runner import HarnessRequest, HarnessRunner


def _request(skip: set[tuple[int, str]] | None = None) -> HarnessRequest:
    spec = SweepSpec(name="runner", kernel="single_decode", backends=["torch-sdpa", "torch-math"],
                     params={"kv_len": [32, 64, 96], "num_qo_heads": [4], "num_kv_heads": [2],
                             "head_dim": [64]},
                     timing={"warmup": 1, "iterations": 30})
    return HarnessRequest(spec.kernel, "cpu", list(spec.backends), spec.timing.model_dump(),
                          list(enumerate(spec.grid())), skip or set())


def test_streams_every_pair_once_and_honours_skip() -> None:
    req = _request(skip={(0, "torch-sdpa"), (2, "torch-math")})
    msgs = list(HarnessRunner(sys.executable, req).messages())
    assert msgs[0]["type"] == "env" and msgs[0]["environment"]["device"] == "cpu"
    points = [(m["point_index"], m["backend"]) for m in msgs if m["type"] == "point"]
    assert points == [(0, "torch-math"), (1, "torch-sdpa"), (1, "torch-math"), (2, "torch-sdpa")]
    for m in msgs[1:]:
        assert m["status"] == "ok" and len(m["samples_us"]) == 30


def test_harness_killed_mid_point_is_recorded_and_sweep_goes_on() -> None:
    runner = HarnessRunner(sys.executable, _request())
    seen: list[dict[str, Any]] = []
    for msg in runner.messages():
        seen.append(msg)
        if msg["type"] == "point" and len([m for m in seen if m["type"] == "point"]) == 1:
            assert runner.proc is not None
            os.kill(runner.proc.pid, signal.SIGKILL)  # what the OOM killer would do
    points = [m for m in seen if m["type"] == "point"]
    pairs = [(m["point_index"], m["backend"]) for m in points]
    assert pairs == [(i, b) for i in range(3) for b in ("torch-sdpa", "torch-math")]
    dead = points[1]
    assert dead["status"] == "error" and "exited with code -9" in dead["error"]
    assert all(m["status"] == "ok" for m in points if m is not dead)
    assert runner.restarts == 1
    assert len([m for m in seen if m["type"] == "env"]) == 1


def test_harness_that_cannot_start_errors_every_pair_once() -> None:
    # The system interpreter has no torch: the harness says "fatal" before measuring anything.
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None or subprocess.run([python, "-c", "import torch"],
                                        capture_output=True).returncode == 0:
        pytest.skip("needs an interpreter without torch")
    runner = HarnessRunner(python, _request())
    msgs = list(runner.messages())
    assert [m["status"] for m in msgs] == ["error"] * 6
    assert all("import failed" in m["error"] and "torch" in m["error"] for m in msgs)
    assert runner.restarts == 0


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


def test_hung_point_is_killed_after_the_timeout_and_the_sweep_goes_on() -> None:
    runner = HarnessRunner(sys.executable, _request(), point_timeout_s=3)
    seen: list[dict[str, Any]] = []
    for msg in runner.messages():
        seen.append(msg)
        if msg["type"] == "point" and len([m for m in seen if m["type"] == "point"]) == 1:
            assert runner.proc is not None
            os.kill(runner.proc.pid, signal.SIGSTOP)  # frozen, like a kernel that never ends
    points = [m for m in seen if m["type"] == "point"]
    assert [(m["point_index"], m["backend"]) for m in points] == [
        (i, b) for i in range(3) for b in ("torch-sdpa", "torch-math")]
    hung = points[1]
    assert hung["status"] == "error" and "hung (no result within 3 s)" in hung["error"]
    assert all(m["status"] == "ok" for m in points if m is not hung)
    assert runner.restarts == 1
