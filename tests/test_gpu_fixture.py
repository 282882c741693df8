"""The GPU evidence fixtures (measured on an H200, tests/fixtures/gpu/) import into the service
with their environment and raw samples, their statistics are the raw samples', and they are
exactly what bench/gpu_fixture.py derives from the raw harness messages kept beside them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bench.gpu_fixture import build
from core import fixtures
from core.models import Point, Run, Sample
from core.stats import summarize

GPU = Path(__file__).parent / "fixtures" / "gpu"
EXPORTS = sorted(GPU.glob("gpu-evidence-*.json"))


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_every_suite_is_there() -> None:
    assert [p.name for p in EXPORTS] == ["gpu-evidence-decode.json", "gpu-evidence-prefill.json",
                                        "gpu-evidence-single.json"]
    decode = _load(GPU / "gpu-evidence-decode.json")
    versions = {r["flashinfer_version"] for r in decode["runs"]}
    assert versions == {"0.6.18.post1", "0.5.3", None}  # None: the torch-sdpa runs
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


def test_fixtures_are_derived_from_the_raw_messages(tmp_path: Path) -> None:
    raw = sorted(str(p) for p in (GPU / "raw").glob("h200-*.jsonl"))
    written = build(raw, tmp_path, "h200")
    volatile = {"created_at", "started_at", "finished_at", "id", "job_id", "run_id"}

    def strip(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k not in volatile}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    for path in written:
        assert strip(_load(path)) == strip(_load(GPU / path.name)), path.name


def test_the_06_evidence_kept_only_samples_at_the_boost_clock() -> None:
    """0.6.18.post1 and torch-sdpa were measured with the clock floor (timing.clock_floor):
    every repeat of every point carries the probe's clock for each sample it kept, and
    unless the floor was missed (flagged) none of them is under it. The limiter did act in
    the sweep: some samples were discarded and retaken."""
    discarded = 0
    for path in EXPORTS:
        for run in _load(path)["runs"]:
            if run["flashinfer_version"] == "0.5.3":  # measured before the floor existed
                continue
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
