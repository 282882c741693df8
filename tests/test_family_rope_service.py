"""The rope family through the whole service on CPU: a sweep submitted over the API, measured
by a real Celery worker, stored, compared, listed by the catalogue and drawn by the dashboard's
callbacks; an invalid point answered 422 naming the field and its allowed values."""

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
from kernelwatch_harness.families.rope import FAMILY as ROPE
from tests.family_support import dashboard_pages, row_params, sweep_twice

KERNEL = "apply_llama31_rope_pos_ids"
SPEC: dict[str, Any] = {
    "name": "rope-cpu", "kernel": KERNEL, "backends": ["torch"], "targets": ["cpu"],
    "params": {"batch_size": [2], "seq_len": [64, 256], "num_qo_heads": [8],
               "num_kv_heads": [2], "rope_scale": [8.0], "rope_theta": [500000]},
    "timing": {"warmup": 1, "iterations": 30},
}


@pytest.fixture(scope="module")
def pages() -> dict[str, ModuleType]:
    return dashboard_pages()


def _auth() -> dict[str, str]:
    with db.session_scope() as session:
        return {"Authorization": f"Bearer {create_token(session, 'e2e')}"}


def test_a_rope_sweep_end_to_end(kw_env: Settings, tmp_path: Path,
                                 pages: dict[str, ModuleType]) -> None:
    client, jobs, runs = sweep_twice(kw_env, tmp_path, SPEC, "rope")

    rows = client.get(f"/v1/jobs/{jobs[0]}/results").json()["rows"]
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}
    for row in rows:
        point = row_params(row)
        work = ROPE.work(KERNEL, point)  # the family's own formulas, stored
        assert row["bytes"] == work.bytes and row["flops"] == work.flops
        assert row["max_abs_error"] <= ROPE.tolerance(KERNEL, point)
        assert row["repro_command"] is None and "not FlashInfer's" in row["repro_note"]
    with db.session_scope() as session:
        stored = session.scalars(select(Point).where(Point.job_id == jobs[0])).all()
        # completed with the tool's defaults; 500000 given as an integer is the real 5e5
        assert all(p.params["dtype"] == "float16" and p.params["old_context_len"] == 8192
                   and p.params["rope_theta"] == 5e5 for p in stored)

    comparison = client.get("/v1/compare", params={"baseline": runs[0],
                                                   "contender": runs[1]}).json()
    assert len(comparison["points"]) == 2
    assert {(g["kernel"], g["backend"]) for g in comparison["groups"]} == {(KERNEL, "torch")}

    curves = pages["curves"]
    state = curves.resolve_state(KERNEL, None, None, None, {}, jobs[0])
    assert state["x"] == "seq_len"  # the family's first axis
    with curves.reading() as s:
        fixed = queries.combos(s, KERNEL, jobs[0]).settle(s, ["seq_len", "backend"], {})
    ids = [{"type": "curves-fix", "dim": d} for d in fixed]
    fig, _csv, summary, _ = curves.update_graph(
        KERNEL, "seq_len", "tbps", "backend", list(fixed.values()), jobs[0], ids)
    (trace,) = [t for t in fig["data"] if t["name"] == "torch"]
    assert trace["x"] == [64.0, 256.0] and all(y > 0 for y in trace["y"])
    assert "2 measured points in 1 series" in str(summary.children[0])
    assert "seq_len" in pages["roofline"].color_dims(KERNEL)
    table, columns, *_ = pages["job"].load_table(jobs[0], 0, 25, [], "", None)
    assert "seq_len" in {c["id"] for c in columns} and len(table) == 2  # the varying one


def test_the_catalogue_lists_the_rope_family(kw_env: Settings) -> None:
    kernels = {k["name"]: k for k in TestClient(create_app()).get("/v1/catalogue").json()[
        "kernels"]}
    rope = kernels["apply_rope"]
    assert rope["family"] == "rope" and rope["routine"] == "apply_rope"
    assert rope["backends"] == ["auto", "torch"] and "sm80" in rope["archs"]
    params = {p["name"]: p for p in rope["params"]}
    assert params["dtype"]["default"] == "float16"  # the tool's, for every backend
    assert params["rope_theta"]["allowed"] == "numbers from 1 to 1e+09"
    assert params["rope_scale"]["min"] == 0.001
    fp8 = kernels["rope_quantize_fp8_append_paged_kv_cache"]
    assert fp8["backends"] == ["auto", "torch"]
    assert "sm89" in fp8["archs"] and "sm90" in fp8["archs"] and "sm80" not in fp8["archs"]
    params = {p["name"]: p for p in fp8["params"]}
    assert params["quant_dtype"]["default"] == "float8_e4m3fn"
    assert params["rope_dim"]["default"] == 128 and params["page_size"]["default"] == 16
    assert "head_dim" not in params  # the tool's --head_dim is rope_dim + no_rope_dim


FP8_KERNEL = "rope_quantize_fp8_append_paged_kv_cache"
FP8_SPEC: dict[str, Any] = {
    "name": "rope-fp8-cpu", "kernel": FP8_KERNEL, "backends": ["torch"], "targets": ["cpu"],
    "params": {"batch_size": [2], "seq_len": [20, 40], "num_qo_heads": [4],
               "num_kv_heads": [2], "rope_dim": [64], "no_rope_dim": [32],
               "kv_layout": ["HND"], "page_size": [8]},
    "timing": {"warmup": 1, "iterations": 30},
}


def test_an_fp8_rope_sweep_end_to_end(kw_env: Settings, tmp_path: Path) -> None:
    """The append's quantised q and paged cache, measured by a real worker on CPU: correct
    against the float32 reference, its bytes the family's count, its command the tool's."""
    client, jobs, _runs = sweep_twice(kw_env, tmp_path, FP8_SPEC, "rope-fp8")
    rows = client.get(f"/v1/jobs/{jobs[0]}/results").json()["rows"]
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}
    for row in rows:
        point = row_params(row)
        assert row["bytes"] == ROPE.work(FP8_KERNEL, point).bytes
        assert 0 < row["max_abs_error"] <= ROPE.tolerance(FP8_KERNEL, point)


@pytest.mark.parametrize(("params", "message"), [
    ({"dtype": ["float32"]}, "params.dtype: 'float32' is not allowed; allowed: float16, "
                             "bfloat16"),
    ({"interleave": ["yes"]}, "params.interleave: 'yes' is not allowed; allowed: true, "
                              "false"),
    ({"rope_scale": [0]}, "params.rope_scale: 0.0 is out of range; allowed: numbers from 0.001 "
                          "to 1000"),
])
def test_an_invalid_point_is_answered_422_naming_the_field(kw_env: Settings,
                                                            params: dict[str, Any],
                                                            message: str) -> None:
    r = TestClient(create_app()).post("/v1/jobs", json={**SPEC, "params": params},
                                      headers=_auth())
    assert r.status_code == 422 and message in r.text, r.text
