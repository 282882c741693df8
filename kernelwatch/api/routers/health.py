"""Liveness (``/healthz``: the database answers) and Prometheus metrics (``/metrics``)."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from kernelwatch.api.schemas import Health
from kernelwatch.core.db import session_scope
from kernelwatch.core.models import Job, JobStatus, Node, Point, Run
from kernelwatch.core.nodes import alive_clause

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz() -> Response:
    try:
        with session_scope() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError as e:
        return JSONResponse(status_code=503,
                            content={"status": "unavailable", "database": str(e.__cause__ or e)})
    return JSONResponse(content={"status": "ok", "database": "ok"})


@router.get("/metrics", response_class=Response,
            responses={200: {"description": "Prometheus text exposition format",
                             "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}})
def metrics(request: Request) -> Response:
    """Prometheus text format: jobs by status, points stored, live nodes, HTTP requests."""
    data = generate_latest(request.app.state.metrics_registry)
    return Response(content=data, media_type=CONTENT_TYPE_LATEST)


class DatabaseCollector(Collector):
    """Figures read from the database at scrape time (the database is the truth; several API
    processes report the same values instead of each counting its own)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("kernelwatch_database_up", "1 when the database answered")
        try:
            with session_scope() as session:
                by_status = dict(
                    (str(s), int(n)) for s, n in
                    session.execute(select(Job.status, func.count()).group_by(Job.status))
                )
                runs_by_status = dict(
                    (str(s), int(n)) for s, n in
                    session.execute(select(Run.status, func.count()).group_by(Run.status))
                )
                points = int(session.scalar(select(func.count()).select_from(Point)) or 0)
                live = int(session.scalar(
                    select(func.count()).select_from(Node)
                    .where(alive_clause())
                ) or 0)
        except SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("kernelwatch_jobs", "Jobs by status", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], by_status.get(status.value, 0))
        yield jobs
        runs = GaugeMetricFamily("kernelwatch_runs", "Runs (job x target x version x chunk) "
                                 "by status", labels=["status"])
        for status in JobStatus:
            runs.add_metric([status.value], runs_by_status.get(status.value, 0))
        yield runs
        yield GaugeMetricFamily("kernelwatch_points_stored", "Points stored", value=points)
        yield GaugeMetricFamily("kernelwatch_live_nodes", "Nodes with a fresh heartbeat",
                                value=live)
