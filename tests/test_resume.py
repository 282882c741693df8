"""A worker killed in the middle of a job loses no stored sample; restarted, it resumes the run
and measures only what was not stored (SIGKILL: no cleanup code runs)."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from sqlalchemy import select

from core import db
from core.models import Point, Run
from core.settings import Settings
from tests.worker_support import (
    children_of,
    count_points,
    samples_by_point,
    start_worker,
    stop,
    submit,
    terminal_status,
    tiny_spec,
    wait_for,
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie is dead
    except (ProcessLookupError, FileNotFoundError):
        return False


def test_sigkill_mid_job_then_restart_resumes_without_remeasuring(
    kw_env: Settings, tmp_path: Path
) -> None:
    node = f"resume-{kw_env.queue_prefix[-6:]}"
    log = tmp_path / "worker.log"
    spec = tiny_spec(params={"batch_size": [4], "kv_len": [512, 1024, 1536, 2048],
                             "num_qo_heads": [8], "num_kv_heads": [2], "head_dim": [128]})
    first = start_worker(node, log)
    try:
        job_id = submit(spec)
        wait_for("two stored points", lambda: count_points(job_id) >= 2, log_path=log)
        harness = children_of(first.pid)
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        stop(first)
    before = samples_by_point(job_id)
    assert 2 <= len(before) < 8, "the job must be killed in the middle"
    with db.session_scope() as session:
        run = session.scalars(select(Run).where(Run.job_id == job_id)).one()
        assert run.status == "running"  # nobody told the database: the process just died
        ids_before = dict(session.execute(
            select(Point.point_index, Point.id).where(Point.job_id == job_id)).all())
    # The harness died with its worker (PDEATHSIG): no orphan keeps measuring.
    wait_for("the orphaned harness to die", lambda: not any(_alive(p) for p in harness),
             timeout=10)

    second = start_worker(node, log)  # same node restarting: its reaper queues the run again
    try:
        status = wait_for("the resumed job", lambda: terminal_status(job_id), log_path=log)
    finally:
        stop(second)
    assert status == "succeeded", log.read_text()[-3000:]
    after = samples_by_point(job_id)
    assert len(after) == 8  # every (run, point, backend) once: the unique key allows no more
    for key, samples in before.items():
        assert after[key] == samples  # stored samples intact, not re-measured
        assert len(samples) == 30
    with db.session_scope() as session:
        run = session.scalars(select(Run).where(Run.job_id == job_id)).one()
        assert run.attempts == 2
        ids_after = dict(session.execute(
            select(Point.point_index, Point.id).where(Point.job_id == job_id)).all())
    for idx, pid in ids_before.items():
        assert ids_after[idx] == pid
    # The second delivery was told what was stored and measured only the rest.
    m = re.findall(r"(\d+) pairs to measure, (\d+) already stored", log.read_text())
    assert m and int(m[-1][1]) == len(before) and int(m[-1][0]) == 8 - len(before)
