"""A worker killed in the middle of a job loses no stored sample; restarted, it resumes the run
and measures only what was not stored (SIGKILL: no cleanup code runs)."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from kernelwatch.core import db
from kernelwatch.core.models import Node, Point, Run
from kernelwatch.core.settings import Settings
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


def point_ids(session: Session, job_id: int) -> dict[tuple[int, str], int]:
    """Stored point rows by (point index, backend): a point index alone names one row per
    backend."""
    rows = session.execute(
        select(Point.point_index, Point.backend, Point.id).where(Point.job_id == job_id)
    ).all()
    return {(idx, backend): pid for idx, backend, pid in rows}


def test_sigkill_mid_job_then_restart_resumes_without_remeasuring(
    kw_env: Settings, tmp_path: Path
) -> None:
    node = f"resume-{kw_env.queue_prefix[-6:]}"
    log = tmp_path / "worker.log"
    # 16 pairs (8 shapes, two backends): enough that the kill, sent once two are stored,
    # lands before the last one on a fast machine too (with 8, all were stored before it)
    spec = tiny_spec(params={"batch_size": [4], "kv_len": list(range(512, 4097, 512)),
                             "num_qo_heads": [8], "num_kv_heads": [2], "head_dim": [128]})
    pairs = 16
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
    assert 2 <= len(before) < pairs, "the job must be killed in the middle"
    with db.session_scope() as session:
        run = session.scalars(select(Run).where(Run.job_id == job_id)).one()
        assert run.status == "running"  # nobody told the database: the process just died
        ids_before = point_ids(session, job_id)
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
    assert len(after) == pairs  # every (run, point, backend) once: the unique key allows no more
    for key, samples in before.items():
        assert after[key] == samples  # stored samples intact, not re-measured
        assert len(samples) == 30
    with db.session_scope() as session:
        run = session.scalars(select(Run).where(Run.job_id == job_id)).one()
        assert run.attempts == 2
        ids_after = point_ids(session, job_id)
    for key, pid in ids_before.items():
        assert ids_after[key] == pid
    # The second delivery was told what was stored and measured only the rest.
    m = re.findall(r"(\d+) pairs to measure, (\d+) already stored", log.read_text())
    assert m and int(m[-1][1]) == len(before) and int(m[-1][0]) == pairs - len(before)


def test_another_node_takes_over_the_run_of_a_dead_node(kw_env: Settings,
                                                        tmp_path: Path) -> None:
    fast = {"KERNELWATCH_NODE_STALE_SECONDS": "3"}
    tag = kw_env.queue_prefix[-6:]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    workers = [start_worker(f"a-{tag}", logs[0], **fast), start_worker(f"b-{tag}", logs[1], **fast)]
    try:
        def nodes() -> int:
            with db.session_scope() as session:
                return len(session.scalars(select(Node.id)).all())

        wait_for("both nodes", lambda: nodes() == 2, log_path=logs[0])
        # Two live cpu nodes: the sweep is split in two runs, one for each.
        job_id = submit(tiny_spec(params={"batch_size": [4], "kv_len": [512, 1024, 1536, 2048],
                                          "num_qo_heads": [8], "num_kv_heads": [2],
                                          "head_dim": [128]}))

        def both_started() -> list[Run] | None:
            with db.session_scope() as session:
                runs = session.scalars(select(Run).where(Run.job_id == job_id)).all()
                return list(runs) if all(r.node_id for r in runs) else None

        runs = wait_for("both runs started", both_started, log_path=logs[0])
        assert len(runs) == 2 and runs[0].node_id != runs[1].node_id
        with db.session_scope() as session:
            node_a = session.scalars(select(Node).where(Node.name == f"a-{tag}:cpu")).one()
        victim = next(r for r in runs if r.node_id == node_a.id)
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait()
        status = wait_for("the job, finished by node b", lambda: terminal_status(job_id),
                          timeout=120, log_path=logs[1])
        assert status == "succeeded", logs[1].read_text()[-3000:]
        with db.session_scope() as session:
            taken = session.get(Run, victim.id)
            assert taken is not None and taken.node_id != node_a.id and taken.attempts == 2
        assert count_points(job_id) == 8
        assert "which is gone: queued again" in logs[1].read_text()
    finally:
        for w in workers:
            stop(w)
