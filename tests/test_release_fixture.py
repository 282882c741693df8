"""The release flow's GPU evidence (FlashInfer 0.6.18.post1 vs 0.5.3 on an H200, recorded by
bench/regression_gpu_release.py on the GPU machine) replayed through the comparison engine:
the verdicts the flow reached must follow again from the stored raw samples."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.compare import compare_runs
from core.fixtures import import_job
from core.models import Run

FIXTURE = (Path(__file__).parent / "fixtures" / "gpu" / "release"
           / "release-0.6.18.post1-vs-0.5.3-h200.json")


def _import_release_runs(session: Session) -> dict[str, list[int]]:
    data = json.loads(FIXTURE.read_text())
    runs: dict[str, list[int]] = {}
    for export in data["jobs"]:
        if export["job"]["kind"] != "release":
            continue
        job = import_job(session, export)
        session.flush()
        for run in session.scalars(select(Run).where(Run.job_id == job.id).order_by(Run.id)):
            runs.setdefault(str(run.flashinfer_version), []).append(run.id)
    session.commit()
    return runs


def test_recorded_release_verdicts_follow_from_the_raw_samples(session: Session) -> None:
    data = json.loads(FIXTURE.read_text())
    recorded = data["comparisons"][0]
    runs = _import_release_runs(session)

    result = compare_runs(session, runs["0.5.3"], runs["0.6.18.post1"])

    flagged = {(p.kernel, p.backend, json.dumps(p.params, sort_keys=True))
               for p in result.regressions}
    expected = {(r["kernel"], r["backend"], json.dumps(r["params"], sort_keys=True))
                for r in recorded["regressions"]}
    assert flagged == expected
    assert result.counts == {k: v for k, v in recorded["summary"]["counts"].items()
                             if k in result.counts}
    # Every flagged point was re-measured interleaved on the GPU and held up.
    assert {r["state"] for r in recorded["regressions"]} == {"confirmed"}
    assert all(r["confirm_ci_low"] > 1.0 for r in recorded["regressions"])


def test_a_release_run_compared_with_itself_reports_nothing(session: Session) -> None:
    runs = _import_release_runs(session)
    result = compare_runs(session, runs["0.6.18.post1"], runs["0.6.18.post1"])
    assert result.regressions == []
    assert result.counts["unchanged"] > 0
