"""Response models (they are the OpenAPI schema at /docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class Progress(BaseModel):
    done: int
    total: int
    errored: int


class RunOut(BaseModel):
    id: int
    target: str
    queue: str
    flashinfer_version: str | None
    chunk: int
    chunks: int
    points: int  # grid points in this run (times the job's backends = its measurements)
    status: str
    attempts: int
    node: str | None
    gpu_name: str | None
    gpu_sku: str | None
    timing_method: str | None
    environment: dict[str, Any] | None
    message: str | None
    started_at: datetime | None
    finished_at: datetime | None


class JobSummary(BaseModel):
    id: int
    name: str
    kind: str
    kernel: str
    status: str
    source: str
    submitted_by: str | None
    release_version: str | None
    total_points: int
    message: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobOut(JobSummary):
    progress: Progress
    spec: dict[str, Any]
    runs: list[RunOut]


class JobList(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[JobSummary]


class NodeOut(BaseModel):
    id: int
    name: str
    hostname: str
    gpu_index: int | None
    gpu_name: str | None
    gpu_sku: str | None
    arch: str | None
    tags: list[str]
    queues: list[str]
    versions_ready: list[str]
    copy_bandwidth_tbps: float | None
    started_at: datetime
    last_heartbeat: datetime
    heartbeat_age_seconds: float
    live: bool


class Health(BaseModel):
    status: str
    database: str
