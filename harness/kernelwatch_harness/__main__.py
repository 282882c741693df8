"""``python -m kernelwatch_harness``: read one request (JSON) on stdin, write JSON lines on stdout
as ``kernelwatch_harness.protocol`` describes, flushing each line."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from typing import IO, Any, cast

from kernelwatch_harness.protocol import (
    PROTOCOL_VERSION,
    CrosscheckMessage,
    CrosscheckRequest,
    EnvMessage,
    FatalMessage,
    Message,
    PointMessage,
    Request,
    StartMessage,
    version_mismatch,
)


def _clean(obj: Any) -> Any:
    """NaN and infinities have no JSON form: null them (the status says what happened)."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def emit(out: IO[str], message: Message) -> None:
    out.write(json.dumps(_clean(message), default=str, allow_nan=False) + "\n")
    out.flush()


def _finite(msg: PointMessage) -> PointMessage:
    # JSON has no NaN/inf: an infinite error (NaN in the output) is reported as null + status.
    err = msg.get("max_abs_error")
    if err is not None and not (err == err and abs(err) != float("inf")):
        msg["max_abs_error"] = None
        msg.setdefault("telemetry", {})["max_abs_error_text"] = str(err)
    return msg


def run(request: Request, out: IO[str]) -> int:
    mismatch = version_mismatch(request.get("protocol"))
    if mismatch:
        emit(out, FatalMessage(type="fatal", error=mismatch))
        return 2
    try:
        import torch

        from kernelwatch_harness.measure import Measurer
        from kernelwatch_harness.telemetry import environment
    except Exception as exc:
        emit(out, FatalMessage(type="fatal",
                                error=f"import failed: {type(exc).__name__}: {exc}"))
        return 2
    device = str(request.get("device", "cuda"))
    kernel = str(request["kernel"])
    if device == "cuda" and not torch.cuda.is_available():
        emit(out, FatalMessage(type="fatal",
                                error="device 'cuda' requested but torch sees no CUDA device"))
        return 2
    try:
        measurer = Measurer(device, request.get("timing") or {})
        emit(out, EnvMessage(type="env", protocol=PROTOCOL_VERSION,
                             environment=environment(device, measurer.nvml),
                             timing_method=measurer.default_method,
                             clock=measurer.clock_identity()))
    except Exception as exc:
        emit(out, FatalMessage(type="fatal", error=f"{type(exc).__name__}: {exc}",
                               traceback=traceback.format_exc(limit=6)))
        return 2
    units = request_units(request)
    after = crosschecker(request.get("crosscheck"), device, measurer)
    for start in range(0, len(units), REPEAT_WINDOW):
        measure_interleaved(measurer, kernel, units[start : start + REPEAT_WINDOW], out, after)
    emit(out, {"type": "done"})
    return 0


def crosschecker(
    request: CrosscheckRequest | None, device: str, measurer: Any
) -> Callable[[PointMessage], CrosscheckMessage | None] | None:
    """What runs FlashInfer's own benchmark on a unit just measured, when asked for: the
    measured units (ok or incorrect) with a line are cross-checked; on a CPU run each is
    reported unavailable, with the reason."""
    if not request:
        return None
    from kernelwatch_harness.official import OfficialBenchmark

    lines = {(int(x["point_index"]), str(x["backend"])): x for x in request["lines"]}
    official = OfficialBenchmark(request["script_dir"], measurer.nvml)

    def after(point: PointMessage) -> CrosscheckMessage | None:
        line = lines.get((point["point_index"], point["backend"]))
        if line is None or point["status"] not in ("ok", "incorrect"):
            return None
        if device != "cuda":
            return CrosscheckMessage(
                type="crosscheck", point_index=point["point_index"], backend=point["backend"],
                status="unavailable", command=None,
                error=f"flashinfer_benchmark.py times on a CUDA GPU; this run is on {device}")
        return official.run(line)

    return after


def request_units(request: Request) -> list[tuple[int, dict[str, Any], str]]:
    """The (point_index, params, backend) units to measure, point by point, each point with
    every backend in the request's order, run with the params the service gave that backend."""
    skip = {(int(i), str(b)) for i, b in request.get("skip") or []}
    backends = [str(b) for b in request.get("backends") or []]
    return [
        (int(point["point_index"]), dict(point["params_by_backend"][backend]), backend)
        for point in request.get("points") or []
        for backend in backends
        if (int(point["point_index"]), backend) not in skip
    ]


REPEAT_WINDOW = 32
"""Repeats are interleaved over at most this many (point, backend) units: repeat 1 of each,
then repeat 2 of each, ... Wider spreads the repeats of a point further apart in time (more
of the GPU's state drift inside the CI); narrower streams finished points sooner."""


def measure_interleaved(
    measurer: Any, kernel: str, units: list[tuple[int, dict[str, Any], str]], out: IO[str],
    after: Callable[[PointMessage], CrosscheckMessage | None] | None = None,
) -> None:
    """Every repeat of every unit, repeat by repeat, like a randomised-interleaving benchmark
    run: a point's repeats see the GPU at different moments instead of one. A unit is
    emitted after its last repeat, or as soon as a repeat ends it (unsupported, error), and
    then ``after`` (the cross-check) runs on it while the GPU is in the same state."""
    pending: dict[int, PointMessage] = {}
    for repeat in range(measurer.repeats):
        for n, (index, params, backend) in enumerate(units):
            if repeat and n not in pending:
                continue  # finished early
            # Points are emitted only after their last repeat, so without this the runner
            # could not tell which unit a harness that dies or hangs was measuring.
            emit(out, StartMessage(type="start", point_index=index, backend=backend,
                                   repeat=repeat + 1))
            msg = measurer.measure(kernel, index, params, backend, previous=pending.pop(n, None))
            if repeat + 1 < measurer.repeats and msg["status"] in ("ok", "incorrect"):
                pending[n] = msg
            else:
                emit(out, _finite(msg))
                check = after(msg) if after is not None else None
                if check is not None:
                    emit(out, check)


def main() -> int:
    try:
        request = json.loads(sys.stdin.read())
        if not isinstance(request, dict):
            raise ValueError("not a JSON object")
    except Exception as exc:
        emit(sys.stdout, FatalMessage(type="fatal", error=f"bad request: {exc}"))
        return 2
    return run(cast(Request, request), sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
