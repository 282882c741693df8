"""Job submissions per second and POST /v1/jobs latency (p50/p99) against a running API.

    # against a running API (Postgres + Redis behind it)
    python bench/api_submit.py --url http://127.0.0.1:8000 --token TOKEN

    # self-contained: scratch Postgres database, migrated; uvicorn on a free port; a token;
    # cleaned up afterwards (database dropped, the scratch Redis queue deleted)
    python bench/api_submit.py --self-host --requests 1000 --concurrency 8

Each request is a real submission: spec validation, the job and its runs committed to
Postgres, then the run ids enqueued on Redis. Nothing consumes the queue (no worker), so the
figures are the API's own cost. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from kernelwatch.core.spec import cpu_decode_sweep

ROOT = Path(__file__).resolve().parent.parent


PG_ADMIN = os.environ.get("KERNELWATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("KERNELWATCH_TEST_REDIS", "redis://127.0.0.1:6379/0")

SPEC: dict[str, Any] = cpu_decode_sweep(
    "bench-submit", params={"batch_size": [1, 16], "kv_len": [512, 2048], "num_qo_heads": [32],
                            "num_kv_heads": [8], "head_dim": [128]})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def self_hosted(workers: int) -> Iterator[tuple[str, str]]:
    """A scratch database, migrated, an API process on it, and a token; all removed after."""
    import psycopg
    import redis
    from sqlalchemy.orm import Session

    from kernelwatch.core.db import make_engine
    from kernelwatch.core.migrate import upgrade
    from kernelwatch.core.tokens import create_token

    tag = uuid.uuid4().hex[:8]
    dbname = f"kwbench_{tag}"
    prefix = f"kwbench-{tag}"
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    db_url = f"{base}/{dbname}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    proc: subprocess.Popen[bytes] | None = None
    try:
        upgrade(db_url)
        engine = make_engine(db_url)
        with Session(engine) as session:
            token = create_token(session, "bench")
            session.commit()
        engine.dispose()
        port = _free_port()
        env = {**os.environ, "KERNELWATCH_DATABASE_URL": db_url,
               "KERNELWATCH_BROKER_URL": REDIS_URL, "KERNELWATCH_QUEUE_PREFIX": prefix}
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "kernelwatch.api.main:app", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(workers), "--log-level", "warning",
             "--no-access-log"],
            env=env, cwd=ROOT,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            time.sleep(0.2)
        yield url, token
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
        redis.Redis.from_url(REDIS_URL).delete(f"{prefix}.cpu")
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def run_load(url: str, token: str, requests: int, concurrency: int,
             spec: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(spec).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    lock = threading.Lock()
    remaining = iter(range(requests))

    def worker() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            while True:
                with lock:
                    if next(remaining, None) is None:
                        return
                t0 = time.perf_counter()
                r = client.post("/v1/jobs", content=body)
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    codes[r.status_code] += 1

    # Warm up the connection pools and the API's first-request paths.
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for _ in range(5):
            client.post("/v1/jobs", content=body)
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, round(p / 100 * (len(lat) - 1)))] * 1000

    return {
        "requests": len(lat),
        "concurrency": concurrency,
        "status_codes": dict(codes),
        "wall_s": wall,
        "submissions_per_s": len(lat) / wall,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "mean_ms": statistics.fmean(lat) * 1000,
        "max_ms": lat[-1] * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--token", default=os.environ.get("KERNELWATCH_TOKEN", ""))
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--self-host", action="store_true",
                    help="scratch Postgres database + uvicorn on a free port, cleaned up after")
    ap.add_argument("--api-workers", type=int, default=2,
                    help="uvicorn worker processes with --self-host")
    ap.add_argument("--spec", type=Path, help="a JSON sweep spec to submit (default: a 4-point "
                    "x 2-backend decode sweep)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    spec = json.loads(args.spec.read_text()) if args.spec else SPEC

    if args.self_host:
        with self_hosted(args.api_workers) as (url, token):
            result = run_load(url, token, args.requests, args.concurrency, spec)
        result["api"] = f"self-hosted uvicorn x{args.api_workers}, Postgres + Redis"
    else:
        if not args.token:
            sys.exit("--token (or KERNELWATCH_TOKEN) is needed to submit jobs")
        result = run_load(args.url, args.token, args.requests, args.concurrency, spec)
        result["api"] = args.url
    result["cpus"] = os.cpu_count()
    if args.json:
        print(json.dumps(result))
        return
    print(f"POST /v1/jobs against {result['api']} ({result['cpus']} CPUs on this machine)")
    print(f"  {result['requests']} submissions, concurrency {result['concurrency']}, "
          f"status codes {result['status_codes']}")
    print(f"  {result['submissions_per_s']:.1f} submissions/s over {result['wall_s']:.2f} s")
    print(f"  latency p50 {result['p50_ms']:.1f} ms, p90 {result['p90_ms']:.1f} ms, "
          f"p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.1f} ms")


if __name__ == "__main__":
    main()
