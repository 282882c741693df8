"""``GET /v1/releases``, ``GET /v1/releases/{version}`` (its runs, its comparison to the
previous release per GPU) and ``POST /v1/releases`` (the webhook's flow by hand)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from kernelwatch.api.deps import CurrentToken, ReadAccess, SessionDep
from kernelwatch.api.errors import ERROR_RESPONSES
from kernelwatch.api.routers.regressions import regression_out
from kernelwatch.api.schemas import ReleaseCreated, ReleaseDetail, ReleaseListItem
from kernelwatch.core.errors import NotFound
from kernelwatch.core.history import sort_versions
from kernelwatch.core.models import Comparison, Regression, Release, ReleaseTag, Run
from kernelwatch.core.releases import (
    get_release,
    release_jobs,
    release_response,
    trigger_release,
)

router = APIRouter(tags=["releases"])


class ReleaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str
    previous: str | None = None
    # Run flashinfer_benchmark.py beside every GPU point (default: the server's setting, else
    # as each suite entry says).
    crosscheck: bool | None = None


@router.get("/v1/releases", response_model=list[ReleaseListItem])
def list_releases(session: SessionDep, _: ReadAccess) -> list[dict[str, Any]]:
    """Every release seen, newest version first."""
    releases = {r.version: r for r in session.scalars(select(Release))}
    states: dict[int, dict[str, str]] = {}
    for tag in session.scalars(select(ReleaseTag).order_by(ReleaseTag.tag)):
        states.setdefault(tag.release_id, {})[tag.tag] = str(tag.state)
    return [
        {"version": r.version, "previous_version": r.previous_version, "status": r.status,
         "source": r.source, "created_at": r.created_at.isoformat() if r.created_at else None,
         "notified_at": r.notified_at.isoformat() if r.notified_at else None,
         "tags": states.get(r.id, {})}
        for r in (releases[v] for v in reversed(sort_versions(list(releases))))
    ]


@router.get("/v1/releases/{version}", response_model=ReleaseDetail,
            responses={404: ERROR_RESPONSES[404]})
def get_one(version: str, session: SessionDep, _: ReadAccess) -> dict[str, Any]:
    release = get_release(session, version)
    if release is None:
        raise NotFound(f"release {version!r} not found")
    out = release_response(session, release)
    job_ids = [j.id for j in release_jobs(session, release)]
    out["runs"] = [
        {"id": r.id, "job_id": r.job_id, "target": r.target, "status": r.status,
         "flashinfer_version": r.flashinfer_version, "gpu_sku": r.gpu_sku,
         "gpu_name": r.gpu_name, "node_id": r.node_id}
        for r in session.scalars(select(Run).where(Run.job_id.in_(job_ids)).order_by(Run.id))
    ]
    comparisons = []
    for c in session.scalars(select(Comparison).where(Comparison.release_id == release.id)
                             .order_by(Comparison.id)):
        summary = {k: v for k, v in (c.summary or {}).items() if k != "points"}
        regs = session.scalars(select(Regression).where(Regression.comparison_id == c.id)
                               .order_by(Regression.ratio.desc()))
        comparisons.append({"id": c.id, "gpu_sku": c.gpu_sku, "baseline": c.baseline_label,
                            "contender": c.contender_label, "summary": summary,
                            "regressions": [regression_out(r) for r in regs]})
    out["comparisons"] = comparisons
    return out


@router.post("/v1/releases", status_code=201, response_model=ReleaseCreated,
             responses={200: {"model": ReleaseCreated, "description": "Already recorded"},
                        401: ERROR_RESPONSES[401], 503: ERROR_RESPONSES[503]})
def create(body: ReleaseIn, session: SessionDep, token: CurrentToken) -> Any:
    """Benchmark a release against the previous one (or ``previous``) on every GPU tag, as the
    webhook does. 201 when recorded now; 200 with the existing release otherwise. A version
    that is not one answers 422; a release suite that cannot be read, 503."""
    start = trigger_release(session, body.version, previous=body.previous,
                            crosscheck=body.crosscheck,
                            source="manual", submitted_by=token.name)
    out = {**release_response(session, start.release), "created": start.created}
    return out if start.created else JSONResponse(out, status_code=200)
