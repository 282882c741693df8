"""The worker-harness protocol's one definition (``kernelwatch_harness.protocol``): both sides
build and read the same typed messages, the job spec's timing defaults are the harness's, and a
harness of another protocol version is refused with the reason instead of being misread."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import get_args

import pytest

from kernelwatch.core.spec import SweepSpec, Timing
from kernelwatch.worker.runner import HarnessRequest, HarnessRunner
from kernelwatch_harness import protocol
from kernelwatch_harness.protocol import (
    PROTOCOL_VERSION,
    TIMING_DEFAULTS,
    ProtocolError,
    parse_message,
)


def test_the_specs_timing_defaults_are_the_harnesss() -> None:
    assert Timing().model_dump() == asdict(TIMING_DEFAULTS)
    assert Timing().config() == TIMING_DEFAULTS.as_dict()
    fields = Timing.model_fields
    assert set(get_args(fields["method"].annotation)) == set(protocol.TIMING_METHODS)
    assert set(get_args(fields["cold_l2_method"].annotation)) == set(protocol.COLD_L2_METHODS)


def test_a_request_carries_the_protocol_version_and_every_field() -> None:
    spec = SweepSpec(name="t", kernel="single_decode", backends=["torch-sdpa"],
                     params={"kv_len": [64, 128]})
    req = HarnessRequest(spec.kernel, "cpu", ["torch-sdpa"], spec.timing.config(),
                         list(enumerate(spec.backend_points())), skip={(1, "torch-sdpa")})
    sent = json.loads(req.to_json(req.skip))
    assert sent["protocol"] == PROTOCOL_VERSION
    assert set(sent) == set(protocol.Request.__annotations__)
    assert sent["timing"] == asdict(TIMING_DEFAULTS)
    assert sent["points"][1] == {"point_index": 1,
                                 "params_by_backend": {"torch-sdpa": spec.grid("torch-sdpa")[1]}}
    assert sent["skip"] == [[1, "torch-sdpa"]]


def test_parse_message_types_and_refusals() -> None:
    assert parse_message("  \n") is None
    # Something in the environment printed to stdout: kept as a log line.
    assert parse_message("Compiling kernel...") == {"type": "log", "message": "Compiling kernel..."}
    assert parse_message("[1, 2]") == {"type": "log", "message": "[1, 2]"}
    point = parse_message(json.dumps({"type": "point", "point_index": "3", "backend": "fa2",
                                      "status": "ok", "samples_us": [1.0]}))
    assert point is not None and point["type"] == "point" and point["point_index"] == 3
    with pytest.raises(ProtocolError, match="unknown harness message type 'pointz'"):
        parse_message(json.dumps({"type": "pointz"}))
    with pytest.raises(ProtocolError, match="without status, samples_us"):
        parse_message(json.dumps({"type": "point", "point_index": 0, "backend": "fa2"}))
    with pytest.raises(ProtocolError, match="env message without protocol"):
        parse_message(json.dumps({"type": "env", "environment": {}, "timing_method": "x"}))


def test_the_harness_refuses_a_request_of_another_protocol_version() -> None:
    request = {"protocol": PROTOCOL_VERSION - 1, "kernel": "single_decode", "device": "cpu",
               "backends": ["torch-sdpa"], "timing": {}, "points": [], "skip": []}
    proc = subprocess.run([sys.executable, "-m", "kernelwatch_harness"],
                          input=json.dumps(request), capture_output=True, text=True, timeout=120)
    msgs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 2
    assert msgs == [{"type": "fatal", "error": protocol.version_mismatch(PROTOCOL_VERSION - 1)}]
    assert "protocol version mismatch" in msgs[0]["error"]


def test_the_runner_refuses_a_harness_of_another_protocol_version(tmp_path: Path) -> None:
    """An env whose harness speaks another version (its env message says so): every pair is
    errored with the reason; nothing it measured is taken."""
    fake = tmp_path / "kernelwatch_harness"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text(
        "import json, sys\n"
        "sys.stdin.read()\n"
        "print(json.dumps({'type': 'env', 'protocol': 1, 'environment': {}, "
        "'timing_method': 'cpu_perf_counter'}), flush=True)\n"
        "print(json.dumps({'type': 'point', 'point_index': 0, 'backend': 'torch-sdpa', "
        "'status': 'ok', 'error': None, 'samples_us': [1.0]}), flush=True)\n"
    )
    req = HarnessRequest("single_decode", "cpu", ["torch-sdpa"], {},
                         [(0, {"torch-sdpa": {}}), (1, {"torch-sdpa": {}})])
    msgs = list(HarnessRunner(sys.executable, req, env={"PYTHONPATH": str(tmp_path)}).messages())
    assert [(m["type"], m.get("status")) for m in msgs] == [("point", "error")] * 2
    assert all("protocol version mismatch" in str(m.get("error")) for m in msgs)
