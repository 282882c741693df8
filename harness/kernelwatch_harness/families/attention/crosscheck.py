"""FlashInfer's own timers (``flashinfer.testing.bench_gpu_time``) called on the harness's
inputs and adapter calls, for the cross-check of the harness's timing against them
(bench/gpu_crosscheck.py): the units it alternates over and the summary it prints.

Runs in a FlashInfer version's environment; nothing here imports FlashInfer at module level.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

from kernelwatch_harness.families.attention.suites import SUITES, agrees, grid


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
    """Another release's ``flashinfer/testing/utils.py`` (``--timer-from``), loaded beside the
    installed FlashInfer: pure Python over torch, it imports only ``flashinfer.utils.round_up``
    from the library, so it times the installed release's kernels. 0.5's graph timer has no
    cold L2 (an L2 flush between replays of a graph that calls the kernel 10 times on the same
    inputs); 0.6+'s rotates input copies."""
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
    dry_run_iters: int = 5,
    repeat_iters: int = 30,
    settle_s: float = 0.0,
    cupti: bool = False,
    timer: Any = None,
) -> dict[str, Any]:
    """FlashInfer's timer on freshly built inputs, samples in microseconds, with the graph
    sized as the harness sizes it (``calls_per_graph``: one pass over all of FlashInfer's own
    rotation copies), so it differs from the harness only in implementation.
    ``dry_run_iters``/``repeat_iters`` set the burst: the harness's warm-up and samples per
    repeat for a same-schedule comparison; ``settle_s``
    of idle GPU after the inputs are built, before the burst; ``cupti``: the CUPTI timer
    (``cupti_bench``) instead of graph replay; ``timer``: another release's
    ``flashinfer.testing.utils`` module (``load_timer``) in place of the installed one."""
    import importlib

    testing = timer or importlib.import_module("flashinfer.testing.utils")
    bench_gpu_time = testing.bench_gpu_time

    import torch

    from kernelwatch_harness import timing
    from kernelwatch_harness.families.attention.flashinfer_backends import prepare_flashinfer
    from kernelwatch_harness.families.attention.inputs import flashinfer_inputs, sm_scale

    inp = flashinfer_inputs(kernel, params, "cuda")
    prepared = prepare_flashinfer(backend, inp, sm_scale(kernel, params))

    def with_kwargs(**data: Any) -> Any:
        return prepared.fn(data)

    def closure() -> Any:
        return prepared.fn(inp.data)

    kw: dict[str, Any] = {"dry_run_iters": dry_run_iters, "repeat_iters": repeat_iters}
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
    calls = timing.calls_per_graph(copies, timing.estimate_call_us(prepared.fn, [inp.data]))
    out.update(fi_rotation_copies=copies, calls_per_graph=calls)
    times = bench_gpu_time(
        with_kwargs, input_kwargs=inp.data, cold_l2_cache=True, num_iters_within_graph=calls, **kw
    )
    out.update(samples_us=[t * 1000.0 for t in times], cold_l2="rotate")
    return out


Unit = tuple[str, str, int, dict[str, Any], str]  # suite, kernel, point index, params, backend


def units_of(suites: list[str], backends: list[str] | None = None) -> list[Unit]:
    """The FlashInfer (point, backend) units of the suites, in the sweep's order."""
    return [
        (suite, SUITES[suite]["kernel"], index, params, backend)
        for suite in suites
        for index, point in enumerate(grid(SUITES[suite]["kernel"], SUITES[suite]["params"],
                                           backends or SUITES[suite]["backends"]))
        for backend, params in point.items()
    ]


def summary_lines(rows: list[dict[str, Any]], sides: list[str]) -> list[str]:
    """Per suite and over all: how many units' medians are within +-3% of each of
    FlashInfer's timers run (and, with two, of either), and the worst."""
    out = []
    for suite in [*dict.fromkeys(r["suite"] for r in rows), None]:
        part = [r for r in rows if suite is None or r["suite"] == suite]
        name = suite or "all"
        for side in sides:
            got = [r for r in part if f"{side}_us" in r]
            if not got:
                continue
            within = sum(agrees(r["ours_us"], r[f"{side}_us"]) for r in got)
            worst = max(got, key=lambda r: abs(r[f"{side}_delta_pct"]))
            out.append(f"{name}: {within}/{len(got)} medians within +-3% of FlashInfer's "
                       f"{side} timer; worst {worst[f'{side}_delta_pct']:+.2f}% "
                       f"({worst['backend']} {worst['label']})")
        if len(sides) > 1:
            either = sum(any(agrees(r["ours_us"], r[f"{s}_us"]) for s in sides if f"{s}_us" in r)
                         for r in part)
            out.append(f"{name}: {either}/{len(part)} within +-3% of either")
    return out
