"""The job commands of the CLI against a real API server (uvicorn on a free port)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from kernelwatch.cli.main import cli
from kernelwatch.core import jobs
from kernelwatch.core.db import session_scope
from kernelwatch.core.models import Job, Run
from kernelwatch.core.results import store_point
from kernelwatch.core.settings import Settings
from kernelwatch.core.spec import SweepSpec
from tests.api_support import decode_spec
from tests.conftest import configure, free_port

SPEC_YAML = """
name: cli-sweep
kernel: batch_decode
backends: [torch-sdpa]
targets: [cpu]
params:
  batch_size: [1, 2]
  kv_len: [64]
  num_qo_heads: [4]
  num_kv_heads: [2]
  head_dim: [64]
"""


def _fake_worker(job_id: int) -> None:
    """Measure the job through the service calls a worker makes (no Celery worker here)."""
    time.sleep(0.5)
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        grid = SweepSpec.model_validate(job.spec).grid("torch-sdpa")
        runs = list(session.scalars(select(Run).where(Run.job_id == job_id)))
        for run in runs:
            jobs.mark_run_started(session, run, None)
            session.commit()
            for i in run.point_indices:
                store_point(session, run, job.kernel, grid[i], {
                    "point_index": i, "backend": "torch-sdpa", "status": "ok",
                    "samples_us": [50.0 + k % 3 for k in range(30)]})
                session.commit()
                time.sleep(0.2)
            jobs.mark_run_finished(session, run)


def test_submit_wait_jobs_results(api_server: str, tmp_path: Path) -> None:
    spec = tmp_path / "sweep.yaml"
    spec.write_text(SPEC_YAML)
    runner = CliRunner()
    worker = threading.Thread(target=_fake_worker, args=(1,))
    worker.start()
    res = runner.invoke(cli, ["submit", str(spec), "--wait", "--poll", "0.2"])
    worker.join()
    assert res.exit_code == 0, res.output
    assert "job 1 submitted" in res.output
    assert "succeeded" in res.output
    assert "batch_size=1 " in res.output and "51.00" in res.output
    assert "kv_len=64 num_qo_heads=4" in res.output  # the fixed parameters, in the title

    res = runner.invoke(cli, ["jobs"])
    assert res.exit_code == 0 and "cli-sweep" in res.output and "succeeded" in res.output

    res = runner.invoke(cli, ["results", "1", "--csv"])
    assert res.exit_code == 0
    header, *lines = res.output.strip().splitlines()
    assert "median_us" in header and len(lines) == 2
    res = runner.invoke(cli, ["results", "1", "--json"])
    rows = json.loads(res.output)
    assert [r["median_us"] for r in rows] == [51.0, 51.0]
    with session_scope() as s:
        assert s.scalars(select(Job.source)).one() == "cli"
    res = runner.invoke(cli, ["cancel", "1"])  # finished: the API's 409, readable, exit 2
    assert res.exit_code == 2 and "HTTP 409" in res.output and "succeeded" in res.output


def test_cancel(api_server: str, tmp_path: Path) -> None:
    spec = tmp_path / "sweep.yaml"
    spec.write_text(SPEC_YAML)
    runner = CliRunner()
    assert runner.invoke(cli, ["submit", str(spec)]).exit_code == 0
    res = runner.invoke(cli, ["cancel", "1"])
    assert res.exit_code == 0 and "job 1 cancelled (0/2 points stored)" in res.output


def test_api_errors_are_readable_with_exit_2(api_server: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(decode_spec(params={"dtype": ["float32"]})))
    res = CliRunner().invoke(cli, ["submit", str(bad)])
    assert res.exit_code == 2
    assert "params.dtype: params.dtype: 'float32' is not allowed" not in res.output
    assert "params.dtype:" in res.output and "allowed: float16, bfloat16" in res.output
    monkeypatch.setenv("KERNELWATCH_TOKEN", "wrong")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(decode_spec()))
    res = CliRunner().invoke(cli, ["submit", str(good)])
    assert res.exit_code == 2 and "401" in res.output and "token create" in res.output


def test_unreachable_api(kw_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, api_url=f"http://127.0.0.1:{free_port()}")
    res = CliRunner().invoke(cli, ["jobs"])
    assert res.exit_code == 1 and "cannot reach the API" in res.output


def test_token_create(kw_env: Settings) -> None:
    res = CliRunner().invoke(cli, ["token", "create", "--name", "ci"])
    assert res.exit_code == 0 and len(res.output.strip()) > 30
    res = CliRunner().invoke(cli, ["token", "create", "--name", "ci"])
    assert res.exit_code == 1 and "already exists" in res.output


def test_piped_tables_print_whole_values_and_terminals_fold_them(
        api_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Piped (no terminal, no COLUMNS), a table prints every value whole; at a narrow
    terminal width it folds them onto further lines instead of cutting them with an
    ellipsis."""
    name = "a-sweep-name-long-enough-to-be-cut-in-an-eighty-column-table-" + "x" * 30
    spec = tmp_path / "sweep.yaml"
    spec.write_text(SPEC_YAML.replace("name: cli-sweep", f"name: {name}"))
    assert CliRunner().invoke(cli, ["submit", str(spec)]).exit_code == 0
    monkeypatch.delenv("COLUMNS")
    piped = CliRunner().invoke(cli, ["jobs"])
    assert piped.exit_code == 0 and name in piped.output and "…" not in piped.output
    monkeypatch.setenv("COLUMNS", "80")
    narrow = CliRunner().invoke(cli, ["jobs"])
    assert "…" not in narrow.output and max(map(len, narrow.output.splitlines())) <= 80
    # The name column's cells, line after line, read back as the whole name.
    cells = [line.split("│")[2].strip() for line in narrow.output.splitlines()
             if line.count("│") > 2]
    assert "".join(cells) == name
