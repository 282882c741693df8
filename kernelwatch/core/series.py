"""Series identity: what makes two points comparable across runs and releases.

kernel + completed parameters + backend + GPU SKU + the measurement conditions that change the
number: cold or warm L2, and the clock the samples were kept at ("boost" when the harness's
clock floor retook every sample taken under the boost clock; heavy calls run several %
slower under the power limiter, so a release measured that way never meets one that kept
every sample). Points measured before the floor existed carry no clock and keep their keys.
The FlashInfer version is deliberately *not* part of it: a series is what one follows from
release to release. The parameters are those completed for the point's backend
(``catalogue.complete_params``): where backends' defaults differ, so do their series.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ClockSummary:
    """A point's clock, from its repeats' probe telemetry (kernelwatch_harness/measure.py)."""

    median_mhz: float | None  # of every kept sample's probe reading
    floored: bool  # samples were held to the clock floor (timing.clock_floor > 0)
    discarded: int  # samples taken under the floor and retaken
    floor_met: bool  # False: samples under the floor had to be kept (flagged throttled)


def clock_summary(telemetry: dict[str, Any] | None) -> ClockSummary | None:
    """None for points measured without the probe (CPU, CUPTI, before it existed)."""
    reps = [r.get("clock") for r in (telemetry or {}).get("repeats") or []]
    clocks = [c for c in reps if c]
    if not clocks:
        return None
    mhz = sorted(x for c in clocks for x in c.get("samples_mhz") or [])
    return ClockSummary(
        median_mhz=mhz[len(mhz) // 2] if mhz else None,
        floored=any(c.get("floor_mhz") for c in clocks),
        discarded=sum(int(c.get("discarded") or 0) for c in clocks),
        floor_met=all(c.get("floor_met", True) for c in clocks),
    )


def clock_state(message: Mapping[str, Any]) -> str | None:
    """"boost" for a harness point message whose samples were kept under the clock floor
    (the message says so, or, in raw files written before it did, its repeats' telemetry);
    "sustained" for one measured at the sustained clock (timing.clock)."""
    if message.get("clock_mode") == "sustained":
        return "sustained"
    if message.get("clock_floor"):
        return "boost"
    clock = clock_summary(message.get("telemetry"))
    return "boost" if clock is not None and clock.floored else None


def series_key(
    kernel: str,
    params: dict[str, Any],
    backend: str,
    gpu_sku: str | None,
    cold_l2: bool = True,
    clock: str | None = None,
) -> str:
    identity: dict[str, Any] = {
        "kernel": kernel,
        "params": params,
        "backend": backend,
        "gpu_sku": gpu_sku or "cpu",
        "cold_l2": cold_l2,
    }
    if clock:  # absent, not null, so keys made before the clock floor existed stay the same
        identity["clock"] = clock
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def rekey(
    kernel: str, old_params: dict[str, Any], new_params: dict[str, Any], backend: str,
    gpu_sku: str | None, old_key: str,
) -> str | None:
    """The key of a stored point whose parameters gain values (``with_legacy_values``): the
    measurement conditions that made its key are not stored with it, so the one combination
    that reproduces ``old_key`` is found and kept. None when none does (the point keeps its
    key and parameters: nothing is guessed)."""
    for cold_l2 in (True, False):
        for clock in (None, "boost"):
            if series_key(kernel, old_params, backend, gpu_sku, cold_l2, clock) == old_key:
                return series_key(kernel, new_params, backend, gpu_sku, cold_l2, clock)
    return None
