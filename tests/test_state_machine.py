"""The job/run state machine in core/jobs.py: legal transitions, outcomes decided from stored
points, terminal jobs, cancel, chunking across live nodes, progress and waiting reasons."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session

from kernelwatch.core import jobs
from kernelwatch.core.errors import IllegalTransition
from kernelwatch.core.models import Job, Node, Run
from kernelwatch.core.results import store_point
from kernelwatch.core.settings import Settings
from kernelwatch.core.spec import SweepSpec
from tests.api_support import add_node, auth, decode_spec, make_client, new_token
from tests.conftest import configure


def _create(session: Session, **overrides: Any) -> tuple[Job, list[Run]]:
    spec = SweepSpec.model_validate(decode_spec(**overrides))
    job, created, runs = jobs.create_job(session, spec, source="api", submitted_by="t")
    session.commit()
    assert created
    return job, runs


def _store(session: Session, run: Run, statuses: dict[tuple[int, str], str]) -> None:
    spec = session.get(Job, run.job_id).spec  # type: ignore[union-attr]
    sweep = SweepSpec.model_validate(spec)
    for (index, backend), status in statuses.items():
        store_point(session, run, spec["kernel"], sweep.grid(backend)[index], {
            "point_index": index, "backend": backend, "status": status,
            "samples_us": [5.0] * 30 if status == "ok" else [],
            "error": None if status == "ok" else "boom",
        })
    session.commit()


def _all_points(run: Run, status: str = "ok") -> dict[tuple[int, str], str]:
    return {(i, b): status for i in run.point_indices for b in ("torch-sdpa", "torch-math")}


def test_run_lifecycle_to_succeeded(session: Session) -> None:
    job, [run] = _create(session)
    assert job.status == "queued" and job.total_points == 8
    node = session.get(Node, add_node("h:cpu", ["cpu"], gpu_name="cpu"))
    assert node is not None
    jobs.mark_run_started(session, run, node)
    session.commit()
    assert (run.status, job.status, run.attempts, run.node_id) == ("running", "running", 1, node.id)
    assert job.started_at is not None and run.started_at is not None
    # A redelivered message (the first worker died) starts it again, here on another node of
    # the tag: another attempt, and the run now describes that node's device.
    other = session.get(Node, add_node("g:gpu0", ["cpu"], gpu_name="NVIDIA H200",
                                       gpu_sku="h200"))
    assert other is not None
    jobs.mark_run_started(session, run, other)
    assert (run.attempts, run.node_id, run.gpu_sku) == (2, other.id, "h200")
    jobs.mark_run_started(session, run, node)
    assert (run.attempts, run.gpu_name, run.gpu_sku) == (3, "cpu", None)
    _store(session, run, _all_points(run))
    assert jobs.job_progress(session, job) == {"done": 8, "total": 8, "errored": 0}
    assert jobs.mark_run_finished(session, run) is True
    session.commit()
    assert (run.status, job.status) == ("succeeded", "succeeded")
    assert job.finished_at is not None
    with pytest.raises(IllegalTransition):
        jobs.mark_run_finished(session, run)
    with pytest.raises(IllegalTransition):
        jobs.mark_run_started(session, run, node)


def test_outcomes_from_points(session: Session, monkeypatch: pytest.MonkeyPatch,
                              kw_env: Settings) -> None:
    configure(monkeypatch, chunk_points="1")  # 4 grid points -> 4 runs of one point each
    job, runs = _create(session)
    assert len(runs) == 4 and [r.point_indices for r in runs] == [[0], [1], [2], [3]]
    assert job.total_points == 8
    r_ok, r_err, r_none, r_unsup = runs
    for r in runs:
        jobs.mark_run_started(session, r, None)
    _store(session, r_ok, _all_points(r_ok))
    _store(session, r_err, {(1, "torch-sdpa"): "ok", (1, "torch-math"): "incorrect"})
    _store(session, r_unsup, {(3, "torch-sdpa"): "ok", (3, "torch-math"): "unsupported"})
    assert jobs.mark_run_finished(session, r_ok) is False
    assert jobs.mark_run_finished(session, r_err) is False
    assert jobs.mark_run_finished(session, r_none) is False
    assert jobs.mark_run_finished(session, r_unsup) is True  # the last run ends the job
    session.commit()
    assert [r.status for r in runs] == ["succeeded", "partial", "failed", "succeeded"]
    assert job.status == "partial"
    assert jobs.job_progress(session, job) == {"done": 6, "total": 8, "errored": 1}


def test_all_runs_failed_fails_the_job(session: Session, monkeypatch: pytest.MonkeyPatch,
                                       kw_env: Settings) -> None:
    configure(monkeypatch, chunk_points="2")
    job, runs = _create(session)
    assert len(runs) == 2
    _store(session, runs[0], _all_points(runs[0], "error"))
    jobs.mark_run_finished(session, runs[0])
    assert job.status == "queued"
    jobs.mark_run_finished(session, runs[1], "failed", message="harness crashed")
    session.commit()
    assert job.status == "failed" and runs[1].message == "harness crashed"
    with pytest.raises(ValueError, match="allowed"):
        jobs.mark_run_finished(session, _create(session)[1][0], "done")


def test_cancel(session: Session) -> None:
    job, [run] = _create(session)
    jobs.mark_run_started(session, run, None)
    assert not jobs.is_cancelled(session, job.id)
    jobs.cancel_job(session, job)
    session.commit()
    assert (job.status, run.status) == ("cancelled", "cancelled")
    assert jobs.is_cancelled(session, job.id)
    # The worker that was running it finishes: the run stays cancelled, the job is not redone.
    assert jobs.mark_run_finished(session, run) is False
    assert run.status == "cancelled"
    with pytest.raises(IllegalTransition):
        jobs.mark_run_started(session, run, None)
    with pytest.raises(IllegalTransition, match="only a queued or running job"):
        jobs.cancel_job(session, job)


def test_cancel_over_http(kw_env: Settings, session: Session) -> None:
    c = make_client()
    c.headers.update(auth(new_token()))
    job_id = c.post("/v1/jobs", json=decode_spec()).json()["id"]
    r = c.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled"
    assert [x["status"] for x in r.json()["runs"]] == ["cancelled"]
    r = c.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 409 and "cancelled" in r.json()["detail"]
    assert c.post("/v1/jobs/999/cancel").status_code == 404


def test_chunks_follow_live_nodes_and_waiting_reason(session: Session) -> None:
    job, runs = _create(session)
    assert len(runs) == 1
    assert jobs.waiting_reason(session, job) == "waiting: no live node carries tag 'cpu'"
    add_node("a:cpu", ["cpu"])
    add_node("b:cpu", ["cpu", "x"])
    add_node("old:cpu", ["cpu"], age_seconds=3600)  # stale: does not count
    assert jobs.waiting_reason(session, job) is None
    _, runs2 = _create(session)
    assert [r.point_indices for r in runs2] == [[0, 1], [2, 3]]
    assert [(r.chunk, r.chunks) for r in runs2] == [(0, 2), (1, 2)]
    # Two targets: one run set per target, each on its own queue.
    job3, runs3 = _create(session, targets=["cpu", "hopper"])
    assert {r.target for r in runs3} == {"cpu", "hopper"}
    assert {r.queue.rsplit(".", 1)[1] for r in runs3} == {"cpu", "hopper"}
    assert job3.total_points == 16
    assert jobs.waiting_reason(session, job3) == "waiting: no live node carries tag 'hopper'"
    # An operator tag seen on a node becomes a valid target.
    _, runs4 = _create(session, targets=["x"])
    assert runs4[0].target == "x"


def test_flashinfer_versions_make_one_run_each(session: Session) -> None:
    job, runs = _create(session, backends=["fa2", "torch-sdpa"],
                        flashinfer_versions=["0.5.3", "0.6.18.post1"], targets=["hopper"])
    assert sorted(r.flashinfer_version or "" for r in runs) == ["0.5.3", "0.6.18.post1"]
    assert job.total_points == 2 * 4 * 2


def test_split_indices() -> None:
    assert jobs.split_indices(5, 2) == [[0, 1, 2], [3, 4]]
    assert jobs.split_indices(2, 8) == [[0], [1]]
    assert jobs.split_indices(3, 0) == [[0, 1, 2]]
