"""``GET /v1/regressions`` and ``POST /v1/regressions/{id}/ack``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from kernelwatch.api.deps import CurrentToken, ReadAccess, RowId, SessionDep
from kernelwatch.api.errors import ERROR_RESPONSES
from kernelwatch.api.routers.compare import bad_query
from kernelwatch.api.schemas import RegressionOut
from kernelwatch.core.errors import NotFound
from kernelwatch.core.models import Regression, RegressionState, utcnow

router = APIRouter(tags=["regressions"])

STATES = tuple(s.value for s in RegressionState)


def regression_out(r: Regression) -> dict[str, Any]:
    return {
        "id": r.id, "comparison_id": r.comparison_id, "series_key": r.series_key,
        "kernel": r.kernel, "backend": r.backend, "params": r.params, "gpu_sku": r.gpu_sku,
        "baseline_version": r.baseline_version, "contender_version": r.contender_version,
        "ratio": r.ratio, "ci_low": r.ci_low, "ci_high": r.ci_high, "state": r.state,
        "confirm_job_id": r.confirm_job_id, "confirm_ratio": r.confirm_ratio,
        "confirm_ci_low": r.confirm_ci_low, "confirm_ci_high": r.confirm_ci_high,
        "acknowledged": r.acknowledged, "acknowledged_by": r.acknowledged_by,
        "acknowledged_at": r.acknowledged_at.isoformat() if r.acknowledged_at else None,
        "created_at": r.created_at.isoformat() if r.created_at else None,
    }


@router.get("/v1/regressions", response_model=list[RegressionOut])
def list_regressions(
    session: SessionDep, _: ReadAccess,
    state: str | None = Query(None, description=f"one of {', '.join(STATES)}; comma-separated"),
    gpu_sku: str | None = None,
    kernel: str | None = None,
    acknowledged: bool | None = None,
    limit: int = Query(200, ge=1, le=5000),
) -> list[dict[str, Any]]:
    """Regressions found by comparisons, newest first."""
    stmt = select(Regression).order_by(Regression.id.desc()).limit(limit)
    if state:
        states = [s.strip() for s in state.split(",") if s.strip()]
        for s in states:
            if s not in STATES:
                raise bad_query("state", f"{s!r} is not allowed; allowed: {', '.join(STATES)}")
        stmt = stmt.where(Regression.state.in_(states))
    if gpu_sku:
        stmt = stmt.where(Regression.gpu_sku == gpu_sku)
    if kernel:
        stmt = stmt.where(Regression.kernel == kernel)
    if acknowledged is not None:
        stmt = stmt.where(Regression.acknowledged == acknowledged)
    return [regression_out(r) for r in session.scalars(stmt)]


@router.post("/v1/regressions/{regression_id}/ack", response_model=RegressionOut,
             responses={401: ERROR_RESPONSES[401], 404: ERROR_RESPONSES[404]})
def ack(regression_id: RowId, session: SessionDep, token: CurrentToken) -> dict[str, Any]:
    """Acknowledge a regression (a person has seen it); repeating it changes nothing."""
    r = session.get(Regression, regression_id)
    if r is None:
        raise NotFound(f"regression {regression_id} not found")
    if not r.acknowledged:
        r.acknowledged = True
        r.acknowledged_by = token.name
        r.acknowledged_at = utcnow()
    session.flush()
    return regression_out(r)
