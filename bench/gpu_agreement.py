"""FlashInfer's own timing (``flashinfer.testing.bench_gpu_time``) on the same shapes, the same
inputs and the same adapter calls as the harness, for the agreement check in gpu_sweep.py.

Runs inside one FlashInfer version's environment (the harness's interpreter), reads a harness
request on stdin and prints one JSON line per (point, backend):
    {"point_index", "backend", "median_us", "n", "method", "seconds"}
CUPTI is used when ``enable_cupti`` works (cupti-python installed), else CUDA-graph replay;
cold L2 as the installed version does it (0.6+: rotating input copies; 0.5: an L2 flush
between replays of a graph that calls the kernel 10 times on the same inputs).
"""

from __future__ import annotations

import inspect
import json
import statistics
import sys
import time
from typing import Any

import torch


def bench_one(kernel: str, params: dict[str, Any], backend: str) -> dict[str, Any]:
    from flashinfer.testing import bench_gpu_time

    from worker.harness.flashinfer_backends import prepare_flashinfer
    from worker.harness.inputs import flashinfer_inputs, sm_scale

    inp = flashinfer_inputs(kernel, params, "cuda")
    prepared = prepare_flashinfer(backend, inp, sm_scale(kernel, params))

    def with_kwargs(**data: Any) -> Any:
        return prepared.fn(data)

    def closure() -> Any:
        return prepared.fn(inp.data)

    # The sample counts of flashinfer_benchmark.py (5 dry runs, 30 timed), not the 100 ms
    # default budget, which leaves 1 to 3 samples for the largest points.
    kw: dict[str, Any] = {"use_cuda_graph": True, "dry_run_iters": 5, "repeat_iters": 30}
    call: Any = closure
    if "input_kwargs" in inspect.signature(bench_gpu_time).parameters:
        # 0.6+: bench_gpu_time rotates copies of these inputs for cold L2
        kw.update(input_kwargs=inp.data, cold_l2_cache=True)
        call = with_kwargs
    else:  # 0.5: L2 flushed between graph replays
        kw.update(l2_flush=True)
    out: dict[str, Any] = {"method": "cupti"}
    try:
        times = bench_gpu_time(call, enable_cupti=True, **kw)
    except Exception as exc:  # no cupti-python: CUDA graph replay
        out.update(method="cuda_graph", cupti_error=f"{type(exc).__name__}: {exc}"[:300])
        times = bench_gpu_time(call, **kw)
    out.update(median_us=statistics.median(times) * 1000.0, n=len(times))
    return out


def main() -> int:
    request = json.loads(sys.stdin.read())
    for point in request["points"]:
        for backend in request["backends"]:
            if backend.startswith("torch"):
                continue
            t0 = time.perf_counter()
            out: dict[str, Any] = {"point_index": point["point_index"], "backend": backend}
            try:
                out.update(bench_one(request["kernel"], point["params"], backend))
            except Exception as exc:
                out["error"] = f"{type(exc).__name__}: {exc}"[:1000]
            out["seconds"] = time.perf_counter() - t0
            print(json.dumps(out), flush=True)
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
