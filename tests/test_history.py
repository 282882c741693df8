"""Change points across releases: synthetic series with a planted step and a planted drift,
and the database path (ordering by packaging.version, median of medians)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sqlalchemy.orm import Session

from kernelwatch.core.history import analyse, detect_steps, series_history, sort_versions
from kernelwatch.core.models import Job, Point, Run

VERSIONS = [f"0.{i // 4 + 1}.{i % 4}" for i in range(12)]


def noisy(levels: np.ndarray, noise: float, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(levels * np.exp(rng.normal(0, noise, size=levels.size)))


@pytest.mark.parametrize("seed", range(5))
def test_planted_step_is_found_where_it_is(seed: int) -> None:
    levels = np.r_[np.full(6, 100.0), np.full(6, 108.0)]
    changes, _drift, _ = analyse(VERSIONS, noisy(levels, 0.005, seed))
    assert [c.index for c in changes] == [6]
    assert changes[0].direction == "slower"
    assert changes[0].before_version == VERSIONS[5] and changes[0].after_version == VERSIONS[6]
    assert changes[0].ratio == pytest.approx(1.08, abs=0.01)


@pytest.mark.parametrize("seed", range(5))
def test_flat_noise_has_no_change_and_no_drift(seed: int) -> None:
    changes, drift, sigma = analyse(VERSIONS, noisy(np.full(12, 100.0), 0.01, seed))
    assert changes == []
    assert drift is None
    assert sigma >= 0.003


@pytest.mark.parametrize("seed", range(5))
def test_slow_drift_is_seen_though_no_single_step_is_large(seed: int) -> None:
    # +1% per release for 8 releases: each step is within the 3% threshold and the noise.
    levels = 100.0 * 1.01 ** np.r_[np.zeros(4), np.arange(8)]
    values = noisy(levels, 0.004, seed)
    assert max(abs(b / a - 1) for a, b in itertools.pairwise(values)) < 0.03
    _, drift, _ = analyse(VERSIONS, values)
    assert drift is not None
    assert drift.direction == "slower"
    assert drift.slope_per_release == pytest.approx(0.01, abs=0.004)
    assert drift.to_version == VERSIONS[-1]


def test_step_detector_penalty_scales_with_noise() -> None:
    values = list(np.r_[np.full(5, 100.0), np.full(5, 102.0)])
    assert detect_steps(values, noise=0.001) == [5]
    assert detect_steps(values, noise=0.02) == []


def test_versions_sort_by_packaging_version() -> None:
    assert sort_versions(["0.10.0", "0.9.1", "0.6.18.post1", "0.6.18", "0.6.2"]) == [
        "0.6.2", "0.6.18", "0.6.18.post1", "0.9.1", "0.10.0",
    ]


def _point(session: Session, run: Run, version: str, median: float, status: str = "ok") -> None:
    session.add(Point(
        run_id=run.id, job_id=run.job_id, point_index=0, kernel="batch_decode", backend="fa2",
        params={"batch_size": 1}, series_key="s1", gpu_sku="h100", flashinfer_version=version,
        status=status, median_us=median, ci_low_us=median * 0.995, ci_high_us=median * 1.005,
    ))


def test_series_history_from_the_database(session: Session) -> None:
    job = Job(name="h", kernel="batch_decode", spec={})
    session.add(job)
    session.flush()
    medians = {"0.9.0": [100.0, 102.0, 101.0], "0.10.0": [110.0], "0.2.0": [99.0],
               "0.3.0": [100.0], "0.4.0": [100.5], "0.11.0": [110.5]}
    for version, values in medians.items():
        for m in values:
            run = Run(job_id=job.id, target="h100", queue="q", flashinfer_version=version,
                      point_indices=[0], gpu_sku="h100")
            session.add(run)
            session.flush()
            _point(session, run, version, m)
    run = Run(job_id=job.id, target="h100", queue="q", flashinfer_version="0.12.0",
              point_indices=[0], gpu_sku="h100")
    session.add(run)
    session.flush()
    _point(session, run, "0.12.0", 1.0, status="error")  # not ok: not part of the history
    session.commit()

    hist = series_history(session, "s1")
    assert hist is not None
    assert [r.version for r in hist.releases] == ["0.2.0", "0.3.0", "0.4.0", "0.9.0", "0.10.0",
                                                  "0.11.0"]
    assert hist.releases[3].median_us == 101.0 and hist.releases[3].points == 3
    assert [(c.before_version, c.after_version) for c in hist.change_points] == [
        ("0.9.0", "0.10.0")
    ]
    assert series_history(session, "nope") is None


def test_the_history_breaks_where_the_environment_changed(session: Session) -> None:
    """A driver update between two releases: the history says where its environment changed,
    and a step found at that release names it (the step may not be FlashInfer's)."""
    job = Job(name="h", kernel="batch_decode", spec={})
    session.add(job)
    session.flush()
    env = {"device": "cuda", "driver": "580.65", "torch": "2.11.0"}
    for version, m, driver in (("0.2.0", 100.0, "580.65"), ("0.3.0", 100.2, "580.65"),
                               ("0.4.0", 99.9, "580.65"), ("0.5.0", 112.0, "590.10"),
                               ("0.6.0", 112.3, "590.10"), ("0.7.0", 111.9, "590.10")):
        run = Run(job_id=job.id, target="h100", queue="q", flashinfer_version=version,
                  point_indices=[0], gpu_sku="h100",
                  environment={**env, "driver": driver, "flashinfer": version})
        session.add(run)
        session.flush()
        _point(session, run, version, m)
    session.commit()
    hist = series_history(session, "s1")
    assert hist is not None
    assert [(b.before_version, b.after_version, b.fields) for b in hist.environment_breaks] == [
        ("0.4.0", "0.5.0", ["driver"])]
    assert [(c.after_version, c.environment_changed) for c in hist.change_points] == [
        ("0.5.0", ["driver"])]
    assert hist.releases[0].environment["driver"] == "580.65"
