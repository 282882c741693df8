"""Curves: how a kernel's latency, bandwidth or FLOP/s moves along one parameter, one line per
FlashInfer version / backend / GPU / dtype / distribution, every other dimension fixed.

URL: /curves?kernel=batch_decode&x=kv_len&y=latency&series=backend&job=12
     &gpu_sku=h200&flashinfer_version=0.6.18.post1&batch_size=64&...   (one key per fixed dim)
"""

from __future__ import annotations

import math
from typing import Any

import dash
from dash import ALL, Input, Output, State, callback, ctx, dcc, html, no_update

from kernelwatch.core.crosscheck import AGREE
from kernelwatch.dashboard import queries
from kernelwatch.dashboard.common import (
    METRICS,
    control,
    dropdown,
    empty_figure,
    hover_text,
    metric_with_ci,
    reading,
)
from kernelwatch.dashboard.export import chart, register_csv
from kernelwatch.dashboard.urlstate import as_int, register_url_sync, search_string, url_sync
from kernelwatch_harness.catalogue import KERNELS, axes_of, groups_of, shared_defaults

dash.register_page(__name__, path="/curves", name="Curves", title="kernelwatch · curves")

P = "curves"
# Overlay choices most people want first; every other dimension may overlay too.
PREFERRED_SERIES = ("backend", "flashinfer_version", "gpu_sku", "dtype")
LOG_SPAN = 30.0  # values spanning more than this ratio get a log axis


def x_options(kernel: str) -> list[str]:
    """The kernel's axes (its family's numeric parameters worth one, the default first), then
    its combined dimensions."""
    return [*axes_of(kernel), *groups_of(kernel)]


def series_options(kernel: str, x: str) -> list[str]:
    dims = [d for d in queries.dims_for(kernel) if d != x and d not in queries.members(x)]
    return [d for d in PREFERRED_SERIES if d in dims] + [d for d in dims
                                                         if d not in PREFERRED_SERIES]


def fixed_dims(kernel: str, x: str, series: str) -> list[str]:
    skip = {x, series, *queries.members(x)}
    return [d for d in queries.dims_for(kernel) if d not in skip]


def resolve_state(kernel: str | None, x: str | None, y: str | None, series: str | None,
                  wanted: dict[str, str], job_id: int | None) -> dict[str, Any]:
    """The full view state from what the URL asked for: defaults where it asked nothing and
    fixed values that have data."""
    with reading() as s:
        kernels = queries.kernels_present(s)
        if not kernels:
            return {"kernels": []}
        kernel = kernel if kernel in kernels else kernels[0]
        combos = queries.combos(s, kernel, job_id)
        varying = combos.varying()
        xs = x_options(kernel)
        if x not in xs:
            x = next((c for c in xs if c in varying), xs[0])
        sers = series_options(kernel, x)
        if series not in sers:
            series = next((c for c in sers if c in varying), sers[0])
        free = [x, series, *queries.members(x)]
        fixed = combos.settle(s, free=free, wanted=wanted)
    y = y if y in METRICS else "latency"
    return {"kernels": kernels, "kernel": kernel, "x": x, "y": y, "series": series,
            "fixed": fixed, "combos": combos}


def selector_panel(kernel: str, x: str, series: str, fixed: dict[str, str],
                   combos: queries.Combos) -> list[Any]:
    out = []
    for d in fixed_dims(kernel, x, series):
        values = combos.values(d)
        if not values:
            continue
        out.append(control(d, dropdown({"type": f"{P}-fix", "dim": d}, values,
                                       fixed.get(d, values[0]))))
    return out


def layout(kernel: str | None = None, x: str | None = None, y: str | None = None,
           series: str | None = None, job: str | None = None, **query: Any) -> html.Div:
    job_id = as_int(job)
    wanted = {k: str(v) for k, v in query.items() if isinstance(v, str)}
    st = resolve_state(kernel, x, y, series, wanted, job_id)
    if not st["kernels"]:
        return html.Div([html.H2("Curves"), html.P("No measured points yet.", className="note")])
    k = st["kernel"]
    return html.Div([
        html.H2("Curves"),
        html.Div(className="controls", children=[
            control("kernel", dropdown(f"{P}-kernel", st["kernels"], k)),
            control("x axis", dropdown(f"{P}-x", x_options(k), st["x"])),
            control("y metric", dropdown(f"{P}-y", [{"label": v[1], "value": m}
                                                    for m, v in METRICS.items()], st["y"]),
                    wide=True),
            control("one line per", dropdown(f"{P}-series", series_options(k, st["x"]),
                                             st["series"])),
            control("job (optional)", dcc.Input(id=f"{P}-job", type="number",
                                                value=job_id, debounce=True)),
        ]),
        html.Div(id=f"{P}-fixed", className="controls",
                 children=selector_panel(k, st["x"], st["series"], st["fixed"], st["combos"])),
        html.Div(id=f"{P}-summary", className="summary"),
        chart(f"{P}-graph", height=560),
        html.Div(id=f"{P}-history-link", className="note",
                 children="Click a point to follow its series across FlashInfer versions."),
        url_sync(P),
    ])


@callback(
    Output(f"{P}-x", "options"),
    Output(f"{P}-x", "value"),
    Output(f"{P}-series", "options"),
    Output(f"{P}-series", "value"),
    Output(f"{P}-fixed", "children"),
    Input(f"{P}-kernel", "value"),
    Input(f"{P}-x", "value"),
    Input(f"{P}-series", "value"),
    Input(f"{P}-job", "value"),
    State({"type": f"{P}-fix", "dim": ALL}, "value"),
    State({"type": f"{P}-fix", "dim": ALL}, "id"),
    prevent_initial_call=True,
)
def update_selectors(kernel: str, x: str, series: str, job: int | None,
                     values: list[str], ids: list[dict[str, str]]) -> tuple[Any, ...]:
    """Kernel, x or overlay changed: rebuild the fixed-dimension selectors, keeping the values
    already chosen where they still have data."""
    wanted = {i["dim"]: v for i, v in zip(ids, values, strict=False) if v is not None}
    if ctx.triggered_id == f"{P}-kernel":
        x = series = None  # type: ignore[assignment]
    st = resolve_state(kernel, x, None, series, wanted, as_int(job))
    if not st["kernels"]:
        return (no_update,) * 5
    k = st["kernel"]
    return (x_options(k), st["x"], series_options(k, st["x"]), st["series"],
            selector_panel(k, st["x"], st["series"], st["fixed"], st["combos"]))


def _x_key(x: str, value: str) -> Any:
    if queries.members(x):
        return tuple(float(p) for p in value.split("/") if p.replace(".", "").isdigit())
    try:
        return float(value)
    except ValueError:
        return math.inf


def _is_default(kernel: str, dim: str, value: str) -> bool:
    """Whether ``value`` is every backend's default (some defaults follow the backend: a value
    that is one backend's default only says something about the others)."""
    if kernel not in KERNELS:
        return False
    shared = shared_defaults(kernel)
    if dim not in shared:
        return False
    shown = queries.show(shared[dim])
    return value in (shown, shown.lower())


def curve_figure(rows: list[dict[str, Any]], kernel: str, x: str, y: str, series: str,
                 fixed: dict[str, str]) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """The figure, the rows behind it (for CSV) and a one-line summary."""
    if not rows:
        return empty_figure("No points for this selection"), [], "no points"
    numeric = not queries.members(x)
    rows = sorted(rows, key=lambda r: (r["series"], _x_key(x, r["x"])))
    xval = (lambda r: float(r["x"])) if numeric else (lambda r: r["x"])
    traces: list[dict[str, Any]] = []
    flagged_x, flagged_y, flagged_text, flagged_hover = [], [], [], []
    bad_x, bad_text, bad_hover = [], [], []
    official_x, official_y, official_hover = [], [], []
    csv_rows: list[dict[str, Any]] = []
    for name in queries.sort_values(r["series"] for r in rows):
        xs, ys, lo, hi, hov, ids = [], [], [], [], [], []
        for r in (r for r in rows if r["series"] == name):
            value, low, high = metric_with_ci(r, y)
            label = [f"<b>{series} = {name}</b>", f"{x} = {r['x']}",
                     f"{METRICS[y][1]}: {value:.4g}" if value is not None else ""]
            csv_rows.append({"series": name, "x": r["x"], "metric": y, "value": value,
                             "ci_low": low, "ci_high": high, "status": r["status"],
                             "n_samples": r["n_samples"], "cv": r["cv"],
                             "throttled": r["throttled"], "point_id": r["id"],
                             "run_id": r["run_id"], "job_id": r["job_id"],
                             "flashinfer_benchmark_value": official_value(r, y, value)})
            if r["status"] == "ok" and value is not None:
                xs.append(xval(r))
                ys.append(value)
                lo.append(value - low if low is not None else 0.0)
                hi.append(high - value if high is not None else 0.0)
                hov.append(hover_text(r, label))
                ids.append(r["id"])
                theirs = official_value(r, y, value)
                if theirs is not None:
                    official_x.append(xval(r))
                    official_y.append(theirs)
                    official_hover.append(official_hover_text(r, name, theirs, y))
            elif value is not None:  # measured but flagged (incorrect output)
                flagged_x.append(xval(r))
                flagged_y.append(value)
                flagged_text.append(f"{r['status']}")
                flagged_hover.append(hover_text(r, label))
            else:  # unsupported / error: no number to plot
                bad_x.append(xval(r))
                bad_text.append(f"{name}: {r['status']}")
                bad_hover.append(hover_text(r, label))
        if xs:
            traces.append({
                "type": "scatter", "mode": "lines+markers", "name": f"{name}",
                "x": xs, "y": ys,
                "error_y": {"type": "data", "array": hi, "arrayminus": lo, "visible": True,
                            "thickness": 1.2, "width": 3},
                "hovertext": hov, "hovertemplate": "%{hovertext}<extra></extra>",
                "customdata": ids,  # point ids: a click links to the point's history
            })
    if official_x:
        # FlashInfer's own benchmark on the same shape (spec crosscheck: true), beside each
        # point it measured: a hollow diamond, so a gap between the two is seen at a glance.
        traces.append({
            "type": "scatter", "mode": "markers", "name": OFFICIAL,
            "x": official_x, "y": official_y,
            "marker": {"symbol": "diamond-open", "size": 11, "color": "#3e4c59",
                       "line": {"width": 1.5}},
            "hovertext": official_hover, "hovertemplate": "%{hovertext}<extra></extra>",
        })
    if flagged_x:
        traces.append({
            "type": "scatter", "mode": "markers+text", "name": "incorrect output",
            "x": flagged_x, "y": flagged_y, "text": flagged_text, "textposition": "top center",
            "marker": {"symbol": "x", "size": 12, "color": "#b42318"},
            "hovertext": flagged_hover, "hovertemplate": "%{hovertext}<extra></extra>",
        })
    if bad_x:
        # No latency exists for these: they sit on a strip along the bottom, labelled, on an
        # axis of their own, so they can never be read as a zero.
        traces.append({
            "type": "scatter", "mode": "markers+text", "name": "unsupported / error",
            "x": bad_x, "y": [0.04] * len(bad_x), "yaxis": "y2",
            "text": bad_text, "textposition": "top center", "textfont": {"color": "#52606d"},
            "marker": {"symbol": "x-thin-open", "size": 12,
                                         "color": "#7b8794", "line": {"width": 2}},
            "hovertext": bad_hover, "hovertemplate": "%{hovertext}<extra></extra>",
        })
    all_x = [v for t in traces for v in t["x"]]
    all_y = [v for t in traces if t.get("yaxis") != "y2" for v in t["y"]]
    log_x = numeric and bool(all_x) and min(all_x) > 0 and max(all_x) / min(all_x) >= LOG_SPAN
    pos_y = [v for v in all_y if v and v > 0]
    log_y = bool(pos_y) and max(pos_y) / min(pos_y) >= LOG_SPAN
    # The subtitle names what is fixed, leaving out parameters at the catalogue's default.
    fixed_txt = ", ".join(f"{k}={v}" for k, v in fixed.items()
                          if k in queries.COLUMN_DIMS or not _is_default(kernel, k, v))
    layout: dict[str, Any] = {
        "template": "plotly_white",
        "title": {"text": f"{kernel}: {METRICS[y][1]} vs {x}<br><sup>{fixed_txt}</sup>",
                  "font": {"size": 15}},
        "xaxis": {"title": {"text": x}, "type": "log" if log_x else
                  ("linear" if numeric else "category")},
        # On log axes, label 1-2-5 per decade only (every digit crowds the axis).
        "yaxis": {"title": {"text": METRICS[y][1]}, "type": "log" if log_y else "linear",
                  "rangemode": "tozero" if not log_y else "normal",
                  **({"dtick": "D2"} if log_y else {})},
        "yaxis2": {"overlaying": "y", "range": [0, 1], "visible": False, "fixedrange": True},
        "legend": {"title": {"text": series}},
        "hovermode": "closest",
        "margin": {"t": 80, "l": 70, "r": 20, "b": 60},
        "hoverlabel": {"align": "left"},
    }
    if numeric and all_x:
        ticks = sorted(set(all_x))
        if len(ticks) <= 16:
            layout["xaxis"]["tickvals"] = ticks
            layout["xaxis"]["ticktext"] = [f"{v:g}" for v in ticks]
    n_ok = sum(len(t["x"]) for t in traces if t["name"] not in
               ("incorrect output", "unsupported / error", OFFICIAL))
    n_series = len(traces) - bool(flagged_x) - bool(bad_x) - bool(official_x)
    summary = (f"{n_ok} measured points in {n_series} series; {len(flagged_x)} with incorrect "
               f"output; {len(bad_x)} unsupported or errored")
    if official_x:
        agree = sum(1 for r in rows if r.get("official_agrees"))
        summary += (f"; {agree} of {len(official_x)} within {AGREE:.0%} of "
                    "flashinfer_benchmark.py (◇)")
    return {"data": traces, "layout": layout}, csv_rows, summary


OFFICIAL = "flashinfer_benchmark.py"


def official_value(r: dict[str, Any], y: str, value: float | None) -> float | None:
    """The cross-check's measurement of the point in the plotted metric: its median, or the
    point's throughput scaled by the two latencies (the bytes and FLOPs are the same)."""
    theirs = r.get("official_median_us")
    if not theirs or value is None:
        return None
    if y == "latency":
        return float(theirs)
    return value * float(r["median_us"]) / float(theirs) if r.get("median_us") else None


def official_hover_text(r: dict[str, Any], name: str, theirs: float, y: str) -> str:
    diff = r.get("official_diff_pct")
    causes = r.get("official_causes") or []
    lines = [f"<b>{OFFICIAL}</b> · {name}", f"{METRICS[y][1]}: {theirs:.4g}",
             f"kernelwatch vs it: {diff:+.1f}%" if diff is not None else ""]
    lines += [f"{c.get('cause')}: {c.get('detail')}" for c in causes if isinstance(c, dict)]
    return "<br>".join(x for x in lines if x)


@callback(
    Output(f"{P}-graph", "figure"),
    Output(f"{P}-graph-rows", "data"),
    Output(f"{P}-summary", "children"),
    Output(f"{P}-search", "data"),
    Input(f"{P}-kernel", "value"),
    Input(f"{P}-x", "value"),
    Input(f"{P}-y", "value"),
    Input(f"{P}-series", "value"),
    Input({"type": f"{P}-fix", "dim": ALL}, "value"),
    Input(f"{P}-job", "value"),
    State({"type": f"{P}-fix", "dim": ALL}, "id"),
)
def update_graph(kernel: str, x: str, y: str, series: str, values: list[str],
                 job: int | None, ids: list[dict[str, str]]) -> tuple[Any, ...]:
    fixed = {i["dim"]: v for i, v in zip(ids, values, strict=False)
             if v is not None and i["dim"] in fixed_dims(kernel, x, series)}
    job_id = as_int(job)
    with reading() as s:
        rows = queries.curve_points(s, kernel, x, series, fixed, job_id)
    fig, csv_rows, text = curve_figure(rows, kernel, x, y, series, fixed)
    jobs = sorted({r["job_id"] for r in rows})
    links: list[Any] = [text, " · from job "]
    for j in jobs[:8]:
        links += [dcc.Link(f"#{j}", href=f"/job?job={j}"), " "]
    search = search_string({"kernel": kernel, "x": x, "y": y, "series": series, "job": job_id,
                            **fixed})
    return fig, csv_rows, html.Span(links if jobs else [text]), search


@callback(
    Output(f"{P}-history-link", "children"),
    Input(f"{P}-graph", "clickData"),
    prevent_initial_call=True,
)
def history_link(click: dict[str, Any] | None) -> Any:
    """A clicked point's series across FlashInfer versions, one click away."""
    points = (click or {}).get("points") or []
    point_id = points[0].get("customdata") if points else None
    if not isinstance(point_id, int):
        return no_update
    with reading() as s:
        href = queries.history_link(s, point_id)
    return dcc.Link(f"point {point_id}: its series across FlashInfer versions",
                    href=href) if href else no_update


register_csv(f"{P}-graph")
register_url_sync(P)
