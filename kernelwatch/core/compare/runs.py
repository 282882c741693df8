"""Comparisons of stored runs: reading the runs' points and samples from the database,
comparing them series by series (kernelwatch.core.compare.stats), and storing the result as a
Comparison with its open Regressions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernelwatch.core.compare.results import (
    ComparisonResult,
    PointComparison,
    group_summaries,
)
from kernelwatch.core.compare.stats import (
    CONFIDENCE,
    DEFAULT_THRESHOLD,
    RESAMPLES,
    PointSamples,
    Verdict,
    compare_with_replicates,
    pool_samples,
)
from kernelwatch.core.environment import environment_differences
from kernelwatch.core.errors import NotFound
from kernelwatch.core.models import (
    Comparison,
    JobStatus,
    Point,
    PointStatus,
    Regression,
    RegressionState,
    Run,
    Sample,
)
from kernelwatch_harness.catalogue import TORCH_BACKENDS


def release_controls(gpu: bool) -> frozenset[str]:
    """The backends compared as controls when two FlashInfer releases are compared on one
    node: on a GPU the PyTorch points run the same code beside both releases, so their change
    is the node's (a CUDA-event-timed torch sampler moved 2x between two harness processes on
    an H100), never a release's regression or improvement. A CPU node measures only them:
    there they are what is compared."""
    return frozenset(TORCH_BACKENDS) if gpu else frozenset()


class UnknownRunsError(NotFound):
    """Some run ids do not exist (the API answers 404 naming them)."""

    def __init__(self, side: str, run_ids: Sequence[int]) -> None:
        self.side = side
        self.run_ids = list(run_ids)
        super().__init__(f"{side}: unknown run id(s) {', '.join(map(str, run_ids))}")


# --------------------------------------------------------------------------- from the database


@dataclass
class _Side:
    points: list[Point] = field(default_factory=list)

    def ok_samples(self, samples: PointSamples) -> tuple[np.ndarray, np.ndarray]:
        return pool_samples([p.id for p in self.points if p.status == PointStatus.ok], samples)

    def status(self) -> str | None:
        """ok when every run measured it ok; otherwise the first non-ok status."""
        bad = [p.status for p in self.points if p.status != PointStatus.ok]
        return bad[0] if bad else (PointStatus.ok.value if self.points else None)

    def error(self) -> str | None:
        return next((p.error for p in self.points if p.error), None)

    def timing_methods(self) -> set[str]:
        return {str(p.timing_method) for p in self.points
                if p.status == PointStatus.ok and p.timing_method}


def _load_runs(session: Session, run_ids: Sequence[int], side: str) -> list[Run]:
    ids = list(dict.fromkeys(int(r) for r in run_ids))
    if not ids:
        raise ValueError(f"{side}: at least one run id is required")
    runs = session.scalars(select(Run).where(Run.id.in_(ids))).all()
    missing = sorted(set(ids) - {r.id for r in runs})
    if missing:
        raise UnknownRunsError(side, missing)
    return list(runs)


def load_samples(session: Session, point_ids: Sequence[int]) -> PointSamples:
    out: PointSamples = defaultdict(list)
    ids = list(point_ids)
    for start in range(0, len(ids), 5000):  # bounded IN lists
        rows = session.execute(
            select(Sample.point_id, Sample.latency_us, Sample.repeat)
            .where(Sample.point_id.in_(ids[start : start + 5000]))
            .order_by(Sample.point_id, Sample.iteration)
        ).all()
        for pid, v, rep in rows:
            out[int(pid)].append((float(v), int(rep or 0)))
    return out


def run_label(runs: Sequence[Run]) -> str | None:
    versions = sorted({r.flashinfer_version or "torch" for r in runs})
    return ",".join(versions) if versions else None


def compare_runs(
    session: Session,
    baseline_run_ids: Sequence[int],
    contender_run_ids: Sequence[int],
    threshold: float = DEFAULT_THRESHOLD,
    kernel_thresholds: dict[str, float] | None = None,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    controls: Collection[str] = (),
) -> ComparisonResult:
    """Compare the points of the contender runs with those of the baseline runs. Points are
    matched by series key; a series measured by several runs of one side pools their samples.
    Series of a backend in ``controls`` are compared as controls (``PointComparison.control``):
    the release flow's PyTorch points, the same code beside two FlashInfer releases."""
    if not (0 <= threshold < 1):
        raise ValueError(f"threshold: {threshold!r} must be in [0, 1), e.g. 0.03 for 3%")
    kernel_thresholds = dict(kernel_thresholds or {})
    base_runs = _load_runs(session, baseline_run_ids, "baseline")
    cont_runs = _load_runs(session, contender_run_ids, "contender")
    sides: dict[str, dict[str, _Side]] = {"b": defaultdict(_Side), "c": defaultdict(_Side)}
    for key, runs in (("b", base_runs), ("c", cont_runs)):
        pts = session.scalars(
            select(Point).where(Point.run_id.in_([r.id for r in runs])).order_by(Point.id)
        ).all()
        for p in pts:
            sides[key][p.series_key].points.append(p)
    ok_ids = [
        p.id
        for side in sides.values()
        for s in side.values()
        for p in s.points
        if p.status == PointStatus.ok
    ]
    samples = load_samples(session, ok_ids)

    keys = list(dict.fromkeys([*sides["b"], *sides["c"]]))
    points: list[PointComparison] = []
    replicates: dict[str, np.ndarray] = {}
    for i, key in enumerate(keys):
        b, c = sides["b"].get(key), sides["c"].get(key)
        ref = (b or c).points[0]  # type: ignore[union-attr]
        t = kernel_thresholds.get(ref.kernel, threshold)
        pc = PointComparison(
            series_key=key,
            kernel=ref.kernel,
            backend=ref.backend,
            params=dict(ref.params),
            gpu_sku=ref.gpu_sku,
            verdict=Verdict.unchanged,
            threshold=t,
            control=ref.backend in controls,
        )
        if b is not None:
            pc.baseline_status, pc.baseline_error = b.status(), b.error()
            pc.baseline_point_ids = [p.id for p in b.points]
        if c is not None:
            pc.contender_status, pc.contender_error = c.status(), c.error()
            pc.contender_point_ids = [p.id for p in c.points]
        if b is None or c is None:
            pc.verdict = Verdict.contender_only if b is None else Verdict.baseline_only
            points.append(pc)
            continue
        (bs, bg), (cs, cg) = b.ok_samples(samples), c.ok_samples(samples)
        pc.n_baseline, pc.n_contender = int(bs.size), int(cs.size)
        if bs.size:
            pc.baseline_median_us = float(np.median(bs))
        if cs.size:
            pc.contender_median_us = float(np.median(cs))
        ok = pc.baseline_status == PointStatus.ok and pc.contender_status == PointStatus.ok
        # A non-positive latency is a broken measurement, not a speedup: never compared.
        if not ok or bs.size < 2 or cs.size < 2 or np.any(bs <= 0) or np.any(cs <= 0):
            pc.verdict = Verdict.not_comparable
            points.append(pc)
            continue
        # A timing method changes what a number means (CUPTI times kernels alone, graph
        # replay times calls back to back): two methods are never compared.
        methods = (b.timing_methods(), c.timing_methods())
        if len(methods[0] | methods[1]) > 1:
            pc.verdict = Verdict.not_comparable
            pc.reason = ("timing methods differ: " + " / ".join(sorted(methods[0])) + " vs "
                         + " / ".join(sorted(methods[1])))
            points.append(pc)
            continue
        # A per-point seed derived from the position keeps replicates independent between
        # points (the geometric mean's CI needs that) and the whole result reproducible.
        est, reps = compare_with_replicates(
            bs, cs, t, resamples, seed + i, CONFIDENCE, bg, cg
        )
        pc.ratio, pc.ci_low, pc.ci_high, pc.verdict = (
            est.ratio, est.ci_low, est.ci_high, est.verdict
        )
        replicates[key] = reps
        points.append(pc)

    groups = group_summaries(points, replicates)
    skus = sorted({r.gpu_sku for r in [*base_runs, *cont_runs]}, key=lambda s: s or "")
    return ComparisonResult(
        baseline_run_ids=[r.id for r in base_runs],
        contender_run_ids=[r.id for r in cont_runs],
        baseline_label=run_label(base_runs),
        contender_label=run_label(cont_runs),
        gpu_skus=list(skus),
        threshold=threshold,
        kernel_thresholds=kernel_thresholds,
        points=points,
        groups=groups,
        environment_differences=[
            d.as_dict() for d in environment_differences(
                [r.environment for r in base_runs], [r.environment for r in cont_runs])
        ],
    )


def persist_comparison(
    session: Session,
    result: ComparisonResult,
    labels: tuple[str | None, str | None] | None = None,
    release_id: int | None = None,
) -> Comparison:
    """Store the comparison (its full result in ``summary``) and one open Regression per
    regressed point. The caller commits."""
    base_label, cont_label = labels or (result.baseline_label, result.contender_label)
    skus = [s for s in result.gpu_skus if s]
    comparison = Comparison(
        baseline_run_ids=result.baseline_run_ids,
        contender_run_ids=result.contender_run_ids,
        baseline_label=base_label,
        contender_label=cont_label,
        gpu_sku=skus[0] if len(skus) == 1 else (",".join(skus) or "cpu"),
        release_id=release_id,
        threshold=result.threshold,
        summary=result.to_dict(),
    )
    session.add(comparison)
    session.flush()
    for p in result.regressions:
        assert p.ratio is not None and p.ci_low is not None and p.ci_high is not None
        session.add(
            Regression(
                comparison_id=comparison.id,
                series_key=p.series_key,
                kernel=p.kernel,
                backend=p.backend,
                params=p.params,
                gpu_sku=p.gpu_sku,
                baseline_version=base_label,
                contender_version=cont_label,
                ratio=p.ratio,
                ci_low=p.ci_low,
                ci_high=p.ci_high,
                state=RegressionState.open,
            )
        )
    session.flush()
    return comparison


# --------------------------------------------------------------------------- release pairs


def release_pair_runs(session: Session, gpu_sku: str | None, baseline_version: str,
                      contender_version: str) -> tuple[list[int], list[int]]:
    """The runs to compare two FlashInfer versions on one GPU (None: CPU): every finished run
    of each version there, from every job that measured it. Points are matched by series and
    a series measured by several runs of one side pools their samples, so every series
    measured with both versions is compared, not only the latest job's."""
    sku_cond = Run.gpu_sku.is_(None) if gpu_sku is None else Run.gpu_sku == gpu_sku
    rows = session.execute(
        select(Run.id, Run.flashinfer_version)
        .where(sku_cond, Run.flashinfer_version.in_([baseline_version, contender_version]),
               Run.status.in_([JobStatus.succeeded, JobStatus.partial]))
        .order_by(Run.id)
    ).all()
    b = [int(r) for r, v in rows if v == baseline_version]
    c = [int(r) for r, v in rows if v == contender_version]
    return (b, c) if b and c else ([], [])


def jobs_of_runs(session: Session, run_ids: Sequence[int]) -> int:
    """How many jobs these runs come from."""
    ids = list(run_ids)
    if not ids:
        return 0
    return int(session.scalar(select(func.count(func.distinct(Run.job_id)))
                              .where(Run.id.in_(ids))) or 0)


def compare_release_pair(session: Session, gpu_sku: str | None, baseline_version: str,
                         contender_version: str, **options: Any) -> ComparisonResult:
    """Two versions on one GPU, compared over everything measured (``release_pair_runs``); the
    result says how many series came from how many jobs, pooled. On a GPU the PyTorch series
    are controls, as in the release flow (``release_controls``)."""
    b, c = release_pair_runs(session, gpu_sku, baseline_version, contender_version)
    if not b:
        where = gpu_sku or "cpu"
        raise NotFound(f"no finished runs of both {baseline_version} and {contender_version} "
                       f"on {where}")
    options.setdefault("controls", release_controls(gpu_sku is not None))
    result = compare_runs(session, b, c, **options)
    result.sources = {"gpu_sku": gpu_sku, "baseline_version": baseline_version,
                      "contender_version": contender_version,
                      "jobs": jobs_of_runs(session, [*b, *c]), "series": len(result.points),
                      "runs": len(b) + len(c),
                      "how": "every finished run of each version on the GPU; a series measured "
                             "by several runs of one version pools their samples"}
    return result
