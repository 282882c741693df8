"""The jobs API over HTTP: submit, inspect, list, results (JSON and CSV), nodes, health,
metrics, OpenAPI."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from kernelwatch.api.main import create_app
from kernelwatch.core import db, jobs
from kernelwatch.core.migrate import upgrade
from kernelwatch.core.models import Job, Run
from kernelwatch.core.results import store_point
from kernelwatch.core.settings import Settings
from kernelwatch.core.spec import SweepSpec
from tests.api_support import add_node, auth, decode_spec, make_client, new_token
from tests.conftest import configure


@pytest.fixture
def client(kw_env: Settings) -> Iterator[TestClient]:
    c = make_client()
    c.headers.update(auth(new_token()))
    yield c


def _measure(session: Session, job_id: int) -> None:
    """What a worker does, through the same service calls: start, store points, finish."""
    job = session.get(Job, job_id)
    assert job is not None
    spec = SweepSpec.model_validate(job.spec)
    for run in session.query(Run).filter(Run.job_id == job_id).all():
        run.gpu_name, run.gpu_sku, run.timing_method = "cpu", None, "cpu_perf_counter"
        run.environment, run.env_fingerprint = {"torch": "2.11.0", "cpu_count": 2}, "fp1"
        jobs.mark_run_started(session, run, None)
        for i in run.point_indices:
            store_point(session, run, job.kernel, spec.grid("torch-sdpa")[i], {
                "point_index": i, "backend": "torch-sdpa", "status": "ok",
                "samples_us": [100.0 + (k % 7) for k in range(30)],
                "timing_method": "cpu_perf_counter",
            })
            store_point(session, run, job.kernel, spec.grid("torch-math")[i], {
                "point_index": i, "backend": "torch-math", "status": "error",
                "error": "out of memory", "max_abs_error": float("nan"),
            })
        jobs.mark_run_finished(session, run)
    session.commit()


def test_submit_and_inspect(client: TestClient, session: Session) -> None:
    r = client.post("/v1/jobs", json=decode_spec(), headers={"X-Kernelwatch-Source": "cli"})
    assert r.status_code == 201
    body = r.json()
    assert body["status"] == "queued" and body["source"] == "cli"
    assert body["progress"] == {"done": 0, "total": 8, "errored": 0}
    assert body["message"] == "waiting: no live node carries tag 'cpu'"
    assert body["spec"]["backends"] == ["torch-sdpa", "torch-math"]
    assert body["spec"]["timing"]["cold_l2"] is True  # defaults are stored with the spec
    [run] = body["runs"]
    assert run["target"] == "cpu" and run["points"] == 4 and run["status"] == "queued"

    _measure(session, body["id"])
    detail = client.get(f"/v1/jobs/{body['id']}").json()
    assert detail["status"] == "partial"
    assert detail["progress"] == {"done": 8, "total": 8, "errored": 4}
    assert detail["message"] is None
    assert detail["runs"][0]["status"] == "partial"
    assert detail["runs"][0]["timing_method"] == "cpu_perf_counter"
    assert client.get("/v1/jobs/12345").status_code == 404


def test_list_filter_and_paginate(client: TestClient, session: Session) -> None:
    ids = [client.post("/v1/jobs", json=decode_spec(name=f"j{i}")).json()["id"]
           for i in range(5)]
    _measure(session, ids[0])
    page = client.get("/v1/jobs?limit=2&offset=1").json()
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 1
    assert [j["id"] for j in page["items"]] == [ids[3], ids[2]]  # newest first
    queued = client.get("/v1/jobs?status=queued").json()
    assert queued["total"] == 4 and ids[0] not in [j["id"] for j in queued["items"]]
    partial = client.get("/v1/jobs?status=partial").json()
    assert [j["id"] for j in partial["items"]] == [ids[0]]
    messages = {j["id"]: j["message"] for j in client.get("/v1/jobs").json()["items"]}
    assert messages[ids[1]] == "waiting: no live node carries tag 'cpu'"
    assert messages[ids[0]] is None  # finished: not waiting
    add_node("a:cpu", ["cpu"])
    assert all(j["message"] is None for j in client.get("/v1/jobs").json()["items"])


def test_results_json_and_csv(client: TestClient, session: Session) -> None:
    job_id = client.post("/v1/jobs", json=decode_spec()).json()["id"]
    _measure(session, job_id)
    data = client.get(f"/v1/jobs/{job_id}/results").json()
    rows = data["rows"]
    assert len(rows) == 8
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 4
    first = ok[0]
    assert first["param_batch_size"] == 1 and first["param_kv_len"] == 128
    assert first["median_us"] == pytest.approx(103.0)
    assert first["ci_low_us"] <= first["median_us"] <= first["ci_high_us"]
    assert first["n_samples"] == 30 and first["timing_method"] == "cpu_perf_counter"
    assert first["tbps"] == pytest.approx(first["bytes"] / (first["median_us"] * 1e-6) / 1e12)
    assert first["gpu_name"] == "cpu" and first["job_name"] == "decode-gqa"
    assert first["env_torch"] == "2.11.0" and first["env_fingerprint"] == "fp1"
    assert first["env_driver"] is None  # a CPU run has no driver
    errored = [r for r in rows if r["status"] == "error"]
    assert {r["error"] for r in errored} == {"out of memory"}
    assert {r["max_abs_error"] for r in errored} == {None}  # NaN: null in JSON

    r = client.get(f"/v1/jobs/{job_id}/results?format=csv")
    assert r.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert len(table) == 8
    csv_ok = [t for t in table if t["status"] == "ok"]
    assert [float(t["median_us"]) for t in csv_ok] == pytest.approx([r["median_us"] for r in ok])
    assert all(t["median_us"] == "" for t in table if t["status"] == "error")
    assert {"param_kv_len", "flashinfer_version", "p10_us", "p90_us", "cv", "tflops"} \
        <= set(table[0])


def test_nodes(client: TestClient) -> None:
    add_node("gpu1:gpu0", ["hopper", "h200"], gpu_name="NVIDIA H200", gpu_sku="h200",
             versions_ready=["0.6.18.post1"], copy_bandwidth_tbps=4.1)
    add_node("old:cpu", ["cpu"], age_seconds=3600)
    nodes = {n["name"]: n for n in client.get("/v1/nodes").json()}
    live = nodes["gpu1:gpu0"]
    assert live["live"] is True and live["heartbeat_age_seconds"] < 60
    assert live["tags"] == ["hopper", "h200"] and live["versions_ready"] == ["0.6.18.post1"]
    assert live["copy_bandwidth_tbps"] == 4.1
    assert nodes["old:cpu"]["live"] is False
    assert nodes["old:cpu"]["heartbeat_age_seconds"] >= 3600


def test_health_metrics_and_docs(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}
    client.post("/v1/jobs", json=decode_spec())
    add_node("a:cpu", ["cpu"])
    text = client.get("/metrics").text
    assert 'kernelwatch_jobs{status="queued"} 1.0' in text
    assert 'kernelwatch_runs{status="queued"} 1.0' in text
    assert "kernelwatch_database_up 1.0" in text
    assert "kernelwatch_live_nodes 1.0" in text
    assert "kernelwatch_points_stored 0.0" in text
    assert 'kernelwatch_http_requests_total{method="POST",route="/v1/jobs",status="201"} 1.0' \
        in text
    assert 'kernelwatch_http_request_seconds_count{method="POST",route="/v1/jobs"} 1.0' in text
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert "kernel" in body["application/json"]["schema"]["properties"]
    assert "application/yaml" in body
    assert client.get("/docs").status_code == 200


def test_embedded_sqlite_submit_and_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    """The embedded default (SQLite + SQLite broker, nothing configured) serves the same API:
    a submission, its idempotent replay, and the run's message in the local broker."""
    configure(monkeypatch, data_dir=str(tmp_path / "kw"), database_url="", broker_url="",
              queue_prefix="kwembedded")
    try:
        upgrade()
        c = make_client()
        c.headers.update({**auth(new_token()), "Idempotency-Key": "k1"})
        first = c.post("/v1/jobs", json=decode_spec())
        again = c.post("/v1/jobs", json=decode_spec())
        assert (first.status_code, again.status_code) == (201, 200)
        assert first.json()["id"] == again.json()["id"]
        assert c.get(f"/v1/jobs/{first.json()['id']}").json()["progress"]["total"] == 8
        with db.get_engine().connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM jobs")) == 1
        broker = create_engine(f"sqlite:///{tmp_path / 'kw' / 'broker.sqlite'}")
        with broker.connect() as conn:
            payloads = conn.execute(text(
                "SELECT m.payload FROM kombu_message m JOIN kombu_queue q ON q.id = m.queue_id"
                " WHERE q.name = 'kwembedded.cpu'")).scalars().all()
        broker.dispose()
        assert len(payloads) == 1
        assert json.loads(payloads[0])["headers"]["task"] == "kernelwatch.execute_run"
    finally:
        db.reset_engine()


def test_database_down_is_503_with_message(kw_env: Settings,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, database_url="postgresql+psycopg://postgres@127.0.0.1:1/none")
    c = TestClient(create_app(), raise_server_exceptions=False)
    r = c.get("/healthz")
    assert r.status_code == 503 and r.json()["status"] == "unavailable"
    assert "127.0.0.1" in r.json()["database"]
    r = c.get("/v1/jobs")
    assert r.status_code == 503 and r.json()["detail"].startswith("database unavailable")
    assert "kernelwatch_database_up 0.0" in c.get("/metrics").text
