"""Compare: a contender against a baseline (two sets of runs, or two FlashInfer releases on one
GPU), point by point: a heatmap of the ratio contender/baseline over two swept parameters with
a marker where the change is significant, the regression list with CIs and confirmation state,
and the aggregate per kernel/backend. The statistics are ``kernelwatch.core.compare.compare_runs``'.

URL (the release notification links here):
  /compare?baseline=<run ids, comma-separated>&contender=<run ids>
  optional: threshold=0.03&group=<kernel>/<backend>&hx=kv_len&hy=batch_size
  or, to pick two releases on one GPU: /compare?gpu=h100&from=0.6.18.post1&to=0.7.2.post1
"""

from __future__ import annotations

import math
from collections import OrderedDict, defaultdict
from typing import Any

import dash
from dash import Input, Output, callback, ctx, dcc, html, no_update
from sqlalchemy import func, select

from kernelwatch.core.compare import (
    DEFAULT_THRESHOLD,
    IMPROVEMENT,
    REGRESSION,
    ComparisonResult,
    UnknownRunsError,
    compare_runs,
)
from kernelwatch.core.compare.runs import jobs_of_runs
from kernelwatch.core.models import Point
from kernelwatch.dashboard import queries
from kernelwatch.dashboard.common import control, dropdown, empty_figure, fmt, reading, simple_table
from kernelwatch.dashboard.comparisons import result_from_summary, varying_params
from kernelwatch.dashboard.export import chart, register_csv
from kernelwatch.dashboard.urlstate import (
    as_ints,
    as_list,
    register_url_sync,
    search_string,
    url_sync,
)
from kernelwatch_harness.catalogue import KERNELS, axes_of

dash.register_page(__name__, path="/compare", name="Compare", title="kernelwatch · compare")

P = "compare"
NONE_AXIS = "(none)"
_CACHE: OrderedDict[tuple[Any, ...], ComparisonResult] = OrderedDict()
_CACHE_SIZE = 8


def cached_compare(baseline: list[int], contender: list[int], threshold: float
                   ) -> tuple[ComparisonResult, str]:
    """The comparison and where it came from. A stored comparison of exactly these runs at
    this threshold, made after their newest point, is shown as stored (the release flow made
    it; recomputing thousands of bootstraps would take seconds). Otherwise compare_runs
    computes it, kept in a small cache so switching heatmap axes does not redo it; the key
    holds the newest point id, so a run still measuring is compared afresh."""
    with reading() as s:
        newest_at = queries.newest_point_time(s, [*baseline, *contender])
        for comp in queries.stored_comparisons(s, baseline, contender):
            fresh = newest_at is None or comp.created_at >= newest_at
            if fresh and abs(comp.threshold - threshold) < 1e-12:
                stored = result_from_summary(comp.summary or {})
                if stored is not None:
                    when = comp.created_at.strftime("%Y-%m-%d %H:%M")
                    return stored, f"stored comparison #{comp.id} of {when} UTC"
        newest = s.execute(select(func.max(Point.id)).where(
            Point.run_id.in_([*baseline, *contender]))).scalar()
        key = (tuple(sorted(baseline)), tuple(sorted(contender)), threshold, newest)
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key], "computed now"
        result = compare_runs(s, baseline, contender, threshold=threshold)
    _CACHE[key] = result
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return result, "computed now"


def layout(baseline: str | None = None, contender: str | None = None,
           threshold: str | None = None, group: str | None = None, hx: str | None = None,
           hy: str | None = None, gpu: str | None = None, **q: Any) -> html.Div:
    with reading() as s:
        runs = queries.recent_runs(s)
        versions = queries.versions_on_gpu(s)
        b_ids, c_ids = as_ints(baseline), as_ints(contender)
        from_v, to_v = q.get("from"), q.get("to")
        if gpu and from_v and to_v and not (b_ids or c_ids):
            b_ids, c_ids = queries.release_pair_runs(s, gpu, str(from_v), str(to_v))
        known = {r["value"] for r in runs}
        for rid in [*b_ids, *c_ids]:  # runs older than the recent list stay selectable
            if str(rid) not in known:
                for r in queries.runs_by_ids(s, [rid]):
                    runs.append({"label": queries.run_label(r), "value": str(r.id)})
    gpus = sorted(versions)
    gpu = gpu if gpu in versions else (gpus[0] if gpus else None)
    vers = versions.get(gpu or "", [])
    try:
        thr = float(threshold) if threshold else DEFAULT_THRESHOLD
    except ValueError:
        thr = DEFAULT_THRESHOLD
    return html.Div([
        html.H2("Compare"),
        html.Div(className="controls", children=[
            control("baseline runs", dropdown(f"{P}-baseline", runs, [str(i) for i in b_ids],
                                              multi=True, clearable=True), wide=True),
            control("contender runs", dropdown(f"{P}-contender", runs,
                                               [str(i) for i in c_ids], multi=True,
                                               clearable=True), wide=True),
            control("threshold", dcc.Input(id=f"{P}-threshold", type="number", min=0, max=0.5,
                                           step=0.005, value=thr, debounce=True)),
        ]),
        html.Div(className="controls", children=[
            html.Span("or two releases on one GPU:", className="note"),
            control("GPU", dropdown(f"{P}-gpu", gpus, gpu)),
            control("baseline version", dropdown(f"{P}-from", vers,
                                                 from_v if from_v in vers else None,
                                                 clearable=True)),
            control("contender version", dropdown(f"{P}-to", vers,
                                                  to_v if to_v in vers else None,
                                                  clearable=True)),
        ]),
        html.Div(id=f"{P}-summary", className="summary"),
        html.Div(className="controls", children=[
            control("kernel / backend", dropdown(f"{P}-group", [group] if group else [], group),
                    wide=True),
            control("heatmap x", dropdown(f"{P}-hx", [hx] if hx else [], hx)),
            control("heatmap y", dropdown(f"{P}-hy", [hy] if hy else [], hy)),
        ]),
        chart(f"{P}-heatmap", height=520),
        html.H3("Regressions"),
        html.Div(id=f"{P}-regressions"),
        html.H3("Per kernel and backend"),
        html.Div(id=f"{P}-groups"),
        url_sync(P),
    ])


@callback(
    Output(f"{P}-from", "options"),
    Output(f"{P}-to", "options"),
    Output(f"{P}-baseline", "value"),
    Output(f"{P}-contender", "value"),
    Input(f"{P}-gpu", "value"),
    Input(f"{P}-from", "value"),
    Input(f"{P}-to", "value"),
    prevent_initial_call=True,
)
def pick_releases(gpu: str | None, from_v: str | None, to_v: str | None) -> tuple[Any, ...]:
    """Two versions on one GPU -> every finished run of each there (all jobs)."""
    with reading() as s:
        vers = queries.versions_on_gpu(s).get(gpu or "", [])
        if ctx.triggered_id == f"{P}-gpu" or not (gpu and from_v and to_v):
            return vers, vers, no_update, no_update
        b, c = queries.release_pair_runs(s, gpu, from_v, to_v)
    return vers, vers, [str(i) for i in b], [str(i) for i in c]


def heatmap_figure(result: ComparisonResult, group: str, hx: str, hy: str
                   ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    kernel, _, backend = group.partition("/")
    pts = [p for p in result.points if p.kernel == kernel and p.backend == backend]
    if not pts:
        return empty_figure("No points of this kernel/backend in the comparison"), []
    xs = queries.sort_values(queries.show(p.params.get(hx)) for p in pts)
    ys = ([NONE_AXIS] if hy == NONE_AXIS else
          queries.sort_values(queries.show(p.params.get(hy)) for p in pts))
    cells: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for p in pts:
        yk = NONE_AXIS if hy == NONE_AXIS else queries.show(p.params.get(hy))
        cells[(queries.show(p.params.get(hx)), yk)].append(p)
    z: list[list[float | None]] = []
    text: list[list[str]] = []
    hover: list[list[str]] = []
    sig_x, sig_y, sig_col = [], [], []
    csv_rows = []
    for yv in ys:
        zr: list[float | None] = []
        tr: list[str] = []
        hr: list[str] = []
        for xv in xs:
            cell = cells.get((xv, yv), [])
            ratios = [p.ratio for p in cell if p.ratio]
            verdicts = {p.verdict for p in cell}
            if ratios:
                g = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
                zr.append(g)
                mark = "▲ " if REGRESSION in verdicts else "▼ " if IMPROVEMENT in verdicts else ""
                tr.append(f"{mark}{(g - 1) * 100:+.1f}%")
            else:
                zr.append(None)
                tr.append(", ".join(sorted({f"{p.baseline_status or '-'}→"
                                            f"{p.contender_status or '-'}" for p in cell}))
                          if cell else "")
            lines = [f"{hx}={xv}" + ("" if hy == NONE_AXIS else f", {hy}={yv}")]
            for p in cell:
                ci = (f"ratio {p.ratio:.3f} [{p.ci_low:.3f}, {p.ci_high:.3f}]"
                      if p.ratio is not None else "not compared")
                lines.append(f"{p.verdict}: {ci}; baseline {fmt(p.baseline_median_us)} µs "
                             f"({p.baseline_status}), contender {fmt(p.contender_median_us)} µs "
                             f"({p.contender_status}); n={p.n_baseline}/{p.n_contender}")
                csv_rows.append({"kernel": p.kernel, "backend": p.backend, **p.params,
                                 "verdict": p.verdict, "ratio": p.ratio, "ci_low": p.ci_low,
                                 "ci_high": p.ci_high, "baseline_median_us":
                                 p.baseline_median_us, "contender_median_us":
                                 p.contender_median_us, "baseline_status": p.baseline_status,
                                 "contender_status": p.contender_status})
            hr.append("<br>".join(lines))
            if REGRESSION in verdicts or IMPROVEMENT in verdicts:
                sig_x.append(xv)
                sig_y.append(yv)
                sig_col.append("#3d0000" if REGRESSION in verdicts else "#001f3d")
        z.append(zr)
        text.append(tr)
        hover.append(hr)
    finite = [abs(math.log(v)) for row in z for v in row if v]
    span = max([0.05, *finite])
    traces: list[dict[str, Any]] = [{
        "type": "heatmap", "x": xs, "y": ys, "z": z, "text": text,
        "texttemplate": "%{text}", "customdata": hover,
        "hovertemplate": "%{customdata}<extra></extra>",
        # plotly.js's RdBu runs blue (low) to red (high): red = contender slower.
        "colorscale": "RdBu", "zmid": 1.0,
        "zmin": math.exp(-span), "zmax": math.exp(span), "xgap": 2, "ygap": 2,
        "colorbar": {"title": {"text": "contender /<br>baseline"}},
    }]
    # Significant cells get an outline (category axes place cell i over [i-0.5, i+0.5]).
    shapes = [{"type": "rect", "xref": "x", "yref": "y",
               "x0": xs.index(x) - 0.48, "x1": xs.index(x) + 0.48,
               "y0": ys.index(y) - 0.48, "y1": ys.index(y) + 0.48,
               "line": {"color": c, "width": 3}}
              for x, y, c in zip(sig_x, sig_y, sig_col, strict=True)]
    layout = {
        "template": "plotly_white",
        "title": {"text": f"{kernel} / {backend}: latency ratio {result.contender_label} vs "
                          f"{result.baseline_label} (red: slower; outlined: significant, "
                          f"▲ regression, ▼ improvement)",
                  "font": {"size": 14}},
        "xaxis": {"title": {"text": hx}, "type": "category"},
        "yaxis": {"title": {"text": "" if hy == NONE_AXIS else hy}, "type": "category",
                  "showticklabels": hy != NONE_AXIS},
        "margin": {"t": 70, "l": 80, "r": 20, "b": 60},
        "shapes": shapes,
    }
    return {"data": traces, "layout": layout}, csv_rows


def regression_rows(result: ComparisonResult, baseline: list[int], contender: list[int]
                    ) -> list[dict[str, Any]]:
    """The regressed points, with the confirmation state of a stored comparison of the same
    runs where there is one (a comparison computed only here is 'not stored')."""
    with reading() as s:
        stored = {r.series_key: r for r in queries.regressions_for_runs(s, baseline, contender)}
    rows = []
    shown = varying_params(result.points)
    for p in sorted(result.regressions, key=lambda p: -(p.ratio or 0)):
        reg = stored.get(p.series_key)
        varying = {k: v for k, v in p.params.items() if k in shown}
        rows.append({
            "kernel": p.kernel, "backend": p.backend,
            "params": ", ".join(f"{k}={v}" for k, v in varying.items()),
            "change": f"{(p.ratio or 1) * 100 - 100:+.1f}%",
            "ratio": round(p.ratio or 0, 4), "ci": f"[{p.ci_low:.3f}, {p.ci_high:.3f}]",
            "baseline_us": round(p.baseline_median_us or 0, 3),
            "contender_us": round(p.contender_median_us or 0, 3),
            "state": reg.state if reg else "not stored",
            "confirm": (f"{reg.confirm_ratio:.3f} [{reg.confirm_ci_low:.3f}, "
                        f"{reg.confirm_ci_high:.3f}]" if reg and reg.confirm_ratio and
                        reg.confirm_ci_low and reg.confirm_ci_high else ""),
        })
    return rows


@callback(
    Output(f"{P}-summary", "children"),
    Output(f"{P}-group", "options"),
    Output(f"{P}-group", "value"),
    Output(f"{P}-hx", "options"),
    Output(f"{P}-hx", "value"),
    Output(f"{P}-hy", "options"),
    Output(f"{P}-hy", "value"),
    Output(f"{P}-heatmap", "figure"),
    Output(f"{P}-heatmap-rows", "data"),
    Output(f"{P}-regressions", "children"),
    Output(f"{P}-groups", "children"),
    Output(f"{P}-search", "data"),
    Input(f"{P}-baseline", "value"),
    Input(f"{P}-contender", "value"),
    Input(f"{P}-threshold", "value"),
    Input(f"{P}-group", "value"),
    Input(f"{P}-hx", "value"),
    Input(f"{P}-hy", "value"),
)
def update(baseline: list[str] | None, contender: list[str] | None, threshold: float | None,
           group: str | None, hx: str | None, hy: str | None) -> tuple[Any, ...]:
    b = [int(v) for v in as_list(baseline)]
    c = [int(v) for v in as_list(contender)]
    thr = float(threshold) if threshold is not None else DEFAULT_THRESHOLD
    search = search_string({"baseline": b, "contender": c,
                            "threshold": None if thr == DEFAULT_THRESHOLD else thr,
                            "group": group, "hx": hx, "hy": hy})
    blank = empty_figure("Pick baseline and contender runs (or two versions on one GPU)")
    if not b or not c:
        return ("", [], None, [], None, [], None, blank, [], "", "", search)
    try:
        result, source = cached_compare(b, c, thr)
    except (UnknownRunsError, ValueError) as exc:
        return (html.P(str(exc), className="error"), [], None, [], None, [], None,
                empty_figure(str(exc)), [], "", "", search)
    counts = result.counts
    with reading() as s:
        jobs = jobs_of_runs(s, [*b, *c])
    series = len(result.points)
    summary = html.P([
        f"{series} series from {jobs} job{'s' if jobs != 1 else ''}"
        + (" (a series measured by several runs of one version pools their samples)"
           if len(b) > 1 or len(c) > 1 else "") + ". ",
        f"{result.contender_label} (runs {', '.join(map(str, c))}) vs {result.baseline_label} "
        f"(runs {', '.join(map(str, b))}) on {', '.join(s or 'cpu' for s in result.gpu_skus)},"
        f" threshold {thr:.1%}: ",
        html.Span(f"{counts[REGRESSION]} regressions", className="bad" if counts[REGRESSION]
                  else None), ", ",
        html.Span(f"{counts[IMPROVEMENT]} improvements", className="good"
                  if counts[IMPROVEMENT] else None),
        f", {counts['unchanged']} unchanged, {counts['not_comparable']} not comparable, "
        f"{counts['baseline_only']} baseline only, {counts['contender_only']} contender only ",
        html.Span(f"({source}).", className="note"),
    ])
    groups = [f"{g.kernel}/{g.backend}" for g in result.groups]
    groups = list(dict.fromkeys(groups))
    if group not in groups:
        # Open on the group with the most regressions: that is what the link was sent for.
        worst = max(result.groups, key=lambda g: (g.regressions, g.compared), default=None)
        group = f"{worst.kernel}/{worst.backend}" if worst else None
    if group is None:
        return (summary, [], None, [], None, [], None, empty_figure("Nothing to compare"), [],
                "", "", search)
    kernel, _, backend = group.partition("/")
    gpts = [p for p in result.points if p.kernel == kernel and p.backend == backend]
    # Heatmap axes: the parameters that vary, in the kernel's axis order (the first is x).
    preferred = axes_of(kernel) if kernel in KERNELS else []
    varying = varying_params(gpts)
    axes = [a for a in preferred if a in varying] + [a for a in varying if a not in preferred]
    if not axes:
        axes = [a for a in preferred if gpts and a in gpts[0].params][:1]
    if hx not in axes:
        hx = axes[0] if axes else NONE_AXIS
    y_axes = [NONE_AXIS, *[a for a in axes if a != hx]]
    if hy not in y_axes:
        hy = y_axes[1] if len(y_axes) > 1 else NONE_AXIS
    fig, csv_rows = heatmap_figure(result, group, str(hx), str(hy))
    regs = regression_rows(result, b, c)
    reg_table = simple_table(regs, [
        ("kernel", "kernel"), ("backend", "backend"), ("params", "parameters"),
        ("change", "change"), ("ratio", "ratio"), ("ci", "95% CI"),
        ("baseline_us", "baseline µs"), ("contender_us", "contender µs"),
        ("state", "confirmation"), ("confirm", "confirmation ratio [CI]"),
    ]) if regs else html.P("No significant regression beyond the threshold.", className="note")
    g_rows = [{
        "group": f"{g.kernel}/{g.backend}", "gpu": g.gpu_sku or "cpu",
        "compared": f"{g.compared}/{g.points}",
        "geomean": (f"{g.geomean_ratio:.3f} [{g.geomean_ci_low:.3f}, {g.geomean_ci_high:.3f}]"
                    if g.geomean_ratio and g.geomean_ci_low and g.geomean_ci_high else "-"),
        "regressions": g.regressions, "improvements": g.improvements,
        "other": g.not_comparable + g.baseline_only + g.contender_only,
        "worst": f"{g.worst_ratio:.3f}" if g.worst_ratio else "-",
    } for g in result.groups]
    g_table = simple_table(g_rows, [
        ("group", "kernel/backend"), ("gpu", "GPU"), ("compared", "compared"),
        ("geomean", "geomean ratio [95% CI]"), ("regressions", "regressions"),
        ("improvements", "improvements"), ("other", "not comparable / one side"),
        ("worst", "worst ratio")])
    search = search_string({"baseline": b, "contender": c,
                            "threshold": None if thr == DEFAULT_THRESHOLD else thr,
                            "group": group, "hx": hx, "hy": hy})
    return (summary, groups, group, axes, hx, y_axes, hy, fig, csv_rows, reg_table, g_table,
            search)


register_csv(f"{P}-heatmap")
register_url_sync(P)
