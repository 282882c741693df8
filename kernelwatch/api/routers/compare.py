"""``GET /v1/compare``: a contender's runs against a baseline's, point by point (JSON or CSV),
and ``GET /v1/series/{key}/history``: a series across releases with its change points."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from kernelwatch.api.deps import MAX_ROW_ID, ReadAccess, SessionDep
from kernelwatch.api.errors import CSV_OR_JSON_RESPONSES, ERROR_RESPONSES
from kernelwatch.api.schemas import ComparisonOut
from kernelwatch.core.compare.runs import compare_release_pair, compare_runs
from kernelwatch.core.compare.stats import DEFAULT_THRESHOLD
from kernelwatch.core.errors import InvalidInput, NotFound
from kernelwatch.core.history import SeriesHistory, series_history

router = APIRouter(tags=["regressions"])


def bad_query(name: str, msg: str) -> InvalidInput:
    return InvalidInput([name], f"{name}: {msg}", where="query")


def parse_run_ids(name: str, raw: str) -> list[int]:
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts:
        raise bad_query(name, "at least one run id is required, e.g. 12 or 12,13")
    try:
        ids = [int(p) for p in parts]
    except ValueError:
        raise bad_query(name, f"{raw!r} is not a comma-separated list of run ids, e.g. 12,13"
                        ) from None
    if any(not 0 < i <= MAX_ROW_ID for i in ids):
        raise bad_query(name, f"run ids are integers from 1 to {MAX_ROW_ID}")
    return ids


def parse_threshold(name: str, value: float) -> float:
    if not (0.0 <= value < 1.0):
        raise bad_query(name, f"{value!r} is out of range; allowed: 0 <= threshold < 1 "
                        "(0.03 means 3%)")
    return value


def parse_kernel_thresholds(raw: str | None) -> dict[str, float]:
    from kernelwatch_harness.catalogue import KERNELS

    out: dict[str, float] = {}
    for part in (raw or "").split(","):
        if not part.strip():
            continue
        kernel, sep, value = part.partition(":")
        kernel = kernel.strip()
        if not sep or kernel not in KERNELS:
            raise bad_query("kernel_thresholds", f"{part!r}: expected KERNEL:THRESHOLD with "
                            f"KERNEL one of {', '.join(KERNELS)}")
        try:
            out[kernel] = parse_threshold("kernel_thresholds", float(value))
        except ValueError:
            raise bad_query("kernel_thresholds", f"{value!r} is not a number") from None
    return out


@router.get("/v1/compare", response_model=ComparisonOut,
            responses=CSV_OR_JSON_RESPONSES)
def compare(
    session: SessionDep,
    _: ReadAccess,
    baseline: str | None = Query(None, description="baseline run id(s), comma-separated"),
    contender: str | None = Query(None, description="contender run id(s), comma-separated"),
    gpu: str | None = Query(None, description="with from/to instead of run ids: the GPU SKU "
                            "tag (cpu for CPU runs); every finished run of each version there"),
    from_version: str | None = Query(None, alias="from", description="baseline version"),
    to_version: str | None = Query(None, alias="to", description="contender version"),
    threshold: float = Query(DEFAULT_THRESHOLD, description="relative change that matters"),
    kernel_thresholds: str | None = Query(
        None, description="per-kernel thresholds, e.g. batch_decode:0.05,single_decode:0.02"),
    format: str = Query("json", description="json or csv"),
) -> Any:
    """Per point: ratio of medians contender/baseline with its 95% bootstrap CI and a verdict
    (regression / improvement / unchanged need a significant change beyond the threshold);
    points on one side only and points not ok are listed with their statuses; per kernel and
    backend: geometric mean of the ratios with its CI and the worst point."""
    if format not in ("json", "csv"):
        raise bad_query("format", f"{format!r} is not allowed; allowed: json, csv")
    t = parse_threshold("threshold", threshold)
    kt = parse_kernel_thresholds(kernel_thresholds)
    if baseline is None and contender is None and gpu and from_version and to_version:
        result = compare_release_pair(session, None if gpu == "cpu" else gpu, from_version,
                                      to_version, threshold=t, kernel_thresholds=kt)
    else:
        for name, value in (("baseline", baseline), ("contender", contender)):
            if value is None:
                raise bad_query(name, "is required: run ids (baseline, contender), or gpu, "
                                      "from and to for two versions on one GPU")
        b = parse_run_ids("baseline", str(baseline))
        c = parse_run_ids("contender", str(contender))
        result = compare_runs(session, b, c, threshold=t, kernel_thresholds=kt)
    if format == "csv":
        return Response(result.to_csv(), media_type="text/csv",
                        headers={"Content-Disposition": "attachment; filename=compare.csv"})
    return result.to_dict()


@router.get("/v1/series/{series_key}/history", response_model=SeriesHistory,
            responses={404: ERROR_RESPONSES[404]})
def history(
    series_key: str, session: SessionDep, _: ReadAccess,
    threshold: float = Query(DEFAULT_THRESHOLD),
) -> dict[str, Any]:
    """The series' value per release (median of the ok points' medians, ordered by version)
    with the change points (PELT) and a slow drift (Theil-Sen), if any."""
    t = parse_threshold("threshold", threshold)
    hist = series_history(session, series_key, threshold=t)
    if hist is None:
        raise NotFound(f"series {series_key!r} not found")
    return hist.to_dict()
