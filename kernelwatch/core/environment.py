"""A run's software and hardware environment: what makes two runs comparable, and what to say
when two numbers come from different environments.

A series (``core.series``: kernel, parameters, backend, GPU SKU, cold/warm L2, clock state)
follows one experiment across FlashInfer releases, so it leaves out the driver, torch, CUDA and
FlashInfer's cubin and JIT-cache packages, which change under it over time. They still change
what a number means: a comparison whose two sides ran on different environments names what
differs, and a series' history breaks where its environment changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Environment fields that change what a number means: two runs with the same fingerprint
# (and series key) are comparable. The GPU's uuid, a clock snapshot, paths and the Python
# build are not here: another card of the same SKU and setup is the same experiment.
FINGERPRINT_FIELDS = (
    "device", "gpu_name", "sm_count", "capability", "memory_bytes", "l2_cache_bytes",
    "driver", "power_limit_w", "max_sm_clock_mhz", "max_mem_clock_mhz", "ecc_mode", "mig_mode",
    "torch", "torch_cuda", "flashinfer", "flashinfer_cubin", "flashinfer_jit_cache",
    "cpu", "cpu_count", "torch_threads",
)

# The fingerprint's fields that a series does not pin: its GPU SKU stands for the hardware
# ones, and FlashInfer's own version is what a release comparison varies on purpose.
CONTEXT_FIELDS = (
    "driver", "torch", "torch_cuda", "flashinfer_cubin", "flashinfer_jit_cache",
    "power_limit_w", "max_sm_clock_mhz", "max_mem_clock_mhz", "ecc_mode", "mig_mode",
    "torch_threads",
)
# FlashInfer's prebuilt-kernel packages are versioned with FlashInfer itself: beside their own
# release they are the expected thing, whatever that release is.
_TIED_TO_FLASHINFER = ("flashinfer_cubin", "flashinfer_jit_cache")
SAME_AS_FLASHINFER = "same as flashinfer"


def env_fingerprint(environment: Mapping[str, Any]) -> str:
    picked = {k: environment.get(k) for k in FINGERPRINT_FIELDS if k in environment}
    blob = json.dumps(picked, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def context(environment: Mapping[str, Any] | None) -> dict[str, str | None]:
    """The context fields of one run's environment, as comparable strings (None: not
    recorded). A cubin or JIT-cache package of the run's own FlashInfer release reads
    ``SAME_AS_FLASHINFER``, so that two releases each with its own match."""
    env = environment or {}
    out: dict[str, str | None] = {}
    for field in CONTEXT_FIELDS:
        value = env.get(field)
        if value is None:
            out[field] = None
        elif field in _TIED_TO_FLASHINFER and value == env.get("flashinfer"):
            out[field] = SAME_AS_FLASHINFER
        else:
            out[field] = str(value)
    return out


@dataclass(frozen=True)
class EnvDifference:
    field: str
    baseline: tuple[str, ...]  # the values seen on that side (more than one: a mixed side)
    contender: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.field}: {' / '.join(self.baseline)} vs {' / '.join(self.contender)}"

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "baseline": list(self.baseline),
                "contender": list(self.contender), "text": self.describe()}


def _values(envs: list[dict[str, str | None]], field: str) -> tuple[str, ...]:
    return tuple(sorted({e[field] or "unrecorded" for e in envs}))


def environment_differences(
    baseline: Iterable[Mapping[str, Any] | None], contender: Iterable[Mapping[str, Any] | None]
) -> list[EnvDifference]:
    """What differs between the environments of two sets of runs, field by field: a field
    whose values are not the same single value on both sides. Fields no run recorded (a CPU
    node has no driver) are left out."""
    b = [context(e) for e in baseline]
    c = [context(e) for e in contender]
    out = []
    for field in CONTEXT_FIELDS:
        if all(e[field] is None for e in (*b, *c)):
            continue
        bv, cv = _values(b, field), _values(c, field)
        if bv != cv or len(bv) > 1:
            out.append(EnvDifference(field, bv, cv))
    return out


def environment_changed(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> list[str]:
    """The context fields that differ between two runs' environments (where a series'
    history breaks)."""
    a, b = context(before), context(after)
    return [f for f in CONTEXT_FIELDS if a[f] != b[f] and not (a[f] is None and b[f] is None)]
