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

from bench import gpu_sweep
from bench.gpu_fixture import build
from kernelwatch.core import fixtures
from kernelwatch.core.compare import compare_runs
from kernelwatch.core.models import Point, Run, Sample
from kernelwatch.core.stats import summarize

GPU = Path(__file__).parent / "fixtures" / "gpu"
EXPORTS = sorted(GPU.glob("gpu-evidence-*.json"))


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_every_suite_is_there() -> None:
    assert [p.name for p in EXPORTS] == ["gpu-evidence-decode.json", "gpu-evidence-prefill.json",
                                        "gpu-evidence-single.json"]
    decode = _load(GPU / "gpu-evidence-decode.json")
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


@pytest.mark.parametrize("other", ["earlier", "rerun"])
def test_other_machine_starts_of_one_release_compare_unchanged(
        session: Session, tmp_path: Path, other: str) -> None:
    """0.6.18.post1 measured on three machine starts (two kept as raw harness messages, and
    the fixture's): the comparison stays quiet on all 53 points."""
    written = build([str(GPU / "raw" / f"{other}-h200-0.6.18.post1.jsonl")], tmp_path, "h200")
    now = _runs_by_version(session, EXPORTS)["0.6.18.post1"]
    then = _runs_by_version(session, written)["0.6.18.post1"]
    result = compare_runs(session, then, now)
    assert result.counts["unchanged"] == 53, [
        (p.kernel, p.backend, p.params, p.ratio) for p in result.points
        if p.verdict != "unchanged"]


V6, V5, V7, ALL = "0.6.18.post1", "0.5.3", "0.7.2.post1", ["decode", "prefill", "single"]
# (summary, raw harness files, their labels, agreement rows, suites, runs)
SUMMARIES = [
    ("summary-v5.txt", ["h200-0.5.3.jsonl"], [V5], "agreement-v5.jsonl", ALL, 2),
    ("summary-v6.txt", ["h200-0.6.18.post1.jsonl", "h200-torch.jsonl"], [V6, "torch"],
     "agreement-v6.jsonl", ALL, 2),
    ("summary-v7.txt", ["h200-0.7.2.post1.jsonl"], [V7], "agreement-v7.jsonl", ALL, 2),
    # FlashInfer's CUPTI timer in the agreement, the 0.995 floor, the harness timing by
    # CUPTI
    ("summary-cupti-v6.txt", ["cupti-h200-0.6.18.post1.jsonl", "cupti-h200-torch.jsonl"],
     [V6, "torch"], "agreement-cupti-v6.jsonl", ALL, 2),
    ("summary-cupti-v5.txt", ["cupti-h200-0.5.3.jsonl"], [V5], "agreement-cupti-v5.jsonl",
     ALL, 2),
    ("summary-floor995-v6.txt", ["floor995-h200-0.6.18.post1.jsonl"], [V6], None, ALL, 2),
    ("summary-harness-cupti-rotate.txt", ["harness-cupti-rotate-0.6.18.post1.jsonl"], [V6],
     None, ["decode", "single"], 1),
    ("summary-harness-cupti-flush.txt", ["harness-cupti-flush-0.6.18.post1.jsonl"], [V6],
     None, ["decode", "single"], 1),
    # each cold-L2 method of CUPTI timing and graph replay on one machine start; 0.5.3 with
    # 0.6.18.post1's graph timer in the agreement
    *[(f"summary-flushes-{how}.txt", [f"flushes-{how}-0.6.18.post1.jsonl"], [V6], None,
       ["decode", "single"], 1)
      for how in ("graph", "cupti-rotate", "cupti-flush", "cupti-flush_clean")],
    ("summary-rot-v5.txt", ["rot-h200-0.5.3.jsonl"], [V5], "agreement-rot-v5.jsonl", ALL, 2),
    # 5 repeats of 10 samples, two runs; 3 repeats on the same machine start, whose second
    # run stopped after its decode suite (reported for decode only)
    ("summary-repeats-r5.txt", ["repeats-r5-0.6.18.post1.jsonl"], [V6], None, ALL, 2),
    ("summary-repeats-r3-decode.txt", ["repeats-r3-0.6.18.post1.jsonl"], [V6], None,
     ["decode"], 2),
    # two runs on fresh machine starts, measured after the CI for few repeats was chosen
    ("summary-s6-v6.txt", ["s6-h200-0.6.18.post1.jsonl"], [V6], None, ALL, 2),
    ("summary-s6-v7-decode.txt", ["s6-h200-0.7.2.post1-decode.jsonl"], [V7], None,
     ["decode"], 2),
]


@pytest.mark.parametrize("summary, raws, labels, agreement, suites, runs", SUMMARIES,
                         ids=[s[0] for s in SUMMARIES])
def test_the_committed_summaries_are_the_reports_of_the_raw_files(
        tmp_path: Path, summary: str, raws: list[str], labels: list[str],
        agreement: str | None, suites: list[str], runs: int) -> None:
    """Each committed summary is what bench/gpu_sweep.py's report prints from the committed
    raw harness messages and agreement rows."""
    raw = GPU / "raw"
    saved = gpu_sweep.load_saved([raw / r for r in raws], raw / agreement if agreement else None)
    gpu_sweep.report(*saved, suites, [(lab, None if lab == "torch" else lab) for lab in labels],
                     runs, tmp_path)
    assert (tmp_path / "summary.txt").read_text() == (raw / summary).read_text()


def test_the_timer_comparison_is_the_report_of_the_raw_files() -> None:
    """The comparison of FlashInfer's two timers is what bench/gpu_timers.py prints from the
    committed files; its counts are the ones the results report quotes."""
    from bench import gpu_timers

    raw = GPU / "raw"
    cols = {
        "graph": gpu_timers.medians(raw / "cupti-h200-0.6.18.post1.jsonl", V6),
        "cupti rot": gpu_timers.medians(raw / "harness-cupti-rotate-0.6.18.post1.jsonl", V6),
        "cupti fl": gpu_timers.medians(raw / "harness-cupti-flush-0.6.18.post1.jsonl", V6),
        "FI graph": gpu_timers.fi_medians(raw / "agreement-cupti-v6.jsonl", V6,
                                          "settled_median_us"),
        "FI cupti": gpu_timers.fi_medians(raw / "agreement-cupti-v6.jsonl", V6,
                                          "cupti_median_us"),
    }
    text = gpu_timers.table(cols)
    assert text == (raw / "summary-timers-v6.txt").read_text()
    assert "FlashInfer graph vs FlashInfer CUPTI: within ±3% for 23/37" in text
    assert "harness CUPTI + flush vs FlashInfer CUPTI (the same method): within ±3% for 35/37" \
        in text


def test_the_flush_comparison_is_the_report_of_the_raw_files() -> None:
    """What the written flush adds (docs/results/h200-2026-11.md) is what bench/gpu_timers.py
    prints from four runs of one machine start, one per cold-L2 method."""
    from bench import gpu_timers

    raw = GPU / "raw"
    cols = {name: gpu_timers.medians(raw / f"flushes-{how}-0.6.18.post1.jsonl", V6)
            for name, how in (("graph", "graph"), ("cupti rot", "cupti-rotate"),
                              ("cupti fl", "cupti-flush"), ("cupti cl", "cupti-flush_clean"))}
    text = gpu_timers.table(cols)
    assert text == (raw / "summary-timers-flushes-v6.txt").read_text()
    assert "FI graph" not in text.splitlines()[0]  # only the columns of the files given


def _calibration(capsys: pytest.CaptureFixture[str], files: list[str]) -> tuple[str, list[str]]:
    """bench/ci_calibration.py's output over ``files`` (none: its default set) and the fields
    of its "all" line: points, percentile overlaps, stored overlaps."""
    from bench import ci_calibration

    ci_calibration.main(files)
    out = capsys.readouterr().out
    return out, next(line for line in out.splitlines() if line.startswith("all ")).split()[1:]


def test_the_ci_calibration_figures_are_those_of_the_committed_runs(
        capsys: pytest.CaptureFixture[str]) -> None:
    """What bench/ci_calibration.py prints over every committed sweep measured twice (the
    reason for the CI of docs/measurement.md, "The CI with few repeats"): the percentile
    interval's overlaps and tails, and that the stored CI overlaps for every point."""
    out, total = _calibration(capsys, [])
    assert total == ["723", "692/723", "723/723"]
    assert "|z| > 2.58: 3.3% of pairs" in out and "|z| > 4.0: 0.7% of pairs" in out
    assert "CI half-width, stored: median 0.69% of the median, p90 3.25%" in out


def test_the_fresh_runs_ci_calibration(capsys: pytest.CaptureFixture[str]) -> None:
    """Two-run sweeps measured after the CI was chosen: the stored CI overlaps for all 85
    points measured twice, the percentile interval for 81."""
    raw = GPU / "raw"
    _, total = _calibration(capsys, [str(raw / "s6-h200-0.6.18.post1.jsonl"),
                                     str(raw / "s6-h200-0.7.2.post1-decode.jsonl")])
    assert total == ["85", "81/85", "85/85"]


@pytest.mark.parametrize("version", [V6, V5, V7])
def test_the_interleaved_agreement_logs_are_their_rows(version: str) -> None:
    """The log of the harness and FlashInfer's timers alternated in one process over the 53
    units (docs/results/h200-2026-11.md) ends with what summary_lines makes of the rows
    committed beside it."""
    from bench.gpu_agreement_interleaved import summary_lines

    raw = GPU / "raw"
    rows = [json.loads(line) for line in
            (raw / f"s6-interleaved-{version}.jsonl").read_text().splitlines()]
    assert len(rows) == 53 and all(r["status"] == "ok" for r in rows)
    lines = summary_lines(rows, ["graph", "cupti"])
    assert (raw / f"s6-interleaved-{version}.log").read_text().splitlines()[-len(lines):] == lines
