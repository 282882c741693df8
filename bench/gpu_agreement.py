"""FlashInfer's own timing (``flashinfer.testing.bench_gpu_time``) on the same shapes, the same
inputs and the same adapter calls as the harness, for the agreement check in gpu_sweep.py.

Runs inside one FlashInfer version's environment (the harness's interpreter), reads a harness
request on stdin and prints one JSON line per (point, backend):
    {"point_index", "backend", "median_us", "repeat_medians_us", "n", "method", "seconds"}
FlashInfer's timer is run as often as the harness measures each point (the request's
``timing.repeats``), the repeats interleaved over the points and each on freshly built inputs,
exactly as the harness schedules its own; ``median_us`` is the median of all its samples. So
both sides sample the GPU's state the same way, and FlashInfer's own repeat-to-repeat spread
is printed as the floor any agreement figure sits on.
CUPTI is used when cupti-python is installed, else CUDA-graph replay; cold L2 as the
installed version does it (0.6+: rotating input copies; 0.5: an L2 flush between replays of a
graph that calls the kernel 10 times on the same inputs). See ``bench_one`` for the two
configurations measured on 0.6+.
"""

from __future__ import annotations

import inspect
import json
import statistics
import sys
import time
from typing import Any

import torch


def cupti_installed() -> bool:
    """bench_gpu_time(enable_cupti=True) silently falls back to CUDA graphs without
    cupti-python: label what really ran."""
    try:
        import importlib.metadata

        return int(importlib.metadata.version("cupti-python").split(".")[0]) >= 13
    except Exception:
        return False


def bench_one(
    kernel: str, params: dict[str, Any], backend: str, default_config: bool = False
) -> dict[str, Any]:
    """FlashInfer's timer on freshly built inputs, samples in microseconds. Normally with the
    graph sized as the harness sizes it (``calls_per_graph``: one pass over all of
    FlashInfer's own rotation copies), so it differs from the harness only in implementation;
    with ``default_config`` as flashinfer_benchmark.py calls it (CUDA graph of 10 calls, 5 dry
    runs, 30 timed replays, cold_l2_cache=True), whose 10 calls leave small inputs in L2."""
    from flashinfer.testing import bench_gpu_time

    from worker.harness import timing
    from worker.harness.flashinfer_backends import prepare_flashinfer
    from worker.harness.inputs import flashinfer_inputs, sm_scale

    inp = flashinfer_inputs(kernel, params, "cuda")
    prepared = prepare_flashinfer(backend, inp, sm_scale(kernel, params))

    def with_kwargs(**data: Any) -> Any:
        return prepared.fn(data)

    def closure() -> Any:
        return prepared.fn(inp.data)

    kw: dict[str, Any] = {"use_cuda_graph": True, "dry_run_iters": 5, "repeat_iters": 30}
    out: dict[str, Any] = {"method": "cupti" if cupti_installed() else "cuda_graph"}
    if out["method"] == "cupti":
        kw["enable_cupti"] = True
    if "input_kwargs" not in inspect.signature(bench_gpu_time).parameters:
        # 0.5: no rotation; an L2 flush between replays of a 10-call graph on one input
        times = bench_gpu_time(closure, l2_flush=True, **kw)
        out.update(samples_us=[t * 1000.0 for t in times], cold_l2="flush")
        return out
    from flashinfer.testing.utils import calculate_rotation_count

    copies = calculate_rotation_count(list(inp.data.values()))
    if default_config:
        calls = 10
    else:
        calls = timing.calls_per_graph(copies, timing.estimate_call_us(prepared.fn, [inp.data]))
    out.update(
        fi_rotation_copies=copies,
        calls_per_graph=calls,
        default_calls_touch_bytes=min(10, copies) * inp.data_bytes(),
    )
    times = bench_gpu_time(
        with_kwargs, input_kwargs=inp.data, cold_l2_cache=True, num_iters_within_graph=calls, **kw
    )
    out.update(samples_us=[t * 1000.0 for t in times], cold_l2="rotate")
    return out


def main() -> int:
    request = json.loads(sys.stdin.read())
    repeats = max(1, int((request.get("timing") or {}).get("repeats", 1)))
    units = [
        (int(point["point_index"]), point["params"], str(backend))
        for point in request["points"]
        for backend in request["backends"]
        if not str(backend).startswith("torch")
    ]
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    for _ in range(repeats):  # interleaved like the harness's repeats
        for index, params, backend in units:
            row = rows.setdefault((index, backend), {
                "point_index": index, "backend": backend, "samples_us": [],
                "repeat_medians_us": [], "seconds": 0.0})
            if "error" in row:
                continue
            t0 = time.perf_counter()
            try:
                got = bench_one(request["kernel"], params, backend)
                samples = got.pop("samples_us")
                row.update(got)
                row["samples_us"].extend(samples)
                row["repeat_medians_us"].append(statistics.median(samples))
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"[:1000]
            row["seconds"] += time.perf_counter() - t0
            torch.cuda.empty_cache()
    # flashinfer_benchmark.py's own configuration, once per unit and after every repeat:
    # run between the repeats, its 10-call graphs (4.6 s of sustained load on the largest
    # decode point) heated the GPU for the measurement after it (H200: +7% on that repeat).
    for index, params, backend in units:
        row = rows[(index, backend)]
        if "error" in row or row.get("cold_l2") == "flush":
            continue
        try:
            got = bench_one(request["kernel"], params, backend, default_config=True)
            row["default_median_us"] = statistics.median(got["samples_us"])
        except Exception as exc:
            row["default_error"] = f"{type(exc).__name__}: {exc}"[:1000]
        torch.cuda.empty_cache()
    for row in rows.values():
        samples = row.pop("samples_us")
        if samples:
            row.update(median_us=statistics.median(samples), n=len(samples))
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
