"""Release: one FlashInfer release as the release flow benchmarked it (core/releases.py): the
verdict, each GPU tag's progress and timings, its jobs, the FlashInfer builds each tag's node
ran before measuring (longest first), the regressions with their
confirmation (its own ratio and CI), the improvements, and the series measured on one side
only. Each tag's comparison and each series' history are one click away. The overview and the
release notification link here.

URL: /release/<version> or /release?version=<version> (no version: the newest release)
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import dash
from dash import Input, Output, callback, dcc, html

from kernelwatch.core.compare import (
    BASELINE_ONLY,
    CONTENDER_ONLY,
    IMPROVEMENT,
    REGRESSION,
    ComparisonResult,
    PointComparison,
)
from kernelwatch.core.models import FINAL_TAG_STATES, Regression, ReleaseTag, TagState
from kernelwatch.core.releases import prebuild_lines, seconds_text
from kernelwatch.dashboard import queries
from kernelwatch.dashboard.common import empty_figure, reading, simple_table
from kernelwatch.dashboard.comparisons import result_from_summary, varying_params
from kernelwatch.dashboard.export import chart, register_csv

dash.register_page(__name__, path="/release", path_template="/release/<version>",
                   name="Release", title="kernelwatch · release")

P = "release"
OTHER_RELEASES = 12  # links to the newest others at the top of the page
# A release against a noisy or very different baseline can change thousands of series: the
# page stays fast by showing the first rows of each list (the worst first) and the chart's
# largest changes; the CSV export holds every row.
LIST_ROWS = 200
CHART_ROWS = 40
LISTS = {"regression": "Regressions", "improvement": "Improvements",
         "baseline_only": "Only in the previous release", "contender_only":
         "Only in this release",
         # PyTorch beside both releases: the same code, so a change is the node's
         "control": "PyTorch controls that moved (the same code in both runs: the node moved)",
         # and one measured on one side only failed there, on the node or in the harness
         "control_one_side": "PyTorch controls measured in one release's run only (the same "
                             "code in both: it failed on the node, not in FlashInfer)"}


def layout(version: str | None = None, **_q: Any) -> html.Div:
    with reading() as s:
        releases = queries.release_versions(s)
    if not releases:
        return html.Div([html.H2("Release"),
                         html.P("No release benchmarked yet.", className="note")])
    asked = version
    version = version if version in releases else next(iter(releases))
    others = [v for v in releases if v != version][:OTHER_RELEASES]
    links: list[Any] = ["Other releases: "]
    for v in others:
        links += [dcc.Link(v, href=f"/release/{v}"), " "]
    return html.Div([
        html.H2(f"Release {version}"),
        html.P(f"Release {asked} is not recorded: the newest is shown.", className="error")
        if asked and asked != version else None,
        html.P(links, className="note") if others else None,
        dcc.Store(id=f"{P}-version", data=version),
        html.Div(id=f"{P}-body"),
        html.H3("Significant changes, ratio new / previous with its 95% CI"),
        chart(f"{P}-ratios", height=None),
    ])


def duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "-"
    seconds = max(0.0, (end - start).total_seconds())
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _ratio_ci(ratio: float | None, low: float | None, high: float | None) -> str:
    if ratio is None:
        return "-"
    ci = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    return f"{ratio:.3f}{ci}"


def _history_link(series_key: str, gpu: str | None) -> str:
    return f"/history?series={series_key}&gpu={gpu or queries.NONE}"


def _params(params: dict[str, Any], shown: list[str]) -> str:
    return ", ".join(f"{k}={params.get(k)}" for k in shown if k in params)


def tag_timings(detail: queries.ReleaseDetail, tag: ReleaseTag) -> dict[str, str]:
    """How long a tag waited, benchmarked, and then took to compare and confirm."""
    jobs = [j for j in detail.jobs if j.id in (tag.job_ids or [])]
    starts = [j.started_at for j in jobs if j.started_at]
    ends = [j.finished_at for j in jobs if j.finished_at]
    started = min(starts) if starts else None
    finished = max(ends) if ends and len(ends) == len(jobs) else None
    final = tag.state in FINAL_TAG_STATES
    return {"waited": duration(detail.release.created_at, started),
            "benchmarked": duration(started, finished),
            "compared": duration(finished, tag.updated_at) if final else "-",
            "total": duration(detail.release.created_at, tag.updated_at) if final else "-"}


def progress_rows(detail: queries.ReleaseDetail) -> list[dict[str, Any]]:
    rows = []
    for tag in detail.tags:
        info = detail.response["tags"].get(tag.tag, {})
        regs = detail.regressions.get(tag.comparison_id or 0, [])
        states: dict[str, int] = {}
        for r in regs:
            states[str(r.state)] = states.get(str(r.state), 0) + 1
        stored = sum(sum(detail.points_by_job.get(j, {}).values()) for j in tag.job_ids or [])
        total = sum(j.total_points for j in detail.jobs if j.id in (tag.job_ids or []))
        comp = detail.comparisons.get(tag.comparison_id or 0)
        rows.append({
            "tag": tag.tag, "state": TagState(tag.state).value,
            "verdict": queries.release_verdict(info, states),
            "points": f"{stored:,} / {total:,}" if total else "-",
            **tag_timings(detail, tag),
            "compare": "compare" if comp else "", "compare_link":
                queries.compare_link(comp) if comp else "",
        })
    return rows


def job_rows(detail: queries.ReleaseDetail) -> list[dict[str, Any]]:
    tag_of = {j: t.tag for t in detail.tags for j in t.job_ids or []}
    return [{"id": j.id, "link": f"/job/{j.id}", "name": j.name, "tag": tag_of.get(j.id, "-"),
             "status": j.status,
             "points": f"{sum(detail.points_by_job.get(j.id, {}).values()):,} / "
                       f"{j.total_points:,}",
             "queued": duration(j.created_at, j.started_at),
             "ran": duration(j.started_at, j.finished_at)} for j in detail.jobs]


def build_rows(details: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every recorded build, each tag's longest first: the one the release waited for."""
    rows = []
    for tag, rec in sorted(((details or {}).get("prebuild") or {}).items()):
        for b in sorted(rec.get("builds") or [], key=lambda b: -(b.get("wall_seconds") or 0)):
            rows.append({"tag": tag, "kernel": b.get("kernel") or "-",
                         "version": b.get("version") or "-",
                         "wall": seconds_text(b.get("wall_seconds")),
                         "jit": seconds_text(b.get("jit_seconds")), "units": b.get("units"),
                         # older records do not count refusals apart, nor the ninja jobs
                         "unsupported": b.get("unsupported", "-"), "failed": b.get("failed"),
                         "max_jobs": b.get("max_jobs") or "-",
                         "ended": seconds_text(b.get("ended_after")),
                         "error": b.get("error") or ""})
    return rows


def change_rows(detail: queries.ReleaseDetail) -> list[dict[str, Any]]:
    """One row per series in each list, with the links it needs (and its list's name, for
    CSV). Regressions come from their stored rows (they carry the confirmation); the rest from
    the stored comparison's points."""
    rows: list[dict[str, Any]] = []
    for comp in detail.comparisons.values():
        result = result_from_summary(comp.summary or {})
        if result is None:
            continue
        shown = varying_params(result.points)
        compare = queries.compare_link(comp)
        for r in detail.regressions.get(comp.id, []):
            rows.append(_regression_row(r, shown, compare))
        for verdict in (IMPROVEMENT, BASELINE_ONLY, CONTENDER_ONLY):
            # The largest improvement first, as the regressions list the worst first; the
            # PyTorch controls apart, as the comparison counts them apart.
            points = sorted((p for p in result.points if p.verdict == verdict
                             and not p.control), key=lambda p: p.ratio or 1.0)
            rows += [_point_row(p, result, shown, compare) for p in points]
        moved = sorted((p for p in result.points
                        if p.control and p.verdict in (REGRESSION, IMPROVEMENT)),
                       key=lambda p: -abs(math.log(p.ratio or 1.0)))
        rows += [{**_point_row(p, result, shown, compare), "list": "control"} for p in moved]
        rows += [{**_point_row(p, result, shown, compare), "list": "control_one_side"}
                 for p in result.points
                 if p.control and p.verdict in (BASELINE_ONLY, CONTENDER_ONLY)]
    return rows


def _regression_row(r: Regression, shown: list[str], compare: str) -> dict[str, Any]:
    return {"list": "regression", "series_key": r.series_key, "gpu": r.gpu_sku or "cpu",
            "kernel": r.kernel, "backend": r.backend, "params": _params(r.params, shown),
            "change": f"{(r.ratio - 1) * 100:+.1f}%", "ratio": r.ratio, "ci_low": r.ci_low,
            "ci_high": r.ci_high, "ratio_ci": _ratio_ci(r.ratio, r.ci_low, r.ci_high),
            "state": str(r.state),
            "confirmation": _ratio_ci(r.confirm_ratio, r.confirm_ci_low, r.confirm_ci_high),
            "history": "history", "history_link": _history_link(r.series_key, r.gpu_sku),
            "compare": "compare", "compare_link": compare}


def _point_row(p: PointComparison, result: ComparisonResult, shown: list[str], compare: str
               ) -> dict[str, Any]:
    one_side = p.verdict in (BASELINE_ONLY, CONTENDER_ONLY)
    status = p.baseline_status if p.verdict == BASELINE_ONLY else p.contender_status
    median = p.baseline_median_us if p.verdict == BASELINE_ONLY else p.contender_median_us
    return {"list": str(p.verdict), "series_key": p.series_key, "gpu": p.gpu_sku or "cpu",
            "kernel": p.kernel, "backend": p.backend, "params": _params(p.params, shown),
            "change": "" if one_side or p.change_pct is None else f"{p.change_pct:+.1f}%",
            "ratio": p.ratio, "ci_low": p.ci_low, "ci_high": p.ci_high,
            "ratio_ci": _ratio_ci(p.ratio, p.ci_low, p.ci_high),
            "status": status or "-", "median_us": median,
            "version": result.baseline_label if p.verdict == BASELINE_ONLY
            else result.contender_label,
            "history": "history", "history_link": _history_link(p.series_key, p.gpu_sku),
            "compare": "compare", "compare_link": compare}


CHANGE_COLUMNS = [("gpu", "GPU"), ("kernel", "kernel"), ("backend", "backend"),
                  ("params", "parameters"), ("change", "change"),
                  ("ratio_ci", "ratio [95% CI]")]
LIST_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "regression": [*CHANGE_COLUMNS, ("state", "confirmation"),
                   ("confirmation", "confirmation's ratio [95% CI]"), ("history", ""),
                   ("compare", "")],
    "improvement": [*CHANGE_COLUMNS, ("history", ""), ("compare", "")],
    "baseline_only": [("gpu", "GPU"), ("kernel", "kernel"), ("backend", "backend"),
                      ("params", "parameters"), ("version", "measured with"),
                      ("status", "status"), ("median_us", "median µs"), ("history", "")],
}
LIST_COLUMNS["contender_only"] = LIST_COLUMNS["baseline_only"]
LIST_COLUMNS["control"] = LIST_COLUMNS["improvement"]
LIST_COLUMNS["control_one_side"] = LIST_COLUMNS["baseline_only"]
LINKS = {"history": "history_link", "compare": "compare_link"}


def ratio_figure(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The regressions and improvements as ratios with their CIs, worst at the top."""
    changed = [r for r in rows if r["list"] in ("regression", "improvement") and r["ratio"]]
    if not changed:
        return empty_figure("No significant change beyond the threshold")
    changed.sort(key=lambda r: r["ratio"])
    if len(changed) > CHART_ROWS:  # the largest changes either way
        changed = sorted(changed, key=lambda r: -abs(math.log(r["ratio"])))[:CHART_ROWS]
        changed.sort(key=lambda r: r["ratio"])
    labels = [f"{r['kernel']}/{r['backend']} {r['params']} · {r['gpu']}" for r in changed]
    traces = []
    for name, color in (("regression", "#b42318"), ("improvement", "#067647")):
        idx = [i for i, r in enumerate(changed) if r["list"] == name]
        if not idx:
            continue
        traces.append({
            "type": "scatter", "mode": "markers", "name": name,
            "x": [changed[i]["ratio"] for i in idx], "y": [labels[i] for i in idx],
            "marker": {"color": color, "size": 10},
            "error_x": {"type": "data", "visible": True,
                        "array": [(changed[i]["ci_high"] or changed[i]["ratio"])
                                  - changed[i]["ratio"] for i in idx],
                        "arrayminus": [changed[i]["ratio"] - (changed[i]["ci_low"]
                                                              or changed[i]["ratio"])
                                       for i in idx]},
            "hovertemplate": "%{y}: %{x:.3f}<extra></extra>",
        })
    return {"data": traces, "layout": {
        "template": "plotly_white", "height": 140 + 26 * len(changed),
        "xaxis": {"title": {"text": "latency ratio, new / previous (> 1: slower)"}},
        "yaxis": {"type": "category", "categoryorder": "array", "categoryarray": labels,
                  "automargin": True},
        "shapes": [{"type": "line", "xref": "x", "yref": "paper", "x0": 1, "x1": 1, "y0": 0,
                    "y1": 1, "line": {"color": "#7b8794", "dash": "dash"}}],
        "margin": {"t": 20, "l": 60, "r": 20, "b": 50}, "hovermode": "closest"}}


def header(detail: queries.ReleaseDetail) -> html.Div:
    resp, rel = detail.response, detail.release
    verdict = resp["verdict"]
    baseline = resp.get("baseline") or {}
    notification = resp.get("notification") or {}
    notified = (f"notified {duration(rel.created_at, rel.notified_at)} after it was recorded"
                if rel.notified_at else "not notified yet")
    if notification and not notification.get("sent"):
        notified += f" (the message was not sent: {notification.get('error') or '-'})"
    return html.Div(className="card", children=[
        html.H3([f"FlashInfer {rel.version}",
                 f" vs {rel.previous_version}" if rel.previous_version else
                 " (no previous release)", ": ",
                 html.Span(verdict, id=f"{P}-verdict",
                           className="bad" if verdict == "regressed" else
                           "good" if verdict == "passed" else None)]),
        html.P(f"status {resp['status']} · from {rel.source} · recorded "
               f"{rel.created_at.strftime('%Y-%m-%d %H:%M')} UTC · {notified}"),
        html.P(f"baseline: {baseline.get('version') or '-'} ({baseline.get('source') or '-'})",
               className="note") if baseline else None,
        html.P(resp["message"], className="error") if resp.get("message") else None,
    ])


@callback(
    Output(f"{P}-body", "children"),
    Output(f"{P}-ratios", "figure"),
    Output(f"{P}-ratios-rows", "data"),
    Input(f"{P}-version", "data"),
)
def render(version: str | None) -> tuple[Any, ...]:
    with reading() as s:
        detail = queries.release_detail(s, version) if version else None
        if detail is None:
            return (html.P(f"Release {version} is not recorded.", className="error"),
                    empty_figure("No such release"), [])
        progress, jobs, rows = progress_rows(detail), job_rows(detail), change_rows(detail)
        builds = build_rows(detail.release.details)
        built = prebuild_lines((detail.release.details or {}).get("prebuild"))
        head = header(detail)
    sections: list[Any] = [
        head,
        html.H3("Progress per GPU"),
        simple_table(progress, [("tag", "GPU tag"), ("state", "state"),
                                ("verdict", "verdict"), ("points", "points stored"),
                                ("waited", "waited for a node"),
                                ("benchmarked", "benchmarked in"),
                                ("compared", "compared and confirmed in"),
                                ("total", "done after"), ("compare", "")],
                     links={"compare": "compare_link"}) if progress else
        html.P("No GPU tag: nothing was benchmarked.", className="note"),
        html.H3("Jobs"),
        simple_table(jobs, [("id", "job"), ("name", "name"), ("tag", "GPU tag"),
                            ("status", "status"), ("points", "points stored"),
                            ("queued", "queued for"), ("ran", "ran for")],
                     links={"id": "link", "name": "link"}) if jobs else
        html.P("No jobs.", className="note"),
    ]
    if builds:
        sections += [
            html.H3("The release's builds"),
            html.Div(id=f"{P}-builds", children=[
                *(html.P(line, className="note") for line in built),
                simple_table(builds, [("tag", "GPU tag"), ("kernel", "kernel"),
                                      ("version", "FlashInfer"), ("wall", "built in"),
                                      ("jit", "of which JIT"), ("units", "units"),
                                      ("unsupported", "refused"), ("failed", "failed"),
                                      ("max_jobs", "MAX_JOBS"),
                                      ("ended", "ended after"), ("error", "error")])])]
    for name, title in LISTS.items():
        part = [r for r in rows if r["list"] == name]
        more = (html.P(f"… and {len(part) - LIST_ROWS} more: the CSV under the chart holds "
                       "every row.", className="note") if len(part) > LIST_ROWS else None)
        sections += [html.H3(f"{title} ({len(part)})"), html.Div(
            id=f"{P}-{name.replace('_', '-')}",
            children=[simple_table(part[:LIST_ROWS], LIST_COLUMNS[name], links=LINKS), more]
            if part else html.P("None.", className="note"))]
    csv_rows = [{k: v for k, v in r.items() if not k.endswith("_link") and k not in
                 ("history", "compare", "ratio_ci")} for r in rows]
    return sections, ratio_figure(rows), csv_rows


register_csv(f"{P}-ratios")
