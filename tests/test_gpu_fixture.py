"""The GPU evidence fixtures (measured on an H200, tests/fixtures/gpu/) import into the service
with their environment and raw samples, their statistics are the raw samples', and they are
what scripts/fixtures/gpu_fixture.py builds from raw harness messages (the single-decode suite's
raw files are kept in tests/fixtures/gpu/raw/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernelwatch.core import fixtures
from kernelwatch.core.compare import compare_runs
from kernelwatch.core.models import Point, Run, Sample
from kernelwatch.core.stats import summarize

ROOT = Path(__file__).resolve().parent.parent
GPU = Path(__file__).parent / "fixtures" / "gpu"
EXPORTS = sorted(GPU.glob("gpu-evidence-*.json.gz"))
RAW = sorted(GPU.glob("raw/h200-*.jsonl"))
VOLATILE = {"created_at", "started_at", "finished_at", "id", "job_id", "run_id"}


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = fixtures.read_file(path)
    return data


def _strip(obj: Any) -> Any:
    """An export without its database ids and timestamps, its floats to 12 significant
    digits: the last bits of a derived statistic (a bootstrap CI) follow the summation order
    of the installed numpy and scipy, not the samples."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    if isinstance(obj, float):
        return float(f"{obj:.12g}")
    return obj


def test_every_suite_is_there() -> None:
    assert [p.name for p in EXPORTS] == ["gpu-evidence-decode.json.gz",
                                        "gpu-evidence-prefill.json.gz",
                                        "gpu-evidence-single.json.gz"]
    decode = _load(GPU / "gpu-evidence-decode.json.gz")
    versions = {r["flashinfer_version"] for r in decode["runs"]}
    # None: the torch-sdpa runs
    assert versions == {"0.7.2.post1", "0.6.18.post1", "0.5.3", None}
    grid = {(p["params"]["batch_size"], p["params"]["kv_len"]) for p in decode["runs"][0]["points"]}
    assert grid == {(b, k) for b in (1, 16, 64, 256) for k in (512, 2048, 8192, 32768)}


@pytest.mark.parametrize("path", EXPORTS, ids=lambda p: p.stem)
def test_fixture_imports_with_environment_and_samples(session: Session, path: Path) -> None:
    data = _load(path)
    job = fixtures.import_job(session, data)
    session.flush()
    runs = session.scalars(select(Run).where(Run.job_id == job.id)).all()
    assert len(runs) == len(data["runs"]) >= 4
    for run in runs:
        env = run.environment or {}
        assert run.gpu_sku == "h200" and env["gpu_name"] == "NVIDIA H200"
        assert env["sm_count"] == 132 and env["l2_cache_bytes"] > 0 and env["driver"]
        assert run.timing_method == "cuda_graph" and run.env_fingerprint
        if run.flashinfer_version:  # torch-only runs have none
            assert env["flashinfer"] == run.flashinfer_version
    points = session.scalars(select(Point).where(Point.job_id == job.id)).all()
    assert points and all(p.status == "ok" for p in points)
    for p in points:
        rows = session.execute(select(Sample.latency_us, Sample.repeat)
                               .where(Sample.point_id == p.id)
                               .order_by(Sample.iteration)).all()
        samples, repeats = [v for v, _ in rows], [r for _, r in rows]
        assert len(samples) == p.n_samples >= 30
        # measured in 3 interleaved repeats of 10; the stored CI is the two-stage one
        assert repeats == [0] * 10 + [1] * 10 + [2] * 10
        st = summarize(samples, repeats)
        assert st.median == pytest.approx(p.median_us)
        assert (st.ci_low, st.ci_high) == pytest.approx((p.ci_low_us, p.ci_high_us))
        assert p.tbps and p.tbps > 0 and p.jit_seconds is not None
        assert p.telemetry["rotation"]["verified"] is True
    n = session.scalar(select(func.count()).select_from(Sample).join(Point)
                       .where(Point.job_id == job.id))
    assert n == sum(p.n_samples for p in points)


def test_the_fixture_is_what_its_command_builds_from_the_raw_messages(tmp_path: Path) -> None:
    """scripts/fixtures/gpu_fixture.py, run on the single-decode suite's raw harness messages,
    writes exactly the committed export (ids and timestamps aside): every number in it comes
    from the raw files through the worker's own storing code."""
    assert [p.name for p in RAW] == ["h200-0.5.3.jsonl", "h200-0.6.18.post1.jsonl",
                                     "h200-0.7.2.post1.jsonl", "h200-torch.jsonl"]
    subprocess.run([sys.executable, str(ROOT / "scripts" / "fixtures" / "gpu_fixture.py"),
                    "--out", str(tmp_path), *map(str, RAW)], check=True, cwd=ROOT,
                   capture_output=True, text=True)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["gpu-evidence-single.json.gz"]
    assert _strip(_load(tmp_path / written[0])) == _strip(_load(GPU / written[0]))


def test_the_sweep_reports_from_raw_messages(tmp_path: Path) -> None:
    """bench/gpu_sweep.py's report, made again from raw files without a GPU: each label's
    suite with its two runs, and the run-to-run counts over every point measured twice."""
    subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_sweep.py"), "--report-only",
                    "--raw", *map(str, RAW), "--suites", "single",
                    "--versions", "0.5.3", "0.6.18.post1", "0.7.2.post1", "--out", str(tmp_path)],
                   check=True, cwd=ROOT, capture_output=True, text=True)
    lines = (tmp_path / "summary.txt").read_text().splitlines()
    heads = [line.split(";")[0] for line in lines if line.startswith("== ")]
    assert heads == [f"== {label} single (single_decode)"
                     for label in ("0.5.3", "0.6.18.post1", "0.7.2.post1", "torch")]
    overlap = next(line for line in lines if line.startswith("run 1 and run 2 CIs overlap: "))
    assert overlap.endswith("/20")  # 5 points x 4 labels, each measured in both runs


def test_the_evidence_kept_only_samples_at_the_boost_clock() -> None:
    """Every version and torch-sdpa were measured with the clock floor (timing.clock_floor):
    every repeat of every point carries the probe's clock for each sample it kept, and
    unless the floor was missed (flagged) none of them is under it. The limiter did act in
    the sweep: some samples were discarded and retaken."""
    discarded = 0
    for path in EXPORTS:
        for run in _load(path)["runs"]:
            for p in run["points"]:
                for rep in p["telemetry"]["repeats"]:
                    c = rep["clock"]
                    assert len(c["samples_mhz"]) == 10 and c["floor_mhz"]
                    discarded += c["discarded"]
                    if c["floor_met"]:
                        assert min(c["samples_mhz"]) >= c["floor_mhz"], (path.name, p["params"])
                    else:
                        assert p["throttled"]
    assert discarded > 0


def _runs_by_version(session: Session, paths: list[Path]) -> dict[str | None, list[int]]:
    runs: dict[str | None, list[int]] = {}
    for path in paths:
        job = fixtures.import_job(session, _load(path))
        session.flush()
        for run in session.scalars(select(Run).where(Run.job_id == job.id)):
            runs.setdefault(run.flashinfer_version, []).append(run.id)
    session.commit()
    return runs


def test_the_comparison_finds_06s_prefill_regression_over_05_in_the_evidence(
        session: Session) -> None:
    """0.5.3 and 0.6.18.post1 measured back to back on one H200: the service's comparison
    flags fa2 causal prefill as slower in 0.6.18.post1 and leaves decode alone. The release
    flow confirmed the same two prefill points on another machine start
    (fixtures/gpu/release/)."""
    runs = _runs_by_version(session, EXPORTS)
    result = compare_runs(session, runs["0.5.3"], runs["0.6.18.post1"])
    assert result.counts["unchanged"] + result.counts["regression"] \
        + result.counts["improvement"] == 53
    flagged = {(p.kernel, p.backend, p.params.get("batch_size"), p.params.get("qo_len"),
                p.params.get("kv_len")) for p in result.regressions}
    assert {k for k, *_ in flagged} == {"batch_prefill"}
    assert {("batch_prefill", "fa2", 1, 512, 2048), ("batch_prefill", "fa2", 8, 512, 2048)} \
        <= flagged
    assert all(p.ci_low > 1.03 for p in result.regressions)
