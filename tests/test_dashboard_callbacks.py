"""The dashboard's callbacks, called as functions against a Postgres database seeded through
the real storage path (tests/dashboard_seed.py). Expected values are read back from the
points table, not hard-coded."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl

import pytest
from dash._callback_context import context_value
from dash._utils import AttributeDict
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from kernelwatch.core.compare import compare_runs
from kernelwatch.core.fixtures import import_job, read_file
from kernelwatch.core.models import Point, Run, Sample
from kernelwatch.core.series import clock_summary
from kernelwatch.dashboard import queries
from kernelwatch.dashboard.app import create_app
from kernelwatch.dashboard.export import to_csv
from kernelwatch.dashboard.samples import clock_note, histogram_figure
from tests.dashboard_seed import GPU, KV_LENS, N_SAMPLES, V_NEW, V_OLD, Seeded, seed
from tests.test_dashboard_versions import find


@pytest.fixture(scope="module")
def pages() -> dict[str, ModuleType]:
    """Creating the app imports the page modules (Dash registers them); then they are plain
    modules whose callbacks are functions."""
    create_app()
    return {name: importlib.import_module(f"kernelwatch.dashboard.pages.{name}")
            for name in ("overview", "curves", "compare", "roofline", "speedup", "job")}


@pytest.fixture
def seeded(session: Session) -> Seeded:
    return seed(session)


def fixed_for(curves: ModuleType, kernel: str, x: str, series: str, **chosen: str
              ) -> tuple[list[str], list[dict[str, str]]]:
    """The pattern-matching selector values and ids the page would hold."""
    with curves.reading() as s:
        fixed = queries.combos(s, kernel).settle(s, [x, series], chosen)
    ids = [{"type": "curves-fix", "dim": d} for d in fixed]
    return list(fixed.values()), ids


def medians(session: Session, **where: Any) -> dict[int, float | None]:
    """kv_len -> median of the matching batch_decode points, from the table itself."""
    rows = session.execute(select(Point).where(Point.kernel == "batch_decode")).scalars()
    out = {}
    for p in rows:
        if all((p.params.get(k) if k in p.params else getattr(p, k)) == v
               for k, v in where.items()):
            out[int(p.params["kv_len"])] = p.median_us
    return out


def test_curve_traces_points_error_bars_and_log_axis(pages, seeded, session):
    curves = pages["curves"]
    values, ids = fixed_for(curves, "batch_decode", "kv_len", "backend",
                            batch_size="64", flashinfer_version=V_OLD)
    fig, rows, summary, search = curves.update_graph(
        "batch_decode", "kv_len", "latency", "backend", values, None, ids)
    names = [t["name"] for t in fig["data"]]
    assert names == ["fa2", "torch-sdpa", "unsupported / error"]
    fa2, sdpa, bad = fig["data"]
    want_fa2 = medians(session, batch_size=64, backend="fa2", flashinfer_version=V_OLD)
    # fa2 at kv 32768 is unsupported: it is not on the line, and never drawn as a zero.
    assert fa2["x"] == [512.0, 2048.0, 8192.0]
    assert fa2["y"] == pytest.approx([want_fa2[k] for k in (512, 2048, 8192)])
    assert len(sdpa["x"]) == len(KV_LENS)
    assert bad["x"] == [32768.0] and bad["yaxis"] == "y2" and 0 not in fa2["y"]
    # Error bars are the bootstrap CI of each median.
    p = session.execute(select(Point).where(
        Point.backend == "fa2", Point.flashinfer_version == V_OLD)).scalars().all()
    p512 = next(x for x in p if x.params["kv_len"] == 512 and x.params["batch_size"] == 64)
    assert fa2["error_y"]["array"][0] == pytest.approx(p512.ci_high_us - p512.median_us)
    assert fa2["error_y"]["arrayminus"][0] == pytest.approx(p512.median_us - p512.ci_low_us)
    # kv_len spans 64x: log x axis. Hover carries the environment and the sample count.
    assert fig["layout"]["xaxis"]["type"] == "log"
    assert f"samples: {N_SAMPLES}" in fa2["hovertext"][0]
    assert "driver_version: 570.86" in fa2["hovertext"][0]
    assert summary.children[0].startswith("7 measured points in 2 series")
    assert {r["status"] for r in rows} == {"ok", "unsupported"}
    # The URL holds the whole view.
    q = dict(parse_qsl(search.lstrip("?")))
    assert q["kernel"] == "batch_decode" and q["x"] == "kv_len" and q["batch_size"] == "64"
    assert q["flashinfer_version"] == V_OLD


def test_incorrect_points_are_flagged_not_plotted_on_the_line(pages, seeded):
    curves = pages["curves"]
    values, ids = fixed_for(curves, "batch_decode", "kv_len", "backend",
                            batch_size="1", flashinfer_version=V_NEW)
    fig, *_ = curves.update_graph("batch_decode", "kv_len", "latency", "backend", values,
                                  None, ids)
    by_name = {t["name"]: t for t in fig["data"]}
    assert by_name["torch-sdpa"]["x"] == [2048.0, 8192.0, 32768.0]
    assert by_name["incorrect output"]["x"] == [512.0]
    assert by_name["incorrect output"]["text"] == ["incorrect"]


def test_metric_switch_and_series_by_version(pages, seeded, session):
    curves = pages["curves"]
    values, ids = fixed_for(curves, "batch_decode", "kv_len", "flashinfer_version",
                            batch_size="1", backend="fa2")
    fig, *_ = curves.update_graph("batch_decode", "kv_len", "tbps", "flashinfer_version",
                                  values, None, ids)
    assert [t["name"] for t in fig["data"]] == [V_OLD, V_NEW]
    new = fig["data"][1]
    pts = {p.params["kv_len"]: p for p in session.execute(select(Point).where(
        Point.kernel == "batch_decode", Point.backend == "fa2",
        Point.flashinfer_version == V_NEW)).scalars()
        if p.params["batch_size"] == 1}
    assert new["y"] == pytest.approx([pts[k].tbps for k in KV_LENS])
    # TB/s is bytes / latency: its CI's upper end comes from the latency CI's lower end.
    p = pts[512]
    assert new["error_y"]["array"][0] == pytest.approx(
        p.tbps * p.median_us / p.ci_low_us - p.tbps)


def test_layout_restores_view_from_url(pages, seeded):
    curves = pages["curves"]
    values, ids = fixed_for(curves, "batch_decode", "kv_len", "backend", batch_size="64")
    *_, search = curves.update_graph("batch_decode", "kv_len", "tbps", "backend", values,
                                     None, ids)
    query = dict(parse_qsl(search.lstrip("?")))
    page = curves.layout(**query)

    assert find(page, "curves-kernel").value == "batch_decode"
    assert find(page, "curves-y").value == "tbps"
    assert find(page, {"type": "curves-fix", "dim": "batch_size"}).value == "64"


def triggered_by(prop_id: str) -> None:
    """What Dash sets while it runs a callback (as its docs show for testing callbacks)."""
    context_value.set(AttributeDict(triggered_inputs=[{"prop_id": prop_id, "value": None}]))


def test_selectors_follow_kernel_change(pages, seeded):
    curves = pages["curves"]
    triggered_by("curves-kernel.value")
    x_opts, x, _s_opts, series, panel = curves.update_selectors(
        "single_prefill", "kv_len", "backend", None, [], [])
    assert "qo_len" in x_opts and x in x_opts
    assert series == "backend"
    dims = [c.children[1].id["dim"] for c in panel]
    assert "causal" in dims and "backend" not in dims


def test_compare_highlights_planted_regression(pages, seeded, session):
    compare = pages["compare"]
    out = compare.update([str(seeded.runs[V_OLD])], [str(seeded.runs[V_NEW])], 0.03, None,
                         None, None)
    summary, _groups, group, _axes, hx, _y_axes, hy, fig, _rows, regs, _gtable, search = out
    assert group == "batch_decode/fa2"  # opens on the group that regressed
    assert hx == "kv_len" and hy == "batch_size"
    heat = fig["data"][0]
    # One outlined cell per planted regression, each at a planted (kv_len, batch_size).
    planted = {(str(r["params"]["kv_len"]), str(r["params"]["batch_size"]))
               for r in seeded.regressed}
    shapes = fig["layout"]["shapes"]
    outlined = {(heat["x"][round(s["x0"] + 0.48)], heat["y"][round(s["y0"] + 0.48)])
                for s in shapes}
    assert outlined == planted
    for kv, b in planted:
        z = heat["z"][heat["y"].index(b)][heat["x"].index(kv)]
        assert z == pytest.approx(1.10, abs=0.01)
        assert heat["text"][heat["y"].index(b)][heat["x"].index(kv)].startswith("▲")
    # Cells not planted stay near 1 and are not outlined.
    assert heat["z"][heat["y"].index("1")][heat["x"].index("512")] == pytest.approx(1.0,
                                                                                    abs=0.01)
    # The regression list carries the CI and the stored confirmation state.
    table_rows = regs.children[1].children
    states = sorted(r.children[8].children for r in table_rows)
    assert states == ["confirmed", "open", "open"]
    assert dict(parse_qsl(search.lstrip("?")))["baseline"] == str(seeded.runs[V_OLD])
    # The release flow stored this comparison: the page shows it rather than recomputing.
    assert "stored comparison" in str(summary)
    other = compare.update([str(seeded.runs[V_OLD])], [str(seeded.runs[V_NEW])], 0.05, None,
                           None, None)
    assert "computed now" in str(other[0])
    assert len(other[7]["layout"]["shapes"]) == len(seeded.regressed)  # 10% > 5% too


def test_compare_page_accepts_notification_url_and_release_pair(pages, seeded):
    compare = pages["compare"]
    page = compare.layout(baseline=str(seeded.runs[V_OLD]), contender=str(seeded.runs[V_NEW]))
    text = str(page)
    assert f"'{seeded.runs[V_OLD]}'" in text and f"'{seeded.runs[V_NEW]}'" in text
    triggered_by("compare-to.value")
    opts_from, opts_to, b, c = compare.pick_releases(GPU, V_OLD, V_NEW)
    # Every finished run of each version on the GPU, from every job: the release job's two
    # runs and the other job that measured the new version.
    assert b == [str(seeded.runs[V_OLD])] and len(c) == 2 and str(seeded.runs[V_NEW]) in c
    assert V_OLD in opts_from and V_NEW in opts_to
    out = compare.update(b, c, 0.03, None, None, None)
    assert "series from 2 jobs (a series measured by several runs of one version pools" in \
        str(out[0])


def test_compare_unknown_run_is_reported(pages, seeded):
    out = pages["compare"].update(["999999"], [str(seeded.runs[V_NEW])], 0.03, None, None,
                                  None)
    assert "999999" in str(out[0])


def test_job_table_progress_and_histogram(pages, seeded, session):
    job = pages["job"]
    _header, progress, tick_disabled = job.load_job(seeded.decode_job, None)
    assert tick_disabled  # finished: no polling
    rows, columns, pages_n, note = job.load_table(seeded.decode_job, 0, 25, [], "", None)
    ids = [c["id"] for c in columns]
    assert "batch_size" in ids and "kv_len" in ids and "median_us" in ids
    assert "num_qo_heads" not in ids  # the same in every point: no column
    assert "32 of 32" in str(progress)
    assert len(rows) == 25 and pages_n == 2 and "32 points match" in note
    rest, *_ = job.load_table(seeded.decode_job, 1, 25, [], "", None)
    assert len(rest) == 7 and not {r["id"] for r in rows} & {r["id"] for r in rest}
    assert sorted({r["status"] for r in rows + rest}) == ["incorrect", "ok", "unsupported"]
    point = next(r for r in rows if r["status"] == "ok")
    assert job.select_point({"row": 0, "column": 0, "row_id": point["id"]}) == point["id"]
    fig, csv_rows, search = job.show_samples(point["id"], seeded.decode_job, "", [], rows)
    want = session.execute(select(Sample.latency_us).where(Sample.point_id == point["id"])
                           .order_by(Sample.iteration)).scalars().all()
    shown = [x for trace in fig["data"] for x in trace["x"]]
    assert shown == pytest.approx(list(want))
    assert len(csv_rows) == N_SAMPLES
    assert f"point={point['id']}" in search


def test_job_table_filters_and_sorts_in_the_database(pages, seeded, session):
    job = pages["job"]
    pts = session.execute(select(Point).where(Point.job_id == seeded.decode_job)).scalars().all()

    def table(filter_query: str, sort: list[dict[str, str]] | None = None) -> list[Any]:
        rows, *_ = job.load_table(seeded.decode_job, 0, 100, sort or [], filter_query, None)
        return list(rows)

    assert [r["status"] for r in table("{status} scontains unsupp")] == ["unsupported"] * 2
    assert [r["status"] for r in table("{status} icontains INCORR")] == ["incorrect"]
    slow = table("{median_us} > 100 && {backend} = fa2")
    want = sorted(p.id for p in pts if p.backend == "fa2" and (p.median_us or 0) > 100)
    assert sorted(r["id"] for r in slow) == want and want
    # A parameter compares as a number: kv_len >= 8192 is not a string comparison.
    big = table("{kv_len} >= 8192")
    assert sorted(r["id"] for r in big) == sorted(p.id for p in pts
                                                  if p.params["kv_len"] >= 8192)
    by_median = table("{status} = ok", [{"column_id": "median_us", "direction": "desc"}])
    medians = [r["median_us"] for r in by_median]
    assert medians == sorted(medians, reverse=True) and len(medians) == 29
    by_kv = table("", [{"column_id": "kv_len", "direction": "asc"}])
    assert [r["kv_len"] for r in by_kv] == sorted(p.params["kv_len"] for p in pts)
    rows, _, _, note = job.load_table(seeded.decode_job, 0, 25, [], "{nope} = 1", None)
    assert rows == [] and "not understood" in str(note)


def test_job_running_polls_and_unknown_job(pages, seeded, session):
    from kernelwatch.core.models import Job

    j = session.get(Job, seeded.decode_job)
    j.status = "running"
    session.commit()
    *_, tick_disabled = pages["job"].load_job(seeded.decode_job, None)
    assert tick_disabled is False
    header, *_ = pages["job"].load_job(424242, None)
    assert "does not exist" in str(header)


def test_speedup_table_is_measured(pages, seeded, session):
    rows, _columns, fig, _csv_rows, _search = pages["speedup"].update(
        GPU, V_NEW, ["single_decode", "single_prefill"])
    assert [r["scenario"].split()[0] for r in rows] == ["single_decode", "single_prefill"]
    pts = {(p.kernel, p.backend): p.median_us for p in session.execute(
        select(Point).where(Point.job_id == seeded.speedup_job)).scalars()}
    dec = rows[0]
    assert dec["speedup vs torch-math"] == pytest.approx(
        pts[("single_decode", "torch-math")] / pts[("single_decode", "fa2")], abs=0.01)
    assert dec["speedup vs torch-sdpa"] == pytest.approx(
        pts[("single_decode", "torch-sdpa")] / pts[("single_decode", "fa2")], abs=0.01)
    # One bar per scenario and PyTorch backend: the speedups of the table.
    bars = {t["name"]: t for t in fig["data"]}
    assert set(bars) == {"vs torch-math", "vs torch-sdpa"}
    assert bars["vs torch-math"]["x"][bars["vs torch-math"]["y"].index(
        "single_decode kv_len=4096 num_qo_heads=32")] == dec["speedup vs torch-math"]


def test_roofline_points_and_roofs(pages, seeded):
    fig, rows, _search = pages["roofline"].update("batch_decode", GPU, V_NEW, "backend")
    points = [t for t in fig["data"] if t["mode"] == "markers"]
    roofs = {t["name"].split(" (")[0] for t in fig["data"] if t["mode"] == "lines"}
    assert roofs == {"h100 spec roof", "measured copy bandwidth"}
    # 16 points of 0.7.2 minus the unsupported one and the incorrect one.
    assert sum(len(t["x"]) for t in points) == 14
    for r in rows:
        assert r["intensity_flop_per_byte"] > 0 and r["tflops"] > 0
    assert fig["layout"]["xaxis"]["type"] == "log"


def test_overview_lists_nodes_jobs_and_release_verdict(pages, seeded):
    text = str(pages["overview"].render())
    assert "gpu-host-1:gpu0" in text and "gpu-host-2:gpu0" in text
    assert "decode sweep" in text
    assert "1 regression(s) confirmed" in text
    assert f"/compare?baseline={seeded.runs[V_OLD]}&contender={seeded.runs[V_NEW]}" in text


def test_csv_export_of_chart_rows():
    csv_text = to_csv([{"a": 1, "b": {"k": 2}}, {"a": 3, "c": "x"}])
    lines = csv_text.strip().splitlines()
    assert lines[0] == "a,b,c"
    assert lines[1] == '1,"{""k"": 2}",'
    assert lines[2] == "3,,x"


def test_rerun_replaces_older_point_on_curve(pages, seeded, session):
    """A second job measuring the same series: the curve shows the newest point only."""
    from tests.dashboard_seed import _job, _run, _store

    job = _job(session, "rerun", "batch_decode", {}, 1)
    run = _run(session, job, V_OLD)
    params = session.execute(select(Point.params).where(
        Point.run_id == seeded.runs[V_OLD], Point.backend == "fa2")).scalars().first()
    _store(session, run, "batch_decode", 0, params, "fa2")
    session.commit()
    newest = session.execute(select(Point.id).where(Point.run_id == run.id)).scalar_one()
    with pages["curves"].reading() as s:
        rows = queries.curve_points(s, "batch_decode", "kv_len", "backend",
                                    {"flashinfer_version": V_OLD, "batch_size": "1"})
    at = [r for r in rows if r["series"] == "fa2" and r["x"] == str(params["kv_len"])]
    assert [r["id"] for r in at] == [newest]
    assert not math.isnan(at[0]["median_us"])


# --- a real CPU run (the harness's own output, recorded by the compare work) ---------------

CPU_FIXTURE = Path(__file__).parent / "fixtures" / "compare" / "cpu_same_spec_two_runs.json"


@pytest.fixture
def cpu_jobs(session: Session) -> tuple[list[int], list[int]]:
    """Baseline and contender run ids of two real CPU runs of one spec (torch-sdpa and
    torch-math, batch_size {1, 4} x kv_len {256, 1024})."""
    if not CPU_FIXTURE.exists():
        pytest.skip("the recorded CPU run fixture is not there")
    data = json.loads(CPU_FIXTURE.read_text())
    ids = []
    for side in ("baseline", "contender"):
        job = import_job(session, data[side])
        session.flush()
        ids.append(list(session.execute(select(Run.id).where(Run.job_id == job.id)).scalars()))
    session.commit()
    return ids[0], ids[1]


def test_real_cpu_run_curves_and_compare(pages, cpu_jobs, session):
    baseline, contender = cpu_jobs
    job_id = session.get(Run, baseline[0]).job_id
    curves = pages["curves"]
    with curves.reading() as s:
        fixed = queries.combos(s, "batch_decode", job_id).settle(
            s, ["kv_len", "backend"], {"batch_size": "4"})
    assert fixed["gpu_sku"] == queries.NONE  # a CPU run has no GPU SKU
    ids = [{"type": "curves-fix", "dim": d} for d in fixed]
    fig, *_ = curves.update_graph("batch_decode", "kv_len", "latency", "backend",
                                        list(fixed.values()), job_id, ids)
    traces = {t["name"]: t for t in fig["data"]}
    assert set(traces) == {"torch-math", "torch-sdpa"}
    stored = {(p.backend, p.params["kv_len"]): p.median_us for p in session.execute(
        select(Point).where(Point.job_id == job_id)).scalars() if p.params["batch_size"] == 4}
    for name, t in traces.items():
        assert t["x"] == [256.0, 1024.0]
        assert t["y"] == pytest.approx([stored[(name, 256)], stored[(name, 1024)]])
    # Compare the two real runs: every point is in the heatmaps, significance is compare's.
    out = pages["compare"].update([str(i) for i in baseline], [str(i) for i in contender],
                                  0.03, "batch_decode/torch-sdpa", "kv_len", "batch_size")
    fig = out[7]
    result = compare_runs(session, baseline, contender)
    sdpa = [p for p in result.points if p.backend == "torch-sdpa"]
    cells = [v for row in fig["data"][0]["z"] for v in row if v is not None]
    assert len(cells) == len(sdpa) == 4
    significant = [p for p in sdpa if p.verdict in ("regression", "improvement")]
    assert len(fig["layout"]["shapes"]) == len(significant)


def test_release_verdict_follows_release_flow_states():
    v = queries.release_verdict
    assert v({"state": "benchmarking"}, {}) == "benchmarking"
    assert v({"state": "no_baseline", "message": "no previous release"}, {}) == \
        "no baseline (no previous release)"
    assert v({"state": "confirming"}, {"confirming": 3}) == "3 suspected, confirming"
    assert v({"state": "done"}, {"confirmed": 2, "not_reproduced": 1}) == \
        "2 regression(s) confirmed; 1 not reproduced"
    assert v({"state": "done"}, {}) == "no regressions"


# --- real H200 measurements (the GPU work's fixture: FlashInfer 0.5.3, 0.6.18.post1, 0.7.2) ---

GPU_FIXTURES = Path(__file__).parent / "fixtures" / "gpu"


def import_gpu_fixtures(session: Session) -> dict[str, int]:
    """Import the recorded H200 jobs; kernel -> job id."""
    out = {}
    for name in ("decode", "prefill", "single"):
        path = GPU_FIXTURES / f"gpu-evidence-{name}.json.gz"
        if not path.exists():
            pytest.skip("the GPU fixture is not there")
        job = import_job(session, read_file(path))
        session.flush()
        out[job.kernel] = job.id
    session.commit()
    return out


@pytest.fixture
def gpu_jobs(session: Session) -> dict[str, int]:
    return import_gpu_fixtures(session)


def newest(session: Session, job_id: int, backend: str, version: str | None,
           **params: Any) -> dict[int, float]:
    """kv_len -> median of the newest matching point (what a curve shows)."""
    out: dict[int, tuple[int, float]] = {}
    for p in session.execute(select(Point).where(Point.job_id == job_id,
                                                 Point.backend == backend)).scalars():
        if (backend.startswith("torch") or p.flashinfer_version == version) and all(
                p.params[k] == v for k, v in params.items()):
            kv = p.params["kv_len"]
            if kv not in out or p.id > out[kv][0]:
                out[kv] = (p.id, p.median_us)
    return {k: v for k, (_, v) in sorted(out.items())}


def test_h200_curves_put_torch_beside_flashinfer(pages, gpu_jobs, session):
    curves = pages["curves"]
    job = gpu_jobs["batch_decode"]
    with curves.reading() as s:
        fixed = queries.combos(s, "batch_decode").settle(
            s, ["kv_len", "backend"], {"flashinfer_version": "0.6.18.post1", "batch_size": "64"})
    assert fixed["gpu_sku"] == "h200"
    ids = [{"type": "curves-fix", "dim": d} for d in fixed]
    fig, *_ = curves.update_graph("batch_decode", "kv_len", "tbps", "backend",
                                  list(fixed.values()), None, ids)
    traces = {t["name"]: t for t in fig["data"]}
    # torch-sdpa's runs carry no FlashInfer version; it still shares the chart.
    assert set(traces) == {"auto", "fa2", "torch-sdpa"}
    for backend, t in traces.items():
        want = newest(session, job, backend, "0.6.18.post1", batch_size=64)
        assert t["x"] == [float(k) for k in want]
        pts = {p.params["kv_len"]: p for p in session.execute(select(Point).where(
            Point.job_id == job, Point.backend == backend)).scalars()
            if p.params["batch_size"] == 64 and p.median_us in want.values()}
        assert t["y"] == pytest.approx([pts[k].tbps for k in want])
    assert "NVIDIA H200" in traces["fa2"]["hovertext"][0]


def test_h200_speedup_and_roofline(pages, gpu_jobs, session):
    rows, _, fig, _, _ = pages["speedup"].update("h200", "0.6.18.post1",
                                                 ["single_decode", "batch_decode",
                                                  "batch_prefill"])
    # Every scenario of the three jobs ran torch-sdpa and FlashInfer: 5 + 16 + 8.
    assert len(rows) == 29
    single = [r for r in rows if r["scenario"].startswith("single_decode")]
    sdpa = newest(session, gpu_jobs["single_decode"], "torch-sdpa", None)
    fa2 = newest(session, gpu_jobs["single_decode"], "fa2", "0.6.18.post1")
    for r, kv in zip(single, sorted(fa2), strict=True):
        assert f"kv_len={kv} " in r["scenario"]
        assert r["speedup vs torch-sdpa"] == pytest.approx(sdpa[kv] / fa2[kv], abs=0.006)
    assert [t["name"] for t in fig["data"]] == ["vs torch-sdpa"]  # no torch-math measured
    fig, rows, _ = pages["roofline"].update("batch_decode", "h200", "0.6.18.post1", "backend")
    assert {t["name"] for t in fig["data"] if t["mode"] == "markers"} == {"auto", "fa2"}
    assert "h200 spec roof (4.8 TB/s, 989.4 TFLOP/s)" in [t["name"] for t in fig["data"]]
    assert all(0 < r["tbps"] < 4.8 for r in rows)  # under the spec sheet's bandwidth


def test_histogram_shows_each_repeat(pages):
    samples = [(10.0 + 0.01 * i, 0) for i in range(10)] + [(10.5 + 0.01 * i, 1) for i in range(10)]
    fig = histogram_figure(7, samples)
    assert [t["name"] for t in fig["data"]] == ["repeat 1", "repeat 2"]
    assert fig["data"][1]["x"] == [v for v, r in samples if r == 1]
    assert "20 raw samples in 2 repeats" in fig["layout"]["title"]["text"]
    assert fig["layout"]["barmode"] == "stack" and fig["layout"]["showlegend"]


def test_the_histogram_says_at_which_clock_the_h200_samples_were_kept(pages, gpu_jobs, session):
    job = pages["job"]
    pts = session.execute(select(Point).where(Point.job_id == gpu_jobs["batch_decode"])
                          ).scalars().all()
    retaken = [p for p in pts if p.telemetry and all(r["clock"]["floor_met"]
               for r in p.telemetry["repeats"]) and sum(r["clock"]["discarded"]
               for r in p.telemetry["repeats"]) > 0]
    missed = [p for p in pts if p.telemetry and not all(r["clock"]["floor_met"]
              for r in p.telemetry["repeats"])]
    assert all(p.throttled for p in missed)
    assert retaken and missed  # the evidence has both: samples retaken, and a flagged point
    p = retaken[0]
    fig, *_ = job.show_samples(p.id, gpu_jobs["batch_decode"], "", [], [])
    n = sum(r["clock"]["discarded"] for r in p.telemetry["repeats"])
    assert "(boost)" in fig["layout"]["title"]["text"]
    assert f"{n} retaken" in fig["layout"]["title"]["text"]
    fig, *_ = job.show_samples(missed[0].id, gpu_jobs["batch_decode"], "", [], [])
    assert "under the floor" in fig["layout"]["title"]["text"]
    # With timing.clock_floor 0 the probe still reads the clock, but nothing held it at boost.
    off = {"repeats": [{"clock": {"floor_mhz": None, "samples_mhz": [1850.0], "discarded": 0,
                                  "floor_met": True}}]}
    assert clock_note(clock_summary(off)) == " · clock 1850 MHz"
    # Points measured before the probe existed carry no clock and say nothing about it.
    old = p.telemetry | {"repeats": [{k: v for k, v in r.items() if k != "clock"}
                                     for r in p.telemetry["repeats"]]}
    session.execute(update(Point).where(Point.id == p.id).values(telemetry=old))
    session.commit()
    fig, *_ = job.show_samples(p.id, gpu_jobs["batch_decode"], "", [], [])
    assert "clock" not in fig["layout"]["title"]["text"]


def test_curves_open_on_the_slice_with_the_most_points(session: Session) -> None:
    """The fixed parameters are chosen together. batch_size 16 has the most points, but spread
    over three head configurations one point each; batch_size 1 has two points in one: the
    page opens there, not on a slice of one point."""
    from kernelwatch.core.models import Job
    from kernelwatch.core.results import store_point
    from kernelwatch_harness.catalogue import complete_params

    job = Job(name="slices", kernel="batch_decode", spec={})
    session.add(job)
    session.flush()
    run = Run(job_id=job.id, target="cpu", queue="q", point_indices=[0])
    session.add(run)
    session.flush()
    shapes = [(16, 8, 2, 512), (16, 16, 2, 512), (16, 32, 2, 512), (1, 4, 2, 512), (1, 4, 2, 1024)]
    for i, (b, qo, kv_heads, kv) in enumerate(shapes):
        params = complete_params("batch_decode", {"batch_size": b, "num_qo_heads": qo,
                                                  "num_kv_heads": kv_heads, "kv_len": kv},
                                 "torch-sdpa")
        store_point(session, run, "batch_decode", params, {
            "type": "point", "point_index": i, "backend": "torch-sdpa", "status": "ok",
            "error": None, "samples_us": [10.0, 10.5, 11.0]})
    session.commit()
    combos = queries.combos(session, "batch_decode", job.id)
    fixed = combos.settle(session, free=["kv_len", "backend"], wanted={})
    assert (fixed["batch_size"], fixed["num_qo_heads"]) == ("1", "4")
    # What the URL asks for still wins where it has data.
    asked = combos.settle(session, free=["kv_len", "backend"], wanted={"num_qo_heads": "32"})
    assert (asked["batch_size"], asked["num_qo_heads"]) == ("16", "32")


def test_the_curves_subtitle_leaves_out_only_every_backends_default(
        pages: dict[str, ModuleType]) -> None:
    is_default = pages["curves"]._is_default
    assert is_default("batch_decode", "kv_layout", "HND")
    assert not is_default("batch_decode", "kv_layout", "NHD")
    # true is fa3's default and not fa2's: a figure of both must say which it shows
    assert not is_default("batch_decode", "use_tensor_cores", "True")
    assert not is_default("batch_decode", "use_tensor_cores", "False")
    assert is_default("single_decode", "kv_layout", "NHD")
    assert is_default("single_decode", "use_tensor_cores", "false")
