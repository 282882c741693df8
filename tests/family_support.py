"""What the end-to-end tests of each kernel family share: one sweep submitted twice over the
API and measured by a real Celery worker, the stored rows' parameters, the dashboard's pages
as callable modules."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from kernelwatch.api.main import create_app
from kernelwatch.core import db
from kernelwatch.core.models import Run
from kernelwatch.core.settings import Settings
from kernelwatch.core.tokens import create_token
from tests.worker_support import start_worker, stop, terminal_status, wait_for


def dashboard_pages() -> dict[str, ModuleType]:
    """Creating the app imports the page modules (Dash registers them); then their callbacks
    are plain functions."""
    from kernelwatch.dashboard.app import create_app as dash_app

    dash_app()
    return {name: importlib.import_module(f"kernelwatch.dashboard.pages.{name}")
            for name in ("curves", "roofline", "job", "compare")}


def sweep_twice(kw_env: Settings, tmp_path: Path, spec: dict[str, Any], name: str
                ) -> tuple[TestClient, list[int], list[int]]:
    """The sweep submitted twice over the API (two runs of one sweep: a comparison with
    itself) and measured by a real worker; the API client, the job ids and their run ids."""
    log = tmp_path / "worker.log"
    proc = start_worker(f"{name}-{kw_env.queue_prefix[-6:]}", log)
    try:
        with db.session_scope() as session:
            token = create_token(session, "e2e")
        client = TestClient(create_app())
        jobs = []
        for _ in range(2):
            r = client.post("/v1/jobs", json=spec, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 201, r.text
            jobs.append(r.json()["id"])
        for job_id in jobs:
            status = wait_for("the job to finish", lambda j=job_id: terminal_status(j),
                              log_path=log)
            assert status == "succeeded", log.read_text()[-3000:]
    finally:
        stop(proc)
    with db.session_scope() as session:
        runs = [session.scalars(select(Run.id).where(Run.job_id == j)).one() for j in jobs]
    return client, jobs, runs


def row_params(row: dict[str, Any]) -> dict[str, Any]:
    """A result row's point parameters (its ``param_*`` columns)."""
    return {k[len("param_"):]: v for k, v in row.items() if k.startswith("param_")}


def fake_flashinfer(monkeypatch: Any, submodule: str, version: str,
                    **functions: Any) -> None:
    """``flashinfer`` and ``flashinfer.<submodule>`` (holding ``functions``) in sys.modules, at
    ``version``: a family's FlashInfer call as a test without a GPU sees it."""
    import sys
    from types import ModuleType

    fi, sub = ModuleType("flashinfer"), ModuleType(f"flashinfer.{submodule}")
    fi.__version__ = version  # type: ignore[attr-defined]
    setattr(fi, submodule, sub)
    for name, fn in functions.items():
        setattr(sub, name, fn)
    monkeypatch.setitem(sys.modules, "flashinfer", fi)
    monkeypatch.setitem(sys.modules, f"flashinfer.{submodule}", sub)


def run_torch(family: Any, kernel: str, params: dict[str, Any]) -> tuple[list[Any], Any]:
    """A point through the family's torch backend on the CPU: its outputs and its operands."""
    inp = family.inputs(kernel, params, "torch", "cpu")
    prepared = family.prepare("torch", inp, "cpu")
    return prepared.outputs(prepared.fn(inp.data)), inp
