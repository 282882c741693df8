"""The same Idempotency-Key returns the same job, sequentially and under a race, and its runs
are enqueued exactly once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernelwatch.core import jobs
from kernelwatch.core.db import new_session
from kernelwatch.core.models import Job, Run
from kernelwatch.core.settings import Settings
from kernelwatch.core.spec import SweepSpec
from tests.api_support import auth, decode_spec, make_client, new_token
from tests.conftest import REDIS_URL


def _queue_len(settings: Settings) -> int:
    return int(redis.Redis.from_url(REDIS_URL).llen(f"{settings.queue_prefix}.cpu"))


def test_same_key_same_job(kw_env: Settings, session: Session) -> None:
    c = make_client()
    headers = {**auth(new_token()), "Idempotency-Key": "sweep-42"}
    first = c.post("/v1/jobs", json=decode_spec(), headers=headers)
    again = c.post("/v1/jobs", json=decode_spec(), headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert [r["id"] for r in first.json()["runs"]] == [r["id"] for r in again.json()["runs"]]
    other = c.post("/v1/jobs", json=decode_spec(), headers={**headers, "Idempotency-Key": "b"})
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    assert session.scalar(select(func.count()).select_from(Job)) == 2
    assert _queue_len(kw_env) == 2  # one run per job: the replay enqueued nothing


def test_concurrent_posts_with_one_key_make_one_job(kw_env: Settings, session: Session) -> None:
    c = make_client()
    headers = {**auth(new_token()), "Idempotency-Key": "race"}
    barrier = threading.Barrier(6)

    def post() -> tuple[int, int]:
        barrier.wait()
        r = c.post("/v1/jobs", json=decode_spec(), headers=headers)
        return r.status_code, r.json()["id"]

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: post(), range(6)))
    assert {job_id for _, job_id in results} == {results[0][1]}
    assert sorted(code for code, _ in results) == [200] * 5 + [201]
    assert session.scalar(select(func.count()).select_from(Job)) == 1
    assert _queue_len(kw_env) == 1


def test_losing_insert_returns_the_winners_job(kw_env: Settings) -> None:
    """Force the race deterministically: A has inserted (not committed) when B checks the key,
    so B passes the lookup, blocks on the unique index, fails when A commits, and must
    answer with A's job instead of an error."""
    spec = SweepSpec.model_validate(decode_spec())
    a = new_session()
    job_a, created_a, _ = jobs.create_job(a, spec, source="api", submitted_by="a",
                                          idempotency_key="k")
    assert created_a
    out: dict[str, object] = {}

    def b_side() -> None:
        b = new_session()
        try:
            job_b, created_b, runs_b = jobs.create_job(b, spec, source="api", submitted_by="b",
                                                       idempotency_key="k")
            b.commit()
            out.update(id=job_b.id, created=created_b, runs=[r.id for r in runs_b])
        finally:
            b.close()

    t = threading.Thread(target=b_side)
    t.start()
    time.sleep(0.5)  # B is now waiting on A's uncommitted unique key
    assert t.is_alive()
    a.commit()
    t.join(10)
    run_ids = list(a.scalars(select(Run.id).where(Run.job_id == job_a.id)))
    a.close()
    assert out == {"id": job_a.id, "created": False, "runs": run_ids}


def test_same_key_with_another_spec_is_409(kw_env: Settings, session: Session) -> None:
    c = make_client()
    headers = {**auth(new_token()), "Idempotency-Key": "k"}
    job_id = c.post("/v1/jobs", json=decode_spec(), headers=headers).json()["id"]
    r = c.post("/v1/jobs", json=decode_spec(name="other"), headers=headers)
    assert r.status_code == 409
    assert f"job {job_id}" in r.json()["detail"] and "different spec" in r.json()["detail"]
    assert session.scalar(select(func.count()).select_from(Job)) == 1
    assert _queue_len(kw_env) == 1
