"""Export / import of a job keeps every column, the environment and every raw sample."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernelwatch.cli.main import cli
from kernelwatch.core import fixtures
from kernelwatch.core.models import Crosscheck, Job, Point, Run, Sample
from kernelwatch.core.results import store_point
from kernelwatch.core.series import series_key
from kernelwatch.core.settings import Settings
from kernelwatch.core.stats import summarize
from kernelwatch_harness.catalogue import complete_params

PARAMS = complete_params("batch_decode", {"batch_size": 2, "kv_len": 64, "num_qo_heads": 4,
                                          "num_kv_heads": 2, "head_dim": 64}, "torch-sdpa")


def _make_job(session: Session) -> Job:
    job = Job(name="fx", kernel="batch_decode", spec={"name": "fx"}, status="partial",
              source="cli", idempotency_key="fx-key", total_points=2)
    session.add(job)
    session.flush()
    run = Run(job_id=job.id, target="cpu", queue="kw.cpu", point_indices=[0],
              status="partial", gpu_name="cpu", gpu_sku=None, timing_method="cpu_perf_counter",
              environment={"torch": "2.11.0", "device": "cpu"}, env_fingerprint="abc")
    session.add(run)
    session.flush()
    store_point(session, run, "batch_decode", PARAMS, {
        "point_index": 0, "backend": "torch-sdpa", "status": "ok",
        "samples_us": [10.0 + i * 0.5 for i in range(40)], "repeat_sizes": [20, 20],
        "timing_method": "cpu_perf_counter", "max_abs_error": 1e-3, "telemetry": {"note": "x"},
    })
    store_point(session, run, "batch_decode", PARAMS, {
        "point_index": 0, "backend": "torch-math", "status": "error", "error": "boom",
    })
    ok = session.scalars(select(Point).where(Point.job_id == job.id, Point.status == "ok")).one()
    session.add(Crosscheck(point_id=ok.id, status="ok", command="python flashinfer_benchmark.py",
                           median_us=20.4, method="cupti", diff_pct=-1.2, agrees=True,
                           causes=[], row={"backend": "fa2"}))
    session.commit()
    return job


def _strip_ids(data: dict) -> dict:
    """The export without database-local ids and the fields import deliberately changes."""
    text = json.dumps(data, sort_keys=True)
    out = json.loads(text)
    for k in ("id", "idempotency_key"):
        out["job"].pop(k)
    for r in out["runs"]:
        for k in ("id", "job_id", "node_id"):
            r.pop(k)
        for p in r["points"]:
            for k in ("id", "job_id", "run_id"):
                p.pop(k)
            for k in ("id", "point_id", "created_at"):
                (p.get("crosscheck") or {}).pop(k, None)
    return out


def test_round_trip_keeps_samples_and_statistics(session: Session) -> None:
    job = _make_job(session)
    exported = fixtures.export_job(session, job.id)
    # Through JSON text, as a fixture file would travel.
    copy = fixtures.import_job(session, json.loads(json.dumps(exported)))
    session.commit()
    assert copy.id != job.id
    assert copy.idempotency_key is None
    re_exported = fixtures.export_job(session, copy.id)
    assert _strip_ids(re_exported) == _strip_ids(exported)
    samples = re_exported["runs"][0]["points"][0]["samples"]["latency_us"]
    assert samples == [10.0 + i * 0.5 for i in range(40)]
    assert session.scalar(select(func.count()).select_from(Sample)) == 80
    p = session.scalars(select(Point).where(Point.job_id == copy.id, Point.status == "ok")).one()
    orig = session.scalars(select(Point).where(Point.job_id == job.id, Point.status == "ok")).one()
    assert p.median_us == orig.median_us and p.ci_low_us == orig.ci_low_us
    run = session.scalars(select(Run).where(Run.job_id == copy.id)).one()
    assert run.environment == {"torch": "2.11.0", "device": "cpu"}
    # FlashInfer's own benchmark beside the point travels with it
    check = session.scalars(select(Crosscheck).where(Crosscheck.point_id == p.id)).one()
    assert (check.median_us, check.agrees, check.row) == (20.4, True, {"backend": "fa2"})


def test_import_rejects_other_formats(session: Session) -> None:
    import pytest

    with pytest.raises(ValueError, match="format"):
        fixtures.import_job(session, {"job": {}})


def test_cli_export_import(kw_env: Settings, session: Session, tmp_path) -> None:
    job = _make_job(session)
    out = tmp_path / "job.json"
    runner = CliRunner()
    res = runner.invoke(cli, ["export", str(job.id), "-o", str(out)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["import", str(out)])
    assert res.exit_code == 0, res.output
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Job)) == 2
    assert session.scalar(select(func.count()).select_from(Sample)) == 80


def test_compressed_fixture_files_read_back_and_import_from_the_cli(
        kw_env: Settings, session: Session, tmp_path) -> None:
    """write_file/read_file keep an export as compact JSON, gzip-compressed for a .gz name
    (reproducibly: the same bytes each time), and ``kernelwatch import`` takes either."""
    job = _make_job(session)
    exported = fixtures.export_job(session, job.id)
    session.commit()
    plain, packed = tmp_path / "job.json", tmp_path / "job.json.gz"
    fixtures.write_file(plain, exported)
    fixtures.write_file(packed, exported)
    first = packed.read_bytes()
    fixtures.write_file(packed, exported)
    assert packed.read_bytes() == first and first[:2] == b"\x1f\x8b"
    assert fixtures.read_file(packed) == fixtures.read_file(plain) == json.loads(
        json.dumps(exported, default=str))
    res = CliRunner().invoke(cli, ["import", str(packed)])
    assert res.exit_code == 0, res.output
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Job)) == 2


def test_a_file_of_jobs_imports_each_from_the_cli(kw_env: Settings, session: Session,
                                                  tmp_path) -> None:
    """A release flow's output or a family's GPU fixture holds its jobs under ``jobs``:
    ``kernelwatch import`` inserts each and prints each id; a file of anything else is
    refused, naming what it expected, and inserts nothing."""
    from pathlib import Path

    family = Path(__file__).parent / "fixtures" / "gpu" / "families" / "rope.json.gz"
    res = CliRunner().invoke(cli, ["import", str(family)])
    assert res.exit_code == 0, res.output
    ids = [int(line) for line in res.output.split()]
    assert len(ids) == len(fixtures.read_file(family)["jobs"]) == 2
    session.expire_all()
    assert {j.kernel for j in session.scalars(select(Job).where(Job.id.in_(ids)))} == {
        "apply_rope_pos_ids"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"jobs": [1, 2]}))
    res = CliRunner().invoke(cli, ["import", str(bad)])
    assert res.exit_code == 1 and "nor a file of them under 'jobs'" in res.output
    bad.write_text(json.dumps({"jobs": [{"format": "other"}]}))
    res = CliRunner().invoke(cli, ["import", str(bad)])
    assert res.exit_code == 1 and "format must be" in res.output
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Job)) == 2


def test_samples_keep_their_repeat_and_the_ci_is_two_stage(session: Session) -> None:
    job = _make_job(session)
    point = session.scalars(select(Point).where(Point.job_id == job.id,
                                                Point.status == "ok")).one()
    rows = session.execute(select(Sample.latency_us, Sample.repeat)
                           .where(Sample.point_id == point.id)
                           .order_by(Sample.iteration)).all()
    assert [r for _, r in rows] == [0] * 20 + [1] * 20
    two_stage = summarize([v for v, _ in rows], [r for _, r in rows])
    iid = summarize([v for v, _ in rows])
    assert (point.ci_low_us, point.ci_high_us) == (two_stage.ci_low, two_stage.ci_high)
    assert point.ci_high_us - point.ci_low_us > iid.ci_high - iid.ci_low
    exported = fixtures.export_job(session, job.id)
    ok = next(p for p in exported["runs"][0]["points"] if p["status"] == "ok")
    assert ok["samples"]["repeat"] == [0] * 20 + [1] * 20


def test_store_point_refuses_repeat_sizes_that_do_not_add_up(session: Session) -> None:
    job = _make_job(session)
    run = session.scalars(select(Run).where(Run.job_id == job.id)).one()
    with pytest.raises(ValueError, match="do not add up"):
        store_point(session, run, "batch_decode", PARAMS, {
            "point_index": 1, "backend": "torch-sdpa", "status": "ok",
            "samples_us": [1.0, 2.0, 3.0], "repeat_sizes": [2, 2]})


def test_an_export_from_before_the_plan_mode_keeps_its_meaning(session: Session) -> None:
    """A point exported before ``use_cuda_graph`` was a parameter was measured without the
    CUDA-graph plan mode: it imports with ``use_cuda_graph: false`` and the series key of
    those parameters (the one a new point measured that way gets), and its job's spec names
    the value, so the job's grid is still the grid it measured."""
    exported = fixtures.export_job(session, _make_job(session).id)
    added = ("use_cuda_graph", "fixed_split_size", "disable_split_kv", "window_left",
             "logits_soft_cap", "pos_encoding_mode")
    old_params = {k: v for k, v in PARAMS.items() if k not in added}
    exported["job"]["spec"] = {"name": "fx", "kernel": "batch_decode", "params": {"kv_len": [64]}}
    for point in exported["runs"][0]["points"]:
        point["params"] = old_params
        point["series_key"] = series_key("batch_decode", old_params, point["backend"], None)
    copy = fixtures.import_job(session, exported)
    session.flush()
    points = session.scalars(select(Point).where(Point.job_id == copy.id)).all()
    assert {p.params["use_cuda_graph"] for p in points} == {False}
    legacy = {"use_cuda_graph": False, "fixed_split_size": 0, "disable_split_kv": False,
              "window_left": -1, "logits_soft_cap": 0, "pos_encoding_mode": "NONE"}
    assert all(p.series_key == series_key("batch_decode", {**old_params, **legacy},
                                          p.backend, None) for p in points)
    assert copy.spec["params"] == {"kv_len": [64], **{k: [v] for k, v in legacy.items()}}
