"""Whether flashinfer_benchmark.py's own timer had a cold L2 (kernelwatch_harness.tool_timer):
the rules for each of its timers, the call read from a routine's arguments, and the cause the
cross-check names from it. The timers below stand in for FlashInfer's, with its signatures."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from kernelwatch.core.crosscheck import judge
from kernelwatch.core.models import Point
from kernelwatch_harness.tool_timer import TimerCall, TimerSpy, l2_state, observe

MIB = 1 << 20
H100_L2 = 50 * MIB


def graph_call(input_mib: float, copies: int, rotates: bool = True,
               cold: bool = True) -> TimerCall:
    return TimerCall(cold_requested=cold, input_bytes=int(input_mib * MIB), copies=copies,
                     calls_per_replay=10, rotates=rotates)


def test_ten_small_copies_stay_in_l2_across_replays() -> None:
    # GDN decode at batch 1: a 2 MiB state, 126 copies made, ten read by every replay
    cold, why = l2_state("cuda_graph", graph_call(2, 126), H100_L2)
    assert cold is False
    assert why == ("the tool's CUDA graph replays 10 calls over 10 of its 126 input copies, "
                   "the same 10 each replay (20.0 MiB, less than the 50 MiB L2)")


def test_copies_that_overflow_the_l2_together_are_cold() -> None:
    cold, why = l2_state("cuda_graph", graph_call(20, 14), H100_L2)
    assert cold is True and "(200.0 MiB, more than the 50 MiB L2)" in why
    # fewer copies than calls: every copy is read, all of them together decide
    cold, why = l2_state("cuda_graph", graph_call(30, 2), H100_L2)
    assert cold is True and "over 2 of its 2 input copies" in why


def test_inputs_too_large_to_rotate_are_cold() -> None:
    cold, why = l2_state("cuda_graph", graph_call(256, 1), H100_L2)
    assert cold is True and "does not rotate them" in why


def test_a_routine_that_hands_its_timer_no_tensors_is_warm_in_graph_mode() -> None:
    cold, why = l2_state("cuda_graph", graph_call(0, 1), H100_L2)
    assert cold is False and "no tensors to rotate" in why


def test_timers_that_clear_the_l2_before_each_call_are_cold() -> None:
    for method in ("cupti", "cuda_event"):
        cold, why = l2_state(method, graph_call(2, 126), H100_L2)
        assert cold is True and why == f"the tool ({method}) clears the L2 before each call"


def test_a_warm_request_is_warm_whatever_the_timer() -> None:
    for method in ("cupti", "cuda_graph", "cuda_event"):
        assert l2_state(method, graph_call(2, 1, cold=False), H100_L2)[0] is False


def test_a_graph_that_clears_the_l2_once_per_replay_is_warm_for_inputs_it_holds() -> None:
    # FlashInfer 0.5: one clear, then ten calls on the same inputs
    cold, why = l2_state("cuda_graph", graph_call(2, 1, rotates=False), H100_L2)
    assert cold is False and "once per replay of 10 calls" in why and "less than" in why
    assert l2_state("cuda_graph", graph_call(80, 1, rotates=False), H100_L2)[0] is True
    # its routines close over their tensors: their size is unknown, so is the L2's state
    cold, why = l2_state("cuda_graph", graph_call(0, 1, rotates=False), H100_L2)
    assert cold is None and "not told" in why


def test_an_unseen_call_is_unknown() -> None:
    assert l2_state("cuda_graph", None, H100_L2) == (None, "the tool's timer call was not seen")


# --------------------------------------------------------------------------- observe


def bench_gpu_time_06(fn: Any, dry_run_iters: int | None = None,
                      repeat_iters: int | None = None, l2_flush: bool | None = None,
                      enable_cupti: bool = False, use_cuda_graph: bool = False,
                      num_iters_within_graph: int = 10, input_args: tuple[Any, ...] = (),
                      input_kwargs: dict[str, Any] | None = None,
                      cold_l2_cache: bool = True) -> list[float]:
    return [0.5] * (repeat_iters or 3)


def bench_gpu_time_05(fn: Any, dry_run_iters: int | None = None,
                      repeat_iters: int | None = None, l2_flush: bool = True,
                      enable_cupti: bool = False, use_cuda_graph: bool = False,
                      num_iters_within_graph: int = 10) -> list[float]:
    return [0.5] * (repeat_iters or 3)


class Utils06:
    """calculate_rotation_count as FlashInfer 0.6's: the copies for the tensors it is given."""

    def __init__(self) -> None:
        self.given: list[list[torch.Tensor]] = []

    def calculate_rotation_count(self, tensors: list[torch.Tensor], device: Any) -> int:
        self.given.append(tensors)
        return 126


def test_observe_reads_the_call_with_the_versions_defaults() -> None:
    utils = Utils06()
    state, idx = torch.zeros(512, 1024), torch.zeros(8, dtype=torch.int32)
    call = observe(bench_gpu_time_06, utils, lambda *a: None, (),
                   {"use_cuda_graph": True, "input_args": ("flashinfer", state),
                    "input_kwargs": {"indices": [idx]}})
    assert call == TimerCall(cold_requested=True, input_bytes=512 * 1024 * 4 + 8 * 4,
                             copies=126, calls_per_replay=10, rotates=True)
    assert [t.shape for t in utils.given[0]] == [state.shape, idx.shape]
    # the deprecated l2_flush still wins when a routine passes it
    off = observe(bench_gpu_time_06, utils, lambda: None, (), {"l2_flush": False})
    assert off.cold_requested is False and off.copies == 1
    # positional options bind as the version's signature says
    assert observe(bench_gpu_time_06, utils, lambda: None, (2, 7), {}).input_bytes == 0


def test_observe_counts_the_tensors_the_versions_timer_rotates() -> None:
    """FlashInfer 0.6's timer rotates only its GPU tensors (``_extract_gpu_tensors``): a host
    tensor handed over with them is not rotated, so not counted."""
    utils = Utils06()
    device, host = torch.zeros(1024), torch.zeros(4096)

    def on_gpu(obj: Any) -> list[torch.Tensor]:
        return [t for t in obj if t is device] if isinstance(obj, tuple) else []

    utils._extract_gpu_tensors = on_gpu  # type: ignore[attr-defined]
    call = observe(bench_gpu_time_06, utils, lambda *a: None, (),
                   {"use_cuda_graph": True, "input_args": (device, host)})
    assert call.input_bytes == 1024 * 4 and utils.given == [[device]]


def test_observe_reads_a_05_timer_that_cannot_rotate() -> None:
    call = observe(bench_gpu_time_05, SimpleNamespace(), lambda: None, (),
                   {"num_iters_within_graph": 4})
    assert call == TimerCall(cold_requested=True, input_bytes=0, copies=1, calls_per_replay=4,
                             rotates=False)


def test_the_spy_runs_the_tools_timer_unchanged_and_keeps_each_call() -> None:
    spy = TimerSpy(bench_gpu_time_06, Utils06())
    assert spy.last is None
    x = torch.ones(256)
    assert spy(lambda t: None, repeat_iters=4, input_args=(x,)) == [0.5] * 4
    assert spy.last is not None and spy.last.input_bytes == 1024

    def picky(fn: Any) -> list[float]:
        return [1.0]

    odd = TimerSpy(picky, Utils06())
    # a call its signature cannot read is still run, and recorded as unseen
    with pytest.raises(TypeError):
        odd(lambda: None, unknown_option=True)
    assert odd.calls == [None]


# --------------------------------------------------------------------------- the cause


def test_the_cause_says_why_the_tools_l2_was_warm() -> None:
    _, why = l2_state("cuda_graph", graph_call(2, 126), H100_L2)
    point = Point(median_us=4.43, resolved_backend="flashinfer", params={},
                  telemetry={"repeats": [{"clock": {"median_mhz": 1980.0}}]})
    tool = {"status": "ok", "median_us": 3.16, "method": "cuda_graph",
            "resolved_backend": "flashinfer", "cold_l2": False, "l2_detail": why,
            "clock_mhz": 1980.0}
    verdict = judge(point, tool, cold_l2=True)
    assert verdict.agrees is False
    (cause,) = verdict.causes
    assert cause["cause"] == "l2"
    assert cause["detail"] == ("L2 cold in kernelwatch, warm in the tool: the tool's CUDA graph "
                               "replays 10 calls over 10 of its 126 input copies, the same 10 "
                               "each replay (20.0 MiB, less than the 50 MiB L2)")
