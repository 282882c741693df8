"""The dashboard in a real headless browser: Debian's chromium driven by Playwright, the app
served by ``dashboard.app.main`` in a subprocess against a Postgres database seeded through
the real storage path. Screenshots of every page go to ci-output/screenshots/."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from sqlalchemy import text

from kernelwatch.core.db import make_engine
from kernelwatch.core.fixtures import import_job, read_file
from kernelwatch.core.models import Base, Run
from tests.dashboard_seed import (
    H_RELEASE,
    V_NEW,
    V_OLD,
    HistorySeeded,
    Seeded,
    seed,
    seed_history,
)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "ci-output" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PAGES = {
    "overview": "/",
    "curves": "/curves",
    "compare": None,  # needs the seeded run ids
    "roofline": "/roofline",
    "speedup": "/speedup",
    "job": "/job",
    "history": "/history",
    "release": "/release",
}

if not os.path.exists(CHROMIUM):
    pytest.skip("Debian's chromium is missing: run scripts/ensure-browser.sh",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def seeded_db(pg_url: str) -> Iterator[tuple[str, Seeded]]:
    engine = make_engine(pg_url)
    names = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        out = seed(session)
        # Real H200 measurements beside the planted data (when the GPU work's fixture is
        # there): the screenshots then show what users will see.
        for name in ("decode", "prefill", "single"):
            path = ROOT / "tests" / "fixtures" / "gpu" / f"gpu-evidence-{name}.json.gz"
            if path.exists():
                import_job(session, read_file(path))
        session.commit()
    engine.dispose()
    yield pg_url, out


@pytest.fixture(scope="module")
def server(seeded_db: tuple[str, Seeded]) -> Iterator[str]:
    url, _ = seeded_db
    port = free_port()
    env = {**os.environ, "KERNELWATCH_DATABASE_URL": url,
           "KERNELWATCH_DASHBOARD_PORT": str(port), "KERNELWATCH_DASHBOARD_HOST": "127.0.0.1"}
    proc = subprocess.Popen([sys.executable, "-m", "kernelwatch.dashboard.app"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(base + "/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise RuntimeError("the dashboard did not start")
        yield base
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        tracebacks = [line for line in (out or b"").decode(errors="replace").splitlines()
                      if "Traceback" in line]
        assert not tracebacks, "the dashboard logged server errors"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Console:
    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.console = Console(pg)
    yield pg
    ctx.close()


def graph(page: Any, graph_id: str) -> dict[str, Any]:
    """Wait for a chart to be drawn with data, and read its traces and layout from the page."""
    sel = f"#{graph_id} .js-plotly-plot"
    page.wait_for_function(
        "(sel) => { const g = document.querySelector(sel); return g && g.data && "
        "(g.data.length > 0 || (g.layout.annotations || []).length > 0); }", arg=sel,
        timeout=20_000)
    return dict(page.evaluate(
        "(sel) => { const g = document.querySelector(sel); return {data: g.data.map(t => "
        "({name: t.name, type: t.type, n: (t.x || []).length, text: t.text || null})), "
        "layout: {yaxis: ((g.layout.yaxis || {}).title || {}).text,"
        " shapes: (g.layout.shapes || []).length,"
        " annotations: (g.layout.annotations || []).map(a => a.text)}}; }", sel))


def settle(page: Any) -> None:
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(400)


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


CURVE_URL = (f"/curves?kernel=batch_decode&x=kv_len&y=latency&series=backend&batch_size=64"
             f"&flashinfer_version={V_OLD}&gpu_sku=h100")
# Views of the real H200 fixture, screenshotted for people to look at.
H200_VIEWS = {
    "h200-curves-bandwidth": "/curves?kernel=batch_decode&x=kv_len&y=tbps&series=backend"
                             "&gpu_sku=h200&flashinfer_version=0.6.18.post1&batch_size=64",
    "h200-curves-versions": "/curves?kernel=batch_decode&x=batch_size&y=latency"
                            "&series=flashinfer_version&gpu_sku=h200&backend=fa2&kv_len=8192",
    "h200-compare-releases": "/compare?gpu=h200&from=0.5.3&to=0.6.18.post1",
    "h200-compare-releases-07": "/compare?gpu=h200&from=0.6.18.post1&to=0.7.2.post1",
    "h200-roofline": "/roofline?kernel=batch_prefill&gpu=h200&color=backend",
    "h200-speedup": "/speedup?gpu=h200&version=0.6.18.post1",
}
H200_GRAPHS = {"curves": "curves-graph", "compare": "compare-heatmap",
               "roofline": "roofline-graph", "speedup": "speedup-graph"}


def test_every_page_loads_without_console_errors(server, seeded_db, page):
    _, seeded = seeded_db
    paths = {**PAGES, "compare": f"/compare?baseline={seeded.runs[V_OLD]}"
                                 f"&contender={seeded.runs[V_NEW]}"}
    for name, path in paths.items():
        page.goto(server + path)
        settle(page)
        first_graph = {"curves": "curves-graph", "compare": "compare-heatmap",
                       "roofline": "roofline-graph", "speedup": "speedup-graph",
                       "job": "job-hist", "history": "history-graph",
                       "release": "release-ratios"}.get(name)
        if first_graph:
            fig = graph(page, first_graph)
            assert fig["data"], f"{name}: empty chart ({fig['layout']['annotations']})"
        assert page.locator("h2").first.inner_text() != ""
        shot(page, name)
    assert page.console.errors == []


def test_h200_views_render(server, page):
    if not (ROOT / "tests" / "fixtures" / "gpu" / "gpu-evidence-decode.json.gz").exists():
        pytest.skip("the GPU fixture is not there")
    for name, path in H200_VIEWS.items():
        page.goto(server + path)
        settle(page)
        fig = graph(page, H200_GRAPHS[name.split("-")[1]])
        assert fig["data"], f"{name}: empty chart ({fig['layout']['annotations']})"
        shot(page, name)
    assert page.console.errors == []


def test_curve_renders_expected_traces_and_points(server, page):
    page.goto(server + CURVE_URL)
    fig = graph(page, "curves-graph")
    # fa2: 3 measured (kv 32768 unsupported), torch-sdpa: 4, and the unsupported marker.
    assert [(t["name"], t["n"]) for t in fig["data"]] == [
        ("fa2", 3), ("torch-sdpa", 4), ("unsupported / error", 1)]
    assert fig["layout"]["yaxis"] == "median latency (µs)"
    shot(page, "curves-unsupported-marked")
    assert page.console.errors == []


def test_chart_exports_png_and_csv(server, page, tmp_path):
    page.goto(server + CURVE_URL)
    fig = graph(page, "curves-graph")
    page.hover("#curves-graph .js-plotly-plot")
    titles = page.evaluate("() => Array.from(document.querySelectorAll("
                           "'#curves-graph .modebar-btn')).map(e => e.getAttribute('data-title'))")
    assert "Download plot as a PNG" in titles and "Share chart..." not in titles
    with page.expect_download() as png:
        page.click("#curves-graph .modebar-btn[data-title='Download plot as a PNG']")
    png_path = tmp_path / png.value.suggested_filename
    png.value.save_as(png_path)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with page.expect_download() as csv_dl:
        page.click("#curves-graph-csv")
    lines = Path(csv_dl.value.path()).read_text().strip().splitlines()
    assert lines[0].startswith("series,x,metric,value,ci_low,ci_high,status")
    # One CSV row per point drawn, the unsupported one included (with its status).
    assert len(lines) - 1 == sum(t["n"] for t in fig["data"])
    assert page.console.errors == []


def test_selector_change_updates_chart_and_url(server, page):
    page.goto(server + CURVE_URL)
    graph(page, "curves-graph")
    page.click("#curves-y")
    page.get_by_role("option", name="achieved bandwidth (TB/s)").click()
    page.wait_for_function(
        "() => document.querySelector('#curves-graph .js-plotly-plot').layout.yaxis.title.text"
        " === 'achieved bandwidth (TB/s)'", timeout=20_000)
    page.wait_for_function("() => window.location.search.includes('y=tbps')", timeout=10_000)
    # A fixed dimension: batch 64 -> 1 brings fa2's fourth point back (supported at batch 1).
    page.click("[id*='batch_size']")
    page.get_by_role("option", name="1", exact=True).click()
    page.wait_for_function(
        "() => document.querySelector('#curves-graph .js-plotly-plot').data[0].x.length === 4",
        timeout=20_000)
    # The address bar follows (written by a clientside callback right after the chart).
    page.wait_for_function("() => /[?&]batch_size=1(&|$)/.test(window.location.search)",
                           timeout=10_000)
    q = parse_qs(urlparse(page.url).query)
    assert q["y"] == ["tbps"] and q["batch_size"] == ["1"]
    shot(page, "curves-after-change")
    assert page.console.errors == []


def test_shared_url_restores_view(server, browser, page):
    page.goto(server + CURVE_URL)
    graph(page, "curves-graph")
    page.click("#curves-series")
    page.get_by_role("option", name="flashinfer_version", exact=True).click()
    page.wait_for_function("() => window.location.search.includes('series=flashinfer_version')",
                           timeout=20_000)
    settle(page)
    shared = page.url
    before = graph(page, "curves-graph")
    other = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    Console(other)
    other.goto(shared)
    after = graph(other, "curves-graph")
    assert [(t["name"], t["n"]) for t in after["data"]] == \
        [(t["name"], t["n"]) for t in before["data"]]
    assert other.locator("#curves-series").inner_text() == "flashinfer_version"
    assert parse_qs(urlparse(other.url).query) == parse_qs(urlparse(shared).query)
    other.context.close()


def test_compare_highlights_planted_regression(server, seeded_db, page):
    _, seeded = seeded_db
    # Exactly the link the release notification carries.
    page.goto(f"{server}/compare?baseline={seeded.runs[V_OLD]}&contender={seeded.runs[V_NEW]}")
    fig = graph(page, "compare-heatmap")
    assert fig["layout"]["shapes"] == len(seeded.regressed)
    heat_text = [c for row in fig["data"][0]["text"] for c in row]
    assert sum(c.startswith("▲") for c in heat_text) == len(seeded.regressed)
    rows = page.locator("#compare-regressions tbody tr")
    assert rows.count() == len(seeded.regressed)
    assert "confirmed" in rows.first.inner_text()
    assert "regressions" in page.locator("#compare-summary").inner_text()
    shot(page, "compare-regression")
    assert page.console.errors == []


def test_job_page_histogram_of_selected_point(server, seeded_db, page):
    _, seeded = seeded_db
    page.goto(f"{server}/job?job={seeded.decode_job}")
    graph(page, "job-hist")
    cell = page.locator("#job-table td[data-dash-column='median_us']").nth(3)
    cell.click()
    page.wait_for_function("() => window.location.search.includes('point=')", timeout=20_000)
    point = parse_qs(urlparse(page.url).query)["point"][0]
    page.wait_for_function(
        "(p) => (document.querySelector('#job-hist .js-plotly-plot').layout.title.text || '')"
        ".startsWith('point ' + p + ':')", arg=point, timeout=20_000)
    # Filtering happens in the database: two unsupported points of 32.
    box = page.locator("#job-table th.dash-filter[data-dash-column='status'] input[type=text]")
    box.fill("unsupported")
    box.press("Enter")
    page.wait_for_function(
        "() => document.querySelectorAll('#job-table td[data-dash-column=\"status\"]')"
        ".length === 2", timeout=20_000)
    statuses = page.locator("#job-table td[data-dash-column='status']").all_inner_texts()
    assert statuses == ["unsupported", "unsupported"]
    page.wait_for_function("() => window.location.search.includes('filter=')", timeout=10_000)
    shot(page, "job-filtered")
    assert page.console.errors == []


def test_job_page_by_path_shows_four_significant_digits(server, seeded_db, page):
    """/job/<id> is the job page, as /job?job=<id> is; its statistics show 4 significant
    digits (the stored value keeps full precision)."""
    _, seeded = seeded_db
    page.goto(f"{server}/job/{seeded.decode_job}")
    page.wait_for_function("() => document.querySelectorAll("
                           "'#job-table td[data-dash-column=\"median_us\"]').length > 0",
                           timeout=20_000)
    assert page.locator("#job-id").input_value() == str(seeded.decode_job)
    cells = page.locator("#job-table td[data-dash-column='median_us']").all_inner_texts()
    digits = [len(c.strip().replace(".", "").lstrip("0")) for c in cells if c.strip()]
    assert digits and max(digits) <= 4, cells
    assert page.console.errors == []


def test_job_page_follows_a_running_job(server, seeded_db, page):
    """dcc.Interval polls while the job runs: points stored meanwhile appear without a reload,
    and polling stops once the job is finished."""
    from sqlalchemy.orm import Session

    from kernelwatch.core.models import Job
    from kernelwatch_harness.catalogue import complete_params
    from tests.dashboard_seed import _run, _store

    url, _ = seeded_db
    engine = make_engine(url)
    grid = [complete_params("batch_decode", {"kv_len": kv}, "fa2")
            for kv in (512, 1024, 2048, 4096)]
    with Session(engine) as s:
        job = Job(name="live", kernel="batch_decode", spec={}, status="running",
                  total_points=len(grid))
        s.add(job)
        s.flush()
        run = _run(s, job, V_NEW)
        _store(s, run, "batch_decode", 0, grid[0], "fa2")
        s.commit()
        job_id, run_id = job.id, run.id
    page.goto(f"{server}/job?job={job_id}")
    page.wait_for_function("() => document.body.innerText.includes('running: 1 of 4 points')",
                           timeout=20_000)
    with Session(engine) as s:
        run = s.get(Run, run_id)
        for i in (1, 2):
            _store(s, run, "batch_decode", i, grid[i], "fa2")
        s.commit()
    page.wait_for_function("() => document.body.innerText.includes('running: 3 of 4 points')",
                           timeout=20_000)
    assert page.locator("#job-table td[data-dash-column='status']").count() == 3
    with Session(engine) as s:
        _store(s, s.get(Run, run_id), "batch_decode", 3, grid[3], "fa2")
        s.get(Job, job_id).status = "succeeded"
        s.commit()
    page.wait_for_function("() => document.body.innerText.includes('succeeded: 4 of 4 points')",
                           timeout=20_000)
    assert "updating live" not in page.locator("#job-progress").inner_text()
    engine.dispose()
    assert page.console.errors == []


# --- several jobs, six versions: the history and release pages, the compare page's release pair


@pytest.fixture(scope="module")
def hist_db(seeded_db: tuple[str, Seeded]) -> HistorySeeded:
    """batch_prefill on an h100 and an a100 across six versions, from two sweeps and a
    release job (tests/dashboard_seed.py, ``seed_history``), beside the planted decode set."""
    from sqlalchemy.orm import Session

    engine = make_engine(seeded_db[0])
    with Session(engine) as session:
        out = seed_history(session)
    engine.dispose()
    return out


def figure_data(page: Any, graph_id: str, expr: str) -> Any:
    """Evaluate ``expr`` over the chart's plotly div ``g``."""
    return page.evaluate(f"() => {{ const g = document.querySelector('#{graph_id} "
                         f".js-plotly-plot'); return {expr}; }}")


def click_series_point(page: Any, graph_id: str, series: str, version: str) -> None:
    """A real mouse click on a series' marker at a version (plotly places it on the axes)."""
    page.locator(f"#{graph_id}").scroll_into_view_if_needed()
    xy = page.evaluate(
        "([sel, name, v]) => { const g = document.querySelector(sel);"
        " const xa = g._fullLayout.xaxis, ya = g._fullLayout.yaxis;"
        " const t = g.data.find(t => t.name === name && t.mode === 'lines+markers'"
        "   && t.x.includes(v));"
        " const r = g.getBoundingClientRect();"
        " return {x: r.left + xa._offset + xa.d2p(v),"
        "         y: r.top + ya._offset + ya.d2p(t.y[t.x.indexOf(v)])}; }",
        [f"#{graph_id} .js-plotly-plot", series, version])
    page.mouse.move(xy["x"], xy["y"])
    page.wait_for_timeout(200)
    page.mouse.click(xy["x"], xy["y"])


def test_history_page_from_a_point_selects_clicks_and_links(server, hist_db, page):
    page.goto(f"{server}/history?series={hist_db.step_series}&gpu=h100")
    fig = graph(page, "history-graph")
    names = [t["name"] for t in fig["data"]]
    assert "fa2 · h100" in names and "change point" in names
    assert figure_data(page, "history-graph",
                       "g.data.find(t => t.name === 'change point').x") == ["0.6.0"]
    # Arriving from a point lists its newest version's points with their raw samples.
    page.wait_for_function("() => document.querySelectorAll('#history-points tbody tr')"
                           ".length === 1", timeout=20_000)
    assert "FlashInfer 0.6.10" in page.locator("#history-points").inner_text()
    assert graph(page, "history-hist")["data"]
    shot(page, "history-from-point")
    # Another slice: kv_len 1024, where fa2 got faster at 0.6.0.
    page.click("[id*='kv_len']")
    page.get_by_role("option", name="1024", exact=True).click()
    page.wait_for_function(
        "() => { const g = document.querySelector('#history-graph .js-plotly-plot');"
        " const c = g.data.find(t => t.name === 'change point');"
        " return c && c.marker.symbol[0] === 'triangle-down'; }", timeout=20_000)
    page.wait_for_function("() => /[?&]kv_len=1024(&|$)/.test(window.location.search)",
                           timeout=10_000)
    settle(page)
    # A click on 0.6.0 lists its two points (the sweep's and the release job's).
    click_series_point(page, "history-graph", "fa2 · h100", "0.6.0")
    page.wait_for_function("() => document.querySelectorAll('#history-points tbody tr')"
                           ".length === 2", timeout=20_000)
    page.wait_for_function("() => window.location.search.includes('version=0.6.0')",
                           timeout=10_000)
    point_link = page.locator("#history-points tbody tr a").first
    href = point_link.get_attribute("href")
    assert href.startswith("/job/") and "?point=" in href
    shot(page, "history-clicked")
    # The release marker's link goes to the release page.
    page.locator("#history-summary a", has_text=H_RELEASE).click()
    page.wait_for_function(f"() => window.location.pathname === '/release/{H_RELEASE}'",
                           timeout=20_000)
    page.wait_for_selector("#release-verdict", timeout=20_000)
    assert page.locator("#release-verdict").inner_text() == "regressed"
    assert page.console.errors == []


def test_history_page_environment_break(server, hist_db, page):
    page.goto(f"{server}/history?kernel=batch_prefill&gpu=a100&backend=fa2&kv_len=4096")
    graph(page, "history-graph")
    segments = figure_data(page, "history-graph",
                           "g.data.filter(t => t.mode === 'lines+markers').map(t => t.x)")
    assert segments == [["0.4.0", "0.5.0", "0.5.3", "0.6.0"], ["0.6.5", "0.6.10"]]
    assert "environment: driver" in page.locator("#history-graph").inner_text()
    shot(page, "history-environment-break")
    assert page.console.errors == []


def test_release_page_lists_and_links(server, hist_db, page):
    page.goto(f"{server}/")
    page.locator("table.simple a", has_text=H_RELEASE).first.click()
    page.wait_for_function(f"() => window.location.pathname === '/release/{H_RELEASE}'",
                           timeout=20_000)
    page.wait_for_selector("#release-verdict", timeout=20_000)
    assert page.locator("#release-verdict").inner_text() == "regressed"
    counts = {name: page.locator(f"#release-{name} tbody tr").count()
              for name in ("regression", "improvement", "baseline-only", "contender-only")}
    assert counts == {"regression": 2, "improvement": 1, "baseline-only": 1,
                      "contender-only": 1}
    confirmed = page.locator("#release-regression tbody tr", has_text="confirmed").first
    assert "1.240 [1.230, 1.250]" in confirmed.inner_text()
    fig = graph(page, "release-ratios")
    assert [t["name"] for t in fig["data"]] == ["regression", "improvement"]
    shot(page, "release")
    # Each series' history is one click away...
    confirmed.locator("a", has_text="history").click()
    page.wait_for_function("() => window.location.pathname === '/history'", timeout=20_000)
    assert hist_db.confirmed in page.url
    assert figure_data(page, "history-graph",
                       "(g && g.data || []).some(t => t.name === 'change point')") or \
        "change point" in [t["name"] for t in graph(page, "history-graph")["data"]]
    # ... and so is the comparison.
    page.go_back()
    page.wait_for_selector("#release-verdict", timeout=20_000)
    page.locator("#release-body table.simple a", has_text="compare").first.click()
    page.wait_for_function("() => window.location.pathname === '/compare'", timeout=20_000)
    graph(page, "compare-heatmap")
    page.wait_for_function("() => document.querySelectorAll('#compare-regressions tbody tr')"
                           ".length === 2", timeout=20_000)
    assert "confirmed" in page.locator("#compare-regressions").inner_text()
    assert page.console.errors == []


def pick(page: Any, dropdown_id: str, option: str) -> None:
    page.click(f"#{dropdown_id}")
    page.get_by_role("option", name=option, exact=True).click()


def test_compare_two_releases_on_one_gpu_pools_several_jobs(server, hist_db, page):
    """Three versions measured by three jobs (two sweeps and the release job): the release
    pair pools every run of each version on the GPU."""
    page.goto(f"{server}/compare")
    settle(page)
    pick(page, "compare-gpu", "h100")
    pick(page, "compare-from", "0.5.3")
    pick(page, "compare-to", "0.6.0")
    page.wait_for_function("() => document.querySelector('#compare-summary').innerText"
                           ".includes('series from 3 jobs')", timeout=30_000)
    fig = graph(page, "compare-heatmap")
    assert fig["data"]
    summary = page.locator("#compare-summary").inner_text()
    assert "2 regressions" in summary and "1 improvements" in summary
    assert "1 baseline only" in summary and "1 contender only" in summary
    assert page.locator("#compare-regressions tbody tr").count() == 2
    shot(page, "compare-release-pair")
    # The third version: fa2's step is still there; the release job's series are one-sided.
    pick(page, "compare-to", "0.6.5")
    page.wait_for_function("() => document.querySelector('#compare-summary').innerText"
                           ".includes('1 regressions')", timeout=30_000)
    summary = page.locator("#compare-summary").inner_text()
    assert "series from 3 jobs" in summary and "0 contender only" in summary
    assert page.locator("#compare-regressions tbody tr").count() == 1
    q = parse_qs(urlparse(page.url).query)
    assert len(q["baseline"][0].split(",")) == 2 and len(q["contender"][0].split(",")) == 1
    assert page.console.errors == []
