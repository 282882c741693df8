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

from kernelwatch.dashboard import queries
from kernelwatch.dashboard.common import control, dropdown, empty_figure, reading
from kernelwatch.dashboard.export import chart, register_csv
from kernelwatch.dashboard.urlstate import as_list, register_url_sync, search_string, url_sync
from kernelwatch_harness.catalogue import KERNELS, axes_of, shape_of

dash.register_page(__name__, path="/speedup", name="Speedup vs PyTorch",
                   title="kernelwatch · speedup vs PyTorch")

P = "speedup"
TORCH = queries.SPEEDUP_BACKENDS
MAX_BARS = 40  # scenarios drawn in the chart; the table (paged) lists them all


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
            style_table={"overflowX": "auto"},
        ),
        chart(f"{P}-graph", height=None),
        url_sync(P),
    ])


def scenario_label(kernel: str, params: dict[str, Any]) -> str:
    """The kernel, its shape (its family's shape parameters) and its dtype."""
    if kernel not in KERNELS:
        return kernel
    return f"{kernel} {shape_of(kernel, params)} {params.get('dtype', '')}".rstrip()


def speedup_table(scenarios: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of the table and the FlashInfer backends that appear as columns."""
    fi_backends = sorted({b for s in scenarios for b in s["backends"] if b not in TORCH})
    rows = []
    for sc in sorted(scenarios, key=lambda s: (s["kernel"], _shape_key(s["kernel"],
                                                                       s["params"]))):
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


def _shape_key(kernel: str, params: dict[str, Any]) -> list[Any]:
    """Scenarios in the order of their shape (the kernel's axes, as numbers)."""
    axes = axes_of(kernel) if kernel in KERNELS else []
    return [params.get(a) if isinstance(params.get(a), int | float) else 0 for a in axes]


def short_label(kernel: str, params: dict[str, Any]) -> str:
    """One short line per scenario on the chart; the full scenario is in the hover and table:
    the values of the kernel's first two axes."""
    axes = axes_of(kernel)[:2] if kernel in KERNELS else []
    return " ".join([kernel, *(f"{a}={params[a]}" for a in axes if a in params)])


def speedup_figure(rows: list[dict[str, Any]], torch_backends: list[str]) -> dict[str, Any]:
    """Horizontal bars, one per scenario and PyTorch backend: the best FlashInfer backend's
    speedup, with the break-even line at 1. Scenario names stay readable down the y axis."""
    rows = [r for r in rows if any(isinstance(r[f"speedup vs {t}"], float | int)
                                   for t in torch_backends)][:MAX_BARS]
    if not rows:
        return empty_figure("No scenario measured with both PyTorch and FlashInfer backends")
    labels = [r["label"] for r in rows]
    traces: list[dict[str, Any]] = []
    for t in torch_backends:
        xs = [r[f"speedup vs {t}"] if isinstance(r[f"speedup vs {t}"], float | int) else None
              for r in rows]
        traces.append({
            "type": "bar", "orientation": "h", "name": f"vs {t}", "y": labels, "x": xs,
            "text": [f"{x:.2f}x" if x else "" for x in xs], "textposition": "outside",
            "cliponaxis": False,
            "customdata": [f"{r['scenario']}<br>best FlashInfer: {r['best FlashInfer']}"
                           for r in rows],
            "hovertemplate": f"speedup vs {t}: " + "%{x:.3f}x<br>%{customdata}<extra></extra>",
        })
    xmax = max([x for tr in traces for x in tr["x"] if x] + [1.0])
    return {"data": traces, "layout": {
        "template": "plotly_white", "barmode": "group",
        "height": 140 + 26 * len(rows) * max(1, len(torch_backends)),
        "title": {"text": "speedup of the best FlashInfer backend over PyTorch "
                          "(> 1: FlashInfer faster)", "font": {"size": 15}},
        "xaxis": {"title": {"text": "PyTorch latency / FlashInfer latency"},
                  "range": [0, xmax * 1.15]},
        "yaxis": {"autorange": "reversed", "automargin": True, "tickfont": {"size": 12}},
        "shapes": [{"type": "line", "x0": 1, "x1": 1, "yref": "paper", "y0": 0, "y1": 1,
                    "line": {"color": "#52606d", "width": 1.5, "dash": "dash"}}],
        "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom"},
        "margin": {"t": 80, "l": 20, "r": 40, "b": 50},
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
    # PyTorch backends this GPU/version never ran get no column and no bars.
    torch = [t for t in TORCH if any(r[t] != "-" for r in rows)]
    names = ["scenario", *torch, *fi, "best FlashInfer", *(f"speedup vs {t}" for t in torch)]
    columns = [{"name": (f"{n} (µs)" if n in (*TORCH, *fi) else n), "id": n} for n in names]
    search = search_string({"gpu": gpu, "version": version, "kernels": ks})
    fig = speedup_figure(rows, torch)
    csv_rows = [{k: v for k, v in r.items() if k != "label"} for r in rows]
    return csv_rows, columns, fig, csv_rows, search


register_csv(f"{P}-graph")
register_url_sync(P)
