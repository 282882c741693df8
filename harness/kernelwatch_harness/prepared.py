"""What a backend adapter hands the measuring loop for one point."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Prepared:
    fn: Callable[[dict[str, Any]], Any]
    """The timed call: runs the kernel on one copy of the point's input data."""
    outputs: Callable[[Any], list[torch.Tensor]]
    """Turns ``fn``'s result into per-request ``[L_q, H_qo, D_vo]`` tensors (not timed)."""
    resolved_backend: str
    plan: Callable[[], None] | None = None
    """Re-runs the wrapper's ``plan()`` (FlashInfer batch wrappers): timed on its own."""
    first_plan_seconds: float | None = None
    """Wall seconds of the first ``plan()`` (JIT compilation of the kernel module included)."""
    notes: dict[str, Any] = field(default_factory=dict)
    """Facts about the prepared call kept in the point's telemetry (torch-sdpa: the kernel
    SDPA dispatched to)."""
    generators: tuple[torch.Generator, ...] = ()
    """The random-number generators ``fn`` draws from (samplers). A CUDA graph must register
    a generator other than the device's default before it captures a call that advances it,
    or the capture fails and the point falls back to CUDA events, which time host launch
    gaps with the kernels; registered, each replay draws new numbers as eager calls do."""
