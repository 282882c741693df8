"""The sampling family through the whole service on CPU: a sweep over a float threshold
submitted over the API, measured by a real Celery worker (each sample checked against its
support), stored, compared, listed by the catalogue and drawn by the dashboard's callbacks."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from kernelwatch.api.main import create_app
from kernelwatch.core import db
from kernelwatch.core.models import Point
from kernelwatch.core.settings import Settings
from kernelwatch.dashboard import queries
from kernelwatch_harness.families.sampling import FAMILY as SAMPLING
from tests.family_support import dashboard_pages, row_params, sweep_twice

KERNEL = "top_k_top_p_sampling_from_probs"
SPEC: dict[str, Any] = {
    "name": "sampling-cpu", "kernel": KERNEL, "backends": ["torch"], "targets": ["cpu"],
    "params": {"batch_size": [4, 32], "vocab_size": [2048], "top_p": [0.5, 0.9]},
    "timing": {"warmup": 1, "iterations": 30},
}


@pytest.fixture(scope="module")
def pages() -> dict[str, ModuleType]:
    return dashboard_pages()


def test_a_sampling_sweep_end_to_end(kw_env: Settings, tmp_path: Path,
                                     pages: dict[str, ModuleType]) -> None:
    client, jobs, runs = sweep_twice(kw_env, tmp_path, SPEC, "sampling")

    rows = client.get(f"/v1/jobs/{jobs[0]}/results").json()["rows"]
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    for row in rows:
        point = row_params(row)
        assert row["bytes"] == SAMPLING.work(KERNEL, point).bytes and row["flops"] == 0
        assert row["max_abs_error"] == 0.0  # no sampled token outside its support
        assert row["repro_command"] is None and "not FlashInfer's" in row["repro_note"]
    assert {r["param_top_p"] for r in rows} == {0.5, 0.9}
    with db.session_scope() as session:
        stored = session.scalars(select(Point).where(Point.job_id == jobs[0])).all()
        # completed with the tool's defaults
        assert all(p.params["top_k"] == 50 and p.params["filter_apply_order"] == "top_k_first"
                   for p in stored)

    comparison = client.get("/v1/compare", params={"baseline": runs[0],
                                                   "contender": runs[1]}).json()
    assert len(comparison["points"]) == 4
    assert {(g["kernel"], g["backend"]) for g in comparison["groups"]} == {(KERNEL, "torch")}

    curves = pages["curves"]
    state = curves.resolve_state(KERNEL, None, None, None, {}, jobs[0])
    assert state["x"] == "batch_size"  # the family's first axis
    assert "top_p" in curves.x_options(KERNEL)  # a float parameter is an axis too
    with curves.reading() as s:
        fixed = queries.combos(s, KERNEL, jobs[0]).settle(s, ["batch_size", "backend"], {})
    ids = [{"type": "curves-fix", "dim": d} for d in fixed]
    fig, _csv, summary, _ = curves.update_graph(
        KERNEL, "batch_size", "tbps", "backend", list(fixed.values()), jobs[0], ids)
    (trace,) = [t for t in fig["data"] if t["name"] == "torch"]
    assert trace["x"] == [4.0, 32.0] and all(y > 0 for y in trace["y"])
    assert "2 measured points in 1 series" in str(summary.children[0])  # top_p fixed

    table, columns, *_ = pages["job"].load_table(jobs[0], 0, 25, [], "", None)
    names = [c["id"] for c in columns]
    assert "top_p" in names and "batch_size" in names and len(table) == 4, names


def test_the_catalogue_lists_the_sampling_family(kw_env: Settings) -> None:
    body = TestClient(create_app()).get("/v1/catalogue").json()
    kernels = {k["name"]: k for k in body["kernels"]}
    softmax = kernels["softmax"]
    assert softmax["family"] == "sampling" and softmax["backends"] == ["cuda", "torch"]
    assert softmax["routine"] == "softmax" and "sm80" in softmax["archs"]
    params = {p["name"]: p for p in kernels[KERNEL]["params"]}
    assert params["top_p"]["kind"] == "float" and params["top_p"]["default"] == 0.9
    assert params["top_p"]["allowed"] == "numbers from 0.01 to 1"
    assert params["filter_apply_order"]["allowed"] == "top_k_first, joint"
    assert kernels["top_k"]["since"] == "0.6.0"


VARLEN_SPEC: dict[str, Any] = {
    "name": "topk-varlen-cpu", "kernel": "top_k_varlen", "backends": ["torch"],
    "targets": ["cpu"], "params": {"batch_size": [4, 16], "max_len": [2048], "top_k": [256]},
    "timing": {"warmup": 1, "iterations": 30},
}


def test_a_top_k_varlen_sweep_end_to_end(kw_env: Settings, tmp_path: Path) -> None:
    """top_k_varlen through the service on CPU: every selection checked (0 violations), its
    bytes the family's count."""
    client, jobs, _runs = sweep_twice(kw_env, tmp_path, VARLEN_SPEC, "topk-varlen")
    rows = client.get(f"/v1/jobs/{jobs[0]}/results").json()["rows"]
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}
    for row in rows:
        point = row_params(row)
        assert point["logits_dtype"] == "float32"  # the tool's default, completed
        assert row["bytes"] == SAMPLING.work("top_k_varlen", point).bytes
        assert row["max_abs_error"] == 0.0
