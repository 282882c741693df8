"""ORM models: the data as a user thinks of it.

Job -> Run (one job on one target, FlashInfer version and chunk, executed on one node)
    -> Point (one parameter combination x backend) -> Sample (every timed iteration).
Relationships are ``lazy="raise"``: every query says what it loads.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BigInteger primary keys autoincrement on SQLite only as INTEGER.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    partial = "partial"  # finished, some points errored
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_STATUSES = {JobStatus.succeeded, JobStatus.partial, JobStatus.failed, JobStatus.cancelled}


class PointStatus(enum.StrEnum):
    ok = "ok"
    incorrect = "incorrect"  # output differs from the float32 reference
    unsupported = "unsupported"  # the library refused this combination
    error = "error"


class ReleaseStatus(enum.StrEnum):
    benchmarking = "benchmarking"
    confirming = "confirming"  # some tag's regressions are being re-measured
    complete = "complete"
    no_nodes = "no_nodes"  # no node seen recently: nothing to benchmark on


class TagState(enum.StrEnum):
    """A release's progress on one GPU tag: benchmarking -> confirming -> done | no_baseline."""

    benchmarking = "benchmarking"
    confirming = "confirming"
    done = "done"
    no_baseline = "no_baseline"


FINAL_TAG_STATES = {TagState.done, TagState.no_baseline}


class RegressionState(enum.StrEnum):
    """open -> confirming -> confirmed | not_reproduced | confirm_failed."""

    open = "open"
    confirming = "confirming"
    confirmed = "confirmed"
    not_reproduced = "not_reproduced"
    confirm_failed = "confirm_failed"  # the re-measurement could not be made


UNSETTLED_REGRESSION_STATES = (RegressionState.open, RegressionState.confirming)

E = TypeVar("E", bound=enum.StrEnum)


class StrEnumColumn(TypeDecorator[E]):
    """A StrEnum stored as its value in a VARCHAR (the stored strings are the enum values) and
    read back as the enum."""

    impl = String
    cache_ok = True

    def __init__(self, enum_type: type[E], length: int = 20) -> None:
        super().__init__(length)
        self.enum_type = enum_type

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else self.enum_type(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> E | None:
        return None if value is None else self.enum_type(value)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20), default="sweep")  # sweep | confirm | release
    kernel: Mapped[str] = mapped_column(String(40))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default=JobStatus.queued, index=True)
    source: Mapped[str] = mapped_column(String(20), default="api")  # api | cli | webhook
    submitted_by: Mapped[str | None] = mapped_column(String(200))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    release_version: Mapped[str | None] = mapped_column(String(64), index=True)
    total_points: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(Text)  # why it is waiting / failed
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    runs: Mapped[list[Run]] = relationship(back_populates="job", lazy="raise")


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    target: Mapped[str] = mapped_column(String(40))  # the tag that routed it
    queue: Mapped[str] = mapped_column(String(80))
    flashinfer_version: Mapped[str | None] = mapped_column(String(64))  # None: torch only
    chunk: Mapped[int] = mapped_column(Integer, default=0)
    chunks: Mapped[int] = mapped_column(Integer, default=1)
    # Indices into the job's expanded grid that this run measures.
    point_indices: Mapped[list[Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default=JobStatus.queued, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id", ondelete="SET NULL"))
    gpu_name: Mapped[str | None] = mapped_column(String(120))
    gpu_sku: Mapped[str | None] = mapped_column(String(40), index=True)
    timing_method: Mapped[str | None] = mapped_column(String(40))
    environment: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    env_fingerprint: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    job: Mapped[Job] = relationship(back_populates="runs", lazy="raise")
    points: Mapped[list[Point]] = relationship(back_populates="run", lazy="raise")


class Point(Base):
    __tablename__ = "points"
    __table_args__ = (
        # A retried task skips what is stored: one row per grid point and backend in a run.
        UniqueConstraint("run_id", "point_index", "backend", name="uq_points_run_point_backend"),
        Index("ix_points_series", "series_key", "gpu_sku"),
        Index("ix_points_kernel_sku", "kernel", "gpu_sku"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    point_index: Mapped[int] = mapped_column(Integer)
    kernel: Mapped[str] = mapped_column(String(40))
    backend: Mapped[str] = mapped_column(String(40))
    resolved_backend: Mapped[str | None] = mapped_column(String(40))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    # What makes two points comparable across runs and versions (kernelwatch.core.series).
    series_key: Mapped[str] = mapped_column(String(64))
    gpu_sku: Mapped[str | None] = mapped_column(String(40))
    flashinfer_version: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
    timing_method: Mapped[str | None] = mapped_column(String(40))
    jit_seconds: Mapped[float | None] = mapped_column(Float)
    plan_seconds: Mapped[float | None] = mapped_column(Float)
    n_samples: Mapped[int] = mapped_column(Integer, default=0)
    median_us: Mapped[float | None] = mapped_column(Float)
    mean_us: Mapped[float | None] = mapped_column(Float)
    p10_us: Mapped[float | None] = mapped_column(Float)
    p90_us: Mapped[float | None] = mapped_column(Float)
    cv: Mapped[float | None] = mapped_column(Float)
    ci_low_us: Mapped[float | None] = mapped_column(Float)
    ci_high_us: Mapped[float | None] = mapped_column(Float)
    bytes: Mapped[float | None] = mapped_column(Float)
    flops: Mapped[float | None] = mapped_column(Float)
    tbps: Mapped[float | None] = mapped_column(Float)
    tflops: Mapped[float | None] = mapped_column(Float)
    pct_peak_bw: Mapped[float | None] = mapped_column(Float)
    pct_peak_flops: Mapped[float | None] = mapped_column(Float)
    max_abs_error: Mapped[float | None] = mapped_column(Float)
    peak_memory_bytes: Mapped[float | None] = mapped_column(Float)
    throttled: Mapped[bool] = mapped_column(Boolean, default=False)
    # NVML readings before/after: clocks, temperature, throttle reasons; L2 rotation facts.
    telemetry: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    run: Mapped[Run] = relationship(back_populates="points", lazy="raise")


class Crosscheck(Base):
    """FlashInfer's own benchmark (flashinfer_benchmark.py) on a point's shape, run right after
    kernelwatch measured it on the same node (spec ``crosscheck: true``), and how the two agree
    (core.crosscheck)."""

    __tablename__ = "crosschecks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    point_id: Mapped[int] = mapped_column(
        ForeignKey("points.id", ondelete="CASCADE"), unique=True, index=True)
    status: Mapped[str] = mapped_column(String(20))  # ok | error | unavailable
    error: Mapped[str | None] = mapped_column(Text)
    command: Mapped[str | None] = mapped_column(Text)  # as a user runs it from benchmarks/
    median_us: Mapped[float | None] = mapped_column(Float)
    std_us: Mapped[float | None] = mapped_column(Float)
    method: Mapped[str | None] = mapped_column(String(40))  # its timer: cupti, cuda_graph, ...
    resolved_backend: Mapped[str | None] = mapped_column(String(40))
    cold_l2: Mapped[bool | None] = mapped_column(Boolean)
    cuda_graph_plan: Mapped[bool | None] = mapped_column(Boolean)
    clock_mhz: Mapped[float | None] = mapped_column(Float)  # NVML SM clock over its run
    wall_s: Mapped[float | None] = mapped_column(Float)
    # kernelwatch's median / the tool's - 1, and whether that is within core.crosscheck.AGREE
    diff_pct: Mapped[float | None] = mapped_column(Float)
    agrees: Mapped[bool | None] = mapped_column(Boolean)
    # What differed between the two measurements, for a point that does not agree
    causes: Mapped[list[Any] | None] = mapped_column(JSON)
    row: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the tool's CSV row
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Sample(Base):
    __tablename__ = "samples"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    point_id: Mapped[int] = mapped_column(ForeignKey("points.id", ondelete="CASCADE"), index=True)
    iteration: Mapped[int] = mapped_column(Integer)
    latency_us: Mapped[float] = mapped_column(Float)
    # Which repeat of the point it belongs to (core.stats: the CI is two-stage over repeats).
    repeat: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")


class Node(Base):
    __tablename__ = "nodes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)  # host:gpuN or host:cpu
    hostname: Mapped[str] = mapped_column(String(200))
    gpu_index: Mapped[int | None] = mapped_column(Integer)
    gpu_name: Mapped[str | None] = mapped_column(String(120))
    gpu_sku: Mapped[str | None] = mapped_column(String(40))
    arch: Mapped[str | None] = mapped_column(String(20))
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    queues: Mapped[list[Any]] = mapped_column(JSON, default=list)
    versions_ready: Mapped[list[Any]] = mapped_column(JSON, default=list)
    copy_bandwidth_tbps: Mapped[float | None] = mapped_column(Float)
    environment: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_heartbeat: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Release(Base):
    __tablename__ = "releases"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    previous_version: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(20))  # webhook | manual
    status: Mapped[ReleaseStatus] = mapped_column(StrEnumColumn(ReleaseStatus),
                                                  default=ReleaseStatus.benchmarking)
    # Why nothing happens ("message") and the notification's outcome ("notification").
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    tags: Mapped[list[ReleaseTag]] = relationship(
        back_populates="release", lazy="raise", order_by="ReleaseTag.tag",
        cascade="all, delete-orphan", passive_deletes=True,
    )


class ReleaseTag(Base):
    """A release's progress on one GPU tag: its jobs (each measures the previous and the new
    version), then the comparison of their runs, then the confirmation of its regressions."""

    __tablename__ = "release_tags"
    __table_args__ = (UniqueConstraint("release_id", "tag", name="uq_release_tags_release_tag"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    release_id: Mapped[int] = mapped_column(
        ForeignKey("releases.id", ondelete="CASCADE"), index=True
    )
    tag: Mapped[str] = mapped_column(String(40))
    state: Mapped[TagState] = mapped_column(StrEnumColumn(TagState),
                                            default=TagState.benchmarking)
    job_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    comparison_id: Mapped[int | None] = mapped_column(
        ForeignKey("comparisons.id", ondelete="SET NULL")
    )
    baseline_run_ids: Mapped[list[Any] | None] = mapped_column(JSON)
    contender_run_ids: Mapped[list[Any] | None] = mapped_column(JSON)
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # points per verdict
    regressions: Mapped[int | None] = mapped_column(Integer)  # found by the comparison
    confirmed: Mapped[int | None] = mapped_column(Integer)
    not_reproduced: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str | None] = mapped_column(Text)  # why it was not compared
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 onupdate=utcnow)

    release: Mapped[Release] = relationship(back_populates="tags", lazy="raise")

    def as_dict(self) -> dict[str, Any]:
        """The tag's progress as the API answers it: the fields that have a value."""
        out: dict[str, Any] = {"jobs": list(self.job_ids or []),
                               "state": TagState(self.state).value}
        for name in TAG_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


# ReleaseTag's optional fields, in the order the API lists them.
TAG_FIELDS = ("message", "comparison_id", "counts", "baseline_run_ids", "contender_run_ids",
              "regressions", "confirmed", "not_reproduced")


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(100), unique=True)
    event: Mapped[str] = mapped_column(String(40))
    release_version: Mapped[str | None] = mapped_column(String(64))
    response: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Comparison(Base):
    __tablename__ = "comparisons"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    baseline_run_ids: Mapped[list[Any]] = mapped_column(JSON)
    contender_run_ids: Mapped[list[Any]] = mapped_column(JSON)
    baseline_label: Mapped[str | None] = mapped_column(String(100))
    contender_label: Mapped[str | None] = mapped_column(String(100))
    gpu_sku: Mapped[str | None] = mapped_column(String(40))
    release_id: Mapped[int | None] = mapped_column(ForeignKey("releases.id", ondelete="SET NULL"))
    threshold: Mapped[float] = mapped_column(Float)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Regression(Base):
    __tablename__ = "regressions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    comparison_id: Mapped[int] = mapped_column(
        ForeignKey("comparisons.id", ondelete="CASCADE"), index=True
    )
    series_key: Mapped[str] = mapped_column(String(64))
    kernel: Mapped[str] = mapped_column(String(40))
    backend: Mapped[str] = mapped_column(String(40))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    gpu_sku: Mapped[str | None] = mapped_column(String(40))
    baseline_version: Mapped[str | None] = mapped_column(String(64))
    contender_version: Mapped[str | None] = mapped_column(String(64))
    ratio: Mapped[float] = mapped_column(Float)
    ci_low: Mapped[float] = mapped_column(Float)
    ci_high: Mapped[float] = mapped_column(Float)
    # open -> confirming -> confirmed | not_reproduced; acknowledged by a person.
    state: Mapped[RegressionState] = mapped_column(
        StrEnumColumn(RegressionState), default=RegressionState.open, index=True
    )
    confirm_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    confirm_ratio: Mapped[float | None] = mapped_column(Float)
    confirm_ci_low: Mapped[float | None] = mapped_column(Float)
    confirm_ci_high: Mapped[float | None] = mapped_column(Float)
    acknowledged: Mapped[bool] = mapped_column(Boolean, default=False)
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
