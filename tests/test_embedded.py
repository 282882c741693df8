"""The embedded default end to end: ``kernelwatch up`` with nothing configured (SQLite file and
SQLite broker under a fresh data directory) serves the API, a worker and the dashboard; a job
submitted over HTTP with the token it printed completes. Stopped in the middle of a run
(Ctrl-C) and started again, it resumes the run without measuring a point twice."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx

from tests.worker_support import ROOT, wait_for

SPEC = {
    "name": "embedded",
    "kernel": "single_decode",
    "backends": ["torch-sdpa", "torch-math"],
    "params": {"kv_len": [64, 128], "num_qo_heads": [4], "num_kv_heads": [2], "head_dim": [64]},
    "timing": {"warmup": 1, "iterations": 30},
}
SLOW_SPEC = {
    "name": "embedded-slow",
    "kernel": "batch_decode",
    "backends": ["torch-sdpa", "torch-math"],
    # long enough that Ctrl-C, sent once two points are stored, lands before the last one
    "params": {"batch_size": [4], "kv_len": list(range(512, 4097, 512)), "num_qo_heads": [8],
               "num_kv_heads": [2], "head_dim": [128]},
    "timing": {"warmup": 1, "iterations": 30},
}
SLOW_POINTS = 2 * 8
TERMINAL = {"succeeded", "partial", "failed", "cancelled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _up(data: Path, log: Path, api: int, dash: int, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNELWATCH_")}
    env.update(KERNELWATCH_DATA_DIR=str(data), KERNELWATCH_API_PORT=str(api),
               KERNELWATCH_DASHBOARD_PORT=str(dash), KERNELWATCH_HEARTBEAT_SECONDS="1")
    out = open(log, "ab")  # noqa: SIM115 (the process keeps it)
    return subprocess.Popen([sys.executable, "-m", "kernelwatch", "up",
                             *args], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def _status(api: str, job_id: int) -> dict:  # type: ignore[type-arg]
    return httpx.get(f"{api}/v1/jobs/{job_id}", timeout=10).json()  # type: ignore[no-any-return]


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_up_embedded_runs_a_job_and_resumes_after_ctrl_c(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "up.log"
    api_port, dash_port = _free_port(), _free_port()
    api = f"http://127.0.0.1:{api_port}"
    proc = _up(data, log, api_port, dash_port)
    try:
        wait_for("the API", lambda: _healthy(f"{api}/healthz"), timeout=120, log_path=log)
        printed = re.search(r"API token: (\S+)", log.read_text())
        assert printed, log.read_text()
        token = printed.group(1)
        assert (data / "token").read_text().strip() == token  # where the CLI finds it
        assert (data / "kernelwatch.sqlite").exists()
        # the local broker's file appears when the worker (started beside the API) connects
        wait_for("the broker's database", lambda: (data / "broker.sqlite").exists(),
                 timeout=60, log_path=log)
        auth = {"Authorization": f"Bearer {token}"}

        r = httpx.post(f"{api}/v1/jobs", json=SPEC, headers=auth, timeout=10)
        assert r.status_code == 201, r.text
        job = r.json()["id"]
        wait_for("the job", lambda: _status(api, job)["status"] in TERMINAL, log_path=log)
        body = _status(api, job)
        assert body["status"] == "succeeded", log.read_text()[-3000:]
        assert body["progress"] == {"done": 4, "total": 4, "errored": 0}
        csv = httpx.get(f"{api}/v1/jobs/{job}/results?format=csv", timeout=10).text
        assert len(csv.strip().splitlines()) == 1 + 4
        wait_for("the dashboard", lambda: _healthy(f"http://127.0.0.1:{dash_port}/"),
                 timeout=60, log_path=log)

        r = httpx.post(f"{api}/v1/jobs", json=SLOW_SPEC, headers=auth, timeout=10)
        slow = r.json()["id"]
        wait_for("two stored points",
                 lambda: _status(api, slow)["progress"]["done"] >= 2, log_path=log)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    for name in ("api", "dashboard"):
        assert f"kernelwatch: stopped {name}" in text
    with sqlite3.connect(data / "kernelwatch.sqlite") as db:
        stored = db.execute("SELECT count(*) FROM points WHERE job_id = ?", (slow,)).fetchone()[0]
    assert 2 <= stored < SLOW_POINTS, "Ctrl-C must land in the middle of the run"

    proc = _up(data, log, api_port, dash_port, "--no-dashboard")
    try:
        wait_for("the resumed job", lambda: _healthy(f"{api}/healthz")
                 and _status(api, slow)["status"] in TERMINAL, timeout=120, log_path=log)
        body = _status(api, slow)
        assert body["status"] == "succeeded"
        assert body["progress"] == {"done": SLOW_POINTS, "total": SLOW_POINTS, "errored": 0}
        assert body["runs"][0]["attempts"] == 2
        m = re.findall(r"(\d+) pairs to measure, (\d+) already stored", log.read_text())
        assert [int(x) for x in m[-1]] == [SLOW_POINTS - stored, stored]
        # No second token on a second start: the first one still works.
        assert log.read_text().count("API token: ") == 2
        assert "API token: see" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
