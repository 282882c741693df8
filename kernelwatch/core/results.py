"""Storing what the harness measured: one point row with its statistics and derived
metrics, and every raw sample, written in bulk in the same transaction so a point is
never stored without its samples."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from kernelwatch.core import gpus
from kernelwatch.core.models import Point, PointStatus, Run, Sample
from kernelwatch.core.series import clock_state, series_key
from kernelwatch.core.stats import bootstrap_median_ci, repeat_labels, summarize
from kernelwatch_harness.catalogue import work as point_work
from kernelwatch_harness.protocol import PointMessage


def stored_point_keys(session: Session, run_id: int) -> set[tuple[int, str]]:
    """(point_index, backend) pairs already stored for a run: a resumed run skips them."""
    rows = session.execute(
        select(Point.point_index, Point.backend).where(Point.run_id == run_id)
    ).all()
    return {(int(i), str(b)) for i, b in rows}


def derived_metrics(
    kernel: str,
    params: dict[str, Any],
    median_us: float | None,
    gpu_sku: str | None,
) -> dict[str, float | None]:
    work = point_work(kernel, params)
    out: dict[str, float | None] = {
        "bytes": work["bytes"],
        "flops": work["flops"],
        "tbps": None,
        "tflops": None,
        "pct_peak_bw": None,
        "pct_peak_flops": None,
    }
    if median_us and median_us > 0:
        seconds = median_us * 1e-6
        tbps = work["bytes"] / seconds / 1e12
        tflops = work["flops"] / seconds / 1e12
        out["tbps"], out["tflops"] = tbps, tflops
        sku = gpus.sku_by_tag(gpu_sku)
        if sku:
            out["pct_peak_bw"] = 100.0 * tbps / sku.peak_tbps
            out["pct_peak_flops"] = 100.0 * tflops / sku.peak_tflops_16bit
    return out


def store_point(
    session: Session,
    run: Run,
    kernel: str,
    params: dict[str, Any],
    message: PointMessage,
    cold_l2: bool = True,
) -> Point:
    """Insert one harness ``point`` message (``kernelwatch_harness.protocol``) and its samples.
    The caller commits; one commit per point keeps a crash from losing more than one point."""
    samples = [float(x) for x in message.get("samples_us") or []]
    repeats = repeat_labels(message.get("repeat_sizes"), len(samples))
    status = message.get("status", PointStatus.error)
    summary = summarize(samples, repeats) if samples else None
    median = summary.median if summary else None
    metrics = derived_metrics(kernel, params, median if status == PointStatus.ok else None,
                              run.gpu_sku)
    backend = str(message["backend"])
    point = Point(
        run_id=run.id,
        job_id=run.job_id,
        point_index=int(message["point_index"]),
        kernel=kernel,
        backend=backend,
        resolved_backend=message.get("resolved_backend"),
        params=params,
        series_key=series_key(kernel, params, backend, run.gpu_sku, cold_l2,
                              clock_state(message)),
        gpu_sku=run.gpu_sku,
        flashinfer_version=run.flashinfer_version,
        status=status,
        error=message.get("error"),
        timing_method=message.get("timing_method"),
        jit_seconds=message.get("jit_seconds"),
        plan_seconds=message.get("plan_seconds"),
        n_samples=len(samples),
        median_us=median,
        mean_us=summary.mean if summary else None,
        p10_us=summary.p10 if summary else None,
        p90_us=summary.p90 if summary else None,
        cv=summary.cv if summary else None,
        ci_low_us=summary.ci_low if summary else None,
        ci_high_us=summary.ci_high if summary else None,
        max_abs_error=message.get("max_abs_error"),
        peak_memory_bytes=message.get("peak_memory_bytes"),
        throttled=bool(message.get("throttled", False)),
        telemetry=message.get("telemetry"),
        **metrics,
    )
    session.add(point)
    session.flush()
    if samples:
        session.execute(
            insert(Sample),
            [
                {"point_id": point.id, "iteration": i, "latency_us": v, "repeat": r}
                for i, (v, r) in enumerate(zip(samples, repeats, strict=True))
            ],
        )
    return point


# --------------------------------------------------------------------------- stored CIs


def _stored_samples(
    conn: sa.Connection, repeated_only: bool
) -> Iterator[tuple[int, list[float], list[int]]]:
    """(point id, samples, repeats) of every stored point with samples (``repeated_only``:
    whose samples span several repeats), streamed in point order so that a large database is
    not read into memory at once."""
    where = (" WHERE point_id IN (SELECT point_id FROM samples GROUP BY point_id"
             " HAVING COUNT(DISTINCT repeat) > 1)") if repeated_only else ""
    rows = conn.execute(
        sa.text(f"SELECT point_id, latency_us, repeat FROM samples{where}"
                " ORDER BY point_id, iteration"),
        execution_options={"stream_results": True, "yield_per": 10_000},
    )
    current: int | None = None
    values: list[float] = []
    repeats: list[int] = []
    for point_id, latency, repeat in rows:
        if point_id != current:
            if current is not None:
                yield current, values, repeats
            current, values, repeats = point_id, [], []
        values.append(float(latency))
        repeats.append(int(repeat))
    if current is not None:
        yield current, values, repeats


def recompute_stored_cis(conn: sa.Connection, repeated_only: bool = False,
                         batch: int = 500) -> int:
    """Give stored points the CI the current method computes from their samples (what a
    migration does when the method changes). Returns the points updated."""
    update = sa.text("UPDATE points SET ci_low_us = :lo, ci_high_us = :hi WHERE id = :id")
    # Read to the end before writing: the read streams through a server-side cursor.
    todo = [
        {"id": pid, "lo": lo, "hi": hi}
        for pid, values, repeats in _stored_samples(conn, repeated_only)
        for lo, hi in [bootstrap_median_ci(values, repeats=repeats)]
    ]
    for i in range(0, len(todo), batch):
        conn.execute(update, todo[i : i + batch])
    return len(todo)
