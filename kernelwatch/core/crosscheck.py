"""The cross-check against FlashInfer's own benchmark: how a point and flashinfer_benchmark.py's
measurement of the same shape agree, what differed between the two when they do not, and the
counts the job and run summaries show.

A spec with ``crosscheck: true`` has the harness run the version's flashinfer_benchmark.py on
each measured point right after it (kernelwatch_harness.official); the worker stores its
message here (``store_crosscheck``), judged by ``judge``.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from kernelwatch.core.models import Crosscheck, Point
from kernelwatch_harness.protocol import CrosscheckMessage

# Two measurements of one shape agree when kernelwatch's median is within 3% of the tool's:
# the size of regression kernelwatch is asked to find, so a larger disagreement matters.
AGREE = 0.03
# Clocks read within 2% of each other are the same clock state (an H200's boost clock moves
# in 15 MHz steps around 1980 MHz; the power limiter lowers it by several %).
CLOCK_TOLERANCE = 0.02
CAUSES = ("clock", "l2", "plan_mode", "backend", "timer")


@dataclass(frozen=True)
class Judgement:
    diff_pct: float | None  # kernelwatch's median / the tool's - 1, in %
    agrees: bool | None  # None: nothing to compare
    causes: list[dict[str, str]] = field(default_factory=list)


def point_clock_mhz(telemetry: Mapping[str, Any] | None) -> float | None:
    """The SM clock kernelwatch measured at: its in-stream probe's median over the repeats,
    else NVML's reading before the first repeat."""
    t = telemetry or {}
    probes = [r["clock"]["median_mhz"] for r in t.get("repeats") or []
              if (r.get("clock") or {}).get("median_mhz")]
    if probes:
        return float(statistics.median(probes))
    nvml = (t.get("nvml_before") or {}).get("sm_clock_mhz")
    return float(nvml) if nvml else None


def differences(point: Point, msg: Mapping[str, Any], cold_l2: bool) -> list[dict[str, str]]:
    """What was measurably different between the two measurements: clock state, L2 state,
    the wrapper's plan mode, the backend that ran, or a timer without CUPTI."""
    out: list[dict[str, str]] = []
    ours, theirs = point_clock_mhz(point.telemetry), msg.get("clock_mhz")
    if ours and theirs and abs(ours / theirs - 1) > CLOCK_TOLERANCE:
        out.append({"cause": "clock", "detail": f"SM clock {ours:.0f} MHz in kernelwatch, "
                                                f"{theirs:.0f} MHz in flashinfer_benchmark.py"})
    if msg.get("cold_l2") is not None and bool(msg["cold_l2"]) != cold_l2:
        why = f": {msg['l2_detail']}" if msg.get("l2_detail") else ""
        out.append({"cause": "l2", "detail": f"L2 {'cold' if cold_l2 else 'warm'} in "
                    f"kernelwatch, {'cold' if msg['cold_l2'] else 'warm'} in the tool{why}"})
    plan = (point.params or {}).get("use_cuda_graph")
    if plan is not None and msg.get("cuda_graph_plan") is not None \
            and bool(plan) != bool(msg["cuda_graph_plan"]):
        out.append({"cause": "plan_mode", "detail": f"use_cuda_graph={str(plan).lower()} in "
                    f"kernelwatch, {str(msg['cuda_graph_plan']).lower()} in the tool"})
    mine, other = point.resolved_backend, msg.get("resolved_backend")
    if mine and other and _backend_name(mine) != _backend_name(other):
        out.append({"cause": "backend", "detail": f"kernelwatch ran {mine}, the tool {other}"})
    if msg.get("method") == "cuda_event":
        out.append({"cause": "timer", "detail": "the tool timed with CUDA events (no CUPTI): "
                                                "launch gaps are in its number"})
    return out


def _backend_name(name: str) -> str:
    # The tool calls fa2 with tensor cores "fa2_tc"; kernelwatch records fa2.
    return "fa2" if name == "fa2_tc" else name


def judge(point: Point, msg: Mapping[str, Any], cold_l2: bool) -> Judgement:
    official = msg.get("median_us")
    if msg.get("status") != "ok" or not official or point.median_us is None:
        return Judgement(None, None)
    diff = point.median_us / float(official) - 1
    agrees = abs(diff) <= AGREE
    return Judgement(round(diff * 100, 3), agrees,
                     [] if agrees else differences(point, msg, cold_l2))


def store_crosscheck(session: Session, point: Point, msg: CrosscheckMessage,
                     cold_l2: bool) -> None:
    """The tool's result for the point it followed (the harness sends a unit's point, then
    its cross-check), judged; a second result for the point replaces the first."""
    verdict = judge(point, msg, cold_l2)
    session.execute(delete(Crosscheck).where(Crosscheck.point_id == point.id))
    session.add(Crosscheck(
        point_id=point.id, status=msg["status"], error=msg.get("error"),
        command=msg.get("command"), median_us=msg.get("median_us"), std_us=msg.get("std_us"),
        method=msg.get("method"), resolved_backend=msg.get("resolved_backend"),
        cold_l2=msg.get("cold_l2"), cuda_graph_plan=msg.get("cuda_graph_plan"),
        clock_mhz=msg.get("clock_mhz"), wall_s=msg.get("wall_s"), diff_pct=verdict.diff_pct,
        agrees=verdict.agrees, causes=verdict.causes or None, row=msg.get("row")))


class CrosscheckCounts(BaseModel):
    """How many points were cross-checked, and how they came out."""

    checked: int = 0  # compared: agree + disagree
    agree: int = 0
    disagree: int = 0
    unavailable: int = 0  # no command for the point, no GPU, no script
    error: int = 0  # the tool ran and failed

    def describe(self) -> str:
        """In a few words: "9 of 10 within 3% (2 unavailable)"."""
        text = f"{self.agree} of {self.checked} within {AGREE:.0%}"
        more = [f"{n} {k}" for k, n in (("unavailable", self.unavailable),
                                          ("errored", self.error)) if n]
        return text + (f" ({', '.join(more)})" if more else "")

    def add(self, status: str, agrees: bool | None, n: int) -> None:
        if status == "ok" and agrees is not None:
            self.checked += n
            if agrees:
                self.agree += n
            else:
                self.disagree += n
        elif status == "error":
            self.error += n
        else:
            self.unavailable += n


def counts_by_run(session: Session, run_ids: Iterable[int]) -> dict[int, CrosscheckCounts]:
    """Per run, its points' cross-check counts (runs without any are left out)."""
    ids = list(run_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(Point.run_id, Crosscheck.status, Crosscheck.agrees, func.count())
        .join(Crosscheck, Crosscheck.point_id == Point.id)
        .where(Point.run_id.in_(ids))
        .group_by(Point.run_id, Crosscheck.status, Crosscheck.agrees))
    out: dict[int, CrosscheckCounts] = {}
    for run_id, status, agrees, n in rows:
        out.setdefault(run_id, CrosscheckCounts()).add(status, agrees, n)
    return out


def total(counts: Iterable[CrosscheckCounts]) -> CrosscheckCounts | None:
    """The sum of runs' counts; None when no run has any."""
    items = list(counts)
    if not items:
        return None
    out = CrosscheckCounts()
    for c in items:
        for name in CrosscheckCounts.model_fields:
            setattr(out, name, getattr(out, name) + getattr(c, name))
    return out
