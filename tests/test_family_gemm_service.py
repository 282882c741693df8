"""The GEMM family through the whole service on CPU: a bmm_fp8 sweep (FP8 operands, the
torch backend on their dequantised values) submitted over the API, measured by a real Celery
worker, stored, compared, listed by the catalogue and drawn by the dashboard's callbacks."""

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
from kernelwatch_harness.families.gemm import FAMILY as GEMM
from tests.family_support import dashboard_pages, row_params, sweep_twice

KERNEL = "bmm_fp8"
SPEC: dict[str, Any] = {
    "name": "gemm-cpu", "kernel": KERNEL, "backends": ["torch"], "targets": ["cpu"],
    "params": {"m": [16, 64], "batch_size": [1, 2], "n": [64], "k": [256]},
    "timing": {"warmup": 1, "iterations": 30},
}


@pytest.fixture(scope="module")
def pages() -> dict[str, ModuleType]:
    return dashboard_pages()


def test_a_gemm_sweep_end_to_end(kw_env: Settings, tmp_path: Path,
                                 pages: dict[str, ModuleType]) -> None:
    client, jobs, runs = sweep_twice(kw_env, tmp_path, SPEC, "gemm")

    rows = client.get(f"/v1/jobs/{jobs[0]}/results").json()["rows"]
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    for row in rows:
        point = row_params(row)
        work = GEMM.work(KERNEL, point)  # the family's own formulas (bytes of every matrix)
        assert row["bytes"] == work.bytes and row["flops"] == work.flops
        assert row["max_abs_error"] <= GEMM.tolerance(KERNEL, point)
        assert row["repro_command"] is None and "not FlashInfer's" in row["repro_note"]
    with db.session_scope() as session:
        stored = session.scalars(select(Point).where(Point.job_id == jobs[0])).all()
        # completed with the defaults
        assert all(p.params["input_dtype"] == "float8_e4m3fn" for p in stored)
        assert all(p.params["out_dtype"] == "bfloat16" for p in stored)

    comparison = client.get("/v1/compare", params={"baseline": runs[0],
                                                   "contender": runs[1]}).json()
    assert len(comparison["points"]) == 4
    assert {(g["kernel"], g["backend"]) for g in comparison["groups"]} == {(KERNEL, "torch")}

    curves = pages["curves"]
    state = curves.resolve_state(KERNEL, None, None, None, {}, jobs[0])
    assert state["x"] == "m"  # the family's first axis
    assert "batch_size" in curves.x_options(KERNEL)
    with curves.reading() as s:
        fixed = queries.combos(s, KERNEL, jobs[0]).settle(s, ["m", "backend"], {})
    ids = [{"type": "curves-fix", "dim": d} for d in fixed]
    fig, _csv, summary, _ = curves.update_graph(
        KERNEL, "m", "tflops", "backend", list(fixed.values()), jobs[0], ids)
    (trace,) = [t for t in fig["data"] if t["name"] == "torch"]
    assert trace["x"] == [16.0, 64.0] and all(y > 0 for y in trace["y"])
    assert "2 measured points in 1 series" in str(summary.children[0])

    assert "k" in pages["roofline"].color_dims(KERNEL)

    table, columns, *_ = pages["job"].load_table(jobs[0], 0, 25, [], "", None)
    ids = [c["id"] for c in columns]
    assert "m" in ids and "batch_size" in ids and len(table) == 4


def test_the_catalogue_lists_the_gemm_kernels_with_their_archs(kw_env: Settings) -> None:
    body = TestClient(create_app()).get("/v1/catalogue").json()
    kernels = {k["name"]: k for k in body["kernels"]}
    assert kernels["bmm_fp8"]["family"] == "gemm" and kernels["bmm_fp8"]["routine"] == "bmm_fp8"
    assert kernels["mm_bf16"]["backends"][-1] == "torch" and "sm80" in kernels["mm_bf16"]["archs"]
    assert kernels["mm_fp4"]["archs"] == ["sm100", "sm103", "sm120"]
    k = next(p for p in kernels["bmm_fp8"]["params"] if p["name"] == "input_dtype")
    assert k["default"] == "float8_e4m3fn" and k["allowed"] == "float8_e4m3fn, float8_e5m2"
