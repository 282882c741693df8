"""Comparing a contender with a baseline, point by point, from the raw samples.

    stats    the statistics, without a database: ratios of medians, bootstrap CIs, verdicts
    results  what a comparison produces (per point, per kernel and backend, the whole result)
    runs     comparing stored runs and storing the result (Comparison, Regression rows)

The names most callers need are importable from here.
"""

from kernelwatch.core.compare.results import ComparisonResult, GroupSummary, PointComparison
from kernelwatch.core.compare.runs import (
    UnknownRunsError,
    compare_runs,
    load_samples,
    persist_comparison,
    run_label,
)
from kernelwatch.core.compare.stats import (
    BASELINE_ONLY,
    CONFIDENCE,
    CONTENDER_ONLY,
    DEFAULT_THRESHOLD,
    IMPROVEMENT,
    NOT_COMPARABLE,
    REGRESSION,
    RESAMPLES,
    UNCHANGED,
    VERDICTS,
    RatioEstimate,
    Verdict,
    bootstrap_ratio_replicates,
    compare_paired,
    compare_samples,
    pool_samples,
    verdict_for,
    verdicts_batch,
)

__all__ = [
    "BASELINE_ONLY", "CONFIDENCE", "CONTENDER_ONLY", "DEFAULT_THRESHOLD", "IMPROVEMENT",
    "NOT_COMPARABLE", "REGRESSION", "RESAMPLES", "UNCHANGED", "VERDICTS", "ComparisonResult",
    "GroupSummary", "PointComparison", "RatioEstimate", "UnknownRunsError", "Verdict",
    "bootstrap_ratio_replicates", "compare_paired", "compare_runs", "compare_samples",
    "load_samples", "persist_comparison", "pool_samples", "run_label",
    "verdict_for", "verdicts_batch",
]
