"""Non-attention families through the whole service on CPU: the norm family's sweep (and the
recurrent families', gdn and mamba) submitted over the API, measured by a real Celery worker,
stored, compared, listed by the catalogue and drawn by the dashboard's callbacks. Nothing in
the path names attention."""

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
from kernelwatch.core.tokens import create_token
from kernelwatch.dashboard import queries
from kernelwatch_harness.catalogue import family_of
from kernelwatch_harness.families.moe import FAMILY as MOE
from kernelwatch_harness.families.norm import FAMILY as NORM
from tests.family_support import dashboard_pages, row_params, sweep_twice

SPEC: dict[str, Any] = {
    "name": "norm-cpu", "kernel": "fused_add_rmsnorm", "backends": ["torch"],
    "targets": ["cpu"],
    "params": {"batch_size": [4, 32], "hidden_size": [256, 1024], "dtype": ["bfloat16"]},
    "timing": {"warmup": 1, "iterations": 30},
}


@pytest.fixture(scope="module")
def pages() -> dict[str, ModuleType]:
    return dashboard_pages()


def test_a_norm_sweep_end_to_end(kw_env: Settings, tmp_path: Path,
                                 pages: dict[str, ModuleType]) -> None:
    client, jobs, runs = sweep_twice(kw_env, tmp_path, SPEC, "norm")

    rows = client.get(f"/v1/jobs/{jobs[0]}/results").json()["rows"]
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    for row in rows:
        point = row_params(row)
        work = NORM.work("fused_add_rmsnorm", point)  # the family's own formulas, stored
        assert row["bytes"] == work.bytes and row["flops"] == work.flops
        assert row["max_abs_error"] <= NORM.tolerance("fused_add_rmsnorm", point)
        assert row["repro_command"] is None and "not FlashInfer's" in row["repro_note"]
    with db.session_scope() as session:
        stored = session.scalars(select(Point).where(Point.job_id == jobs[0])).all()
        assert all(p.params["num_heads"] == 0 for p in stored)  # completed with the defaults

    comparison = client.get("/v1/compare", params={"baseline": runs[0],
                                                   "contender": runs[1]}).json()
    assert len(comparison["points"]) == 4
    assert {(g["kernel"], g["backend"]) for g in comparison["groups"]} == {
        ("fused_add_rmsnorm", "torch")}

    curves = pages["curves"]
    state = curves.resolve_state("fused_add_rmsnorm", None, None, None, {}, jobs[0])
    assert state["x"] == "batch_size"  # the family's first axis
    assert "hidden_size" in curves.x_options("fused_add_rmsnorm")
    with curves.reading() as s:
        fixed = queries.combos(s, "fused_add_rmsnorm", jobs[0]).settle(
            s, ["batch_size", "backend"], {})
    ids = [{"type": "curves-fix", "dim": d} for d in fixed]
    fig, _csv, summary, _ = curves.update_graph(
        "fused_add_rmsnorm", "batch_size", "tbps", "backend", list(fixed.values()), jobs[0],
        ids)
    (trace,) = [t for t in fig["data"] if t["name"] == "torch"]
    assert trace["x"] == [4.0, 32.0] and all(y > 0 for y in trace["y"])
    assert "2 measured points in 1 series" in str(summary.children[0])

    assert "hidden_size" in pages["roofline"].color_dims("fused_add_rmsnorm")

    table, columns, *_ = pages["job"].load_table(jobs[0], 0, 25, [], "", None)
    ids = [c["id"] for c in columns]
    assert "batch_size" in ids and "hidden_size" in ids and len(table) == 4


MOE_SPEC: dict[str, Any] = {
    "name": "moe-cpu", "kernel": "cutlass_fused_moe", "backends": ["torch"],
    "targets": ["cpu"],
    "params": {"num_tokens": [4, 16], "hidden_size": [128], "intermediate_size": [256],
               "num_experts": [4], "experts_per_token": [1, 2]},
    "timing": {"warmup": 1, "iterations": 30},
}


def test_a_moe_sweep_end_to_end(kw_env: Settings, tmp_path: Path,
                                pages: dict[str, ModuleType]) -> None:
    kernel = "cutlass_fused_moe"
    client, jobs, runs = sweep_twice(kw_env, tmp_path, MOE_SPEC, "moe")

    rows = client.get(f"/v1/jobs/{jobs[0]}/results").json()["rows"]
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    for row in rows:
        point = row_params(row)
        work = MOE.work(kernel, point)  # the family's own formulas, stored
        assert row["bytes"] == pytest.approx(work.bytes) and row["flops"] == work.flops
        assert row["max_abs_error"] <= MOE.tolerance(kernel, point)
        assert row["repro_command"] is None and "not FlashInfer's" in row["repro_note"]
    with db.session_scope() as session:
        stored = session.scalars(select(Point).where(Point.job_id == jobs[0])).all()
        assert all(p.params["dtype"] == "bfloat16" for p in stored)  # completed

    comparison = client.get("/v1/compare", params={"baseline": runs[0],
                                                   "contender": runs[1]}).json()
    assert len(comparison["points"]) == 4
    assert {(g["kernel"], g["backend"]) for g in comparison["groups"]} == {(kernel, "torch")}

    curves = pages["curves"]
    state = curves.resolve_state(kernel, None, None, None, {}, jobs[0])
    assert state["x"] == "num_tokens"  # the family's first axis
    assert "experts_per_token" in curves.x_options(kernel)
    with curves.reading() as s:
        fixed = queries.combos(s, kernel, jobs[0]).settle(s, ["num_tokens", "backend"], {})
    ids = [{"type": "curves-fix", "dim": d} for d in fixed]
    fig, _csv, summary, _ = curves.update_graph(
        kernel, "num_tokens", "tbps", "backend", list(fixed.values()), jobs[0], ids)
    (trace,) = [t for t in fig["data"] if t["name"] == "torch"]
    assert trace["x"] == [4.0, 16.0] and all(y > 0 for y in trace["y"])
    assert "2 measured points in 1 series" in str(summary.children[0])

    table, columns, *_ = pages["job"].load_table(jobs[0], 0, 25, [], "", None)
    ids = [c["id"] for c in columns]
    assert "num_tokens" in ids and "experts_per_token" in ids and len(table) == 4

    body = client.get("/v1/catalogue").json()
    kernels = {k["name"]: k for k in body["kernels"]}
    assert kernels[kernel]["family"] == "moe" and kernels[kernel]["routine"] == kernel
    assert kernels["bgmv_moe"]["since"] == "0.6.13"
    assert kernels["trtllm_fp4_block_scale_moe"]["archs"] == ["sm100", "sm103"]


# One small sweep of each recurrent family's kernels: its torch backend on CPU.
RECURRENT: list[dict[str, Any]] = [
    {"name": "gdn-cpu", "kernel": "gated_delta_rule_mtp", "backends": ["torch"],
     "targets": ["cpu"], "timing": {"warmup": 1, "iterations": 30},
     "params": {"batch_size": [2, 4], "seq_len": [3], "num_q_heads": [2], "num_k_heads": [2],
                "num_v_heads": [4], "update_state": [True]}},
    {"name": "mamba-cpu", "kernel": "selective_state_update", "backends": ["torch"],
     "targets": ["cpu"], "timing": {"warmup": 1, "iterations": 30},
     "params": {"batch_size": [2, 4], "nheads": [8], "ngroups": [1], "dim": [64],
                "dstate": [64], "has_z": [True]}},
]


@pytest.mark.parametrize("spec", RECURRENT, ids=[s["name"] for s in RECURRENT])
def test_a_recurrent_family_sweep_end_to_end(kw_env: Settings, tmp_path: Path,
                                             pages: dict[str, ModuleType],
                                             spec: dict[str, Any]) -> None:
    kernel = spec["kernel"]
    family = family_of(kernel)
    client, jobs, runs = sweep_twice(kw_env, tmp_path, spec, family.name)

    rows = client.get(f"/v1/jobs/{jobs[0]}/results").json()["rows"]
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}, rows
    for row in rows:
        point = row_params(row)
        work = family.work(kernel, point)  # the family's own formulas, stored
        assert row["bytes"] == work.bytes and row["flops"] == work.flops
        assert row["max_abs_error"] <= family.tolerance(kernel, point)
        assert row["repro_command"] is None and "not FlashInfer's" in row["repro_note"]

    comparison = client.get("/v1/compare", params={"baseline": runs[0],
                                                   "contender": runs[1]}).json()
    assert len(comparison["points"]) == 2
    assert {(g["kernel"], g["backend"]) for g in comparison["groups"]} == {(kernel, "torch")}

    curves = pages["curves"]
    state = curves.resolve_state(kernel, None, None, None, {}, jobs[0])
    assert state["x"] == "batch_size"  # the family's first axis
    with curves.reading() as s:
        fixed = queries.combos(s, kernel, jobs[0]).settle(s, ["batch_size", "backend"], {})
    ids = [{"type": "curves-fix", "dim": d} for d in fixed]
    fig, _csv, _summary, _ = curves.update_graph(kernel, "batch_size", "tbps", "backend",
                                                 list(fixed.values()), jobs[0], ids)
    (trace,) = [t for t in fig["data"] if t["name"] == "torch"]
    assert trace["x"] == [2.0, 4.0] and all(y > 0 for y in trace["y"])

    table, columns, *_ = pages["job"].load_table(jobs[0], 0, 25, [], "", None)
    assert "batch_size" in [c["id"] for c in columns] and len(table) == 2


def test_the_catalogue_lists_every_family(kw_env: Settings) -> None:
    body = TestClient(create_app()).get("/v1/catalogue").json()
    kernels = {k["name"]: k for k in body["kernels"]}
    assert kernels["rmsnorm"]["family"] == "norm"
    assert kernels["batch_decode"]["family"] == "attention"
    assert kernels["chunk_gated_delta_rule"]["family"] == "gdn"
    assert kernels["gated_delta_rule_decode"]["archs"] == ["sm90", "sm100", "sm103"]
    assert kernels["selective_state_update"]["family"] == "mamba"
    assert kernels["selective_state_update"]["since"] == "0.6.1"
    assert kernels["rmsnorm"]["backends"] == ["auto", "torch"]
    assert "sm90" in kernels["rmsnorm"]["archs"] and kernels["rmsnorm"]["routine"] == "rmsnorm"
    hidden = next(p for p in kernels["rmsnorm"]["params"] if p["name"] == "hidden_size")
    assert hidden["default"] == 4096 and hidden["allowed"] == "integers from 16 to 65536"
    decode = {p["name"]: p for p in kernels["batch_decode"]["params"]}
    # a default that follows the backend is listed per backend
    assert decode["use_tensor_cores"]["by_backend"]["fa2"] is False
    assert decode["use_tensor_cores"]["by_backend"]["fa3"] is True


def test_an_unknown_kernel_is_answered_with_the_kernels(kw_env: Settings) -> None:
    with db.session_scope() as session:
        token = create_token(session, "t")
    r = TestClient(create_app()).post("/v1/jobs", json={**SPEC, "kernel": "layernorm"},
                                      headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 422
    assert "unknown kernel 'layernorm'; allowed: " in r.text and "rmsnorm" in r.text
    assert "batch_decode" in r.text
