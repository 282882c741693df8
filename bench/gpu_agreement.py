"""FlashInfer's own timing (``flashinfer.testing.bench_gpu_time``) on the same shapes, the same
inputs and the same adapter calls as the harness, for the agreement check in gpu_sweep.py.

Runs inside one FlashInfer version's environment (the harness's interpreter), reads a harness
request on stdin and prints one JSON line per (point, backend):
    {"point_index", "backend", "median_us", "repeat_medians_us", "n", "seconds",
     "settled_median_us", "settled_repeat_medians_us", ..., "fi30_median_us",
     "default_median_us", "method"}
``median_us``: FlashInfer's timer on the harness's schedule. It runs as often as the harness
measures each point (``timing.repeats``), the repeats interleaved over the points and each on
freshly built inputs, each with the harness's warm-up replays and samples per repeat. So the
two timers differ in implementation only, not in how long the GPU has been busy when they
sample it; FlashInfer's own repeat-to-repeat spread is the floor any agreement sits on.
``settled_*``: the same schedule with the harness's recovery idle (timing.RECOVERY_S) before
each burst, the chance the harness gives itself when the power limiter lowered its clock.
``fi30_median_us`` and ``default_median_us``: flashinfer_benchmark.py's burst (5 dry runs, 30
timed replays), with the graph sized like the harness's and as shipped (see ``main``).
These are CUDA-graph timings, cold L2 as the installed version does it (0.6+: rotating input
copies; 0.5: an L2 flush between replays of a graph that calls the kernel 10 times on the same
inputs, so 9 of 10 calls find small inputs in L2).
``cupti_*`` and ``cupti30_median_us`` (only where cupti-python >= 13 is installed): FlashInfer's
CUPTI timer, the default of flashinfer_benchmark.py since CUPTI became its preferred method:
one call per iteration, L2 flushed before it and the device synchronised after it, the time
being the span of the call's kernels. ``cupti_*`` on the harness's schedule with its recovery
idle (like ``settled_*``), ``cupti30`` with 5 dry runs and 30 iterations. This is the reference
with cold L2 on every call in every version (0.5.3's graph timer has none, see above).
``rot_*`` (only for such a release, when the request names ``timer_from``: a newer release's
``flashinfer/testing/utils.py``): that newer graph timer, rotating input copies, timing the
installed release's kernels, on the harness's schedule with its recovery idle.
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
    cupti-python: the CUPTI configurations run only where it is installed."""
    try:
        import importlib.metadata

        return int(importlib.metadata.version("cupti-python").split(".")[0]) >= 13
    except Exception:
        return False


def cupti_bench(bench_gpu_time: Any, fn: Any, version_kwargs: bool, **kw: Any) -> list[float]:
    """bench_gpu_time's CUPTI path (graph of one call, L2 flushed before each iteration), as
    flashinfer_benchmark.py calls it. It falls back to another timer with only a warning
    when CUPTI is missing or refuses: that fallback is an error here, never a CUPTI number."""
    import warnings

    flush = {"cold_l2_cache": True} if version_kwargs else {"l2_flush": True}
    failed: Exception | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            times = bench_gpu_time(fn, enable_cupti=True, use_cuda_graph=True, **flush, **kw)
        except Exception as exc:  # the fallback may fail too: say why it ran at all
            failed = exc
    fell_back = [str(w.message) for w in caught if "falling back" in str(w.message).lower()]
    if fell_back:
        raise RuntimeError(f"bench_gpu_time did not use CUPTI: {fell_back[0]}") from failed
    if failed is not None:
        raise failed
    return [float(t) for t in times]


def load_timer(path: str) -> Any:
    """Another release's ``flashinfer/testing/utils.py`` (gpu_sweep.py's ``--timer-from``),
    loaded beside the installed FlashInfer: pure Python over torch, it imports only
    ``flashinfer.utils.round_up`` from the library, so it times the installed release's
    kernels. 0.5's graph timer has no cold L2 (see the docstring above); 0.6+'s rotates."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("kernelwatch_fi_timer", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load a timer from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rotates(bench_gpu_time: Any) -> bool:
    """0.6+'s bench_gpu_time takes the inputs (``input_kwargs``) and times rotated copies."""
    return "input_kwargs" in inspect.signature(bench_gpu_time).parameters


def dry_runs(harness_warmup: int) -> int:
    """bench_gpu_time's dry runs for a burst as long as the harness's: it replays its graph 5
    times to size its loops before the dry runs, and those count as warm-up."""
    return max(0, harness_warmup - 5)


def bench_one(
    kernel: str,
    params: dict[str, Any],
    backend: str,
    default_config: bool = False,
    dry_run_iters: int = 5,
    repeat_iters: int = 30,
    settle_s: float = 0.0,
    cupti: bool = False,
    timer: Any = None,
) -> dict[str, Any]:
    """FlashInfer's timer on freshly built inputs, samples in microseconds. Normally with the
    graph sized as the harness sizes it (``calls_per_graph``: one pass over all of
    FlashInfer's own rotation copies), so it differs from the harness only in implementation;
    with ``default_config`` as flashinfer_benchmark.py calls it (CUDA graph of 10 calls, 5 dry
    runs, 30 timed replays, cold_l2_cache=True), whose 10 calls leave small inputs in L2.
    ``dry_run_iters``/``repeat_iters`` set the burst: flashinfer_benchmark.py's 5 and 30, or
    the harness's warm-up and samples per repeat for a same-schedule comparison; ``settle_s``
    of idle GPU after the inputs are built, before the burst; ``cupti``: the CUPTI timer
    (``cupti_bench``) instead of graph replay; ``timer``: another release's
    ``flashinfer.testing.utils`` module (``load_timer``) in place of the installed one."""
    import importlib

    testing = timer or importlib.import_module("flashinfer.testing.utils")
    bench_gpu_time = testing.bench_gpu_time

    from kernelwatch_harness import timing
    from kernelwatch_harness.flashinfer_backends import prepare_flashinfer
    from kernelwatch_harness.inputs import flashinfer_inputs, sm_scale

    inp = flashinfer_inputs(kernel, params, "cuda")
    prepared = prepare_flashinfer(backend, inp, sm_scale(kernel, params))

    def with_kwargs(**data: Any) -> Any:
        return prepared.fn(data)

    def closure() -> Any:
        return prepared.fn(inp.data)

    kw: dict[str, Any] = {
        "dry_run_iters": 5 if default_config else dry_run_iters,
        "repeat_iters": 30 if default_config else repeat_iters,
    }
    version_kwargs = rotates(bench_gpu_time)
    if settle_s:
        torch.cuda.synchronize()
        time.sleep(settle_s)
    if cupti:
        times = cupti_bench(bench_gpu_time, with_kwargs if version_kwargs else closure,
                            version_kwargs, **({"input_kwargs": inp.data} if version_kwargs
                                               else {}), **kw)
        return {"method": "cupti", "cold_l2": "flush",
                "samples_us": [t * 1000.0 for t in times]}
    kw["use_cuda_graph"] = True
    out: dict[str, Any] = {"method": "cuda_graph"}
    if not version_kwargs:
        # 0.5: no rotation; an L2 flush between replays of a 10-call graph on one input
        times = bench_gpu_time(closure, l2_flush=True, **kw)
        out.update(samples_us=[t * 1000.0 for t in times], cold_l2="flush")
        return out
    copies = testing.calculate_rotation_count(list(inp.data.values()))
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


def same_schedule(
    kernel: str,
    units: list[tuple[int, dict[str, Any], str]],
    rows: dict[tuple[int, str], dict[str, Any]],
    repeats: int,
    warmup: int,
    per_repeat: int,
    prefix: str,
    settle_s: float = 0.0,
    cupti: bool = False,
    timer: Any = None,
) -> None:
    """FlashInfer's timer on the harness's schedule: ``repeats`` bursts per unit, interleaved
    over the units like the harness's repeats, each on freshly built inputs. Adds to each row
    ``{prefix}median_us``, ``{prefix}repeat_medians_us``, ``{prefix}n`` and
    ``{prefix}seconds`` (or ``{prefix}error``); ``settle_s`` of idle GPU before each burst;
    ``cupti``, ``timer``: as in ``bench_one``, what ran then recorded under the prefix too."""
    samples: dict[tuple[int, str], list[float]] = {key: [] for key in rows}
    for _ in range(repeats):
        for index, params, backend in units:
            row = rows[(index, backend)]
            if f"{prefix}error" in row:
                continue
            t0 = time.perf_counter()
            try:
                got = bench_one(kernel, params, backend, dry_run_iters=warmup,
                                repeat_iters=per_repeat, settle_s=settle_s, cupti=cupti,
                                timer=timer)
                burst = got.pop("samples_us")
                # what ran (method, cold L2, rotation), once per configuration
                own = not (cupti or timer)
                row.update(got if own else {f"{prefix}{k}": v for k, v in got.items()})
                samples[(index, backend)].extend(burst)
                row.setdefault(f"{prefix}repeat_medians_us", []).append(statistics.median(burst))
            except Exception as exc:
                row[f"{prefix}error"] = f"{type(exc).__name__}: {exc}"[:1000]
            row[f"{prefix}seconds"] = row.get(f"{prefix}seconds", 0.0) + time.perf_counter() - t0
            torch.cuda.empty_cache()
    for key, got_samples in samples.items():
        if got_samples:
            rows[key].update({f"{prefix}median_us": statistics.median(got_samples),
                              f"{prefix}n": len(got_samples)})
    if settle_s:
        for row in rows.values():
            row[f"{prefix}settle_s"] = settle_s


def main() -> int:
    from kernelwatch_harness.timing import RECOVERY_S

    request = json.loads(sys.stdin.read())
    timing_cfg = request.get("timing") or {}
    repeats = max(1, int(timing_cfg.get("repeats", 1)))
    # The harness's burst: its warm-up replays, then one repeat's samples.
    warmup = dry_runs(int(timing_cfg.get("warmup", 5)))
    per_repeat = -(-int(timing_cfg.get("iterations", 30)) // repeats)
    units = [
        (int(point["point_index"]), point["params"], str(backend))
        for point in request["points"]
        for backend in request["backends"]
        if not str(backend).startswith("torch")
    ]
    rows: dict[tuple[int, str], dict[str, Any]] = {
        (index, backend): {"point_index": index, "backend": backend}
        for index, _, backend in units
    }
    same_schedule(request["kernel"], units, rows, repeats, warmup, per_repeat, "")
    # Again with the GPU idle for the harness's recovery time before each burst: the harness
    # retakes a burst after that idle when the power limiter lowered its clock, FlashInfer's
    # timer cannot. Where the two passes differ, the limiter acted in FlashInfer's bursts.
    same_schedule(request["kernel"], units, rows, repeats, warmup, per_repeat, "settled_",
                  settle_s=RECOVERY_S)
    # Then, once per unit and after every repeat (run between the repeats, their longer
    # bursts heated the GPU for the measurement after them: H200, +7% on that repeat):
    # - "fi30": flashinfer_benchmark.py's 5 dry runs and 30 timed replays, graph sized like
    #   the harness's. Its burst runs 3x longer than one repeat of the harness's, long enough
    #   on heavy kernels for the power limiter to lower the SM clock (gpu_burst_trace.py);
    # - "default": its whole configuration, 10-call graphs included (not with 0.5's flush).
    extras: list[tuple[str, dict[str, Any]]] = [("fi30", {}), ("default", {"default_config": True})]
    if cupti_installed():
        # FlashInfer's CUPTI timer on the harness's schedule with its recovery idle, then as
        # flashinfer_benchmark.py runs it (5 dry runs, 30 iterations)
        same_schedule(request["kernel"], units, rows, repeats, warmup, per_repeat, "cupti_",
                      settle_s=RECOVERY_S, cupti=True)
        extras.append(("cupti30", {"cupti": True}))
    timer_from = request.get("timer_from")
    if timer_from:
        from flashinfer.testing import bench_gpu_time

        if not rotates(bench_gpu_time):
            # "rot_": a release whose own graph timer has no cold L2 (0.5), its kernels timed
            # by the graph timer with rotated inputs of the release named in the request, on
            # the harness's schedule with its recovery idle (like "settled_")
            timer = load_timer(timer_from["path"])
            same_schedule(request["kernel"], units, rows, repeats, warmup, per_repeat, "rot_",
                          settle_s=RECOVERY_S, timer=timer)
            for row in rows.values():
                row["rot_timer_version"] = timer_from["version"]
    for key, extra in extras:
        for index, params, backend in units:
            row = rows[(index, backend)]
            if "error" in row or (key == "default" and row.get("cold_l2") == "flush"):
                continue
            try:
                got = bench_one(request["kernel"], params, backend, **extra)
                row[f"{key}_median_us"] = statistics.median(got["samples_us"])
            except Exception as exc:
                row[f"{key}_error"] = f"{type(exc).__name__}: {exc}"[:1000]
            torch.cuda.empty_cache()
    for row in rows.values():
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
