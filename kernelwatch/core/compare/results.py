"""What a comparison produces: per point, per kernel and backend, and the whole result with
its JSON, CSV and summary forms (no database: kernelwatch.core.compare.runs builds them from
stored runs)."""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pydantic
from pydantic import computed_field

from kernelwatch.core.compare.stats import (
    CONFIDENCE,
    VERDICTS,
    Verdict,
)
from kernelwatch.core.stats import percentile_interval

# --------------------------------------------------------------------------- results


@pydantic.dataclasses.dataclass
class PointComparison:
    """One series compared. A pydantic dataclass: the API answers it as it is."""

    series_key: str
    kernel: str
    backend: str
    params: dict[str, Any]
    gpu_sku: str | None
    verdict: Verdict
    threshold: float
    baseline_status: str | None = None
    contender_status: str | None = None
    baseline_error: str | None = None
    contender_error: str | None = None
    baseline_point_ids: list[int] = field(default_factory=list)
    contender_point_ids: list[int] = field(default_factory=list)
    baseline_median_us: float | None = None
    contender_median_us: float | None = None
    n_baseline: int = 0
    n_contender: int = 0
    ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    # Why a point measured on both sides is not compared (e.g. by two timing methods).
    reason: str | None = None
    # A control series: code that is the same on both sides (PyTorch beside two FlashInfer
    # releases), so its change is the machine's. Compared and shown, kept out of the counts
    # and the regressions (ComparisonResult.control_counts counts it).
    control: bool = False

    @computed_field  # type: ignore[prop-decorator]
    @property
    def change_pct(self) -> float | None:
        return None if self.ratio is None else (self.ratio - 1.0) * 100.0


@dataclass
class GroupSummary:
    """Per kernel + backend (+ GPU SKU): the geometric mean of the compared points' ratios."""

    kernel: str
    backend: str
    gpu_sku: str | None
    points: int = 0
    compared: int = 0
    regressions: int = 0
    improvements: int = 0
    unchanged: int = 0
    baseline_only: int = 0
    contender_only: int = 0
    not_comparable: int = 0
    geomean_ratio: float | None = None
    geomean_ci_low: float | None = None
    geomean_ci_high: float | None = None
    worst_series_key: str | None = None
    worst_ratio: float | None = None
    worst_params: dict[str, Any] | None = None


@dataclass
class ComparisonResult:
    baseline_run_ids: list[int]
    contender_run_ids: list[int]
    baseline_label: str | None
    contender_label: str | None
    gpu_skus: list[str | None]
    threshold: float
    kernel_thresholds: dict[str, float]
    points: list[PointComparison]
    groups: list[GroupSummary]
    # What differs between the two sides' environments (core.environment), as
    # EnvDifference.as_dict(): a comparison of numbers whose meaning differs says so.
    environment_differences: list[dict[str, Any]] = field(default_factory=list)
    # Where the runs came from when they were chosen for the caller (two versions on one GPU).
    sources: dict[str, Any] | None = None

    @property
    def counts(self) -> dict[str, int]:
        """Points per verdict, controls left out."""
        return _verdict_counts(p for p in self.points if not p.control)

    @property
    def control_counts(self) -> dict[str, int]:
        """The control series' verdicts: a control that moved says the machine moved."""
        return _verdict_counts(p for p in self.points if p.control)

    @property
    def regressions(self) -> list[PointComparison]:
        return [p for p in self.points if p.verdict == Verdict.regression and not p.control]

    def summary(self) -> dict[str, Any]:
        return {
            "baseline_run_ids": self.baseline_run_ids,
            "contender_run_ids": self.contender_run_ids,
            "baseline_label": self.baseline_label,
            "contender_label": self.contender_label,
            "gpu_skus": self.gpu_skus,
            "threshold": self.threshold,
            "kernel_thresholds": self.kernel_thresholds,
            "confidence": CONFIDENCE,
            "counts": self.counts,
            "control_counts": self.control_counts,
            "groups": [asdict(g) for g in self.groups],
            "environment_differences": self.environment_differences,
            "sources": self.sources,
        }

    def to_dict(self) -> dict[str, Any]:
        out = self.summary()
        out["points"] = [{**asdict(p), "change_pct": p.change_pct} for p in self.points]
        return out

    def to_csv(self) -> str:
        cols = [
            "series_key", "kernel", "backend", "gpu_sku", "params", "verdict", "ratio", "ci_low",
            "ci_high", "change_pct", "threshold", "baseline_median_us", "contender_median_us",
            "n_baseline", "n_contender", "baseline_status", "contender_status",
        ]  # fmt: skip
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(cols)
        for p in self.points:
            row = {**asdict(p), "change_pct": p.change_pct}
            row["params"] = ";".join(f"{k}={v}" for k, v in sorted(p.params.items()))
            writer.writerow(["" if row[c] is None else row[c] for c in cols])
        return buf.getvalue()


def _verdict_counts(points: Iterable[PointComparison]) -> dict[str, int]:
    out = dict.fromkeys((v.value for v in VERDICTS), 0)
    for p in points:
        out[str(p.verdict)] += 1
    return out


def group_summaries(
    points: list[PointComparison], replicates: dict[str, np.ndarray]
) -> list[GroupSummary]:
    """Per kernel, backend and SKU: the counts of each verdict, the geometric mean of the
    compared ratios with its CI (replicate b of every point combined) and the worst point."""
    by: dict[tuple[str, str, str | None], list[PointComparison]] = defaultdict(list)
    for p in points:
        by[(p.kernel, p.backend, p.gpu_sku)].append(p)
    out = []
    for (kernel, backend, sku), pts in sorted(by.items(), key=lambda kv: str(kv[0])):
        g = GroupSummary(kernel=kernel, backend=backend, gpu_sku=sku, points=len(pts))
        for p in pts:
            attr = {
                Verdict.regression: "regressions",
                Verdict.improvement: "improvements",
                Verdict.unchanged: "unchanged",
                Verdict.baseline_only: "baseline_only",
                Verdict.contender_only: "contender_only",
                Verdict.not_comparable: "not_comparable",
            }[p.verdict]
            setattr(g, attr, getattr(g, attr) + 1)
        compared = [p for p in pts if p.ratio is not None]
        g.compared = len(compared)
        if compared:
            logs = np.log(np.array([p.ratio for p in compared], dtype=np.float64))
            g.geomean_ratio = float(math.exp(float(logs.mean())))
            reps = np.log(np.stack([replicates[p.series_key] for p in compared]))
            lo, hi = percentile_interval(np.exp(reps.mean(axis=0)))
            g.geomean_ci_low, g.geomean_ci_high = float(lo), float(hi)
            worst = max(compared, key=lambda p: p.ratio or 0.0)
            g.worst_series_key, g.worst_ratio, g.worst_params = (
                worst.series_key, worst.ratio, worst.params
            )
        out.append(g)
    return out
