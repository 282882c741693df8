"""Job: one job's spec, runs and per-point status table (sort, filter), live progress while it
runs, and the raw-sample histogram of the point selected in the table.

URL: /job?job=12&point=345&filter={status} = error&sort=median_us:desc
"""

from __future__ import annotations

import json
from typing import Any

import dash
from dash import Input, Output, State, callback, dash_table, dcc, html, no_update
from dash.dash_table.Format import Format, Scheme

from kernelwatch.core import crosscheck
from kernelwatch.core.jobs import waiting_reason
from kernelwatch.core.models import TERMINAL_STATUSES, Job
from kernelwatch.dashboard import pointtable, queries
from kernelwatch.dashboard.common import control, empty_figure, reading, simple_table
from kernelwatch.dashboard.export import chart, register_csv
from kernelwatch.dashboard.samples import histogram_figure
from kernelwatch.dashboard.urlstate import as_int, register_url_sync, search_string, url_sync

# /job?job=12 and /job/12 (the address people type and notifications link) are one page.
dash.register_page(__name__, path="/job", path_template="/job/<job>", name="Job",
                   title="kernelwatch · job")

P = "job"
POLL_MS = 2000
PAGE_SIZE = 25
STAT_COLUMNS = [("median_us", "median µs"), ("ci_low_us", "CI low"), ("ci_high_us", "CI high"),
                ("cv", "CV"), ("tbps", "TB/s"), ("tflops", "TFLOP/s"),
                ("pct_peak_bw", "% peak BW"), ("n_samples", "samples")]


def parse_sort(value: str | None) -> list[dict[str, str]]:
    out = []
    for part in (value or "").split(","):
        if ":" in part:
            col, direction = part.split(":", 1)
            if direction in ("asc", "desc"):
                out.append({"column_id": col, "direction": direction})
    return out


def layout(job: str | None = None, point: str | None = None, filter: str | None = None,
           sort: str | None = None, **_q: Any) -> html.Div:
    job_id = as_int(job)
    if job_id is None:
        with reading() as s:
            recent = queries.recent_jobs(s, limit=1)
        job_id = recent[0]["id"] if recent else None
    return html.Div([
        html.H2("Job"),
        html.Div(className="controls", children=[
            control("job id", dcc.Input(id=f"{P}-id", type="number", value=job_id,
                                        debounce=True)),
            html.Div(id=f"{P}-progress", className="control wide"),
        ]),
        dcc.Interval(id=f"{P}-tick", interval=POLL_MS, disabled=True),
        dcc.Store(id=f"{P}-point", data=as_int(point)),
        html.Div(id=f"{P}-header"),
        html.H3("Points"),
        html.Div(id=f"{P}-table-note", className="note"),
        html.P("Sort by clicking a column header; filter by typing in the row under it "
               "(e.g. error, > 100). Click a row to see its raw samples (the first measured "
               "point until then).", className="note"),
        # Paged, sorted and filtered in the database (dashboard/pointtable.py): a job of
        # 100,000 points is never sent to the browser whole.
        dash_table.DataTable(  # type: ignore[attr-defined]
            id=f"{P}-table", data=[], columns=[], page_size=PAGE_SIZE, page_current=0,
            page_action="custom",
            sort_action="custom", sort_mode="multi", filter_action="custom",
            filter_query=filter or "", sort_by=parse_sort(sort),
            style_table={"overflowX": "auto"},
            style_cell={"fontFamily": "system-ui, sans-serif", "fontSize": 13,
                        "padding": "3px 6px", "maxWidth": 260, "overflow": "hidden",
                        "textOverflow": "ellipsis"},
            style_header={"fontWeight": 600, "backgroundColor": "#f0f2f5"},
            style_data_conditional=[
                {"if": {"filter_query": '{status} = "error"'}, "color": "#b42318"},
                {"if": {"filter_query": '{status} = "incorrect"'}, "color": "#b54708"},
                {"if": {"filter_query": '{status} = "unsupported"'}, "color": "#7b8794"},
                {"if": {"state": "active"}, "backgroundColor": "#e6f0ff"},
            ],
            tooltip_duration=None,
        ),
        chart(f"{P}-hist", height=380),
        html.Div(id=f"{P}-history-link", className="note"),
        url_sync(P),
    ])


def varying_params(docs: list[tuple[dict[str, str], int]]) -> list[str]:
    """Parameters that take more than one value in the job (they get a table column)."""
    keys = list(docs[0][0]) if docs else []
    return [k for k in keys if len({d.get(k) for d, _ in docs}) > 1]


def table_rows(points: list[dict[str, Any]], varying: list[str]) -> list[dict[str, Any]]:
    """Flatten points for the table: one column per varying parameter and statistic."""
    rows = []
    for p in points:
        row: dict[str, Any] = {"id": p["id"], "run": p["run_id"], "index": p["point_index"],
                               "backend": p["backend"],
                               "version": p["flashinfer_version"] or "-",
                               "gpu": p["gpu_sku"] or "cpu", "status": p["status"]}
        for k in varying:
            row[k] = p["params"].get(k)
        for col, _ in STAT_COLUMNS:
            row[col] = p.get(col)  # full precision: the table shows 4 significant digits
        row["throttled"] = "yes" if p["throttled"] else ""
        row["error"] = (p["error"] or "")[:200]
        rows.append(row)
    return rows


@callback(
    Output(f"{P}-header", "children"),
    Output(f"{P}-progress", "children"),
    Output(f"{P}-tick", "disabled"),
    Input(f"{P}-id", "value"),
    Input(f"{P}-tick", "n_intervals"),
)
def load_job(job_id: int | None, _n: int | None) -> tuple[Any, ...]:
    if job_id is None:
        return html.P("No jobs yet.", className="note"), "", True
    with reading() as s:
        job, runs = queries.job_with_runs(s, int(job_id))
        if job is None:
            return html.P(f"Job {job_id} does not exist.", className="error"), "", True
        counts = queries.point_counts_by_job(s, [job.id]).get(job.id, {})
        waiting = waiting_reason(s, job)
        checks = crosscheck.counts_by_run(s, [r.id for r in runs])
    done = sum(counts.values())
    total = job.total_points or done
    running = job.status not in TERMINAL_STATUSES
    progress = html.Div([
        html.Label(f"{job.status}: {done} of {total} points stored"
                   + (" (updating live)" if running else "")),
        html.Progress(value=str(done), max=str(max(total, 1)), style={"width": "100%"}),
        html.Span(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())), className="note"),
    ])
    run_rows = [{"run": r.id, "target": r.target, "gpu": r.gpu_name or r.gpu_sku or "-",
                 "version": r.flashinfer_version or "torch only", "status": r.status,
                 "timing": r.timing_method or "-", "chunk": f"{r.chunk + 1}/{r.chunks}",
                 "crosscheck": agreement(checks.get(r.id)), "message": r.message or ""}
                for r in runs]
    total_checks = crosscheck.total(checks.values())
    header = html.Div([
        html.H3(f"#{job.id} {job.name} · {job.kernel} · from {job.source}"
                + (f" by {job.submitted_by}" if job.submitted_by else "")),
        html.P(job.message, className="note") if job.message else None,
        html.P(waiting, className="error") if waiting else None,
        html.P(f"Cross-check with flashinfer_benchmark.py: {agreement(total_checks)}",
               className="note") if total_checks else None,
        html.Div(className="cards", children=[
            html.Div(className="card", children=[html.H3("Spec"), html.Pre(
                json.dumps(job.spec, indent=2, sort_keys=True), className="spec")]),
            html.Div(className="card", children=[html.H3("Runs"), simple_table(
                run_rows, [("run", "run"), ("target", "target"), ("gpu", "GPU"),
                           ("version", "FlashInfer"), ("status", "status"),
                           ("timing", "timing"), ("chunk", "chunk"),
                           ("crosscheck", "agrees with FI bench"), ("message", "")])]),
        ]),
        dcc.Link("curves of this job", href=f"/curves?job={job.id}&kernel={job.kernel}"),
    ])
    return header, progress, not running


def agreement(counts: crosscheck.CrosscheckCounts | None) -> str:
    """How many cross-checked points agree with flashinfer_benchmark.py, in a few words."""
    return counts.describe() if counts is not None else "-"


SIGNIFICANT = Format(precision=4, scheme=Scheme.decimal_or_exponent)


def table_columns(varying: list[str]) -> list[dict[str, Any]]:
    names = ["id", "run", "index", "backend", "version", "gpu", "status", *varying]
    columns = [{"name": n, "id": n} for n in names]
    # Four significant digits (2604, 10.13, 0.004512): a table of 2604.3743 us reads as more
    # precise than any CI; sorting and copying use the full value.
    columns += [{"name": title, "id": col, "type": "numeric",
                 **({} if col == "n_samples" else {"format": SIGNIFICANT.to_plotly_json()})}
                for col, title in STAT_COLUMNS]
    columns += [{"name": "throttled", "id": "throttled"}, {"name": "error", "id": "error"}]
    return columns


# Data and columns leave together: a DataTable given rows before its columns derives columns
# from the rows and its filter row then fails in the browser.
@callback(
    Output(f"{P}-table", "data"),
    Output(f"{P}-table", "columns"),
    Output(f"{P}-table", "page_count"),
    Output(f"{P}-table-note", "children"),
    Input(f"{P}-id", "value"),
    Input(f"{P}-table", "page_current"),
    Input(f"{P}-table", "page_size"),
    Input(f"{P}-table", "sort_by"),
    Input(f"{P}-table", "filter_query"),
    Input(f"{P}-tick", "n_intervals"),
)
def load_table(job_id: int | None, page_current: int | None, page_size: int | None,
               sort_by: list[dict[str, str]] | None, filter_query: str | None,
               _n: int | None) -> tuple[Any, ...]:
    if job_id is None:
        return [], [], 1, ""
    size = page_size or PAGE_SIZE
    with reading() as s:
        job = s.get(Job, int(job_id))
        if job is None:
            return [], [], 1, ""
        varying = varying_params(queries.param_docs(s, job.kernel, job.id,
                                                    s.get_bind().dialect.name))
        try:
            points, total = pointtable.page(s, job.id, filter_query, sort_by,
                                            page_current or 0, size)
        except pointtable.FilterError as exc:
            return ([], table_columns(varying), 1,
                    html.Span(f"Filter not understood: {exc}", className="error"))
    note = f"{total:,} points match" + (f" the filter {filter_query}" if filter_query else "")
    return (table_rows(points, varying), table_columns(varying), max(1, -(-total // size)),
            note)


@callback(
    Output(f"{P}-point", "data"),
    Input(f"{P}-table", "active_cell"),
    prevent_initial_call=True,
)
def select_point(active_cell: dict[str, Any] | None) -> Any:
    if not active_cell or active_cell.get("row_id") is None:
        return no_update
    return int(active_cell["row_id"])


@callback(
    Output(f"{P}-hist", "figure"),
    Output(f"{P}-hist-rows", "data"),
    Output(f"{P}-search", "data"),
    Input(f"{P}-point", "data"),
    Input(f"{P}-id", "value"),
    Input(f"{P}-table", "filter_query"),
    Input(f"{P}-table", "sort_by"),
    State(f"{P}-table", "data"),
)
def show_samples(point_id: int | None, job_id: int | None, filter_query: str | None,
                 sort_by: list[dict[str, str]] | None, rows: list[dict[str, Any]] | None
                 ) -> tuple[Any, ...]:
    sort = ",".join(f"{s['column_id']}:{s['direction']}" for s in sort_by or [])
    search = search_string({"job": job_id, "point": point_id, "filter": filter_query,
                            "sort": sort})
    with reading() as s:
        shown = point_id if point_id is not None else (
            queries.first_ok_point(s, int(job_id)) if job_id is not None else None)
        if shown is None:
            return (empty_figure("Click a row of the table to see its raw samples"), [],
                    search)
        samples = queries.point_samples(s, int(shown))
        clock = queries.point_clock(s, int(shown))
    csv_rows = [{"point_id": shown, "iteration": i, "repeat": r, "latency_us": v}
                for i, (v, r) in enumerate(samples)]
    return histogram_figure(int(shown), samples, clock), csv_rows, search


@callback(
    Output(f"{P}-history-link", "children"),
    Input(f"{P}-point", "data"),
)
def history_link(point_id: int | None) -> Any:
    """The selected point's series across FlashInfer versions, one click away."""
    if point_id is None:
        return ""
    with reading() as s:
        href = queries.history_link(s, int(point_id))
    return dcc.Link(f"point {point_id}: its series across FlashInfer versions",
                    href=href) if href else ""


register_csv(f"{P}-hist")
register_url_sync(P)
