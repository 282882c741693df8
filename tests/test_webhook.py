"""POST /v1/webhooks/github with payloads shaped exactly like GitHub's: signatures, event
filtering, malformed input, idempotency on the delivery and the version, and concurrency (the
same delivery posted 10 times at once against a real uvicorn on Postgres creates one release)."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernelwatch.api.main import create_app
from kernelwatch.core.models import Job, Node, Release, WebhookDelivery
from kernelwatch.core.settings import Settings
from tests.conftest import configure

SECRET = "s3cret-for-tests"
PAYLOAD = json.loads(
    (Path(__file__).parent / "fixtures" / "github" / "release_published.json").read_text()
)


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def headers(body: bytes, event: str = "release", delivery: str | None = None,
            signature: str | None = "auto") -> dict[str, str]:
    h = {"Content-Type": "application/json", "X-GitHub-Event": event,
         "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
         "User-Agent": "GitHub-Hookshot/abc123"}
    if signature == "auto":
        h["X-Hub-Signature-256"] = sign(body)
    elif signature is not None:
        h["X-Hub-Signature-256"] = signature
    return h


@pytest.fixture
def env(kw_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    return configure(monkeypatch, webhook_secret=SECRET)


@pytest.fixture
def client(env: Settings) -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


def post(client: TestClient, payload: Any, event: str = "release", **kw: Any) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return client.post("/v1/webhooks/github", content=body, headers=headers(body, event, **kw))


def test_no_secret_configured_is_503(kw_env: Settings) -> None:
    with TestClient(create_app()) as c:
        r = post(c, PAYLOAD)
    assert r.status_code == 503
    assert "KERNELWATCH_WEBHOOK_SECRET" in r.json()["detail"]


def test_signature_missing_or_wrong_is_401(client: TestClient, session: Session) -> None:
    assert post(client, PAYLOAD, signature=None).status_code == 401
    r = post(client, PAYLOAD, signature=sign(b"another body"))
    assert r.status_code == 401 and "does not match" in r.json()["detail"]
    r = post(client, PAYLOAD, signature=sign(json.dumps(PAYLOAD).encode(), "wrong-secret"))
    assert r.status_code == 401
    assert session.scalar(select(func.count(Release.id))) == 0


def test_malformed_json_and_missing_fields_are_400(client: TestClient) -> None:
    r = post(client, b'{"action": "published", ')
    assert r.status_code == 400 and "malformed JSON" in r.json()["detail"]
    assert post(client, b"[1, 2]").status_code == 400
    no_tag = copy.deepcopy(PAYLOAD)
    del no_tag["release"]["tag_name"]
    r = post(client, no_tag)
    assert r.status_code == 400 and "release.tag_name" in r.json()["detail"]
    no_repo = copy.deepcopy(PAYLOAD)
    del no_repo["repository"]
    r = post(client, no_repo)
    assert r.status_code == 400 and "repository.full_name" in r.json()["detail"]


def test_ping(client: TestClient) -> None:
    r = post(client, {"zen": "Keep it logically awesome.", "hook_id": 1}, event="ping")
    assert r.status_code == 200 and r.json()["ok"] is True


def test_ignored_events_are_202_with_the_reason(client: TestClient, session: Session,
                                                 cpu_node: Node) -> None:
    r = post(client, {"ref": "refs/heads/main"}, event="push")
    assert r.status_code == 202 and "'push' is not handled" in r.json()["reason"]
    created = copy.deepcopy(PAYLOAD)
    created["action"] = "created"
    assert "'published'" in post(client, created).json()["reason"]
    other = copy.deepcopy(PAYLOAD)
    other["repository"]["full_name"] = "someone/fork"
    r = post(client, other)
    assert r.status_code == 202 and "someone/fork" in r.json()["reason"]
    branch = copy.deepcopy(PAYLOAD)
    branch["release"]["tag_name"] = "nightly"
    assert "not a version tag" in post(client, branch).json()["reason"]
    failed = {"action": "completed", "repository": PAYLOAD["repository"],
              "workflow_run": {"head_branch": "v0.6.19", "conclusion": "failure"}}
    assert "'failure'" in post(client, failed, event="workflow_run").json()["reason"]
    assert session.scalar(select(func.count(Release.id))) == 0


def test_release_creates_release_and_jobs_for_the_previous_and_new_version(
    client: TestClient, session: Session, cpu_node: Node
) -> None:
    session.add(Release(version="0.6.18", source="manual", status="complete", details={}))
    session.add(Release(version="0.5.3", source="manual", status="complete", details={}))
    session.commit()
    r = post(client, PAYLOAD)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["version"] == "0.6.18.post1" and out["previous_version"] == "0.6.18"
    assert out["created"] is True and out["tags"]["cpu"]["state"] == "benchmarking"
    jobs = session.scalars(select(Job).where(Job.release_version == "0.6.18.post1")).all()
    assert {j.id for j in jobs} == {j["id"] for j in out["jobs"]} and jobs
    for j in jobs:
        assert j.kind == "release" and j.source == "webhook"
        assert j.spec["flashinfer_versions"] == ["0.6.18", "0.6.18.post1"]
        assert j.spec["targets"] == ["cpu"]
        assert set(j.spec["backends"]) <= {"torch-sdpa", "torch-math", "torch"}  # cpu: torch only


def test_workflow_run_success_on_a_version_tag(client: TestClient, cpu_node: Node) -> None:
    run = {"action": "completed", "repository": PAYLOAD["repository"],
           "workflow_run": {"id": 1, "name": "release", "head_branch": "v0.7.2.post1",
                            "conclusion": "success", "status": "completed"}}
    r = post(client, run, event="workflow_run")
    assert r.status_code == 201 and r.json()["version"] == "0.7.2.post1"


def test_replays_and_second_events_create_nothing(client: TestClient, session: Session,
                                                  cpu_node: Node) -> None:
    delivery = str(uuid.uuid4())
    first = post(client, PAYLOAD, delivery=delivery)
    assert first.status_code == 201
    jobs = {j["id"] for j in first.json()["jobs"]}
    again = post(client, PAYLOAD, delivery=delivery)
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert {j["id"] for j in again.json()["jobs"]} == jobs
    other = post(client, PAYLOAD)  # a new delivery of the same release
    assert other.status_code == 200 and other.json()["created"] is False
    assert {j["id"] for j in other.json()["jobs"]} == jobs
    assert session.scalar(select(func.count(Release.id))) == 1
    assert session.scalar(select(func.count(Job.id))) == len(jobs)
    assert session.scalar(select(func.count(WebhookDelivery.id))) == 2


def test_no_nodes_records_the_release_with_the_reason(client: TestClient) -> None:
    r = post(client, PAYLOAD)
    assert r.status_code == 201
    assert r.json()["status"] == "no_nodes" and "no GPU or CPU node" in r.json()["message"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(env: Settings) -> Iterator[str]:
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port,
                                        log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(timeout=10)


@pytest.mark.parametrize("same_delivery", [True, False])
def test_concurrent_deliveries_create_one_release(server: str, session: Session,
                                                  cpu_node: Node, same_delivery: bool) -> None:
    body = json.dumps(PAYLOAD).encode()
    delivery = str(uuid.uuid4())
    barrier = threading.Barrier(10)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def send() -> None:
        h = headers(body, delivery=delivery if same_delivery else None)
        barrier.wait()
        r = httpx.post(f"{server}/v1/webhooks/github", content=body, headers=h, timeout=60)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=send) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in results) == [200] * 9 + [201], [r.text for r in results]
    job_sets = {frozenset(j["id"] for j in r.json()["jobs"]) for r in results}
    assert len(job_sets) == 1 and next(iter(job_sets))
    session.expire_all()
    assert session.scalar(select(func.count(Release.id))) == 1
    assert session.scalar(select(func.count(Job.id))) == len(next(iter(job_sets)))
    assert session.scalar(select(func.count(WebhookDelivery.id))) == (1 if same_delivery else 10)


def test_a_broken_release_suite_is_503_and_records_nothing(
    env: Settings, session: Session, cpu_node: Node, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "suite.yaml"
    bad.write_text("specs:\n  - name: x\n    kernel: no_such_kernel\n")
    configure(monkeypatch, release_suite=str(bad))
    with TestClient(create_app()) as c:
        r = post(c, PAYLOAD)
    assert r.status_code == 503 and "no_such_kernel" in r.json()["detail"]
    assert session.scalar(select(func.count(Release.id))) == 0
    assert session.scalar(select(func.count(WebhookDelivery.id))) == 0
