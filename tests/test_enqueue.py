"""Runs are enqueued on the real Redis broker, on their tag's queue, only after the commit."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from kernelwatch.api.main import create_app
from kernelwatch.core import db
from kernelwatch.core.broker import TASK_EXECUTE_RUN
from kernelwatch.core.models import Job
from kernelwatch.core.settings import Settings
from tests.api_support import add_node, auth, decode_spec, make_client, new_token
from tests.conftest import REDIS_URL


def _messages(queue: str) -> list[dict[str, Any]]:
    """The Celery messages waiting on a queue, decoded (kombu's Redis transport keeps a
    queue as a list of JSON envelopes whose body is the base64 task payload)."""
    r = redis.Redis.from_url(REDIS_URL)
    out = []
    for raw in r.lrange(queue, 0, -1):
        envelope = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        out.append({"task": envelope["headers"]["task"], "args": args})
    return out


@pytest.fixture
def client(kw_env: Settings) -> Iterator[TestClient]:
    c = make_client()
    c.headers.update(auth(new_token()))
    yield c
    redis.Redis.from_url(REDIS_URL).delete(*(f"{kw_env.queue_prefix}.{t}"
                                             for t in ("cpu", "hopper")))


def test_run_ids_land_on_the_tag_queues(client: TestClient, kw_env: Settings) -> None:
    add_node("a:cpu", ["cpu"])
    add_node("b:cpu", ["cpu"])  # two live cpu nodes: the grid splits in two runs
    r = client.post("/v1/jobs", json=decode_spec(targets=["cpu", "hopper"]))
    assert r.status_code == 201
    runs = r.json()["runs"]
    cpu_ids = [x["id"] for x in runs if x["target"] == "cpu"]
    hopper_ids = [x["id"] for x in runs if x["target"] == "hopper"]
    assert len(cpu_ids) == 2 and len(hopper_ids) == 1
    prefix = kw_env.queue_prefix
    cpu = _messages(f"{prefix}.cpu")
    hopper = _messages(f"{prefix}.hopper")
    assert {m["task"] for m in cpu + hopper} == {TASK_EXECUTE_RUN}
    # LPUSH: the newest message is first.
    assert sorted(m["args"][0] for m in cpu) == sorted(cpu_ids)
    assert [m["args"] for m in hopper] == [[hopper_ids[0]]]


def test_failing_commit_enqueues_nothing(kw_env: Settings, session: Session) -> None:
    """A deferred constraint trigger makes the job's COMMIT itself fail (a real database
    failure, raised at the moment of the commit): no job, no message."""
    ddl = [
        """CREATE FUNCTION kw_fail_commit() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'commit refused by test trigger'; END $$""",
        """CREATE CONSTRAINT TRIGGER kw_fail_commit AFTER INSERT ON jobs
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION kw_fail_commit()""",
    ]
    with db.get_engine().begin() as conn:
        for stmt in ddl:
            conn.execute(text(stmt))
    try:
        token = new_token()
        c = TestClient(create_app(), raise_server_exceptions=False)
        r = c.post("/v1/jobs", json=decode_spec(), headers=auth(token))
        assert r.status_code == 500
        assert "commit refused by test trigger" in r.json()["detail"]
    finally:
        with db.get_engine().begin() as conn:
            conn.execute(text("DROP TRIGGER kw_fail_commit ON jobs"))
            conn.execute(text("DROP FUNCTION kw_fail_commit()"))
    assert session.scalar(select(func.count()).select_from(Job)) == 0
    assert _messages(f"{kw_env.queue_prefix}.cpu") == []


def test_broker_down_keeps_the_job_and_a_replay_enqueues_it(
    kw_env: Settings, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database is the truth: a job committed while the broker is unreachable stays, says
    why it waits, and the client's retry with the same Idempotency-Key enqueues it."""
    from tests.conftest import configure

    token = new_token()
    headers = {**auth(token), "Idempotency-Key": "broker-down"}
    configure(monkeypatch, broker_url="redis://127.0.0.1:1/0")  # nothing listens there
    c = TestClient(create_app())
    r = c.post("/v1/jobs", json=decode_spec(), headers=headers)
    assert r.status_code == 503, r.text
    assert "retry with the same Idempotency-Key" in r.json()["detail"]
    job = session.scalars(select(Job)).one()
    assert job.status == "queued" and (job.message or "").startswith("enqueue failed")

    configure(monkeypatch, broker_url=REDIS_URL)
    c = TestClient(create_app())
    r = c.post("/v1/jobs", json=decode_spec(), headers=headers)
    assert r.status_code == 200 and r.json()["id"] == job.id
    assert [m["args"] for m in _messages(f"{kw_env.queue_prefix}.cpu")] == \
        [[r.json()["runs"][0]["id"]]]
    session.expire_all()
    assert session.get(Job, job.id).message is None  # type: ignore[union-attr]
    # A further replay does not enqueue it a second time.
    assert c.post("/v1/jobs", json=decode_spec(), headers=headers).status_code == 200
    assert len(_messages(f"{kw_env.queue_prefix}.cpu")) == 1
    redis.Redis.from_url(REDIS_URL).delete(f"{kw_env.queue_prefix}.cpu")
