"""The run task's decisions, called in-process (the harness paths are covered end to end in
test_worker_e2e.py): duplicate deliveries are dropped, a run a worker cannot execute is
finished with the reason instead of coming back forever, a run that keeps killing its worker
is given up."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from kernelwatch.core.jobs import create_job, mark_run_started
from kernelwatch.core.models import Job, Node, Point, Run
from kernelwatch.core.settings import Settings
from kernelwatch.worker import node as node_mod
from kernelwatch.worker.node import NodeIdentity, register
from kernelwatch.worker.tasks import MAX_ATTEMPTS, execute_run
from tests.worker_support import tiny_spec


@pytest.fixture
def me(kw_env: Settings) -> Iterator[node_mod.NodeService]:
    svc = node_mod.start_service(NodeIdentity(name="tasks-me", hostname="h", tags=["cpu"]))
    try:
        yield svc
    finally:
        node_mod.stop_service()


def _job(session: Session) -> Run:
    _, _, runs = create_job(session, tiny_spec(), source="api", submitted_by="t")
    session.commit()
    return runs[0]


def _run(session: Session, run_id: int) -> Run:
    session.expire_all()
    run = session.get(Run, run_id)
    assert run is not None
    return run


def test_duplicate_delivery_of_a_run_live_elsewhere_is_dropped(
    session: Session, me: node_mod.NodeService
) -> None:
    other = register(session, NodeIdentity(name="other", hostname="h2", tags=["cpu"]), [])
    run = _job(session)
    mark_run_started(session, run, other)
    session.commit()
    assert execute_run(run.id) == "skipped"
    run = _run(session, run.id)
    assert (run.status, run.node_id, run.attempts) == ("running", other.id, 1)


def test_finished_run_is_not_executed_again(session: Session,
                                            me: node_mod.NodeService) -> None:
    run = _job(session)
    session.execute(update(Run).where(Run.id == run.id).values(status="succeeded"))
    session.commit()
    assert execute_run(run.id) == "skipped"
    assert session.scalar(select(func.count(Point.id))) == 0


def test_unreadable_run_is_finished_with_the_reason(session: Session,
                                                    me: node_mod.NodeService) -> None:
    run = _job(session)
    # A spec this worker's code cannot read (e.g. written by a newer API).
    session.execute(update(Job).where(Job.id == run.job_id).values(
        spec={"name": "x", "kernel": "warp_drive"}))
    session.commit()
    assert execute_run(run.id) == "failed"
    run = _run(session, run.id)
    assert run.status == "failed" and "worker error" in (run.message or "")
    assert "warp_drive" in (run.message or "")
    job = session.get(Job, run.job_id)
    assert job is not None and job.status == "failed"


def test_run_that_keeps_killing_workers_is_given_up(session: Session,
                                                     me: node_mod.NodeService) -> None:
    run = _job(session)
    session.execute(update(Run).where(Run.id == run.id).values(attempts=MAX_ATTEMPTS))
    session.commit()
    assert execute_run(run.id) == "failed"
    run = _run(session, run.id)
    assert run.status == "failed" and "gave up" in (run.message or "")
    node = session.scalars(select(Node).where(Node.name == "tasks-me")).one()
    assert run.node_id == node.id
