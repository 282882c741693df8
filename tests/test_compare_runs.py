"""compare_runs / persist_comparison on real recorded samples (CPU runs measured through the
real harness: tests/fixtures/compare/, recorded by scripts/fixtures/cpu_compare_fixture.py;
GPU runs: tests/fixtures/gpu/ when present), and GET /v1/compare."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernelwatch.api.main import create_app
from kernelwatch.core.compare import (
    BASELINE_ONLY,
    CONTENDER_ONLY,
    NOT_COMPARABLE,
    REGRESSION,
    UNCHANGED,
    UnknownRunsError,
    compare_runs,
    persist_comparison,
)
from kernelwatch.core.fixtures import import_job, read_file
from kernelwatch.core.models import Comparison, Regression, Run
from kernelwatch.core.series import series_key
from kernelwatch.core.settings import Settings
from kernelwatch_harness.catalogue import with_legacy_values

FIXTURES = Path(__file__).parent / "fixtures"
CPU = json.loads((FIXTURES / "compare" / "cpu_same_spec_two_runs.json").read_text())


def load(session: Session, data: dict[str, Any]) -> list[int]:
    job = import_job(session, data)
    session.commit()
    return list(session.scalars(select(Run.id).where(Run.job_id == job.id).order_by(Run.id)))


def ok_points(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for r in data["runs"] for p in r["points"] if p["status"] == "ok"]


def test_a_run_compared_with_itself_reports_no_change(session: Session) -> None:
    runs = load(session, CPU["baseline"])
    result = compare_runs(session, runs, runs)
    assert len(result.points) == sum(len(r["points"]) for r in CPU["baseline"]["runs"])
    assert result.counts[REGRESSION] == 0 and result.counts["improvement"] == 0
    compared = [p for p in result.points if p.ratio is not None]
    assert len(compared) == len(ok_points(CPU["baseline"])) > 0
    for p in compared:
        assert p.ratio == 1.0 and p.ci_low <= 1.0 <= p.ci_high  # type: ignore[operator]
        assert p.verdict == UNCHANGED
    for g in result.groups:
        assert g.geomean_ratio == pytest.approx(1.0)
        assert g.geomean_ci_low <= 1.0 <= g.geomean_ci_high  # type: ignore[operator]


def test_planted_slowdown_on_real_samples_is_the_one_regression(session: Session) -> None:
    base = CPU["baseline"]
    cont = copy.deepcopy(base)
    target = ok_points(cont)[0]
    target["samples"]["latency_us"] = [v * 1.5 for v in target["samples"]["latency_us"]]
    b_runs, c_runs = load(session, base), load(session, cont)
    result = compare_runs(session, b_runs, c_runs)
    regressed = [p for p in result.points if p.verdict == REGRESSION]
    assert len(regressed) == 1
    # The fixture predates use_cuda_graph: its points import with the value they measured.
    assert regressed[0].backend == target["backend"]
    assert regressed[0].params == with_legacy_values(target["kernel"], target["params"])
    assert regressed[0].ratio == pytest.approx(1.5)
    assert all(p.verdict == UNCHANGED for p in result.points if p is not regressed[0]
               and p.ratio is not None)
    group = next(g for g in result.groups if g.backend == target["backend"])
    assert group.worst_ratio == pytest.approx(1.5) and group.regressions == 1
    assert group.geomean_ratio is not None and group.geomean_ratio > 1.0

    comparison = persist_comparison(session, result, ("0.6.18", "0.6.18.post1"))
    session.commit()
    regs = session.scalars(select(Regression).where(
        Regression.comparison_id == comparison.id)).all()
    assert [(r.state, r.backend, r.baseline_version, r.contender_version) for r in regs] == [
        ("open", target["backend"], "0.6.18", "0.6.18.post1")]
    stored = session.get(Comparison, comparison.id)
    assert stored is not None and stored.summary["counts"][REGRESSION] == 1
    assert len(stored.summary["points"]) == len(result.points)


def test_points_on_one_side_and_not_ok_points_are_listed(session: Session) -> None:
    base = CPU["baseline"]
    cont = copy.deepcopy(base)
    run = cont["runs"][0]
    dropped = run["points"].pop()  # measured in the baseline only
    broken = next(p for p in run["points"] if p["status"] == "ok")
    broken.update(status="incorrect", error="max abs error 0.5 > 0.01")
    extra = copy.deepcopy(broken)  # measured in the contender only
    params = {**extra["params"], "batch_size": 64}
    extra.update(params=params, point_index=99, status="ok", error=None,
                 series_key=series_key(extra["kernel"], params, extra["backend"],
                                       extra["gpu_sku"]))
    run["points"].append(extra)
    result = compare_runs(session, load(session, base), load(session, cont))
    by_verdict = {v: [p for p in result.points if p.verdict == v]
                  for v in (BASELINE_ONLY, CONTENDER_ONLY, NOT_COMPARABLE)}
    assert [(p.backend, p.params) for p in by_verdict[BASELINE_ONLY]] == [
        (dropped["backend"], with_legacy_values(dropped["kernel"], dropped["params"]))]
    assert by_verdict[BASELINE_ONLY][0].contender_status is None
    assert [p.params["batch_size"] for p in by_verdict[CONTENDER_ONLY]] == [64]
    (nc,) = by_verdict[NOT_COMPARABLE]
    assert (nc.baseline_status, nc.contender_status) == ("ok", "incorrect")
    assert nc.contender_error == "max abs error 0.5 > 0.01" and nc.ratio is None
    assert "baseline_only" in result.to_csv() and "incorrect" in result.to_csv()


def test_unknown_runs_and_bad_threshold(session: Session) -> None:
    runs = load(session, CPU["baseline"])
    with pytest.raises(UnknownRunsError, match="contender: unknown run id"):
        compare_runs(session, runs, [999999])
    with pytest.raises(ValueError, match="threshold"):
        compare_runs(session, runs, runs, threshold=1.5)


def test_compare_endpoint_json_csv_and_errors(kw_env: Settings, session: Session) -> None:
    b = load(session, CPU["baseline"])
    c = load(session, CPU["contender"])
    with TestClient(create_app()) as client:
        r = client.get("/v1/compare", params={"baseline": ",".join(map(str, b)),
                                              "contender": ",".join(map(str, c))})
        assert r.status_code == 200
        body = r.json()
        assert body["baseline_run_ids"] == b and len(body["points"]) > 0
        assert sum(body["counts"].values()) == len(body["points"])
        r = client.get("/v1/compare", params={"baseline": b[0], "contender": c[0],
                                              "format": "csv", "threshold": 0.05})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert r.text.splitlines()[0].startswith("series_key,kernel,backend")
        r = client.get("/v1/compare", params={"baseline": "abc", "contender": c[0]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "baseline"]
        r = client.get("/v1/compare", params={"baseline": b[0], "contender": c[0],
                                              "threshold": 2})
        assert r.status_code == 422 and "threshold" in r.json()["detail"][0]["msg"]
        r = client.get("/v1/compare", params={"baseline": b[0], "contender": c[0],
                                              "format": "xml"})
        assert r.status_code == 422 and "json, csv" in r.json()["detail"][0]["msg"]
        r = client.get("/v1/compare", params={"baseline": 424242, "contender": c[0]})
        assert r.status_code == 404 and "424242" in r.json()["detail"]
        assert client.get("/v1/compare", params={"contender": c[0]}).status_code == 422


def _same_version_pairs() -> list[tuple[Path, str | None, str | None]]:
    """(fixture, version, gpu_sku) for every GPU fixture (kernelwatch.core.fixtures exports under
    tests/fixtures/gpu/, one job or a list of jobs per file) holding at least two runs of one
    FlashInfer version on one GPU SKU."""
    out = []
    for path in sorted((FIXTURES / "gpu").glob("*.json.gz")):
        try:
            data = read_file(path)
        except (OSError, ValueError):
            continue  # not a job export (other GPU fixtures live here too)
        if not isinstance(data, dict | list):
            continue
        jobs = data if isinstance(data, list) else data.get("jobs", [data])
        groups: dict[tuple[str | None, str | None], int] = {}
        for job in jobs:
            if not isinstance(job, dict) or job.get("format") != "kernelwatch-job/1":
                continue
            for run in job["runs"]:
                if run.get("gpu_sku") and run["points"]:
                    # None: a torch-only run (no FlashInfer in it)
                    key = (run["flashinfer_version"], run["gpu_sku"])
                    groups[key] = groups.get(key, 0) + 1
        out += [(path, v, sku) for (v, sku), n in groups.items() if n >= 2]
    return out


GPU_PAIRS = _same_version_pairs()


@pytest.mark.parametrize("path,version,sku", GPU_PAIRS,
                         ids=[f"{p.name}-{v}-{s}" for p, v, s in GPU_PAIRS])
def test_two_runs_of_the_same_version_on_the_same_gpu_report_no_regression(
    session: Session, path: Path, version: str | None, sku: str
) -> None:
    """Two runs of one FlashInfer version measured one after the other on one GPU."""
    data = read_file(path)
    jobs = data if isinstance(data, list) else data.get("jobs", [data])
    run_ids: list[int] = []
    for job in jobs:
        if isinstance(job, dict) and job.get("format") == "kernelwatch-job/1":
            imported = import_job(session, job)
            session.flush()
            same_version = (Run.flashinfer_version.is_(None) if version is None
                            else Run.flashinfer_version == version)
            run_ids += session.scalars(select(Run.id).where(
                Run.job_id == imported.id, same_version,
                Run.gpu_sku == sku).order_by(Run.id)).all()
    session.commit()
    first, second = run_ids[0], run_ids[1]
    result = compare_runs(session, [first], [second])
    assert result.counts[REGRESSION] == 0, [
        (p.kernel, p.backend, p.params, p.ratio, p.ci_low) for p in result.regressions]
    assert any(p.ratio is not None for p in result.points)


def test_cli_compare_prints_the_verdict_table(kw_env: Settings, session: Session) -> None:
    from click.testing import CliRunner

    from kernelwatch.cli.main import cli

    base = CPU["baseline"]
    cont = copy.deepcopy(base)
    target = ok_points(cont)[0]
    target["samples"]["latency_us"] = [v * 1.5 for v in target["samples"]["latency_us"]]
    b, c = load(session, base), load(session, cont)
    out = CliRunner().invoke(cli, ["compare", ",".join(map(str, b)), ",".join(map(str, c))],
                             env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "regression" in out.output and "+50.0%" in out.output
    bad = CliRunner().invoke(cli, ["compare", "x", "1"])
    assert bad.exit_code != 0 and "BASELINE" in bad.output
    missing = CliRunner().invoke(cli, ["compare", "999999", str(c[0])])
    assert missing.exit_code != 0 and "unknown run id" in missing.output


def test_two_timing_methods_are_never_compared(session: Session) -> None:
    """The same series timed by graph replay on one side and by CUPTI on the other: the
    numbers mean different things, so the point is not compared, and says why."""
    base = CPU["baseline"]
    cont = copy.deepcopy(base)
    target = ok_points(cont)[0]
    target["timing_method"] = "cupti"
    target["samples"]["latency_us"] = [v * 1.5 for v in target["samples"]["latency_us"]]
    result = compare_runs(session, load(session, base), load(session, cont))
    (pc,) = [p for p in result.points if p.backend == target["backend"]
             and p.params == with_legacy_values(target["kernel"], target["params"])]
    assert pc.verdict == NOT_COMPARABLE and pc.ratio is None
    assert pc.reason == f"timing methods differ: {ok_points(base)[0]['timing_method']} vs cupti"
    assert result.counts[REGRESSION] == 0


def test_a_comparison_names_what_differs_between_its_sides_environments(
        kw_env: Settings, session: Session) -> None:
    """Two sides measured under different torch builds and drivers: the comparison is made
    (a series follows a kernel across them) and says what differs, in the API and the CLI."""
    from click.testing import CliRunner

    from kernelwatch.cli.main import cli

    base = copy.deepcopy(CPU["baseline"])
    cont = copy.deepcopy(CPU["baseline"])
    for run in base["runs"]:
        run["environment"] = {**run["environment"], "torch": "2.11.0", "driver": "580.65"}
    for run in cont["runs"]:
        run["environment"] = {**run["environment"], "torch": "2.12.0", "driver": "580.65"}
    b, c = load(session, base), load(session, cont)
    result = compare_runs(session, b, c)
    assert [d["text"] for d in result.environment_differences] == ["torch: 2.11.0 vs 2.12.0"]
    with TestClient(create_app()) as client:
        body = client.get("/v1/compare", params={"baseline": ",".join(map(str, b)),
                                                 "contender": ",".join(map(str, c))}).json()
    assert body["environment_differences"] == [
        {"field": "torch", "baseline": ["2.11.0"], "contender": ["2.12.0"],
         "text": "torch: 2.11.0 vs 2.12.0"}]
    out = CliRunner().invoke(cli, ["compare", ",".join(map(str, b)), ",".join(map(str, c))],
                             env={"COLUMNS": "200"})
    assert "environments differ: torch: 2.11.0 vs 2.12.0" in out.output
    # The same environment on both sides: nothing is said.
    same = compare_runs(session, b, b)
    assert same.environment_differences == []


def _two_jobs_of_two_versions(session: Session) -> None:
    """Two jobs measured both versions on the H200 at different shapes."""
    from kernelwatch.core.models import Job
    from kernelwatch.core.results import store_point
    from kernelwatch_harness.catalogue import complete_params

    for kv in (512, 1024):
        job = Job(name=f"kv{kv}", kernel="single_decode", spec={}, status="succeeded")
        session.add(job)
        session.flush()
        for version in ("0.5.3", "0.6.18.post1"):
            run = Run(job_id=job.id, target="h200", queue="q", point_indices=[0],
                      flashinfer_version=version, gpu_sku="h200", status="succeeded")
            session.add(run)
            session.flush()
            store_point(session, run, "single_decode",
                        complete_params("single_decode", {"kv_len": kv}, "fa2"),
                        {"type": "point", "point_index": 0, "backend": "fa2", "status": "ok",
                         "error": None, "samples_us": [10.0, 10.1, 10.2, 10.1]})
    session.commit()


def test_two_releases_on_one_gpu_compare_every_series_of_every_job(
        kw_env: Settings, session: Session) -> None:
    """Every series measured with both versions on the GPU is compared, whichever job measured
    it, and the result says so: in core, GET /v1/compare?gpu=&from=&to= and kernelwatch
    compare --gpu --from --to."""
    from click.testing import CliRunner

    from kernelwatch.cli.main import cli
    from kernelwatch.core.compare.runs import compare_release_pair

    _two_jobs_of_two_versions(session)
    result = compare_release_pair(session, "h200", "0.5.3", "0.6.18.post1")
    assert sorted(p.params["kv_len"] for p in result.points if p.ratio is not None) == [512, 1024]
    assert result.sources is not None
    assert (result.sources["jobs"], result.sources["series"], result.sources["runs"]) == (2, 2, 4)
    with TestClient(create_app()) as client:
        body = client.get("/v1/compare", params={"gpu": "h200", "from": "0.5.3",
                                                 "to": "0.6.18.post1"}).json()
        assert len(body["points"]) == 2 and body["sources"]["jobs"] == 2
        missing = client.get("/v1/compare", params={"gpu": "a100", "from": "0.5.3",
                                                    "to": "0.6.18.post1"})
        assert missing.status_code == 404 and "on a100" in missing.text
        bad = client.get("/v1/compare", params={"contender": "1"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "baseline"]
    out = CliRunner().invoke(cli, ["compare", "--gpu", "h200", "--from", "0.5.3", "--to",
                                   "0.6.18.post1"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "2 series from 2 jobs (4 runs)" in out.output


def test_two_releases_on_one_gpu_compare_pytorch_as_controls(
        kw_env: Settings, session: Session) -> None:
    """PyTorch beside two FlashInfer releases runs the same code: on a GPU a 2x move of its
    series is the node's, counted apart as in the release flow; a CPU node measures only
    PyTorch, so there it is what is compared."""
    from kernelwatch.core.compare.runs import compare_release_pair
    from kernelwatch.core.models import Job
    from kernelwatch.core.results import store_point
    from kernelwatch_harness.catalogue import complete_params

    for sku in ("h200", None):
        job = Job(name=f"torch-{sku}", kernel="single_decode", spec={}, status="succeeded")
        session.add(job)
        session.flush()
        for version, us in (("0.5.3", 10.0), ("0.6.18.post1", 20.0)):
            run = Run(job_id=job.id, target=sku or "cpu", queue="q", point_indices=[0],
                      flashinfer_version=version, gpu_sku=sku, status="succeeded")
            session.add(run)
            session.flush()
            store_point(session, run, "single_decode",
                        complete_params("single_decode", {}, "torch-sdpa"),
                        {"type": "point", "point_index": 0, "backend": "torch-sdpa",
                         "status": "ok", "error": None,
                         "samples_us": [us, us * 1.01, us * 0.99, us]})
    session.commit()
    gpu = compare_release_pair(session, "h200", "0.5.3", "0.6.18.post1")
    (point,) = gpu.points
    assert point.control and point.verdict == REGRESSION
    assert gpu.regressions == [] and gpu.control_counts["regression"] == 1
    assert gpu.counts["regression"] == 0
    cpu = compare_release_pair(session, None, "0.5.3", "0.6.18.post1")
    (point,) = cpu.points
    assert not point.control and [p.series_key for p in cpu.regressions] == [point.series_key]
    with TestClient(create_app()) as client:
        body = client.get("/v1/compare", params={"gpu": "h200", "from": "0.5.3",
                                                 "to": "0.6.18.post1"}).json()
    assert body["control_counts"]["regression"] == 1 and body["points"][0]["control"]
