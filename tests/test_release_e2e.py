"""The release flow end to end on CPU, with nothing mocked: a GitHub ``release`` webhook ->
release jobs for the previous and the new version -> a real Celery worker process (started as
``kernelwatch worker`` starts it) on Redis and Postgres -> comparison -> confirmation ->
the notification, received by a local HTTP server. On a cpu node the suite keeps its torch
backends, run once per version, so the version labels carry through."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from kernelwatch.api.main import create_app
from kernelwatch.core import db
from kernelwatch.core.broker import TASK_CONFIRM_REGRESSIONS, get_celery, queue_for_node
from kernelwatch.core.compare import compare_runs, persist_comparison
from kernelwatch.core.fixtures import import_job
from kernelwatch.core.models import (
    Comparison,
    Job,
    Node,
    Regression,
    Release,
    ReleaseTag,
    Run,
)
from kernelwatch.core.notify import local_receiver
from kernelwatch.core.settings import Settings
from tests.conftest import configure
from tests.release_support import write_tiny_suite
from tests.worker_support import start_worker, stop, wait_for

SECRET = "e2e-secret"
FIXTURES = Path(__file__).parent / "fixtures"
# One intra-op thread: on a CPU shared with other processes, torch's thread pool waits whole
# scheduler slices for a preempted thread, which moves medians 10-100x between invocations.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
PAYLOAD = (FIXTURES / "github" / "release_published.json").read_bytes()


def test_webhook_to_notification_through_a_real_worker(
    kw_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "worker.log"
    node = f"rel-{kw_env.queue_prefix[-6:]}"
    with local_receiver() as (url, received):
        configure(monkeypatch, webhook_secret=SECRET, notify_url=url,
                  release_suite=str(write_tiny_suite(tmp_path)),
                  dashboard_url="http://dash.example:8050")
        with db.session_scope() as session:
            session.add(Release(version="0.6.18", source="manual", status="complete",
                                details={}))
        proc = start_worker(node, log, **ONE_THREAD)
        try:
            wait_for("the worker to register", lambda: _node(f"{node}:cpu"), log_path=log)
            with TestClient(create_app()) as client:
                sig = "sha256=" + hmac.new(SECRET.encode(), PAYLOAD, hashlib.sha256).hexdigest()
                r = client.post("/v1/webhooks/github", content=PAYLOAD, headers={
                    "X-GitHub-Event": "release", "X-GitHub-Delivery": str(uuid.uuid4()),
                    "X-Hub-Signature-256": sig, "Content-Type": "application/json"})
            assert r.status_code == 201, r.text
            assert r.json()["previous_version"] == "0.6.18"
            wait_for("the notification", lambda: received, timeout=240, log_path=log)
        finally:
            stop(proc)

    (message,) = received
    summary = message["summary"]
    assert summary["release"] == "0.6.18.post1" and summary["previous"] == "0.6.18"
    assert "FlashInfer 0.6.18.post1" in message["text"] and "vs 0.6.18" in message["text"]
    (gpu,) = summary["gpus"]
    assert gpu["tag"] == "cpu" and gpu["state"] == "done"
    assert sum(gpu["counts"].values()) == 2  # 2 cpu points (torch-sdpa), both versions
    assert gpu["compare_url"].startswith("http://dash.example:8050/compare?baseline=")

    with db.session_scope() as session:
        release = session.scalars(select(Release).where(Release.version == "0.6.18.post1")).one()
        assert release.status == "complete" and release.notified_at is not None
        assert release.details["notification"]["sent"] is True
        tag = session.scalars(select(ReleaseTag).where(ReleaseTag.release_id == release.id,
                                                       ReleaseTag.tag == "cpu")).one()
        comparison = session.get(Comparison, tag.comparison_id)
        assert comparison is not None and comparison.release_id == release.id
        assert (comparison.baseline_label, comparison.contender_label) == ("0.6.18",
                                                                           "0.6.18.post1")
        base = session.scalars(select(Run).where(Run.id.in_(comparison.baseline_run_ids))).all()
        cont = session.scalars(select(Run).where(Run.id.in_(comparison.contender_run_ids))).all()
        assert {r.flashinfer_version for r in base} == {"0.6.18"}
        assert {r.flashinfer_version for r in cont} == {"0.6.18.post1"}
        assert all(r.status == "succeeded" for r in [*base, *cont])
        regs = session.scalars(select(Regression).where(
            Regression.comparison_id == comparison.id)).all()
        # Whatever the CPU's noise flagged went through the interleaved confirmation.
        for reg in regs:
            assert reg.state in ("confirmed", "not_reproduced"), reg.state
            confirm = session.get(Job, reg.confirm_job_id)
            assert confirm is not None and confirm.kind == "confirm"
        assert len(gpu["confirmed"]) == sum(r.state == "confirmed" for r in regs)


def test_confirmation_task_runs_on_the_contender_node(
    kw_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A regression planted in recorded samples (+100%) is re-measured by the worker that
    serves the node's own queue, both versions interleaved, and is not reproduced: the code
    measured is the same for both versions. (The threshold is 50%: this shared CI CPU moves a
    point's median by tens of percent from one harness invocation to the next.)"""
    data = json.loads((FIXTURES / "compare" / "cpu_same_spec_two_runs.json").read_text())
    base = data["baseline"]
    cont = copy.deepcopy(base)
    for r in cont["runs"]:
        r["flashinfer_version"] = "0.6.18.post1"
        for p in r["points"]:
            p["flashinfer_version"] = "0.6.18.post1"
    for r in base["runs"]:
        r["flashinfer_version"] = "0.6.18"
    target = next(p for p in cont["runs"][0]["points"]
                  if p["status"] == "ok" and p["backend"] == "torch-sdpa")
    target["samples"]["latency_us"] = [v * 2.0 for v in target["samples"]["latency_us"]]
    log = tmp_path / "worker.log"
    node = f"cnf-{kw_env.queue_prefix[-6:]}"
    proc = start_worker(node, log, **ONE_THREAD)
    try:
        me = wait_for("the worker to register", lambda: _node(f"{node}:cpu"), log_path=log)
        with db.session_scope() as session:
            b_job, c_job = import_job(session, base), import_job(session, cont)
            session.flush()
            runs = {j.id: list(session.scalars(select(Run.id).where(Run.job_id == j.id)))
                    for j in (b_job, c_job)}
            result = compare_runs(session, runs[b_job.id], runs[c_job.id], threshold=0.5)
            comparison = persist_comparison(session, result)
            session.flush()
            comparison_id = comparison.id
        assert result.counts["regression"] == 1
        get_celery().send_task(TASK_CONFIRM_REGRESSIONS, args=[comparison_id],
                               queue=queue_for_node(me))
        state = wait_for("the confirmation", lambda: _settled(comparison_id), timeout=180,
                         log_path=log)
    finally:
        stop(proc)
    assert state == "not_reproduced", log.read_text()[-3000:]
    with db.session_scope() as session:
        (reg,) = session.scalars(select(Regression).where(
            Regression.comparison_id == comparison_id)).all()
        assert reg.confirm_ratio is not None and abs(reg.confirm_ratio - 1) < 0.5
        assert reg.confirm_ci_low is not None and reg.confirm_ci_high is not None
        job = session.get(Job, reg.confirm_job_id)
        assert job is not None and job.kind == "confirm" and job.status == "succeeded"
        runs_ = session.scalars(select(Run).where(Run.job_id == job.id).order_by(Run.id)).all()
        # A B A B ...: interleaved rounds, each version's label carried by its runs.
        assert [r.flashinfer_version for r in runs_] == ["0.6.18", "0.6.18.post1"] * 5
        node_row = session.scalars(select(Node).where(Node.name == me)).one()
        assert all(r.node_id == node_row.id and r.status == "succeeded" for r in runs_)


def _node(name: str) -> str | None:
    with db.session_scope() as session:
        return session.scalar(select(Node.name).where(Node.name == name))


def _settled(comparison_id: int) -> str | None:
    with db.session_scope() as session:
        states = list(session.scalars(select(Regression.state).where(
            Regression.comparison_id == comparison_id)))
    return states[0] if states and states[0] not in ("open", "confirming") else None
