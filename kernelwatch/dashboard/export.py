"""Every chart exports PNG (the modebar's camera button, configured here) and its data as CSV
(a button under it, fed by a ``dcc.Store`` of the rows the chart was drawn from)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from dash import Input, Output, State, callback, dcc, html, no_update


def graph_config(name: str) -> dict[str, Any]:
    return {
        "displaylogo": False,
        # Benchmark data stays in-house: no upload-to-Plotly-Cloud button.
        "showSendToCloud": False,
        "modeBarButtonsToRemove": ["sendDataToCloud"],
        "toImageButtonOptions": {"format": "png", "filename": f"kernelwatch-{name}", "scale": 2},
    }


def chart(chart_id: str, height: int | None = 520) -> html.Div:
    """A graph with its CSV download button and the store of its rows. ``height=None``: the
    figure's own layout height decides (charts whose size follows their data)."""
    return html.Div(
        className="chart",
        children=[
            dcc.Loading(dcc.Graph(id=chart_id, config=graph_config(chart_id),  # type: ignore[arg-type]
                                  style={"height": f"{height}px"} if height else {})),
            html.Div(className="chart-actions", children=[
                html.Button("Download CSV", id=f"{chart_id}-csv", className="button"),
                dcc.Download(id=f"{chart_id}-download"),
                dcc.Store(id=f"{chart_id}-rows"),
            ]),
        ],
    )


def to_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _cell(v) for k, v in r.items()})
    return buf.getvalue()


def _cell(v: Any) -> Any:
    if isinstance(v, dict | list):
        return json.dumps(v, sort_keys=True)
    return v


def register_csv(chart_id: str) -> None:
    @callback(
        Output(f"{chart_id}-download", "data"),
        Input(f"{chart_id}-csv", "n_clicks"),
        State(f"{chart_id}-rows", "data"),
        prevent_initial_call=True,
    )
    def _download(n_clicks: int | None, rows: list[dict[str, Any]] | None) -> Any:
        if not n_clicks or not rows:
            return no_update
        return {"content": to_csv(rows), "filename": f"kernelwatch-{chart_id}.csv",
                "type": "text/csv"}
