"""The worker end to end: a job submitted over the API is executed by a real Celery worker
process (started as ``kernelwatch worker`` starts it) on real Redis and Postgres."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from kernelwatch.api.main import create_app
from kernelwatch.core import db
from kernelwatch.core.models import Node, Point, Run, Sample
from kernelwatch.core.settings import Settings
from kernelwatch.core.tokens import create_token
from tests.worker_support import (
    TINY_SPEC,
    children_of,
    count_points,
    start_worker,
    stop,
    terminal_status,
    tiny_spec,
    wait_for,
)

SPEC = {**TINY_SPEC, "name": "e2e"}


def _client() -> tuple[TestClient, dict[str, str]]:
    with db.session_scope() as session:
        token = create_token(session, "e2e")
    return TestClient(create_app()), {"Authorization": f"Bearer {token}"}


def test_job_through_api_and_celery_worker(kw_env: Settings, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    node = f"e2e-{kw_env.queue_prefix[-6:]}"
    proc = start_worker(node, log)
    try:
        client, auth = _client()
        r = client.post("/v1/jobs", json=SPEC, headers=auth)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        status = wait_for("the job to finish", lambda: terminal_status(job_id), log_path=log)
        assert status == "succeeded", log.read_text()[-3000:]

        body = client.get(f"/v1/jobs/{job_id}").json()
        assert body["progress"] == {"done": 8, "total": 8, "errored": 0}

        with db.session_scope() as session:
            points = session.scalars(select(Point).where(Point.job_id == job_id)).all()
            assert sorted((p.point_index, p.backend) for p in points) == sorted(
                (i, b) for i in range(4) for b in ("torch-sdpa", "torch-math"))
            for p in points:
                assert p.status == "ok", p.error
                assert p.n_samples == 30
                iterations = session.scalars(
                    select(Sample.iteration).where(Sample.point_id == p.id)
                    .order_by(Sample.iteration)).all()
                assert list(iterations) == list(range(30))  # every timed iteration, raw
                assert p.median_us and p.p10_us <= p.median_us <= p.p90_us
                assert p.ci_low_us <= p.median_us <= p.ci_high_us
                assert p.cv is not None and p.bytes and p.flops and p.tbps and p.tflops
                assert p.timing_method == "cpu_perf_counter"
            (run,) = session.scalars(select(Run).where(Run.job_id == job_id)).all()
            assert run.status == "succeeded" and run.attempts == 1
            assert run.environment and run.environment["device"] == "cpu"
            assert run.env_fingerprint and re.fullmatch(r"[0-9a-f]{64}", run.env_fingerprint)
            assert run.timing_method == "cpu_perf_counter"
            me = session.scalars(select(Node).where(Node.name == f"{node}:cpu")).one()
            assert run.node_id == me.id
            assert me.tags == ["cpu"] and me.queues[-1].endswith(f"node-{node}:cpu")
        nodes = client.get("/v1/nodes").json()
        assert any(n["name"] == f"{node}:cpu" for n in nodes)
    finally:
        stop(proc)


def test_a_point_that_kills_the_harness_is_recorded_and_the_sweep_goes_on(
    kw_env: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    proc = start_worker(f"crash-{kw_env.queue_prefix[-6:]}", log)
    try:
        # Points slow enough (about a second each on CPU) to kill the harness in the middle.
        from tests.worker_support import submit

        job_id = submit(tiny_spec(params={"batch_size": [4], "kv_len": [1024, 2048, 3072],
                                          "num_qo_heads": [8], "num_kv_heads": [2],
                                          "head_dim": [128]}))
        wait_for("a first stored point", lambda: count_points(job_id) >= 1, log_path=log)
        harness = wait_for("the harness process", lambda: children_of(proc.pid), log_path=log)
        for pid in harness:
            os.kill(pid, signal.SIGKILL)  # as the OOM killer would
        status = wait_for("the job to finish", lambda: terminal_status(job_id), log_path=log)
        assert status == "partial"
        with db.session_scope() as session:
            rows = session.execute(select(Point.point_index, Point.backend, Point.status,
                                          Point.error).where(Point.job_id == job_id)).all()
            assert len(rows) == 6  # every pair, once
            errored = [r for r in rows if r.status == "error"]
            assert len(errored) == 1 and "exited with code -9" in errored[0].error
            assert all(r.status == "ok" for r in rows if r.status != "error")
            n = session.scalar(select(func.count(Sample.id)).join(Point).where(
                Point.job_id == job_id))
            assert n == 5 * 30
    finally:
        stop(proc)


def test_cancel_mid_run_stops_the_harness(kw_env: Settings, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    proc = start_worker(f"cancel-{kw_env.queue_prefix[-6:]}", log)
    try:
        client, auth = _client()
        slow = {**SPEC, "params": {"batch_size": [4], "kv_len": [1024, 2048, 3072, 4096],
                                   "num_qo_heads": [8], "num_kv_heads": [2], "head_dim": [128]}}
        job_id = client.post("/v1/jobs", json=slow, headers=auth).json()["id"]
        wait_for("a first stored point", lambda: count_points(job_id) >= 1, log_path=log)
        r = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
        assert r.status_code == 200, r.text
        harness_gone = wait_for("the harness to stop", lambda: not children_of(proc.pid),
                                timeout=30, log_path=log)
        assert harness_gone
        stored = count_points(job_id)
        assert stored < 8
        wait_for("the worker to log the cancel", lambda: "was cancelled; stopped"
                 in log.read_text(), timeout=30, log_path=log)
        with db.session_scope() as session:
            run = session.scalars(select(Run).where(Run.job_id == job_id)).one()
            assert run.status == "cancelled"
        assert terminal_status(job_id) == "cancelled"
        assert count_points(job_id) == stored  # nothing measured after the cancel was seen
    finally:
        stop(proc)
