"""Speedup vs PyTorch: the table the seed articles print from memory, measured. For each
scenario (kernel and shape) the median latency of torch-math (the eager matmul-softmax-matmul),
torch-sdpa (``scaled_dot_product_attention``) and each FlashInfer backend, and FlashInfer's
speedup over both. Only ``ok`` points count: a backend that failed its correctness check has no
latency worth comparing.

URL: /speedup?gpu=h100&version=0.7.2.post1&kernels=single_decode,batch_decode
"""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, callback, dash_table, html

from dashboard import queries
from dashboard.common import control, dropdown, empty_figure, fmt, reading
from dashboard.export import chart, register_csv
from dashboard.urlstate import as_list, register_url_sync, search_string, url_sync

dash.register_page(__name__, path="/speedup", name="Speedup vs PyTorch",
                   title="kernelwatch · speedup vs PyTorch")

P = "speedup"
TORCH = queries.SPEEDUP_BACKENDS
SHAPE_KEYS = (("batch_size", "b"), ("qo_len", "q"), ("kv_len", "kv"))
MAX_BARS = 24  # scenarios drawn in the chart; the table (paged) lists them all


def layout(gpu: str | None = None, version: str | None = None, kernels: str | None = None,
           **_q: Any) -> html.Div:
    with reading() as s:
        choices = queries.speedup_choices(s)
        present = queries.kernels_present(s)
    if not present:
        return html.Div([html.H2("Speedup vs PyTorch"),
                         html.P("No measured points yet.", className="note")])
    gpu = gpu if gpu in choices["gpu"] else choices["gpu"][0]
    vers = choices["version"]
    version = version if version in vers else (vers[-1] if vers else None)
    wanted = [k for k in as_list(kernels) if k in present] or present
    return html.Div([
        html.H2("Speedup vs PyTorch"),
        html.Div(className="controls", children=[
            control("GPU", dropdown(f"{P}-gpu", choices["gpu"], gpu)),
            control("FlashInfer version", dropdown(f"{P}-version", vers, version)),
            control("kernels", dropdown(f"{P}-kernels", present, wanted, multi=True),
                    wide=True),
        ]),
        html.P("speedup = PyTorch latency / FlashInfer latency (> 1: FlashInfer is faster). "
               "Latencies are medians of the raw samples; unmeasured or failed cells show "
               "their status.", className="note"),
        dash_table.DataTable(  # type: ignore[attr-defined]
            id=f"{P}-table", sort_action="native", page_size=30,
            style_cell={"fontFamily": "system-ui, sans-serif", "fontSize": 13,
                        "padding": "3px 8px"},
            style_header={"fontWeight": 600, "backgroundColor": "#f0f2f5"},
            style_cell_conditional=[{"if": {"column_id": "scenario"}, "textAlign": "left"}],
        ),
        chart(f"{P}-graph", height=480),
        url_sync(P),
    ])


def scenario_label(kernel: str, params: dict[str, Any]) -> str:
    kind = "decode" if "decode" in kernel else "prefill"
    shape = " ".join(f"{short}={params[k]}" for k, short in SHAPE_KEYS if k in params)
    heads = f"{params.get('num_qo_heads')}/{params.get('num_kv_heads')}/" \
            f"{params.get('head_dim', params.get('head_dim_ckv'))}"
    extra = " causal" if params.get("causal") else ""
    return f"{kernel} ({kind}) {shape} h={heads} {params.get('dtype', '')}{extra}"


def speedup_table(scenarios: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of the table and the FlashInfer backends that appear as columns."""
    fi_backends = sorted({b for s in scenarios for b in s["backends"] if b not in TORCH})
    rows = []
    for sc in sorted(scenarios, key=lambda s: (s["kernel"], [s["params"].get(k, 0) for k, _ in
                                                              SHAPE_KEYS])):
        row: dict[str, Any] = {"scenario": scenario_label(sc["kernel"], sc["params"]),
                               "label": short_label(sc["kernel"], sc["params"])}
        lat: dict[str, float] = {}
        for b in (*TORCH, *fi_backends):
            m = sc["backends"].get(b)
            if m is None:
                row[b] = "-"
            elif m["status"] != "ok" or m["median_us"] is None:
                row[b] = m["status"]
            else:
                lat[b] = m["median_us"]
                row[b] = round(m["median_us"], 2)
        best_fi = min((lat[b] for b in fi_backends if b in lat), default=None)
        best_name = next((b for b in fi_backends if b in lat and lat[b] == best_fi), "")
        row["best FlashInfer"] = best_name
        for t in TORCH:
            row[f"speedup vs {t}"] = round(lat[t] / best_fi, 2) if best_fi and t in lat else "-"
        rows.append(row)
    return rows, fi_backends


def short_label(kernel: str, params: dict[str, Any]) -> str:
    """Two short lines under a bar group; the full scenario is in the hover and the table."""
    shape = " ".join(f"{short}={params[k]}" for k, short in SHAPE_KEYS if k in params)
    return f"{kernel}<br>{shape}"


def _bar_text(y: float | None, status: str) -> str:
    if y is None:
        return status if status != "-" else ""
    return f"{y:.0f}" if y >= 100 else fmt(y, 3)


def speedup_figure(rows: list[dict[str, Any]], fi_backends: list[str]) -> dict[str, Any]:
    if not rows:
        return empty_figure("No scenario measured with both PyTorch and FlashInfer backends")
    total = len(rows)
    rows = rows[:MAX_BARS]
    shown = "" if total <= MAX_BARS else f"; first {MAX_BARS} of {total} scenarios, all in " \
        "the table"
    traces = []
    for b in (*TORCH, *fi_backends):
        ys = [r[b] if isinstance(r[b], int | float) else None for r in rows]
        traces.append({"type": "bar", "name": b, "x": [r["label"] for r in rows], "y": ys,
                       "text": [_bar_text(y, str(r[b])) for y, r in zip(ys, rows, strict=True)],
                       "customdata": [r["scenario"] for r in rows],
                       "textposition": "outside", "cliponaxis": False,
                       "hovertemplate": f"{b}: " + "%{y:.4g} µs<br>%{customdata}"
                                        "<extra></extra>"})
    return {"data": traces, "layout": {
        "template": "plotly_white", "barmode": "group",
        "title": {"text": f"median latency per scenario (µs, log scale; lower is better{shown})",
                  "font": {"size": 15}},
        "yaxis": {"title": {"text": "median latency (µs)"}, "type": "log"},
        "xaxis": {"automargin": True, "tickangle": 0, "tickfont": {"size": 11}},
        "uniformtext": {"minsize": 10, "mode": "show"},
        "legend": {"orientation": "h", "y": 1.08},
        "margin": {"t": 80, "l": 70, "r": 20, "b": 40},
    }}


@callback(
    Output(f"{P}-table", "data"),
    Output(f"{P}-table", "columns"),
    Output(f"{P}-graph", "figure"),
    Output(f"{P}-graph-rows", "data"),
    Output(f"{P}-search", "data"),
    Input(f"{P}-gpu", "value"),
    Input(f"{P}-version", "value"),
    Input(f"{P}-kernels", "value"),
)
def update(gpu: str, version: str | None, kernels: list[str] | None) -> tuple[Any, ...]:
    ks = as_list(kernels)
    with reading() as s:
        scenarios = queries.speedup_rows(s, gpu, version, ks)
    # Only scenarios where PyTorch and FlashInfer both ran say anything about a speedup.
    scenarios = [sc for sc in scenarios if any(b in sc["backends"] for b in TORCH)
                 and any(b not in TORCH for b in sc["backends"])]
    rows, fi = speedup_table(scenarios)
    names = ["scenario", *TORCH, *fi, "best FlashInfer", *(f"speedup vs {t}" for t in TORCH)]
    columns = [{"name": (f"{n} (µs)" if n in (*TORCH, *fi) else n), "id": n} for n in names]
    search = search_string({"gpu": gpu, "version": version, "kernels": ks})
    fig = speedup_figure(rows, fi)
    csv_rows = [{k: v for k, v in r.items() if k != "label"} for r in rows]
    return csv_rows, columns, fig, csv_rows, search


register_csv(f"{P}-graph")
register_url_sync(P)
