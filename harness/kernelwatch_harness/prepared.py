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
