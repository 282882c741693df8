"""A prototype of the second way to cover FlashInfer: run flashinfer_benchmark.py's own routine
functions (its official workloads, for every routine of every version) with their
``bench_gpu_time(fn, input_args=...)`` routed to kernelwatch's timer.

The routines hand the timer the call and the tensors it reads, so that the timer can rotate
them. Routed here, the call is timed as kernelwatch times its own adapters: copies of the
inputs, enough to make every call cold in L2 (``timing.rotation_for``), replayed in a CUDA
graph (``timing.time_cuda_graph``) with the boost-clock floor; on a CPU (the tests) the same
rotation timed by ``timing.time_cpu``. A routine whose call closes over its tensors instead of
passing them cannot be rotated: it is timed on its one set of inputs and says so
(``RoutedTimer.calls``, ``rotated: false``).

``bench/routed_routines.py`` runs a testlist both ways, the tool's own timer and this one,
alternating, and reports coverage, agreement and cost: the measurement that decides between
this route and the native adapters (docs/families.md).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kernelwatch_harness import timing
from kernelwatch_harness.family import clone

WARMUP = 5
ITERATIONS = 30
MS_PER_US = 1e-3


def _tensors(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    import torch

    return [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]


@dataclass
class RoutedTimer:
    """A stand-in for FlashInfer's ``bench_gpu_time``: same arguments, same answer (each
    call's time in milliseconds), kernelwatch's measurement. ``calls`` records, per use, how
    the inputs were rotated and which timer ran."""

    device: str
    clock_floor: float = 0.985
    calls: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, fn: Callable[..., Any], dry_run_iters: int | None = None,
                 repeat_iters: int | None = None, *, input_args: tuple[Any, ...] = (),
                 input_kwargs: dict[str, Any] | None = None, cold_l2_cache: bool = True,
                 **_tool_options: Any) -> list[float]:
        # The tool's other options (CUPTI, its own graph mode, time budgets) choose its timer;
        # this one is kernelwatch's whatever they say.
        kwargs = dict(input_kwargs or {})
        per_copy = sum(t.numel() * t.element_size() for t in _tensors(input_args, kwargs))
        cuda = self.device == "cuda"
        l2, free = self._memory()
        rotation = timing.rotation_for(per_copy, l2, free, cold_l2_cache and per_copy > 0)
        datas = [{"args": input_args, "kwargs": kwargs}]
        datas += [{"args": clone(input_args), "kwargs": clone(kwargs)}
                  for _ in range(rotation.copies - 1)]

        def call(d: dict[str, Any]) -> Any:
            return fn(*d["args"], **d["kwargs"])

        iterations = max(1, int(repeat_iters or ITERATIONS))
        warmup = max(1, int(dry_run_iters or WARMUP))
        record: dict[str, Any] = {"rotated": per_copy > 0, **rotation.as_dict()}
        if cuda:
            try:
                samples_us = self._graph(call, datas, warmup, iterations, record)
            except Exception as exc:  # capture refused (a host sync in the call): events
                import torch

                torch.cuda.synchronize()
                record.update(method=timing.CUDA_EVENT,
                              cuda_graph_error=f"{type(exc).__name__}: {exc}"[:500])
                samples_us = timing.time_cuda_events(call, datas, warmup, iterations)
        else:
            samples_us = timing.time_cpu(call, datas, warmup, iterations)
            record["method"] = timing.CPU_PERF_COUNTER
        self.calls.append(record)
        return [s * MS_PER_US for s in samples_us]

    def _memory(self) -> tuple[int, int]:
        """The L2's size and the free device memory (none on a CPU: nothing to rotate for)."""
        if self.device != "cuda":
            return 0, 0
        import torch

        free, _ = torch.cuda.mem_get_info()
        return timing.l2_bytes(), int(free)

    def _graph(self, call: Callable[[dict[str, Any]], Any], datas: list[dict[str, Any]],
               warmup: int, iterations: int, record: dict[str, Any]) -> list[float]:
        est = timing.estimate_call_us(call, datas)
        calls = timing.calls_per_graph(len(datas), est)
        floor = 0.0
        if self.clock_floor > 0:
            floor = self.clock_floor * timing.boost_reference_mhz()
        got = timing.time_cuda_graph(
            call, datas, warmup, iterations, calls,
            pointers=lambda d: [t.data_ptr() for t in _tensors(d["args"], d["kwargs"])],
            probe_cycles=timing.PROBE_CYCLES if floor else 0, floor_mhz=floor)
        # rotation_check() holds calls_per_replay (naming it here too raised a TypeError on
        # every GPU call, which fell back to events)
        record.update(method=timing.CUDA_GRAPH, floor_met=got.floor_met, **got.rotation_check())
        return got.samples_us


def _routine_modules() -> list[Any]:
    return [m for name, m in list(sys.modules.items())
            if (name == "routines" or name.startswith("routines.")) and m is not None
            and hasattr(m, "bench_gpu_time")]


@contextlib.contextmanager
def routed(timer: Callable[..., list[float]]) -> Iterator[None]:
    """The tool's routines use ``timer`` as their ``bench_gpu_time`` while inside: those loaded
    already, and those the tool imports meanwhile (it imports a routine's module when it first
    runs it, ``from flashinfer.testing.utils import bench_gpu_time``: FlashInfer's own name is
    replaced too). Everything is put back on the way out, also in a module first imported
    inside."""
    import flashinfer.testing as ft
    import flashinfer.testing.utils as ftu

    original = ftu.bench_gpu_time
    owners = [m for m in (ftu, ft) if getattr(m, "bench_gpu_time", None) is original]
    for module in [*owners, *_routine_modules()]:
        module.bench_gpu_time = timer
    try:
        yield
    finally:
        for module in [*owners, *_routine_modules()]:
            if module.bench_gpu_time is timer:
                module.bench_gpu_time = original
