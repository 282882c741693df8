"""``python -m worker.harness``: read one request (JSON) on stdin, write JSON lines on stdout
as worker/harness/protocol.py describes, flushing each line."""

from __future__ import annotations

import json
import sys
import traceback
from typing import IO, Any


def _clean(obj: Any) -> Any:
    """NaN and infinities have no JSON form: null them (the status says what happened)."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def emit(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(_clean(message), default=str, allow_nan=False) + "\n")
    out.flush()


def _finite(msg: dict[str, Any]) -> dict[str, Any]:
    # JSON has no NaN/inf: an infinite error (NaN in the output) is reported as null + status.
    err = msg.get("max_abs_error")
    if err is not None and not (err == err and abs(err) != float("inf")):
        msg["max_abs_error"] = None
        msg["telemetry"]["max_abs_error_text"] = str(err)
    return msg


def run(request: dict[str, Any], out: IO[str]) -> int:
    try:
        import torch

        from worker.harness.measure import Measurer
        from worker.harness.telemetry import environment
    except Exception as exc:
        emit(out, {"type": "fatal", "error": f"import failed: {type(exc).__name__}: {exc}"})
        return 2
    device = str(request.get("device", "cuda"))
    kernel = str(request["kernel"])
    if device == "cuda" and not torch.cuda.is_available():
        emit(
            out, {"type": "fatal", "error": "device 'cuda' requested but torch sees no CUDA device"}
        )
        return 2
    try:
        measurer = Measurer(device, dict(request.get("timing") or {}))
        emit(
            out,
            {
                "type": "env",
                "environment": environment(device, measurer.nvml),
                "timing_method": measurer.default_method,
            },
        )
    except Exception as exc:
        emit(
            out,
            {
                "type": "fatal",
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=6),
            },
        )
        return 2
    skip = {(int(i), str(b)) for i, b in request.get("skip") or []}
    backends = [str(b) for b in request.get("backends") or []]
    for point in request.get("points") or []:
        index = int(point["point_index"])
        for backend in backends:
            if (index, backend) in skip:
                continue
            emit(out, _finite(measurer.measure(kernel, index, dict(point["params"]), backend)))
    emit(out, {"type": "done"})
    return 0


def main() -> int:
    try:
        request = json.loads(sys.stdin.read())
    except Exception as exc:
        emit(sys.stdout, {"type": "fatal", "error": f"bad request: {exc}"})
        return 2
    return run(request, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
