"""The job service: creating jobs from sweep specs, splitting them into runs, enqueueing runs
after the commit, and the ONE job/run state machine that the API and the workers share.

States (docs/api.md, "Job states"): a job is queued -> running -> succeeded | partial | failed
| cancelled. A run follows the same states. Rules:

- ``mark_run_started``: queued|running -> running. Running -> running is a retry (the worker
  that had it died; Celery redelivered the message) and counts another attempt.
- ``mark_run_finished`` decides a run's outcome from its stored points unless told:
  succeeded: every expected point (grid points x backends) is stored and none is
             ``error`` or ``incorrect`` (``unsupported`` is an answer, not a failure);
  partial:   some points are stored but some errored, came out incorrect, or are missing;
  failed:    nothing was stored, or every stored point errored / came out incorrect.
  A job becomes terminal when all its runs are: succeeded when all runs succeeded, failed
  when all failed, partial otherwise (some points or runs failed).
- ``cancel_job``: queued|running -> cancelled, with every unfinished run. The worker checks
  ``is_cancelled`` between points and stops; finishing a cancelled run keeps it cancelled.
- Anything else raises ``IllegalTransition`` (core.errors; the API answers 409).

The job row is locked (``SELECT ... FOR UPDATE``) around each transition so two runs of one job
finishing at once on two nodes cannot both miss being the last one.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from kernelwatch.core import outbox
from kernelwatch.core.benchmark_cli import repro_command
from kernelwatch.core.broker import TASK_EXECUTE_RUN, get_celery, queue_for_tag
from kernelwatch.core.db import insert_or_existing
from kernelwatch.core.errors import IllegalTransition, InvalidInput, NotFound
from kernelwatch.core.gpus import ARCH_TAGS
from kernelwatch.core.models import (
    TERMINAL_STATUSES,
    Crosscheck,
    Job,
    JobStatus,
    Node,
    Point,
    PointStatus,
    Run,
    utcnow,
)
from kernelwatch.core.nodes import heartbeat_is_fresh
from kernelwatch.core.settings import get_settings
from kernelwatch.core.spec import SweepSpec
from kernelwatch_harness.catalogue import KERNELS

# Point statuses that count as "errored" in progress and outcomes.
BAD_POINT_STATUSES = (PointStatus.error, PointStatus.incorrect)
RUN_OUTCOMES = (JobStatus.succeeded, JobStatus.partial, JobStatus.failed, JobStatus.cancelled)


class JobNotFound(NotFound):
    pass


class SpecRejected(InvalidInput):
    """A spec that passed the schema but not the checks against the fleet (HTTP 422)."""

    def __init__(self, loc: list[str], msg: str) -> None:
        super().__init__(loc, msg, where="body")


_FIELD_PREFIX = re.compile(r"^([a-z_][a-z0-9_]*(?:\.[A-Za-z0-9_]+)*): ")


def loc_from_message(msg: str) -> list[str]:
    """The field a spec message names: ``"params.dtype: ..."`` -> ``["params", "dtype"]``.
    core/spec.py starts every message it raises outside a field validator with the field."""
    m = _FIELD_PREFIX.match(msg)
    return m.group(1).split(".") if m else []


# ---------------------------------------------------------------------------------------------
# Nodes


def fleet_tags(session: Session) -> tuple[set[str], dict[str, int]]:
    """Every tag any registered node carries, and per tag the number of live nodes (one
    query: the node table is small, and this runs on every submission)."""
    now = utcnow()
    known: set[str] = set()
    live: dict[str, int] = {}
    for node_tags, beat in session.execute(select(Node.tags, Node.last_heartbeat)):
        tags = {str(t) for t in node_tags or []}
        known |= tags
        if heartbeat_is_fresh(beat, now):
            for t in tags:
                live[t] = live.get(t, 0) + 1
    return known, live


def live_nodes_by_tag(session: Session) -> dict[str, int]:
    return fleet_tags(session)[1]


# ---------------------------------------------------------------------------------------------
# Creating and enqueueing


def split_indices(n_points: int, chunks: int) -> list[list[int]]:
    """Contiguous, nearly equal chunks of ``range(n_points)``; never an empty chunk."""
    chunks = max(1, min(chunks, n_points))
    base, extra = divmod(n_points, chunks)
    out, start = [], 0
    for c in range(chunks):
        size = base + (1 if c < extra else 0)
        out.append(list(range(start, start + size)))
        start += size
    return out


def _chunk_count(n_points: int, live: int) -> int:
    per = get_settings().chunk_points
    if per > 0:
        return -(-n_points // per)
    return max(1, live)


def create_job(
    session: Session,
    spec: SweepSpec,
    *,
    source: str,
    submitted_by: str | None,
    idempotency_key: str | None = None,
    kind: str = "sweep",
    release_version: str | None = None,
) -> tuple[Job, bool, list[Run]]:
    """Create a job and its runs (not committed, not enqueued: the caller calls
    ``enqueue_after_commit``, then commits). With an idempotency key already used, return
    that job, created=False.

    Raises ``SpecRejected`` when a target is unknown or a point does not fit its target."""
    if idempotency_key:
        existing = _job_by_key(session, idempotency_key)
        if existing is not None:
            return existing, False, _runs_of(session, existing.id)
    known, live = fleet_tags(session)
    try:
        spec.check_targets(known)
    except ValueError as e:
        raise SpecRejected(loc_from_message(str(e)) or ["targets"], str(e)) from None
    kernel = KERNELS[spec.kernel]
    flashinfer = [b for b in spec.backends if b in kernel.flashinfer_backends]
    if "cpu" in spec.targets and flashinfer:
        # FlashInfer is CUDA only: on a cpu node every such point could only error.
        raise SpecRejected(["targets"], (
            f"targets: 'cpu' cannot run FlashInfer backends ({', '.join(flashinfer)}); "
            f"allowed with them: GPU tags ({', '.join(ARCH_TAGS)}, or a SKU such as h100); "
            f"on cpu only {', '.join(kernel.torch_backends)}"
        ))

    grid_points = len(spec.combinations())
    job = Job(
        name=spec.name,
        kind=kind,
        kernel=spec.kernel,
        spec=spec.model_dump(mode="json"),
        status=JobStatus.queued,
        source=source,
        submitted_by=submitted_by,
        idempotency_key=idempotency_key or None,
        release_version=release_version,
    )
    runs: list[Run] = []
    for target in spec.targets:
        parts = split_indices(grid_points, _chunk_count(grid_points, live.get(target, 0)))
        for version in spec.versions():
            for i, indices in enumerate(parts):
                runs.append(Run(target=target, queue=queue_for_tag(target),
                                flashinfer_version=version, chunk=i, chunks=len(parts),
                                point_indices=indices, status=JobStatus.queued))
    job.total_points = sum(len(r.point_indices) for r in runs) * len(spec.backends)

    if idempotency_key:
        key = idempotency_key
        existing = insert_or_existing(
            session, lambda: _insert(session, job, runs), lambda: _job_by_key(session, key)
        )
        if existing is not None:
            return existing, False, _runs_of(session, existing.id)
    else:
        _insert(session, job, runs)
    return job, True, runs


def _insert(session: Session, job: Job, runs: list[Run]) -> None:
    session.add(job)
    session.flush()
    for r in runs:
        r.job_id = job.id
    session.add_all(runs)
    session.flush()


def _job_by_key(session: Session, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.idempotency_key == key))


def _runs_of(session: Session, job_id: int) -> list[Run]:
    return list(session.scalars(select(Run).where(Run.job_id == job_id).order_by(Run.id)))


def enqueue_runs(runs: list[Run]) -> None:
    """Send one task per run, by name, on its tag's queue, now. Only for runs already
    committed; in a transaction, ``enqueue_after_commit``."""
    _send_runs([(run.id, run.queue) for run in runs])


def _send_runs(targets: list[tuple[int, str]]) -> None:
    app = get_celery()
    for run_id, queue in targets:
        app.send_task(TASK_EXECUTE_RUN, args=[run_id], queue=queue)


def enqueue_after_commit(session: Session, runs: list[Run]) -> None:
    """Send the runs' tasks once the session commits (``core.outbox``): a worker must never
    receive a run id the database does not hold yet. The runs must be flushed (have ids)."""
    if not runs:
        return
    targets = [(run.id, run.queue) for run in runs]
    outbox.defer(session, lambda: _send_runs(targets),
                 f"enqueue of run(s) {', '.join(str(i) for i, _ in targets)}")


def get_job(session: Session, job_id: int, *, lock: bool = False) -> Job:
    stmt = select(Job).where(Job.id == job_id)
    if lock:
        stmt = stmt.with_for_update()
    job = session.scalar(stmt)
    if job is None:
        raise JobNotFound(f"job {job_id} not found")
    return job


# ---------------------------------------------------------------------------------------------
# State machine


def _lock_job(session: Session, job_id: int) -> Job:
    job = get_job(session, job_id, lock=True)
    session.refresh(job)  # the identity map may hold a copy older than the lock
    return job


def mark_run_started(session: Session, run: Run, node: Node | None) -> None:
    """queued|running -> running (running again is a redelivered retry). The caller commits."""
    job = _lock_job(session, run.job_id)
    session.refresh(run)
    if job.status == JobStatus.cancelled or run.status == JobStatus.cancelled:
        raise IllegalTransition(f"run {run.id}: job {job.id} was cancelled; not starting")
    if run.status not in (JobStatus.queued, JobStatus.running):
        raise IllegalTransition(f"run {run.id} is {run.status}; only a queued or running run "
                                "can start")
    now = utcnow()
    run.status = JobStatus.running
    run.attempts += 1
    run.started_at = run.started_at or now
    if node is not None:
        # A retry may land on another node of the tag (an H100 after an H200): points stored
        # from now on take this node's GPU, so the run must not keep the previous one's.
        run.node_id = node.id
        run.gpu_name = node.gpu_name
        run.gpu_sku = node.gpu_sku
    if job.status == JobStatus.queued:
        job.status = JobStatus.running
        job.started_at = now
    job.message = None


def run_outcome(session: Session, run: Run) -> str:
    """succeeded | partial | failed from the run's stored points (see the module doc)."""
    n_backends = len(_job_backends(session, run.job_id))
    expected = len(run.point_indices) * n_backends
    stored, bad = session.execute(
        select(
            func.count(Point.id),
            func.coalesce(func.sum(case((Point.status.in_(BAD_POINT_STATUSES), 1), else_=0)), 0),
        ).where(Point.run_id == run.id)
    ).one()
    if stored == 0 or bad == stored:
        return JobStatus.failed
    if bad or stored < expected:
        return JobStatus.partial
    return JobStatus.succeeded


def _job_backends(session: Session, job_id: int) -> list[str]:
    spec = session.scalar(select(Job.spec).where(Job.id == job_id)) or {}
    return list(spec.get("backends") or [None])


def mark_run_finished(
    session: Session, run: Run, status: str | None = None, message: str | None = None
) -> bool:
    """Make a run terminal (``status`` given, or decided from its points) and the job too when
    every run is. Returns True when the job became terminal by this call: the caller commits,
    then calls ``kernelwatch.core.hooks.on_job_finished(job_id)``. A run of a cancelled job stays
    cancelled (the worker noticed the cancel and stopped)."""
    job = _lock_job(session, run.job_id)
    session.refresh(run)
    now = utcnow()
    if run.status == JobStatus.cancelled:
        run.finished_at = run.finished_at or now
        return False
    if run.status not in (JobStatus.queued, JobStatus.running):
        raise IllegalTransition(f"run {run.id} is already {run.status}")
    if status is not None and status not in RUN_OUTCOMES:
        raise ValueError(f"status {status!r}; allowed: {', '.join(RUN_OUTCOMES)}")
    run.status = status or run_outcome(session, run)
    run.finished_at = now
    if message is not None:
        run.message = message
    session.flush()
    return _maybe_finish_job(session, job, now)


def _maybe_finish_job(session: Session, job: Job, now: Any) -> bool:
    statuses = list(session.scalars(select(Run.status).where(Run.job_id == job.id)))
    if job.status in TERMINAL_STATUSES or not all(s in TERMINAL_STATUSES for s in statuses):
        return False
    if all(s == JobStatus.succeeded for s in statuses):
        job.status = JobStatus.succeeded
    elif all(s == JobStatus.failed for s in statuses):
        job.status = JobStatus.failed
    else:
        job.status = JobStatus.partial
    job.finished_at = now
    return True


def cancel_job(session: Session, job: Job) -> Job:
    """queued|running -> cancelled, with every unfinished run. The caller commits (and calls
    ``core.hooks.on_job_finished``). Cancelling a finished job is an ``IllegalTransition``."""
    job = _lock_job(session, job.id)
    if job.status not in (JobStatus.queued, JobStatus.running):
        raise IllegalTransition(f"job {job.id} is {job.status}; only a queued or running job "
                                "can be cancelled")
    now = utcnow()
    for run in _runs_of(session, job.id):
        if run.status not in TERMINAL_STATUSES:
            run.status = JobStatus.cancelled
            run.finished_at = now
    job.status = JobStatus.cancelled
    job.finished_at = now
    job.message = "cancelled"
    return job


def is_cancelled(session: Session, job_id: int) -> bool:
    """Read straight from the database (not the session's cached object): the worker asks this
    between points while the API may have cancelled the job meanwhile."""
    status = session.execute(select(Job.status).where(Job.id == job_id)).scalar_one_or_none()
    return status == JobStatus.cancelled


# ---------------------------------------------------------------------------------------------
# Reading


def job_progress(session: Session, job: Job) -> dict[str, int]:
    done, errored = session.execute(
        select(
            func.count(Point.id),
            func.coalesce(func.sum(case((Point.status.in_(BAD_POINT_STATUSES), 1), else_=0)), 0),
        ).where(Point.job_id == job.id)
    ).one()
    return {"done": int(done), "total": int(job.total_points), "errored": int(errored)}


def _no_live_message(tags: list[str]) -> str:
    return "; ".join(f"waiting: no live node carries tag {t!r}" for t in tags)


def waiting_reason(session: Session, job: Job) -> str | None:
    """Why a job's queued runs are not being picked up, or None."""
    return waiting_reasons(session, [job]).get(job.id)


def waiting_reasons(session: Session, jobs: list[Job]) -> dict[int, str]:
    """``waiting_reason`` for many jobs in two queries (a page of ``GET /v1/jobs``)."""
    active = [j.id for j in jobs if j.status in (JobStatus.queued, JobStatus.running)]
    if not active:
        return {}
    targets: dict[int, set[str]] = {}
    for job_id, target in session.execute(
        select(Run.job_id, Run.target).where(Run.job_id.in_(active),
                                             Run.status == JobStatus.queued).distinct()
    ):
        targets.setdefault(int(job_id), set()).add(str(target))
    if not targets:
        return {}
    live = live_nodes_by_tag(session)
    out = {}
    for job_id, tags in targets.items():
        missing = sorted(t for t in tags if not live.get(t))
        if missing:
            out[job_id] = _no_live_message(missing)
    return out


def list_jobs(
    session: Session, *, status: str | None, limit: int, offset: int
) -> tuple[list[Job], int]:
    stmt = select(Job)
    count = select(func.count()).select_from(Job)
    if status:
        stmt = stmt.where(Job.status == status)
        count = count.where(Job.status == status)
    total = session.scalar(count) or 0
    rows = session.scalars(stmt.order_by(Job.id.desc()).limit(limit).offset(offset)).all()
    return list(rows), int(total)


def runs_with_nodes(session: Session, job_id: int) -> list[tuple[Run, Node | None]]:
    rows = session.execute(
        select(Run, Node).outerjoin(Node, Node.id == Run.node_id)
        .where(Run.job_id == job_id).order_by(Run.id)
    ).all()
    return [(r, n) for r, n in rows]


# Point columns in result rows, in order (statistics and derived metrics).
POINT_COLUMNS = (
    "point_index", "kernel", "backend", "resolved_backend", "status", "error", "n_samples",
    "median_us", "mean_us", "p10_us", "p90_us", "cv", "ci_low_us", "ci_high_us",
    "jit_seconds", "plan_seconds", "bytes", "flops", "tbps", "tflops", "pct_peak_bw",
    "pct_peak_flops", "max_abs_error", "peak_memory_bytes", "throttled", "series_key",
)
# The cross-check's columns (core.crosscheck), prefixed ``crosscheck_`` in result rows.
CROSSCHECK_COLUMNS = ("status", "median_us", "std_us", "diff_pct", "agrees", "causes",
                      "method", "resolved_backend", "clock_mhz", "wall_s", "command", "error")
# Environment facts worth a column of their own (the whole fingerprint is in the export).
ENV_COLUMNS = ("driver", "torch", "torch_cuda", "sm_count", "power_limit_w")


def result_rows(session: Session, job: Job) -> list[dict[str, Any]]:
    """One flat row per point: job/run/environment columns, then the point's parameters (one
    column each), then every statistic. Ordered by point index, backend, run."""
    rows = session.execute(
        select(Point, Run, Node.name, Crosscheck)
        .join(Run, Run.id == Point.run_id)
        .outerjoin(Node, Node.id == Run.node_id)
        .outerjoin(Crosscheck, Crosscheck.point_id == Point.id)
        .where(Point.job_id == job.id)
        .order_by(Point.point_index, Point.backend, Run.id)
    ).all()
    checked = bool((job.spec or {}).get("crosscheck"))
    out = []
    for point, run, node_name, check in rows:
        row: dict[str, Any] = {
            "job_id": job.id,
            "job_name": job.name,
            "run_id": run.id,
            "target": run.target,
            "chunk": run.chunk,
            "node": node_name,
            "gpu_name": run.gpu_name,
            "gpu_sku": run.gpu_sku,
            "flashinfer_version": run.flashinfer_version,
            # A point may fall back to another timing method than its run's; the point wins.
            "timing_method": point.timing_method or run.timing_method,
            "env_fingerprint": run.env_fingerprint,
        }
        env = run.environment or {}
        row.update({f"env_{k}": env.get(k) for k in ENV_COLUMNS})
        row.update({f"param_{k}": v for k, v in (point.params or {}).items()})
        row.update({c: getattr(point, c) for c in POINT_COLUMNS})
        # The same experiment in FlashInfer's own benchmark, or why there is none.
        repro = repro_command(point.kernel, point.params or {}, point.backend)
        row["repro_command"], row["repro_note"] = repro.command, repro.reason
        if checked:  # FlashInfer's own measurement of the point, when the job asked for it
            row.update({f"crosscheck_{c}": getattr(check, c) if check else None
                        for c in CROSSCHECK_COLUMNS})
        out.append(row)
    return out
