"""bench/regression_gpu_release.py --export-only: a flow's release_flow.json written from the
embedded database it left behind (a flow stopped by an outer time limit before it wrote its
own), through the same export as the flow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.release_support import write_tiny_suite

ROOT = Path(__file__).resolve().parent.parent

SEED = """
import sys
from kernelwatch.core import db
from kernelwatch.core.migrate import upgrade
from kernelwatch.core.releases import start_release
from kernelwatch.worker.node import NodeIdentity, register
upgrade()
with db.session_scope() as session:
    register(session, NodeIdentity(name="cpu-node", hostname="h", tags=["cpu"]), [], {})
with db.session_scope() as session:
    start_release(session, "0.7.4", previous="0.6.18.post1")
"""


def test_release_flow_json_is_written_from_a_flows_data_dir(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    env = {**os.environ, "KERNELWATCH_DATA_DIR": str(data), "KERNELWATCH_DATABASE_URL": "",
           "KERNELWATCH_BROKER_URL": "", "KERNELWATCH_ENQUEUE": "false",
           "KERNELWATCH_RELEASE_SUITE": str(write_tiny_suite(tmp_path)),
           "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", SEED], env=env, check=True, cwd=ROOT)
    done = subprocess.run([sys.executable, "bench/regression_gpu_release.py", "--export-only",
                           "--data-dir", str(data), "--new", "0.7.4", "--out", str(out)],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    flow = json.loads((out / "release_flow.json").read_text())
    assert flow["release"]["version"] == "0.7.4"
    assert flow["release"]["previous_version"] == "0.6.18.post1"
    (job,) = flow["jobs"]
    assert job["job"]["name"].startswith("release-tiny-decode")
    assert sorted(r["flashinfer_version"] for r in job["runs"]) == ["0.6.18.post1", "0.7.4"]
    assert all(r["status"] == "queued" and r["points"] == [] for r in job["runs"])


def test_export_only_needs_the_data_dir(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "bench/regression_gpu_release.py", "--export-only",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 2
    assert "--export-only needs --data-dir" in done.stderr


def test_a_flow_stopped_from_outside_writes_what_it_has(tmp_path: Path) -> None:
    """SIGTERM (scripts/gpu-check's --limit) while the flow waits: it leaves through its
    cleanup, writing release_flow.json with the release and its jobs and stopping its
    workers, instead of dying with nothing written (a real flow on this CPU node: embedded
    database and broker, a worker process)."""
    import signal
    import time

    out, data = tmp_path / "out", tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "bench/regression_gpu_release.py", "--new", "0.7.4", "--previous",
         "0.6.18.post1", "--suite", str(write_tiny_suite(tmp_path)), "--wheelhouse",
         str(tmp_path / "whl"), "--out", str(out), "--data-dir", str(data), "--timeout", "600"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + 180
    for line in proc.stdout:  # until the release is triggered
        seen.append(line)
        if "release 0.7.4 vs 0.6.18.post1" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, "".join(seen) + rest  # stopped, not finished
    assert "stopped by signal" in rest
    flow = json.loads((out / "release_flow.json").read_text())
    assert flow["release"]["version"] == "0.7.4"
    assert flow["jobs"][0]["job"]["name"].startswith("release-tiny-decode")
