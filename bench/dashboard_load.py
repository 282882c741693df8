"""Is the dashboard responsive over 100,000 points, or a million? Seeds a scratch Postgres
database with synthetic points written through the real tables (bulk INSERT of points, COPY
of their raw samples), serves the dashboard from it in a subprocess, and times in Debian's chromium
(Playwright):

  page load     goto -> the page's chart drawn with data (includes the pages router and every
                initial callback), median of --repeat loads per page
  callbacks     every POST /_dash-update-component the browser made, from its resource timings
  interaction   changing the curves page's y metric -> redrawn chart; the history page's
                slice (kv_len) -> redrawn chart

It also times the curves, history and release pages' database queries directly. Beyond
110,880 points the grid repeats over page sizes and KV layouts (see ``EXTRA``); the release
page reads a release recorded over the stored comparison.

Run:  .venv/bin/python bench/dashboard_load.py [--points 100000] [--samples 30] [--repeat 3]
      .venv/bin/python bench/dashboard_load.py --points 1000000 --samples 10 --repeat 2
      (Postgres on 127.0.0.1:5432; KERNELWATCH_BENCH_PG overrides the admin URL)
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from kernelwatch.core.db import make_engine
from kernelwatch.core.migrate import upgrade
from kernelwatch.core.models import Job, Node, Point, Run
from kernelwatch.core.results import derived_metrics
from kernelwatch.core.series import series_key
from kernelwatch_harness.catalogue import complete_params

ROOT = Path(__file__).resolve().parent.parent

ADMIN = os.environ.get("KERNELWATCH_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VERSIONS = ("0.5.3", "0.6.0", "0.6.5", "0.6.10", "0.6.18.post1", "0.7.0", "0.7.2.post1")
GPUS = ("h100", "h200", "a100", "l40s")
BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
KV = (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
HEADS = ((32, 8, 128), (64, 8, 128), (16, 2, 64))


# Beyond 110,880 points the grid repeats over these (page size, KV layout) pairs, each copy a
# full sweep of every GPU and version: 12 copies hold 1,330,560 points.
EXTRA: list[dict[str, Any]] = [{"page_size": ps, "kv_layout": lay} for lay in ("NHD", "HND")
         for ps in (16, 1, 8, 32, 64, 128)]


def grid(n_points: int = 110_880) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(gpu, version, backend, params) of batch_decode: 110,880 cells (3,960 per run) per
    (page size, KV layout) pair, as many pairs as ``n_points`` needs."""
    out: list[tuple[str, str, str, dict[str, Any]]] = []
    for extra in EXTRA:
        if len(out) >= n_points:
            break
        for gpu, version in itertools.product(GPUS, VERSIONS):
            for backend, b, kv, (hq, hk, d), tc, dtype in itertools.product(
                    ("fa2", "fa3", "torch-sdpa"), BATCH, KV, HEADS, (False, True),
                    ("bfloat16", "float16")):
                params = complete_params("batch_decode", {
                    "batch_size": b, "kv_len": kv, "num_qo_heads": hq, "num_kv_heads": hk,
                    "head_dim": d, "use_tensor_cores": tc, "dtype": dtype, **extra}, backend)
                out.append((gpu, version, backend, params))
    return out


def seed(url: str, n_points: int, n_samples: int) -> dict[str, Any]:
    engine = make_engine(url)
    rng = random.Random(0)
    t0 = time.perf_counter()
    cells = grid(n_points)[:n_points]
    runs: dict[tuple[str, str], int] = {}
    with Session(engine) as s:
        job = Job(name="bench sweep", kernel="batch_decode", spec={"kernel": "batch_decode"},
                  status="succeeded", total_points=len(cells))
        s.add(job)
        s.flush()
        job_id = job.id
        for gpu, version in itertools.product(GPUS, VERSIONS):
            run = Run(job_id=job.id, target=gpu, queue=f"kw.{gpu}", flashinfer_version=version,
                      point_indices=[], status="succeeded", gpu_sku=gpu, gpu_name=gpu.upper(),
                      timing_method="cuda_graph", environment={"gpu_name": gpu.upper()})
            s.add(run)
            s.flush()
            runs[(gpu, version)] = run.id
        s.add(Node(name="bench:gpu0", hostname="bench", gpu_sku="h100", tags=["h100"],
                   copy_bandwidth_tbps=2.9))
        rows = []
        for i, (gpu, version, backend, params) in enumerate(cells):
            bw = {"fa2": 2.2e12, "fa3": 2.6e12, "torch-sdpa": 1.5e12}[backend]
            work_us = derived_metrics("batch_decode", params, 1.0, gpu)["bytes"] / bw * 1e6
            median = (work_us or 0) + 5.0 * (1 + rng.random() * 0.05)
            status = "unsupported" if (backend == "fa3" and gpu in ("a100", "l40s")) else "ok"
            metrics = derived_metrics("batch_decode", params,
                                      median if status == "ok" else None, gpu)
            rows.append({
                "run_id": runs[(gpu, version)], "job_id": job.id, "point_index": i,
                "kernel": "batch_decode", "backend": backend, "resolved_backend": backend,
                "params": params, "series_key": series_key("batch_decode", params, backend, gpu),
                "gpu_sku": gpu, "flashinfer_version": version, "status": status,
                "timing_method": "cuda_graph",
                "n_samples": n_samples if status == "ok" else 0,
                "median_us": median if status == "ok" else None,
                "mean_us": median if status == "ok" else None,
                "p10_us": median * 0.99 if status == "ok" else None,
                "p90_us": median * 1.01 if status == "ok" else None,
                "cv": 0.01 if status == "ok" else None,
                "ci_low_us": median * 0.995 if status == "ok" else None,
                "ci_high_us": median * 1.005 if status == "ok" else None,
                "throttled": False, **metrics,
            })
            if len(rows) == 5000:
                s.execute(insert(Point), rows)
                rows = []
        if rows:
            s.execute(insert(Point), rows)
        s.commit()
    t_points = time.perf_counter() - t0
    # Raw samples by COPY: n_samples per ok point, as a real sweep stores.
    t1 = time.perf_counter()
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        ids = conn.execute("SELECT id, median_us FROM points WHERE status = 'ok'").fetchall()
        with conn.cursor().copy(
                "COPY samples (point_id, iteration, latency_us) FROM STDIN") as copy:
            buf = io.StringIO()
            for pid, med in ids:
                for it in range(n_samples):
                    buf.write(f"{pid}\t{it}\t{med * (1 + rng.gauss(0, 0.01)):.4f}\n")
                if buf.tell() > 4_000_000:
                    copy.write(buf.getvalue())
                    buf = io.StringIO()
            copy.write(buf.getvalue())
        first = conn.execute(
            "SELECT series_key FROM points WHERE gpu_sku = 'h100' AND status = 'ok' "
            "ORDER BY id LIMIT 1").fetchone()
        info_series = first[0] if first else ""
        conn.execute("ANALYZE")
        conn.commit()
        n_samples_total = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
        per_run = conn.execute("SELECT count(*) FROM points GROUP BY run_id").fetchall()
    engine.dispose()
    return {"points": len(cells), "samples": n_samples_total, "runs": runs, "job": job_id,
            "points_per_run": [int(n) for (n,) in per_run], "series": info_series,
            "seed_points_s": t_points, "seed_samples_s": time.perf_counter() - t1}


BENCH_RELEASE, BENCH_PREVIOUS = "0.7.2.post1", "0.6.18.post1"


def store_comparison(url: str, baseline: int, contender: int, job_id: int) -> None:
    """The release flow's record of a release on the h200: its comparison, stored, with the
    release and its tag (the release page reads them)."""
    from kernelwatch.core.compare import compare_runs, persist_comparison
    from kernelwatch.core.models import Release, ReleaseTag, TagState

    engine = make_engine(url)
    with Session(engine) as s:
        release = Release(version=BENCH_RELEASE, previous_version=BENCH_PREVIOUS,
                          source="webhook", status="complete", details={})
        s.add(release)
        s.flush()
        result = compare_runs(s, [baseline], [contender])
        comp = persist_comparison(s, result, (BENCH_PREVIOUS, BENCH_RELEASE),
                                  release_id=release.id)
        s.add(ReleaseTag(release_id=release.id, tag="h200", job_ids=[job_id],
                         state=TagState.done, comparison_id=comp.id, counts=result.counts,
                         regressions=len(result.regressions), baseline_run_ids=[baseline],
                         contender_run_ids=[contender]))
        s.commit()
    engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def time_queries(url: str) -> dict[str, float]:
    from kernelwatch.core.history import series_history
    from kernelwatch.dashboard import queries

    engine = make_engine(url)
    out = {}
    with Session(engine) as s:
        for _ in range(2):  # the second is the warm figure
            t = time.perf_counter()
            combos = queries.combos(s, "batch_decode")
            out["combos (distinct GPU/version/backend, parameter docs)"] = \
                time.perf_counter() - t
            t = time.perf_counter()
            fixed = combos.settle(s, ["kv_len", "backend"],
                                  {"gpu_sku": "h100", "batch_size": "64"})
            out["settle (defaults that have data)"] = time.perf_counter() - t
            t = time.perf_counter()
            rows = queries.curve_points(s, "batch_decode", "kv_len", "backend", fixed)
            out[f"curve_points ({len(rows)} rows)"] = time.perf_counter() - t
            pid = s.execute(select(Point.id).where(Point.status == "ok").limit(1)).scalar_one()
            t = time.perf_counter()
            queries.point_samples(s, pid)
            out["point_samples (one point)"] = time.perf_counter() - t
            t = time.perf_counter()
            hfixed = combos.settle(s, queries.COLUMN_DIMS, {"batch_size": "64"})
            refs = queries.slice_series(s, "batch_decode", hfixed, [], [])
            out[f"slice_series (history: {len(refs)} series)"] = time.perf_counter() - t
            t = time.perf_counter()
            for r in refs:
                series_history(s, r.series_key)
            out[f"series_history x {len(refs)} (change points, drift)"] = \
                time.perf_counter() - t
            t = time.perf_counter()
            queries.release_detail(s, BENCH_RELEASE)
            out["release_detail (release page)"] = time.perf_counter() - t
    engine.dispose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = ap.parse_args()

    name = f"kw_dashbench_{os.getpid()}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name
    proc = None
    try:
        upgrade(url)
        info = seed(url, args.points, args.samples)
        print(f"seeded {info['points']:,} points in {info['seed_points_s']:.1f} s and "
              f"{info['samples']:,} raw samples in {info['seed_samples_s']:.1f} s")
        # The release flow stores its comparison; the notification's link shows that one.
        stored_pair = (info["runs"][("h200", "0.6.18.post1")],
                       info["runs"][("h200", "0.7.2.post1")])
        t = time.perf_counter()
        store_comparison(url, *stored_pair, info["job"])
        per_run = len(info["points_per_run"]) and max(info["points_per_run"])
        print(f"stored a release's comparison of 2 runs of {per_run:,} points (compare_runs + "
              f"persist) in {time.perf_counter() - t:.1f} s")
        print("\ndatabase queries (s):")
        for k, v in time_queries(url).items():
            print(f"  {k:55s} {v:7.3f}")

        port = free_port()
        env = {**os.environ, "KERNELWATCH_DATABASE_URL": url,
               "KERNELWATCH_DASHBOARD_PORT": str(port)}
        proc = subprocess.Popen([sys.executable, "-m", "kernelwatch.dashboard.app"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        run_pair = (info["runs"][("h100", "0.6.18.post1")], info["runs"][("h100", "0.7.2.post1")])
        pages = {
            "overview": ("/", None),
            "curves": ("/curves?kernel=batch_decode&gpu_sku=h100&batch_size=64",
                       "curves-graph"),
            f"compare, computed (2 x {per_run:,} points)": (
                f"/compare?baseline={run_pair[0]}&contender={run_pair[1]}", "compare-heatmap"),
            f"compare, stored (2 x {per_run:,} points)": (
                f"/compare?baseline={stored_pair[0]}&contender={stored_pair[1]}",
                "compare-heatmap"),
            "roofline": ("/roofline?kernel=batch_decode&gpu=h100&version=0.7.2.post1",
                         "roofline-graph"),
            "speedup": ("/speedup?gpu=h100&version=0.7.2.post1", "speedup-graph"),
            f"job ({info['points']:,} points, pages of 25)": (f"/job?job={info['job']}",
                                                               "job-hist"),
            "history (a slice: every GPU x backend)": (
                "/history?kernel=batch_decode&batch_size=64&kv_len=8192", "history-graph"),
            "history from a point (?series=&gpu=)": (
                f"/history?series={info['series']}&gpu=h100", "history-hist"),
            f"release {BENCH_RELEASE} (stored comparison)": (f"/release/{BENCH_RELEASE}",
                                                            "release-ratios"),
        }
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            deadline = time.time() + 60
            while time.time() < deadline:
                try:
                    page.goto(base + "/", timeout=5000)
                    break
                except Exception:
                    time.sleep(0.5)
            print(f"\npage load, goto -> chart drawn (s): the first load, the median of "
                  f"{args.repeat}, and the slowest callback request of the first load:")
            for label, (path, graph_id) in pages.items():
                loads, slowest = [], []
                for _ in range(args.repeat):
                    page.goto("about:blank")
                    t = time.perf_counter()
                    page.goto(base + path)
                    if graph_id:
                        page.wait_for_function(
                            "(sel) => { const g = document.querySelector(sel); "
                            "return g && g.data && g.data.length > 0; }",
                            arg=f"#{graph_id} .js-plotly-plot", timeout=120_000)
                    else:
                        page.wait_for_selector("table.simple", timeout=60_000)
                    loads.append(time.perf_counter() - t)
                    durs = page.evaluate(
                        "() => performance.getEntriesByType('resource')"
                        ".filter(e => e.name.includes('_dash-update-component'))"
                        ".map(e => e.duration)")
                    slowest.append(max(durs) / 1000 if durs else 0.0)
                print(f"  {label:38s} first {loads[0]:6.2f}  median {statistics.median(loads):6.2f}"
                      f"  slowest callback {slowest[0]:6.2f}")

            page.goto(base + pages["curves"][0])
            page.wait_for_function("() => { const g = document.querySelector("
                                   "'#curves-graph .js-plotly-plot'); return g && g.data && "
                                   "g.data.length > 0; }", timeout=60_000)
            times = []
            for metric, title in [("achieved bandwidth (TB/s)", "achieved bandwidth (TB/s)"),
                                  ("median latency (µs)", "median latency (µs)")] * 2:
                page.click("#curves-y")
                t = time.perf_counter()
                page.get_by_role("option", name=metric).click()
                page.wait_for_function(
                    "(t) => document.querySelector('#curves-graph .js-plotly-plot')"
                    ".layout.yaxis.title.text === t", arg=title, timeout=60_000)
                times.append(time.perf_counter() - t)
            print(f"\ninteraction: curves y-metric change -> redrawn: median "
                  f"{statistics.median(times):.2f} s, max {max(times):.2f} s "
                  f"({len(times)} changes)")

            # The job table: a filter and a sort over 100,000 points, done in the database.
            page.goto(base + f"/job?job={info['job']}")
            page.wait_for_selector("#job-table td[data-dash-column='median_us']",
                                   timeout=60_000)
            box = page.locator(
                "#job-table th.dash-filter[data-dash-column='median_us'] input[type=text]")
            t = time.perf_counter()
            box.fill("> 1000")
            box.press("Enter")
            page.wait_for_function("() => document.querySelector('#job-table-note')"
                                   ".innerText.includes('filter')", timeout=60_000)
            t_filter = time.perf_counter() - t
            note = page.locator("#job-table-note").inner_text()
            t = time.perf_counter()
            page.locator("#job-table th[data-dash-column='median_us'] .column-header--sort")\
                .first.click()
            page.wait_for_function("() => window.location.search.includes('sort=median_us')",
                                   timeout=60_000)
            page.wait_for_load_state("networkidle")
            t_sort = time.perf_counter() - t
            print(f"interaction: job table filter 'median_us > 1000' -> {t_filter:.2f} s "
                  f"({note}); sort by median -> {t_sort:.2f} s")

            # The history page: another slice (kv_len) -> the chart redrawn for it.
            times = []
            page.goto(base + "/history?kernel=batch_decode&batch_size=64&kv_len=8192")
            for kv in ("4096", "8192") * 2:
                page.wait_for_function("() => { const g = document.querySelector("
                                       "'#history-graph .js-plotly-plot'); return g && g.data "
                                       "&& g.data.length > 0; }", timeout=60_000)
                page.wait_for_load_state("networkidle")
                page.click("[id*='kv_len']")
                t = time.perf_counter()
                page.get_by_role("option", name=kv, exact=True).click()
                page.wait_for_function(
                    "(kv) => new RegExp('[?&]kv_len=' + kv + '(&|$)')"
                    ".test(window.location.search)", arg=kv, timeout=60_000)
                times.append(time.perf_counter() - t)
            print(f"interaction: history slice change (kv_len) -> redrawn: median "
                  f"{statistics.median(times):.2f} s, max {max(times):.2f} s "
                  f"({len(times)} changes)")
            browser.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        if not args.keep:
            with psycopg.connect(ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
