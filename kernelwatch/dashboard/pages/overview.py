"""Overview: the live fleet, recent jobs with their progress, and the latest releases with
their verdict per GPU. Refreshes itself every 10 seconds."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, callback, dcc, html

from kernelwatch.dashboard import queries
from kernelwatch.dashboard.common import reading, simple_table

dash.register_page(__name__, path="/", name="Overview", title="kernelwatch")

P = "overview"


def layout(**_query: Any) -> html.Div:
    return html.Div([
        html.H2("Overview"),
        dcc.Interval(id=f"{P}-tick", interval=10_000),
        html.Div(id=f"{P}-body", children=render()),
    ])


def render() -> list[Any]:
    with reading() as s:
        nodes = queries.live_nodes(s)
        jobs = queries.recent_jobs(s)
        releases = queries.latest_releases(s)
    for j in jobs:
        j["link"] = f"/job?job={j['id']}"
        j["curves"] = f"/curves?job={j['id']}&kernel={j['kernel']}"
        j["curves_label"] = "curves"
        j["progress"] = f"{j['points']} ({j['progress_pct']:.0f}%)"
    for r in releases:
        r["compare_label"] = "compare" if r["compare_link"] else ""
        r["release_link"] = f"/release/{r['version']}"
    live = sum(1 for n in nodes if n["state"] == "live")
    return [
        html.Div(className="cards", children=[
            html.Div(className="card", children=[
                html.H3(f"Nodes ({live} live of {len(nodes)})"),
                simple_table(nodes, [("name", "node"), ("gpu", "GPU"), ("tags", "tags"),
                                     ("state", "state"), ("heartbeat_age_s", "heartbeat age (s)"),
                                     ("versions_ready", "FlashInfer versions ready"),
                                     ("copy_bw_tbps", "copy TB/s")])
                if nodes else html.P("No worker has registered yet.", className="note"),
            ]),
            html.Div(className="card", children=[
                html.H3("Latest releases"),
                simple_table(releases, [("version", "version"), ("previous", "vs"),
                                        ("gpu", "GPU"), ("verdict", "verdict"),
                                        ("compare_label", "")],
                             links={"version": "release_link",
                                    "compare_label": "compare_link"})
                if releases else html.P("No release benchmarked yet.", className="note"),
            ]),
        ]),
        html.Div(className="card", style={"marginTop": "16px"}, children=[
            html.H3("Recent jobs"),
            simple_table(jobs, [("id", "job"), ("name", "name"), ("kernel", "kernel"),
                                ("status", "status"), ("progress", "points stored"),
                                ("errors", "errors"), ("source", "source"),
                                ("created", "created (UTC)"), ("curves_label", "")],
                         links={"id": "link", "name": "link", "curves_label": "curves"})
            if jobs else html.P("No jobs yet: submit one with `kernelwatch submit`.",
                                className="note"),
        ]),
    ]


@callback(Output(f"{P}-body", "children"), Input(f"{P}-tick", "n_intervals"),
          prevent_initial_call=True)
def refresh(_n: int | None) -> list[Any]:
    return render()
