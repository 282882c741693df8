"""Samples written per second through ``core.results.store_point``: exactly what the worker does
for each point the harness reports (one point row with its statistics and derived metrics, every
raw sample inserted in bulk, one commit per point).

    python bench/samples_write.py                       # scratch Postgres database, dropped after
    python bench/samples_write.py --points 200 --samples 1000
    python bench/samples_write.py --sqlite              # the embedded default (a temp SQLite file)
    python bench/samples_write.py --url postgresql+psycopg://...   # an existing, migrated database

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import psycopg
from sqlalchemy import delete
from sqlalchemy.orm import Session

from kernelwatch.core.db import make_engine
from kernelwatch.core.migrate import upgrade
from kernelwatch.core.models import Job, Run
from kernelwatch.core.results import store_point
from kernelwatch.core.stats import summarize

PG_ADMIN = os.environ.get("KERNELWATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PARAMS = {"batch_size": 16, "kv_len": 2048, "num_qo_heads": 32, "num_kv_heads": 8,
          "head_dim": 128, "page_size": 16, "kv_layout": "NHD", "dtype": "bfloat16",
          "kv_dtype": None, "use_tensor_cores": False, "kv_len_distribution": "constant",
          "seed": 0}


@contextmanager
def scratch_postgres() -> Iterator[str]:
    name = f"kwbench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(url: str, points: int, samples: int, migrate: bool) -> None:
    if migrate:
        upgrade(url)
    engine = make_engine(url)
    rng = np.random.default_rng(0)
    with Session(engine, expire_on_commit=False) as session:
        job = Job(name="bench-samples", kernel="batch_decode", spec={}, status="running")
        session.add(job)
        session.flush()
        r = Run(job_id=job.id, target="h200", queue="bench", point_indices=list(range(points)),
                status="running", gpu_sku="h200")
        session.add(r)
        session.commit()
        messages = [
            {"type": "point", "point_index": i, "backend": "fa2", "status": "ok",
             "samples_us": (20.0 + rng.gamma(2.0, 0.2, samples)).tolist(),
             "timing_method": "cuda_graph"}
            for i in range(points)
        ]
        per_point = []
        t0 = time.perf_counter()
        for msg in messages:
            t = time.perf_counter()
            store_point(session, r, "batch_decode", PARAMS, msg)
            session.commit()
            per_point.append(time.perf_counter() - t)
        wall = time.perf_counter() - t0
        t1 = time.perf_counter()
        for msg in messages:
            summarize(msg["samples_us"])
        stats_s = time.perf_counter() - t1
        # Leave an existing database as it was.
        session.execute(delete(Job).where(Job.id == job.id))
        session.commit()
    engine.dispose()
    total = points * samples
    per_point.sort()
    p99 = per_point[min(len(per_point) - 1, int(0.99 * len(per_point)))]
    print(f"database           {engine.dialect.name}")
    print(f"points x samples   {points} x {samples} = {total} samples")
    print(f"wall               {wall:.2f} s (includes statistics: median, p10/p90, CV, "
          "bootstrap CI per point)")
    print(f"samples/s          {total / wall:,.0f}")
    print(f"points/s           {points / wall:,.1f}")
    print(f"per point (store + commit): p50 {statistics.median(per_point) * 1e3:.1f} ms, "
          f"p99 {p99 * 1e3:.1f} ms")
    db_s = max(wall - stats_s, 1e-9)
    print(f"of which statistics {stats_s:.2f} s ({stats_s / points * 1e3:.1f} ms a point, "
          "mostly the bootstrap CI)")
    print(f"database alone     {db_s:.2f} s -> {total / db_s:,.0f} samples/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=200)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--url", help="an existing, migrated database (SQLAlchemy URL)")
    ap.add_argument("--sqlite", action="store_true", help="a temporary SQLite file instead")
    args = ap.parse_args()
    if args.url:
        run(args.url, args.points, args.samples, migrate=False)
    elif args.sqlite:
        with tempfile.TemporaryDirectory() as d:
            run(f"sqlite:///{d}/bench.sqlite", args.points, args.samples, migrate=True)
    else:
        with scratch_postgres() as url:
            run(url, args.points, args.samples, migrate=True)


if __name__ == "__main__":
    main()
