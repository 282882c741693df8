"""History: a kernel's series across every FlashInfer version measured, in version order. One
line per series (backend x GPU x measurement conditions, ``core.series``) in a slice of the
kernel's parameters: each version's median with its CI (or TB/s, TFLOP/s, % of peak), the
change points and the drift ``core.history`` finds, a break in the line where the series'
environment changed, and a marker at each release the release flow benchmarked. Clicking a
point lists that version's points with the raw samples of one of them.

Dimensions come from the kernel's declared parameters (the catalogue), so every kernel family
gets the page as it is.

URL: /history?kernel=batch_prefill&gpu=h100,a100&backend=fa2&y=latency&kv_len=4096&...
     /history?series=<series key>&gpu=<sku>   (from a point: its kernel and parameters,
                                               its line drawn bold and its points listed)
     &version=0.6.0                           (the version whose points are listed)
"""

from __future__ import annotations

from typing import Any

import dash
from dash import ALL, Input, Output, State, callback, dcc, html, no_update

from kernelwatch.core.history import SeriesHistory, series_history, sort_versions
from kernelwatch.core.results import derived_metrics
from kernelwatch.dashboard import queries
from kernelwatch.dashboard.common import (
    METRICS,
    control,
    dropdown,
    empty_figure,
    fmt,
    metric_with_ci,
    reading,
    simple_table,
)
from kernelwatch.dashboard.export import chart, register_csv
from kernelwatch.dashboard.samples import histogram_figure
from kernelwatch.dashboard.urlstate import as_list, register_url_sync, search_string, url_sync
from kernelwatch_harness.catalogue import KERNELS

dash.register_page(__name__, path="/history", name="History", title="kernelwatch · history")

P = "history"
# Each line runs its own change-point search over its points: a slice wider than this is
# narrowed by choosing GPUs or backends (the page says so) rather than drawn as a tangle.
MAX_SERIES = 24
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
RELEASE = "release"  # customdata tag of a release marker (a series point carries its key)


def selectable_params(kernel: str, combos: queries.Combos) -> list[str]:
    """The kernel's declared parameters that take more than one value in its points: a
    parameter with one value selects nothing."""
    return [d for d in KERNELS[kernel].params if len(combos.values(d)) > 1]


def resolve_state(kernel: str | None, wanted: dict[str, str], series: str | None
                  ) -> dict[str, Any]:
    """The view from what the URL asked: a series key names its kernel and parameters (values
    the URL gives win over them), and every selectable parameter gets a value that has data."""
    with reading() as s:
        kernels = queries.kernels_present(s)
        if not kernels:
            return {"kernels": []}
        origin = queries.series_origin(s, series) if series else None
        if origin is not None:
            kernel = origin.kernel
            wanted = {**origin.params, **wanted}
        kernel = kernel if kernel in kernels else kernels[0]
        combos = queries.combos(s, kernel)
        fixed = combos.settle(s, free=queries.COLUMN_DIMS, wanted=wanted)
    dims = selectable_params(kernel, combos)
    return {"kernels": kernels, "kernel": kernel, "combos": combos, "dims": dims,
            "fixed": {d: fixed[d] for d in dims if d in fixed},
            "gpus": combos.values("gpu_sku"), "backends": combos.values("backend")}


def selector_panel(dims: list[str], fixed: dict[str, str], combos: queries.Combos
                   ) -> list[Any]:
    return [control(d, dropdown({"type": f"{P}-fix", "dim": d}, combos.values(d),
                                fixed.get(d, combos.values(d)[0])))
            for d in dims]


def layout(kernel: str | None = None, gpu: str | None = None, backend: str | None = None,
           y: str | None = None, series: str | None = None, version: str | None = None,
           **query: Any) -> html.Div:
    wanted = {k: str(v) for k, v in query.items() if isinstance(v, str)}
    st = resolve_state(kernel, wanted, series)
    if not st["kernels"]:
        return html.Div([html.H2("History"), html.P("No measured points yet.", className="note")])
    gpus = [g for g in as_list(gpu) if g in st["gpus"]]
    backends = [b for b in as_list(backend) if b in st["backends"]]
    return html.Div([
        html.H2("History across FlashInfer versions"),
        html.Div(className="controls", children=[
            control("kernel", dropdown(f"{P}-kernel", st["kernels"], st["kernel"])),
            control("GPUs (all when empty)", dropdown(f"{P}-gpu", st["gpus"], gpus, multi=True,
                                                      clearable=True), wide=True),
            control("backends (all when empty)", dropdown(f"{P}-backend", st["backends"],
                                                          backends, multi=True,
                                                          clearable=True), wide=True),
            control("y metric", dropdown(f"{P}-y", [{"label": v[1], "value": m}
                                                    for m, v in METRICS.items()],
                                         y if y in METRICS else "latency"), wide=True),
        ]),
        html.Div(id=f"{P}-fixed", className="controls",
                 children=selector_panel(st["dims"], st["fixed"], st["combos"])),
        dcc.Store(id=f"{P}-highlight", data=series),
        dcc.Store(id=f"{P}-selected",
                  data={"series": series, "version": version} if series else None),
        dcc.Store(id=f"{P}-view"),
        html.Div(id=f"{P}-summary", className="summary"),
        chart(f"{P}-graph", height=560),
        html.H3("Series"),
        html.Div(id=f"{P}-series"),
        html.H3("Points"),
        html.Div(id=f"{P}-points"),
        chart(f"{P}-hist", height=360),
        url_sync(P),
    ])


@callback(
    Output(f"{P}-gpu", "options"),
    Output(f"{P}-gpu", "value"),
    Output(f"{P}-backend", "options"),
    Output(f"{P}-backend", "value"),
    Output(f"{P}-fixed", "children"),
    Input(f"{P}-kernel", "value"),
    State(f"{P}-gpu", "value"),
    State(f"{P}-backend", "value"),
    State({"type": f"{P}-fix", "dim": ALL}, "value"),
    State({"type": f"{P}-fix", "dim": ALL}, "id"),
    prevent_initial_call=True,
)
def update_selectors(kernel: str, gpus: list[str] | None, backends: list[str] | None,
                     values: list[str], ids: list[dict[str, str]]) -> tuple[Any, ...]:
    """Another kernel: its own parameters, keeping the choices it shares with the last one."""
    wanted = {i["dim"]: v for i, v in zip(ids, values, strict=False) if v is not None}
    st = resolve_state(kernel, wanted, None)
    if not st["kernels"]:
        return (no_update,) * 5
    return (st["gpus"], [g for g in gpus or [] if g in st["gpus"]], st["backends"],
            [b for b in backends or [] if b in st["backends"]],
            selector_panel(st["dims"], st["fixed"], st["combos"]))


# --------------------------------------------------------------------------- the figure


def series_names(hists: list[SeriesHistory]) -> dict[str, str]:
    """'backend · GPU' per series; series that share both (cold vs warm L2, another clock)
    are told apart by the start of their key."""
    base = {h.series_key: f"{h.backend} · {h.gpu_sku or 'cpu'}" for h in hists}
    shared = {n for n in base.values() if list(base.values()).count(n) > 1}
    return {k: f"{n} · {k[:6]}" if n in shared else n for k, n in base.items()}


def release_values(h: SeriesHistory, y: str) -> list[tuple[float | None, float | None,
                                                          float | None]]:
    """(value, CI low, CI high) of each version of a series in metric ``y``: latency as
    stored, the others from the kernel's formulas at that latency (as a point's are)."""
    out = []
    for rp in h.releases:
        row: dict[str, Any] = {"median_us": rp.median_us, "ci_low_us": rp.ci_low_us,
                               "ci_high_us": rp.ci_high_us}
        if y != "latency" and h.kernel in KERNELS and h.params is not None:
            row.update(derived_metrics(h.kernel, h.params, rp.median_us, h.gpu_sku))
        out.append(metric_with_ci(row, y))
    return out


def segments(h: SeriesHistory) -> list[list[int]]:
    """Indices of a series' versions, cut where its environment changed: a line does not
    join two numbers whose meaning differs beyond FlashInfer's own change."""
    cuts = {b.after_version for b in h.environment_breaks}
    out: list[list[int]] = [[]]
    for i, rp in enumerate(h.releases):
        if rp.version in cuts and out[-1]:
            out.append([])
        out[-1].append(i)
    return [s for s in out if s]


def error_bar(value: tuple[float | None, float | None, float | None]) -> tuple[float, float]:
    """(below, above) the value: how far its CI reaches each way (0 where it has none)."""
    v, lo, hi = value
    if v is None:
        return 0.0, 0.0
    return (v - lo if lo is not None else 0.0, hi - v if hi is not None else 0.0)


def point_hover(name: str, h: SeriesHistory, i: int, y: str,
                value: tuple[float | None, float | None, float | None]) -> str:
    rp = h.releases[i]
    v, lo, hi = value
    env = ", ".join(f"{k} {val}" for k, val in rp.environment.items() if val is not None)
    lines = [f"<b>{name}</b> · FlashInfer {rp.version}",
             f"{METRICS[y][1]}: {fmt(v)} (95% CI {fmt(lo)}, {fmt(hi)})",
             f"median of {rp.points} point(s), run(s) {', '.join(map(str, rp.run_ids))}"]
    if env:
        lines.append(env[:160])
    lines.append("click: its points and raw samples")
    return "<br>".join(lines)


def history_figure(hists: list[SeriesHistory], y: str,
                   releases: dict[str, tuple[str | None, str]],
                   highlight: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The chart and its rows (CSV). x is the version, as categories in version order."""
    versions = sort_versions(list({rp.version for h in hists for rp in h.releases}))
    if not versions:
        return empty_figure("No measured version in this slice"), []
    pos = {v: i for i, v in enumerate(versions)}
    names = series_names(hists)
    traces: list[dict[str, Any]] = []
    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    steps: dict[str, list[Any]] = {"x": [], "y": [], "symbol": [], "color": [], "hover": []}
    breaks_drawn: dict[float, set[str]] = {}
    rows: list[dict[str, Any]] = []
    for n, h in enumerate(hists):
        color = PALETTE[n % len(PALETTE)]
        name = names[h.series_key]
        values = release_values(h, y)
        bold = h.series_key == highlight
        for seg_no, seg in enumerate(segments(h)):
            shown = [i for i in seg if values[i][0] is not None]
            traces.append({
                "type": "scatter", "mode": "lines+markers", "name": name,
                "legendgroup": h.series_key, "showlegend": seg_no == 0,
                "x": [h.releases[i].version for i in shown],
                "y": [values[i][0] for i in shown],
                "error_y": {"type": "data", "visible": True, "thickness": 1.2, "width": 3,
                            "array": [error_bar(values[i])[1] for i in shown],
                            "arrayminus": [error_bar(values[i])[0] for i in shown]},
                "line": {"color": color, "width": 4 if bold else 2},
                "marker": {"color": color, "size": 9 if bold else 7},
                "customdata": [[h.series_key, h.releases[i].version] for i in shown],
                "hovertext": [point_hover(name, h, i, y, values[i]) for i in shown],
                "hovertemplate": "%{hovertext}<extra></extra>",
            })
        for i, rp in enumerate(h.releases):
            v, lo, hi = values[i]
            rows.append({"series_key": h.series_key, "series": name, "gpu_sku": h.gpu_sku,
                         "backend": h.backend, "flashinfer_version": rp.version, "metric": y,
                         "value": v, "ci_low": lo, "ci_high": hi, "points": rp.points,
                         "run_ids": rp.run_ids})
        at = {rp.version: values[i][0] for i, rp in enumerate(h.releases)}
        for cp in h.change_points:
            if cp.after_version not in pos or at.get(cp.after_version) is None:
                continue
            x0 = pos[cp.after_version] - 0.5
            shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": x0, "x1": x0,
                           "y0": 0, "y1": 1, "line": {"color": color, "width": 1.5,
                                                      "dash": "dot"}})
            steps["x"].append(cp.after_version)
            steps["y"].append(at[cp.after_version])
            steps["symbol"].append("triangle-up" if cp.direction == "slower"
                                   else "triangle-down")
            steps["color"].append(color)
            env = (f"<br>the environment changed too: {', '.join(cp.environment_changed)}"
                   if cp.environment_changed else "")
            steps["hover"].append(
                f"<b>{name}</b>: a step {cp.direction}, {(cp.ratio - 1) * 100:+.1f}% "
                f"({cp.before_version} → {cp.after_version})<br>median latency "
                f"{fmt(cp.before_median_us)} → {fmt(cp.after_median_us)} µs{env}")
        if h.drift is not None and at.get(h.drift.from_version) is not None:
            d = h.drift
            start = at[d.from_version]
            assert start is not None
            # The slope is of latency: a throughput metric drifts by its inverse.
            end = start * (d.total_ratio if y == "latency" else 1 / d.total_ratio)
            traces.append({
                "type": "scatter", "mode": "lines", "name": f"{name}: drift",
                "legendgroup": h.series_key, "showlegend": False,
                "x": [d.from_version, d.to_version], "y": [start, end],
                "line": {"color": color, "width": 3, "dash": "dash"},
                "hovertext": [f"<b>{name}</b>: drifting {d.direction}, "
                              f"{d.slope_per_release * 100:+.2f}% per release (95% CI "
                              f"{d.slope_ci_low * 100:+.2f}% .. {d.slope_ci_high * 100:+.2f}%)"
                              f" over {d.releases} releases"] * 2,
                "hovertemplate": "%{hovertext}<extra></extra>",
            })
        for b in h.environment_breaks:
            x0 = pos[b.after_version] - 0.5
            fields = breaks_drawn.setdefault(x0, set())
            if not fields:
                shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": x0,
                               "x1": x0, "y0": 0, "y1": 1,
                               "line": {"color": "#7b8794", "width": 2, "dash": "dash"}})
            fields.update(b.fields)
    for x0, fields in breaks_drawn.items():
        annotations.append({"x": x0, "xref": "x", "y": 1.0, "yref": "paper", "yanchor": "bottom",
                            "showarrow": False, "font": {"size": 11, "color": "#52606d"},
                            "text": f"environment: {', '.join(sorted(fields))}"})
    if steps["x"]:
        traces.append({
            "type": "scatter", "mode": "markers", "name": "change point",
            "x": steps["x"], "y": steps["y"],
            "marker": {"symbol": steps["symbol"], "size": 16, "color": steps["color"],
                       "line": {"color": "#1f2933", "width": 1.5}},
            "hovertext": steps["hover"], "hovertemplate": "%{hovertext}<extra></extra>",
        })
    marked = [v for v in versions if v in releases]
    if marked:
        # Releases the release flow benchmarked, on a strip along the top: click for its page.
        traces.append({
            "type": "scatter", "mode": "markers+text", "name": "release benchmarked",
            "x": marked, "y": [0.96] * len(marked), "yaxis": "y2",
            "text": ["release"] * len(marked), "textposition": "middle right",
            "textfont": {"size": 10, "color": "#52606d"},
            "marker": {"symbol": "diamond", "size": 11, "color": "#3e4c59"},
            "customdata": [[RELEASE, v] for v in marked],
            "hovertext": [f"release {v}" + (f" vs {releases[v][0]}" if releases[v][0] else "")
                          + f": {releases[v][1]}<br>click: its release page" for v in marked],
            "hovertemplate": "%{hovertext}<extra></extra>",
        })
    kernel = hists[0].kernel if hists else ""
    layout = {
        "template": "plotly_white",
        "title": {"text": f"{kernel}: {METRICS[y][1]} by FlashInfer version",
                  "font": {"size": 15}},
        "xaxis": {"title": {"text": "FlashInfer version"}, "type": "category",
                  "categoryorder": "array", "categoryarray": versions},
        "yaxis": {"title": {"text": METRICS[y][1]}, "rangemode": "tozero"},
        "yaxis2": {"overlaying": "y", "range": [0, 1], "visible": False, "fixedrange": True},
        "shapes": shapes, "annotations": annotations, "hovermode": "closest",
        "hoverlabel": {"align": "left"}, "legend": {"title": {"text": "series"}},
        "margin": {"t": 80, "l": 70, "r": 20, "b": 60},
    }
    return {"data": traces, "layout": layout}, rows


def series_table(hists: list[SeriesHistory], y: str) -> html.Table:
    """What the statistics found, per series, in words."""
    names = series_names(hists)
    rows = []
    for h in hists:
        values = release_values(h, y)
        latest = next((v for v, _, _ in reversed(values) if v is not None), None)
        rows.append({
            "series": names[h.series_key],
            "versions": (f"{len(h.releases)}: {h.releases[0].version} to "
                         f"{h.releases[-1].version}" if h.releases else "0"),
            "latest": latest,
            "steps": "; ".join(f"{c.before_version} → {c.after_version} "
                               f"{(c.ratio - 1) * 100:+.1f}% ({c.direction})"
                               + (f", with {', '.join(c.environment_changed)}"
                                  if c.environment_changed else "")
                               for c in h.change_points) or "none",
            "drift": (f"{h.drift.direction} {h.drift.slope_per_release * 100:+.2f}%/release, "
                      f"{h.drift.from_version} to {h.drift.to_version}" if h.drift else "none"),
            "breaks": "; ".join(f"{b.before_version} → {b.after_version}: "
                                f"{', '.join(b.fields)}" for b in h.environment_breaks)
                      or "none",
            "noise": f"{h.noise * 100:.2f}%" if h.noise is not None else "-",
            "link": f"/history?series={h.series_key}&gpu={h.gpu_sku or queries.NONE}",
            "link_label": "this series",
        })
    return simple_table(rows, [("series", "series"), ("versions", "versions measured"),
                               ("latest", f"latest {METRICS[y][1]}"),
                               ("steps", "change points"), ("drift", "drift"),
                               ("breaks", "environment changes"), ("noise", "noise"),
                               ("link_label", "")],
                        links={"link_label": "link"})


@callback(
    Output(f"{P}-graph", "figure"),
    Output(f"{P}-graph-rows", "data"),
    Output(f"{P}-summary", "children"),
    Output(f"{P}-series", "children"),
    Output(f"{P}-view", "data"),
    Input(f"{P}-kernel", "value"),
    Input(f"{P}-gpu", "value"),
    Input(f"{P}-backend", "value"),
    Input(f"{P}-y", "value"),
    Input({"type": f"{P}-fix", "dim": ALL}, "value"),
    State({"type": f"{P}-fix", "dim": ALL}, "id"),
    State(f"{P}-highlight", "data"),
)
def update_graph(kernel: str, gpus: list[str] | None, backends: list[str] | None, y: str,
                 values: list[str], ids: list[dict[str, str]], highlight: str | None
                 ) -> tuple[Any, ...]:
    params = set(KERNELS[kernel].params) if kernel in KERNELS else set()
    fixed = {i["dim"]: v for i, v in zip(ids, values, strict=False)
             if v is not None and i["dim"] in params}
    y = y if y in METRICS else "latency"
    view = {"kernel": kernel, "gpu": list(gpus or []), "backend": list(backends or []),
            "y": None if y == "latency" else y, **fixed}
    with reading() as s:
        refs = queries.slice_series(s, kernel, fixed, gpus or [], backends or [])
        hists = [h for h in (series_history(s, r.series_key) for r in refs[:MAX_SERIES])
                 if h is not None]
        releases = queries.release_versions(s)
    if not hists:
        return (empty_figure("No series in this slice"), [], "no series", "", view)
    fig, rows = history_figure(hists, y, releases, highlight)
    n_steps = sum(len(h.change_points) for h in hists)
    n_drift = sum(h.drift is not None for h in hists)
    n_breaks = sum(len(h.environment_breaks) for h in hists)
    text = (f"{len(hists)} series over {len({rp.version for h in hists for rp in h.releases})}"
            f" FlashInfer versions: {n_steps} change point(s), {n_drift} drifting, "
            f"{n_breaks} environment change(s).")
    if len(refs) > MAX_SERIES:
        text += (f" Showing {MAX_SERIES} of {len(refs)} series: choose GPUs or backends to "
                 "see the others.")
    marked = [v for v in releases if any(rp.version == v for h in hists for rp in h.releases)]
    links: list[Any] = [text]
    if marked:
        links.append(" Release pages: ")
        for v in sort_versions(marked):
            links += [dcc.Link(v, href=f"/release/{v}"), " "]
    return fig, rows, html.Span(links), series_table(hists, y), view


@callback(
    Output(f"{P}-selected", "data"),
    Input(f"{P}-graph", "clickData"),
    prevent_initial_call=True,
)
def select_point(click: dict[str, Any] | None) -> Any:
    points = (click or {}).get("points") or []
    data = points[0].get("customdata") if points else None
    if not isinstance(data, list) or len(data) != 2:
        return no_update  # a change-point or drift marker: nothing to list
    key, version = data
    return {"release": version} if key == RELEASE else {"series": key, "version": version}


POINT_COLUMNS = [("point", "point"), ("job", "job"), ("run", "run"), ("status", "status"),
                 ("median_us", "median µs"), ("ci_low_us", "CI low"),
                 ("ci_high_us", "CI high"), ("n_samples", "samples"), ("cv", "CV"),
                 ("throttled", "throttled"), ("gpu_name", "GPU"), ("created", "stored (UTC)")]


@callback(
    Output(f"{P}-points", "children"),
    Output(f"{P}-hist", "figure"),
    Output(f"{P}-hist-rows", "data"),
    Input(f"{P}-selected", "data"),
)
def show_selection(selected: dict[str, Any] | None) -> tuple[Any, ...]:
    """A clicked version of a series: its points (each a link to its job's table) and the raw
    samples of the newest one measured; a clicked release marker: a link to its page."""
    blank = empty_figure("Click a point of the chart to see its raw samples")
    if not selected:
        return (html.P("Click a point of the chart to list the points behind it.",
                       className="note"), blank, [])
    if selected.get("release"):
        v = selected["release"]
        return (html.P(["Release ", dcc.Link(f"{v}: its page (verdict, regressions, "
                                             "improvements)", href=f"/release/{v}")]),
                blank, [])
    key = str(selected.get("series") or "")
    with reading() as s:
        version = selected.get("version") or next(iter(reversed(
            queries.series_versions(s, key))), None)
        pts = queries.series_points(s, key, version) if version else []
        measured = next((p for p in pts if p["n_samples"]), None)
        samples = queries.point_samples(s, measured["id"]) if measured else []
        clock = queries.point_clock(s, measured["id"]) if measured else None
    if not pts:
        return html.P(f"No points of series {key} at {version}.", className="note"), blank, []
    rows = [{"point": p["id"], "point_link": f"/job/{p['job_id']}?point={p['id']}",
             "job": p["job_id"], "job_link": f"/job/{p['job_id']}", "run": p["run_id"],
             "status": p["status"], "median_us": p["median_us"], "ci_low_us": p["ci_low_us"],
             "ci_high_us": p["ci_high_us"], "n_samples": p["n_samples"], "cv": p["cv"],
             "throttled": "yes" if p["throttled"] else "", "gpu_name": p["gpu_name"] or "-",
             "created": p["created_at"].strftime("%Y-%m-%d %H:%M")} for p in pts]
    first = pts[0]
    params = ", ".join(f"{k}={v}" for k, v in (first["params"] or {}).items())
    head = html.Div([
        html.P([html.B(f"{first['backend']} · {first['gpu_sku'] or 'cpu'} at FlashInfer "
                       f"{version}"), f": {len(pts)} point(s). ", html.Span(params,
                                                                           className="note")]),
        simple_table(rows, POINT_COLUMNS, links={"point": "point_link", "job": "job_link"}),
    ])
    fig = histogram_figure(int(measured["id"]), samples, clock) if measured else blank
    csv_rows = [{"point_id": measured["id"], "iteration": i, "repeat": r, "latency_us": v}
                for i, (v, r) in enumerate(samples)] if measured else []
    return head, fig, csv_rows


@callback(
    Output(f"{P}-search", "data"),
    Input(f"{P}-view", "data"),
    Input(f"{P}-selected", "data"),
)
def sync_search(view: dict[str, Any] | None, selected: dict[str, Any] | None) -> Any:
    """The address bar: the view, and the series and version whose points are listed."""
    if view is None:
        return no_update  # the chart has not been drawn yet: the URL still holds the view
    chosen = selected if selected and selected.get("series") else {}
    return search_string({**view, "series": chosen.get("series"),
                          "version": chosen.get("version")})


register_csv(f"{P}-graph")
register_csv(f"{P}-hist")
register_url_sync(P)
