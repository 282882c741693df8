"""Whether flashinfer_benchmark.py's own timer measured a cross-checked call with a cold L2.

The tool asks for a cold L2 by default, but what it gets depends on its timer:

- CUPTI, and CUDA events without a graph, clear the L2 before every timed call: cold.
- In CUDA-graph mode (its default when CUPTI is missing) FlashInfer 0.6 and later capture
  ``num_iters_within_graph`` calls (10) that cycle over copies of the tensors the routine
  handed to the timer (``input_args``/``input_kwargs``), and replay that graph. The copies it
  makes are enough to exceed the L2 (``calculate_rotation_count``), but one replay only reads
  the first ten of them, and every replay reads the same ten. When those ten copies fit in
  the L2 together, every call after the first replay finds its inputs in L2: warm.
- FlashInfer 0.5's graph mode clears the L2 once per replay, then runs ten calls on the same
  inputs: nine of the ten find them in L2 when they fit.

Tensors a routine's call closes over instead of handing them to the timer are never rotated;
they are not counted here (they can only make the tool's L2 warmer).

``TimerSpy`` stands in for the tool's ``bench_gpu_time`` while a cross-check runs: it reads the
call's arguments, then runs FlashInfer's own timer unchanged. ``l2_state`` turns what it read,
the timer that actually ran and the GPU's L2 size into the cold/warm verdict and its reason.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MIB = 1 << 20
# FlashInfer's bench_gpu_time default: kernel calls captured in one CUDA graph
DEFAULT_CALLS_PER_REPLAY = 10


@dataclass(frozen=True)
class TimerCall:
    """What the tool's routine asked its timer for, and the inputs it handed over."""

    cold_requested: bool
    input_bytes: int  # one set of the tensors handed to the timer
    copies: int  # input sets its CUDA graph cycles over (1: no rotation)
    calls_per_replay: int
    rotates: bool  # the version's graph timer rotates copies (0.6+); else it clears the L2
    #                once per replay


def _tensors(obj: Any) -> list[Any]:
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _tensors(item)]
    return []


def observe(timer: Callable[..., Any], utils: Any, fn: Any, args: tuple[Any, ...],
            kwargs: dict[str, Any]) -> TimerCall:
    """The call ``bench_gpu_time(fn, *args, **kwargs)`` as the version's ``timer`` reads it,
    its defaults filled in; the copies from the version's own ``calculate_rotation_count``."""
    sig = inspect.signature(timer)
    bound = sig.bind(fn, *args, **kwargs)
    bound.apply_defaults()
    p = dict(bound.arguments)
    for name, param in sig.parameters.items():  # a timer's **options, read as its own
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            p.update(p.pop(name, {}))
    # 0.6+: cold_l2_cache, with the deprecated l2_flush still winning when given; 0.5: l2_flush
    flush = p.get("l2_flush")
    cold = bool(flush if flush is not None else p.get("cold_l2_cache", True))
    # the tensors the version's timer itself rotates (its own helper: the GPU ones), else all
    extract = getattr(utils, "_extract_gpu_tensors", _tensors)
    inputs = list(extract(p.get("input_args") or ())) + list(extract(p.get("input_kwargs") or {}))
    nbytes = sum(t.numel() * t.element_size() for t in inputs)
    rotates = hasattr(utils, "calculate_rotation_count")
    copies = 1
    if rotates and cold and inputs:
        copies = int(utils.calculate_rotation_count(inputs, inputs[0].device))
    calls = int(p.get("num_iters_within_graph") or DEFAULT_CALLS_PER_REPLAY)
    return TimerCall(cold, nbytes, copies, calls, rotates)


def l2_state(method: str | None, call: TimerCall | None,
             l2_bytes: int) -> tuple[bool | None, str]:
    """(cold, why) for the tool's measurement timed by ``method`` (cupti | cuda_graph |
    cuda_event); cold is None when the timer's call was not seen."""
    if call is None:
        return None, "the tool's timer call was not seen"
    if not call.cold_requested:
        return False, "the tool ran with its L2 left warm (cold_l2_cache off)"
    if method != "cuda_graph":
        return True, f"the tool ({method}) clears the L2 before each call"
    n, mib, l2 = call.calls_per_replay, call.input_bytes / MIB, l2_bytes / MIB
    if not call.rotates:
        if not call.input_bytes:
            return None, (f"the tool's CUDA graph clears the L2 once per replay of {n} calls "
                          f"on the same inputs, whose size its timer is not told")
        cold = call.input_bytes > l2_bytes
        return cold, (f"the tool's CUDA graph clears the L2 once per replay of {n} calls on "
                      f"the same inputs ({mib:.1f} MiB, {'more' if cold else 'less'} than the "
                      f"{l2:.0f} MiB L2)")
    if not call.input_bytes:
        return False, ("the tool's CUDA graph replays its calls on one set of inputs: the "
                       "routine handed its timer no tensors to rotate")
    if call.copies <= 1:
        return True, (f"the tool's inputs ({mib:.1f} MiB) exceed the {l2:.0f} MiB L2 so far "
                      f"that it does not rotate them")
    read = min(call.copies, n)
    cycled = read * call.input_bytes
    cold = cycled > l2_bytes
    return cold, (f"the tool's CUDA graph replays {n} calls over {read} of its {call.copies} "
                  f"input copies, the same {read} each replay ({cycled / MIB:.1f} MiB, "
                  f"{'more' if cold else 'less'} than the {l2:.0f} MiB L2)")


class TimerSpy:
    """The version's ``bench_gpu_time``, unchanged, that keeps what each call asked for."""

    def __init__(self, timer: Callable[..., Any], utils: Any) -> None:
        self.timer, self.utils = timer, utils
        self.calls: list[TimerCall | None] = []

    def __call__(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            self.calls.append(observe(self.timer, self.utils, fn, args, kwargs))
        except Exception:  # reading the call must never change the tool's run
            self.calls.append(None)
        return self.timer(fn, *args, **kwargs)

    @property
    def last(self) -> TimerCall | None:
        return self.calls[-1] if self.calls else None
