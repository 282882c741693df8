"""The history and release pages' callbacks, called as functions against Postgres seeded with
several jobs and six FlashInfer versions (tests/dashboard_seed.py, ``seed_history``): the
planted step is found and drawn, the a100's driver upgrade breaks its lines, and the release's
lists hold exactly the planted series. Expected values are read back from the tables."""

from __future__ import annotations

import importlib
import statistics
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernelwatch.core import notify
from kernelwatch.core.history import series_history
from kernelwatch.core.models import Job, Point, Release, Run, Sample
from kernelwatch.dashboard.app import create_app
from tests.dashboard_seed import (
    H_ENV_CHANGE,
    H_KERNEL,
    H_PREVIOUS,
    H_RELEASE,
    H_VERSIONS,
    HistorySeeded,
    seed,
    seed_history,
)
from tests.test_release_fixture import FIXTURES as RELEASE_FIXTURES


@pytest.fixture(scope="module")
def pages() -> dict[str, ModuleType]:
    create_app()
    return {name: importlib.import_module(f"kernelwatch.dashboard.pages.{name}")
            for name in ("history", "release", "overview", "curves", "job")}


@pytest.fixture
def hist(session: Session) -> HistorySeeded:
    seed(session)  # the decode sweep and its release beside: other kernels, other versions
    return seed_history(session)


def find(node: Any, id_: Any) -> Any:
    if getattr(node, "id", None) == id_:
        return node
    children = getattr(node, "children", None)
    for child in children if isinstance(children, list) else [children]:
        if child is not None and not isinstance(child, str):
            hit = find(child, id_)
            if hit is not None:
                return hit
    return None


def graph_for(history: ModuleType, kernel: str, gpus: list[str], backends: list[str],
              y: str = "latency", highlight: str | None = None, **chosen: str
              ) -> tuple[Any, ...]:
    """The main callback with the selectors the page would hold for this slice."""
    st = history.resolve_state(kernel, chosen, None)
    ids = [{"type": "history-fix", "dim": d} for d in st["dims"]]
    return history.update_graph(kernel, gpus, backends, y,
                                [st["fixed"][d] for d in st["dims"]], ids, highlight)


def traces_named(fig: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """Every segment of a series' line (the legend shows its first)."""
    group = next(t["legendgroup"] for t in fig["data"] if t["name"] == name)
    return [t for t in fig["data"] if t.get("legendgroup") == group
            and t["mode"] == "lines+markers"]


def version_medians(session: Session, series_key: str) -> dict[str, float]:
    by: dict[str, list[float]] = {}
    for p in session.execute(select(Point).where(Point.series_key == series_key)).scalars():
        by.setdefault(p.flashinfer_version, []).append(p.median_us)
    return {v: statistics.median(m) for v, m in by.items()}


def test_history_finds_and_draws_the_planted_step(pages, hist, session):
    history = pages["history"]
    fig, rows, summary, table, view = graph_for(history, H_KERNEL, ["h100"], ["fa2"],
                                                kv_len="4096")
    (line,) = traces_named(fig, "fa2 · h100")
    assert line["x"] == list(H_VERSIONS)  # every version, in version order
    want = version_medians(session, hist.step_series)
    assert line["y"] == pytest.approx([want[v] for v in H_VERSIONS])
    assert line["y"][3] / line["y"][2] == pytest.approx(1.25, abs=0.01)
    # Error bars are the CI of each version's median (0.5.3 and 0.6.0 have two points each).
    assert all(a > 0 for a in line["error_y"]["array"])
    # The statistics find the step where it was planted; the chart marks it there.
    found = series_history(session, hist.step_series)
    assert [(c.after_version, c.direction) for c in found.change_points] == [("0.6.0",
                                                                               "slower")]
    (marks,) = [t for t in fig["data"] if t["name"] == "change point"]
    assert marks["x"] == ["0.6.0"] and marks["marker"]["symbol"] == ["triangle-up"]
    assert "+25." in marks["hovertext"][0]
    step_at = H_VERSIONS.index("0.6.0") - 0.5
    assert any(s["x0"] == step_at and s["line"].get("dash") == "dot"
               for s in fig["layout"]["shapes"])
    assert "0.5.3 → 0.6.0 +25." in str(table) and "1 change point(s)" in str(summary)
    # The release the release flow benchmarked is marked, and linked.
    (rel,) = [t for t in fig["data"] if t["name"] == "release benchmarked"]
    assert rel["x"] == [H_RELEASE] and rel["customdata"] == [["release", H_RELEASE]]
    assert f"/release/{H_RELEASE}" in str(summary)
    assert {r["flashinfer_version"] for r in rows} == set(H_VERSIONS)
    assert view["kernel"] == H_KERNEL and view["kv_len"] == "4096"


def test_history_improvement_and_throughput(pages, hist, session):
    history = pages["history"]
    fig, *_ = graph_for(history, H_KERNEL, ["h100"], ["fa2"], y="tbps", kv_len="1024")
    (line,) = traces_named(fig, "fa2 · h100")
    pts = {p.flashinfer_version: p for p in session.execute(select(Point).where(
        Point.series_key == hist.faster_series, Point.run_id.in_(
            select(Run.id).where(Run.job_id.in_(hist.jobs[:2]))))).scalars()}
    # TB/s from the kernel's formulas at each version's median: a single point's own value.
    assert line["y"][0] == pytest.approx(pts["0.4.0"].tbps)
    (marks,) = [t for t in fig["data"] if t["name"] == "change point"]
    assert marks["x"] == ["0.6.0"] and marks["marker"]["symbol"] == ["triangle-down"]


def test_history_breaks_the_line_where_the_environment_changed(pages, hist):
    history = pages["history"]
    fig, _, _summary, table, _ = graph_for(history, H_KERNEL, [], [], kv_len="4096")
    a100 = traces_named(fig, "fa2 · a100")
    cut = H_VERSIONS.index(H_ENV_CHANGE)
    assert [t["x"] for t in a100] == [list(H_VERSIONS[:cut]), list(H_VERSIONS[cut:])]
    assert [t["showlegend"] for t in a100] == [True, False]
    assert len(traces_named(fig, "fa2 · h100")) == 1  # the h100's environment never changed
    assert any(s["x0"] == cut - 0.5 and s["line"].get("dash") == "dash"
               for s in fig["layout"]["shapes"])
    assert "environment: driver" in [a["text"] for a in fig["layout"]["annotations"]]
    assert f"0.6.0 → {H_ENV_CHANGE}: driver" in str(table)
    # Every series of the slice: two backends on two GPUs, plus fa3 (0.6.0 only).
    names = {t["name"] for t in fig["data"] if t.get("showlegend") and "·" in t["name"]}
    assert names == {"fa2 · a100", "fa2 · h100", "torch-sdpa · a100", "torch-sdpa · h100",
                     "fa3 · h100"}


def test_history_from_a_point_lists_its_points_and_samples(pages, hist, session):
    history = pages["history"]
    page = history.layout(series=hist.step_series, gpu="h100")
    assert find(page, "history-kernel").value == H_KERNEL
    assert find(page, {"type": "history-fix", "dim": "kv_len"}).value == "4096"
    assert find(page, "history-gpu").value == ["h100"]
    assert find(page, "history-highlight").data == hist.step_series
    fig, *_ = graph_for(history, H_KERNEL, ["h100"], [], highlight=hist.step_series,
                        kv_len="4096")
    (bold,) = traces_named(fig, "fa2 · h100")
    assert bold["line"]["width"] > traces_named(fig, "torch-sdpa · h100")[0]["line"]["width"]
    # A click on a version lists that version's points and draws the newest one's samples.
    click = {"points": [{"customdata": [hist.step_series, "0.6.0"]}]}
    selected = history.select_point(click)
    assert selected == {"series": hist.step_series, "version": "0.6.0"}
    panel, hist_fig, csv_rows = history.show_selection(selected)
    pts = session.execute(select(Point).where(Point.series_key == hist.step_series,
                                              Point.flashinfer_version == "0.6.0")
                          .order_by(Point.id.desc())).scalars().all()
    assert len(pts) == 2  # the sweep's and the release job's
    for p in pts:
        assert f"/job/{p.job_id}?point={p.id}" in str(panel)
    want = session.execute(select(Sample.latency_us).where(Sample.point_id == pts[0].id)
                           .order_by(Sample.iteration)).scalars().all()
    assert [x for t in hist_fig["data"] for x in t["x"]] == pytest.approx(list(want))
    assert len(csv_rows) == len(want)
    search = history.sync_search({"kernel": H_KERNEL, "kv_len": "4096"}, selected)
    assert dict(parse_qsl(search.lstrip("?"))) == {
        "kernel": H_KERNEL, "kv_len": "4096", "series": hist.step_series, "version": "0.6.0"}
    # Without a version, the newest one's points; a release marker links to its page.
    panel, *_ = history.show_selection({"series": hist.step_series, "version": None})
    assert "FlashInfer 0.6.10" in str(panel)
    panel, *_ = history.show_selection(history.select_point(
        {"points": [{"customdata": ["release", H_RELEASE]}]}))
    assert f"/release/{H_RELEASE}" in str(panel)


def test_history_works_for_every_kernel_present(pages, hist):
    """Nothing in the page names a kernel's parameters: each kernel gets its own selectors."""
    history = pages["history"]
    with history.reading() as s:
        from kernelwatch.dashboard import queries

        kernels = queries.kernels_present(s)
    assert {"batch_decode", "batch_prefill", "single_decode", "single_prefill"} <= set(kernels)
    for kernel in kernels:
        fig, *_ = graph_for(history, kernel, [], [])
        assert [t for t in fig["data"] if t["mode"] == "lines+markers"], kernel


def test_history_of_another_family(pages, session):
    """A kernel that is not attention (the norm family's rmsnorm), with parameters of its
    own: the page takes them from the catalogue."""
    history = pages["history"]
    job = Job(name="norm", kernel="rmsnorm", spec={}, status="succeeded")
    session.add(job)
    session.flush()
    for version in ("0.5.0", "0.6.0", "0.7.0"):
        run = Run(job_id=job.id, target="h100", queue="q", flashinfer_version=version,
                  point_indices=[], status="succeeded", gpu_sku="h100")
        session.add(run)
        session.flush()
        for j, hidden in enumerate((4096, 8192)):
            med = 10.0 * (hidden / 4096) * (1.3 if version == "0.7.0" else 1.0)
            session.add(Point(run_id=run.id, job_id=job.id, point_index=j, kernel="rmsnorm",
                              backend="auto", params={"batch_size": 1, "hidden_size": hidden,
                                                      "num_heads": 0, "dtype": "bfloat16"},
                              series_key=f"rms-{hidden}", gpu_sku="h100",
                              flashinfer_version=version, status="ok", n_samples=3,
                              median_us=med, ci_low_us=med * 0.99, ci_high_us=med * 1.01))
    session.commit()
    st = history.resolve_state("rmsnorm", {"hidden_size": "8192"}, None)
    assert st["dims"] == ["hidden_size"] and st["fixed"] == {"hidden_size": "8192"}
    fig, *_ = graph_for(history, "rmsnorm", [], [], hidden_size="8192")
    (line,) = traces_named(fig, "auto · h100")
    assert line["x"] == ["0.5.0", "0.6.0", "0.7.0"] and line["y"] == pytest.approx(
        [20.0, 20.0, 26.0])


def test_release_page_lists_what_the_release_changed(pages, hist, session):
    release = pages["release"]
    page = release.layout(version=H_RELEASE)
    assert find(page, "release-version").data == H_RELEASE
    body, fig, rows = release.render(H_RELEASE)
    text = str(body)
    assert "regressed" in text  # a regression was confirmed
    by_list: dict[str, set[str]] = {}
    for r in rows:
        by_list.setdefault(r["list"], set()).add(r["series_key"])
    assert by_list == {"regression": {hist.confirmed, hist.not_reproduced},
                       "improvement": {hist.faster_series},
                       "baseline_only": {hist.baseline_only},
                       "contender_only": {hist.contender_only}}
    regs = {r["series_key"]: r for r in rows if r["list"] == "regression"}
    assert regs[hist.confirmed]["state"] == "confirmed"
    assert regs[hist.confirmed]["ratio"] == pytest.approx(1.25, abs=0.01)
    assert "1.240 [1.230, 1.250]" in text  # the confirmation's own ratio and CI
    assert regs[hist.not_reproduced]["state"] == "not_reproduced"
    assert "1.004 [0.996, 1.012]" in text
    only = {r["list"]: r for r in rows if r["list"].endswith("_only")}
    assert only["baseline_only"]["version"] == H_PREVIOUS
    assert only["contender_only"]["version"] == H_RELEASE
    # One click from each series to its history, and from each tag to its comparison.
    for key in (hist.confirmed, hist.faster_series, hist.baseline_only):
        assert f"/history?series={key}&amp;gpu=h100" in text or \
            f"/history?series={key}&gpu=h100" in text
    runs = session.execute(select(Run.id, Run.flashinfer_version).where(
        Run.job_id == hist.release_job)).all()
    b = next(r for r, v in runs if v == H_PREVIOUS)
    c = next(r for r, v in runs if v == H_RELEASE)
    assert f"/compare?baseline={b}&contender={c}" in text
    # Progress and timings per tag: the h100 compared, the a100 without a baseline.
    assert "no baseline (no runs of one of the versions)" in text
    assert "28 min" in text  # the release job's run time
    assert "2 regression(s)" not in text and "1 regression(s) confirmed" in text
    assert "notified 46 min after" in text
    assert [t["name"] for t in fig["data"]] == ["regression", "improvement"]


def test_release_page_shows_the_builds_its_node_waited_for(pages, hist, session):
    """The prebuild record of a real H100 run (the half-A release fixture): where the time
    before measuring went, the longest build first."""
    from kernelwatch.core.fixtures import read_file

    release = pages["release"]
    body, *_ = release.render(H_RELEASE)
    assert "The release's builds" not in str(body)  # no record, no section
    flow = read_file(RELEASE_FIXTURES["1xh100"])
    record = flow["release"]["details"]["prebuild"]
    row = session.scalar(select(Release).where(Release.version == H_RELEASE))
    row.details = {**(row.details or {}), "prebuild": record}
    session.commit()
    body, *_ = release.render(H_RELEASE)
    text = str(body)
    assert "The release's builds" in text
    assert ("h100: 8 run(s) built side by side in 161 s before the first was measured "
            "(JIT 301 s in all; the longest, batch_prefill on FlashInfer 0.7.4, 161 s)") in text
    rows = release.build_rows(row.details)
    assert len(rows) == 8 and [r["wall"] for r in rows][:2] == ["161 s", "144 s"]
    assert (rows[0]["kernel"], rows[0]["version"]) == ("batch_prefill", "0.7.4")
    # that record predates the refusals' count, MAX_JOBS and the builds' end times: shown as
    # unknown, not as zero
    assert rows[0]["unsupported"] == "-" and rows[0]["max_jobs"] == "-"
    assert rows[0]["ended"] == "-"
    # a record of runs measured as their builds ended says when the last build ended
    measured = {"h100": {**record["h100"], "measured_as_built": True, "builds": [
        {**b, "ended_after": b["wall_seconds"] + 30} for b in record["h100"]["builds"]]}}
    row.details = {**row.details, "prebuild": measured}
    session.commit()
    text = str(release.render(H_RELEASE)[0])
    assert ("h100: 8 run(s) built side by side, the last after 161 s, each run measured as "
            "its own build ended (JIT 301 s in all; the longest, batch_prefill on FlashInfer "
            "0.7.4, 161 s)") in text
    assert release.build_rows(row.details)[0]["ended"] == "191 s"


def test_release_page_of_the_decode_release_and_an_unknown_one(pages, hist):
    release = pages["release"]
    _, _, rows = release.render("0.7.2.post1")
    regs = [r for r in rows if r["list"] == "regression"]
    assert sorted(r["state"] for r in regs) == ["confirmed", "open", "open"]
    body, *_ = release.render("9.9.9")
    assert "not recorded" in str(body)
    page = release.layout(version="9.9.9")
    assert "is not recorded: the newest is shown" in str(page)
    assert find(page, "release-version").data == "0.7.2.post1"  # the newest by version


def test_overview_and_notification_link_the_release_page(pages, hist, session, monkeypatch):
    text = str(pages["overview"].render())
    assert f"/release/{H_RELEASE}" in text and "/release/0.7.2.post1" in text
    monkeypatch.setenv("KERNELWATCH_DASHBOARD_URL", "http://dash.example:8050/")
    from kernelwatch.core import settings

    settings.get_settings.cache_clear()
    rel = session.execute(select(Release).where(Release.version == H_RELEASE)).scalar_one()
    summary = notify.release_summary(session, rel)
    assert summary["release_url"] == f"http://dash.example:8050/release/{H_RELEASE}"
    assert f"<http://dash.example:8050/release/{H_RELEASE}|release page>" in \
        notify.release_text(summary)
    settings.get_settings.cache_clear()


def test_curve_points_and_job_rows_link_their_series_history(pages, hist, session):
    p = session.execute(select(Point).where(Point.series_key == hist.step_series)
                        .order_by(Point.id)).scalars().first()
    want = f"/history?series={hist.step_series}&gpu=h100"
    assert pages["curves"].history_link({"points": [{"customdata": p.id}]}).href == want
    assert pages["job"].history_link(p.id).href == want
    assert pages["job"].history_link(None) == ""
