"""Helpers for the worker tests: start a real Celery worker process, submit a tiny job through
the job service, wait for the database to say something."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, select

from kernelwatch.core import db
from kernelwatch.core.jobs import create_job, enqueue_runs
from kernelwatch.core.models import Job, Point, Sample
from kernelwatch.core.spec import SweepSpec, cpu_decode_sweep
from kernelwatch.worker.node import NODE_ENV, identity_for

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


# A CPU sweep that takes a second or two: small shapes, 30 iterations, 1 warm-up.
TINY_SPEC: dict[str, Any] = cpu_decode_sweep(
    "tiny", params={"batch_size": [1, 2], "kv_len": [64, 128], "num_qo_heads": [4]},
    timing={"warmup": 1})


def tiny_spec(**over: Any) -> SweepSpec:
    return SweepSpec(**{**TINY_SPEC, **over})


def submit(spec: SweepSpec) -> int:
    with db.session_scope() as session:
        job, _, runs = create_job(session, spec, source="api", submitted_by="test")
        job_id = job.id
    enqueue_runs(runs)
    return job_id


def worker_env(node: str, **extra: str) -> dict[str, str]:
    """The test's KERNELWATCH_* settings (already in os.environ via kw_env) plus a node
    identity of this test's own and a fast heartbeat."""
    ident = identity_for(None, "", node)
    env = dict(os.environ)
    env.update({NODE_ENV: ident.to_env(), "KERNELWATCH_HEARTBEAT_SECONDS": "0.5",
                "PYTHONPATH": str(ROOT)})
    env.update(extra)
    return env


def start_worker(node: str, log_path: Path, **extra: str) -> subprocess.Popen[bytes]:
    """A real Celery worker, started the way ``kernelwatch worker`` starts one per device."""
    from kernelwatch.cli.service import worker_children

    (child,) = worker_children(name=node)
    child.argv[child.argv.index("--hostname") + 1] = f"kwtest-{uuid.uuid4().hex[:6]}@localhost"
    log = open(log_path, "ab")  # noqa: SIM115 (the process keeps it)
    return subprocess.Popen(child.argv, env={**worker_env(node, **extra), **child.env}, cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)


def children_of(pid: int) -> list[int]:
    """Direct children of a process (Linux /proc), e.g. a worker's harness subprocess."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 90,
             interval: float = 0.2, log_path: Path | None = None) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    tail = log_path.read_text()[-4000:] if log_path and log_path.exists() else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


def job_status(job_id: int) -> str:
    with db.session_scope() as session:
        return str(session.scalar(select(Job.status).where(Job.id == job_id)))


def terminal_status(job_id: int) -> str | None:
    s = job_status(job_id)
    return s if s in ("succeeded", "partial", "failed", "cancelled") else None


def count_points(job_id: int) -> int:
    with db.session_scope() as session:
        return int(session.scalar(select(func.count(Point.id)).where(Point.job_id == job_id))
                   or 0)


def samples_by_point(job_id: int) -> dict[tuple[int, int, str], list[float]]:
    """(run_id, point_index, backend) -> the stored samples, in iteration order."""
    with db.session_scope() as session:
        rows = session.execute(
            select(Point.run_id, Point.point_index, Point.backend, Sample.iteration,
                   Sample.latency_us)
            .join(Sample, Sample.point_id == Point.id)
            .where(Point.job_id == job_id)
            .order_by(Point.id, Sample.iteration)
        ).all()
    out: dict[tuple[int, int, str], list[float]] = {}
    for run_id, idx, backend, _it, v in rows:
        out.setdefault((run_id, idx, backend), []).append(v)
    return out

