"""Reading stored comparisons back, for every page that shows one (compare, release): a
``Comparison.summary`` holds ``ComparisonResult.to_dict()``."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from kernelwatch.core.compare import ComparisonResult, GroupSummary, PointComparison


def result_from_summary(summary: dict[str, Any]) -> ComparisonResult | None:
    """A stored comparison's result (``Comparison.summary`` holds ``to_dict()``), or None when
    it was stored in another shape."""
    try:
        point_fields = {f.name for f in fields(PointComparison)}
        group_fields = {f.name for f in fields(GroupSummary)}
        return ComparisonResult(
            baseline_run_ids=list(summary["baseline_run_ids"]),
            contender_run_ids=list(summary["contender_run_ids"]),
            baseline_label=summary.get("baseline_label"),
            contender_label=summary.get("contender_label"),
            gpu_skus=list(summary.get("gpu_skus") or []),
            threshold=float(summary["threshold"]),
            kernel_thresholds=dict(summary.get("kernel_thresholds") or {}),
            points=[PointComparison(**{k: v for k, v in p.items() if k in point_fields})
                    for p in summary["points"]],
            groups=[GroupSummary(**{k: v for k, v in g.items() if k in group_fields})
                    for g in summary["groups"]],
        )
    except (KeyError, TypeError, ValueError):
        return None


def varying_params(points: list[Any]) -> list[str]:
    """The parameters that differ between the compared points (what a row needs to name)."""
    if not points:
        return []
    keys = list(points[0].params)
    return [k for k in keys if len({json.dumps(p.params.get(k)) for p in points}) > 1]
