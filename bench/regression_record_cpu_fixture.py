"""Record two CPU runs of the same sweep through the real harness (the worker's own path:
``worker.tasks.build_request`` -> ``HarnessRunner`` -> ``core.results.store_point``) and save
both jobs, raw samples included, as a fixture for tests/test_compare_runs.py.

The two jobs are measured one after the other, as two
submissions of the same spec would be; that is the case the self-comparison test is about.

Run:  OMP_NUM_THREADS=1 .venv/bin/python bench/regression_record_cpu_fixture.py [-o FILE]
(one intra-op thread: on a shared CPU torch's thread pool otherwise waits whole scheduler
slices for a preempted thread)
Needs Postgres on 127.0.0.1 (a temporary database is created and dropped).
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.orm import Session

from kernelwatch.core import db, settings
from kernelwatch.core.fixtures import export_job
from kernelwatch.core.jobs import create_job
from kernelwatch.core.migrate import upgrade
from kernelwatch.core.models import Job, Run
from kernelwatch.core.results import store_point
from kernelwatch.core.spec import SweepSpec
from kernelwatch.worker.runner import HarnessRunner
from kernelwatch.worker.tasks import build_request, harness_python_for, store_environment

ADMIN = os.environ.get("KERNELWATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
OUT = Path(__file__).resolve().parent.parent / "tests/fixtures/compare/cpu_same_spec_two_runs.json"

SPEC: dict[str, Any] = {
    "name": "self-comparison",
    "kernel": "batch_decode",
    "backends": ["torch-sdpa", "torch-math"],
    "targets": ["cpu"],
    "params": {"batch_size": [1, 4], "kv_len": [256, 1024], "num_qo_heads": [8],
               "num_kv_heads": [2], "head_dim": [64]},
    "timing": {"warmup": 5, "iterations": 60},
}


def measure(session: Session, job_id: int) -> None:
    job = session.get(Job, job_id)
    assert job is not None
    for run in session.query(Run).filter(Run.job_id == job_id).all():
        request = build_request(session, run, job, "cpu")
        runner = HarnessRunner(harness_python_for(run, request.backends, "cpu"), request)
        for msg in runner.messages():
            if msg["type"] == "env":
                store_environment(run, msg)
            elif msg["type"] == "point":
                params = dict(request.points_by_index[int(msg["point_index"])])
                store_point(session, run, request.kernel, params, msg)
        run.status = job.status = "succeeded"
        session.commit()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--output", type=Path, default=OUT)
    args = ap.parse_args()
    name = f"kwrecord_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name
    try:
        os.environ["KERNELWATCH_DATABASE_URL"] = url
        settings.get_settings.cache_clear()
        db.reset_engine()
        upgrade(url)
        out = {}
        for label in ("baseline", "contender"):
            with db.session_scope() as session:
                job, _, _ = create_job(session, SweepSpec(**SPEC), source="cli",
                                       submitted_by="record")
                job_id = job.id
            session = db.new_session()
            measure(session, job_id)
            out[label] = export_job(session, job_id)
            session.close()
        args.output.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.output}")
    finally:
        db.reset_engine()
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
