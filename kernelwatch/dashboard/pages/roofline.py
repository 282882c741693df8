"""Roofline: each measured point of a kernel on one GPU SKU at its arithmetic intensity
(FLOPs per byte moved, FlashInfer's conventions) against the TFLOP/s it achieved, under the
SKU's spec-sheet roofs (memory bandwidth slope and 16-bit tensor-core ceiling) and the copy
bandwidth a worker measured on that SKU.

URL: /roofline?kernel=batch_decode&gpu=h100&version=0.7.2.post1&color=backend
"""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, callback, html

from kernelwatch.core import gpus
from kernelwatch.dashboard import queries
from kernelwatch.dashboard.common import control, dropdown, empty_figure, fmt, reading
from kernelwatch.dashboard.export import chart, register_csv
from kernelwatch.dashboard.urlstate import register_url_sync, search_string, url_sync
from kernelwatch_harness.catalogue import KERNELS, axes_of, shape_of

dash.register_page(__name__, path="/roofline", name="Roofline", title="kernelwatch · roofline")

P = "roofline"
ALL = "all"
# Colour by these first; any other parameter of the kernel may colour the points too.
COLOR_FIRST = ("backend", "flashinfer_version", "dtype")


def color_dims(kernel: str) -> list[str]:
    return list(dict.fromkeys([*COLOR_FIRST, *axes_of(kernel), *KERNELS[kernel].params]))


def layout(kernel: str | None = None, gpu: str | None = None, version: str | None = None,
           color: str | None = None, **_q: Any) -> html.Div:
    with reading() as s:
        kernels = queries.kernels_present(s)
        choices = queries.speedup_choices(s)
    if not kernels:
        return html.Div([html.H2("Roofline"), html.P("No measured points yet.",
                                                     className="note")])
    kernel = kernel if kernel in kernels else kernels[0]
    gpu_opts = choices["gpu"]
    gpu = gpu if gpu in gpu_opts else next((g for g in gpu_opts if gpus.sku_by_tag(g)),
                                           gpu_opts[0])
    vers = [ALL, *choices["version"]]
    return html.Div([
        html.H2("Roofline"),
        html.Div(className="controls", children=[
            control("kernel", dropdown(f"{P}-kernel", kernels, kernel)),
            control("GPU", dropdown(f"{P}-gpu", gpu_opts, gpu)),
            control("FlashInfer version", dropdown(f"{P}-version", vers,
                                                   version if version in vers else ALL)),
            control("colour by", dropdown(f"{P}-color", color_dims(kernel),
                                          color if color in color_dims(kernel) else "backend")),
        ]),
        html.P("Diagonal: memory-bound roof (bytes/s times FLOPs/byte); flat: compute roof. "
               "A point near a roof is limited by it; far below both, by something else (latency, "
               "occupancy, launch overhead).", className="note"),
        chart(f"{P}-graph", height=560),
        url_sync(P),
    ])


def _color_value(row: dict[str, Any], dim: str) -> str:
    if dim in ("backend", "flashinfer_version"):
        return queries.show(row.get(dim))
    return queries.show((row.get("params") or {}).get(dim))


def roofline_figure(rows: list[dict[str, Any]], kernel: str, gpu: str, color: str,
                    copy_bw: float | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    sku = gpus.sku_by_tag(gpu)
    if not rows:
        return empty_figure("No measured points for this selection"), []
    traces: list[dict[str, Any]] = []
    csv_rows = []
    for value in queries.sort_values(_color_value(r, color) for r in rows):
        sel = [r for r in rows if _color_value(r, color) == value]
        hov = []
        for r in sel:
            p = r["params"] or {}
            shape = shape_of(kernel, p)
            hov.append(f"<b>{r['backend']}</b> {r['flashinfer_version'] or ''}<br>{shape}<br>"
                       f"intensity {r['intensity']:.3g} FLOP/B<br>{r['tflops']:.3g} TFLOP/s, "
                       f"{fmt(r['tbps'], 3)} TB/s<br>median {fmt(r['median_us'])} µs · "
                       f"point {r['id']}")
            csv_rows.append({"point_id": r["id"], color: value, "backend": r["backend"],
                             "flashinfer_version": r["flashinfer_version"],
                             "intensity_flop_per_byte": r["intensity"],
                             "tflops": r["tflops"], "tbps": r["tbps"],
                             "median_us": r["median_us"], **p})
        traces.append({"type": "scatter", "mode": "markers", "name": value,
                       "x": [r["intensity"] for r in sel], "y": [r["tflops"] for r in sel],
                       "marker": {"size": 9, "opacity": 0.85}, "hovertext": hov,
                       "hovertemplate": "%{hovertext}<extra></extra>"})
    xs = [r["intensity"] for r in rows]
    lo, hi = min(xs) / 3, max(xs) * 3
    if sku:
        ridge = sku.peak_tflops_16bit / sku.peak_tbps
        lo, hi = min(lo, ridge / 10), max(hi, ridge * 3)
        roof_x = [lo, ridge, hi]
        roof_y = [sku.peak_tbps * lo, sku.peak_tflops_16bit, sku.peak_tflops_16bit]
        traces.append({"type": "scatter", "mode": "lines", "x": roof_x, "y": roof_y,
                       "name": f"{sku.tag} spec roof ({sku.peak_tbps} TB/s, "
                               f"{sku.peak_tflops_16bit:g} TFLOP/s)",
                       "line": {"color": "#111", "width": 2}, "hoverinfo": "name"})
    if copy_bw:
        top = sku.peak_tflops_16bit if sku else max(r["tflops"] for r in rows) * 10
        x_end = min(hi, top / copy_bw)
        traces.append({"type": "scatter", "mode": "lines", "x": [lo, x_end],
                       "y": [copy_bw * lo, copy_bw * x_end],
                       "name": f"measured copy bandwidth ({copy_bw:.3g} TB/s)",
                       "line": {"color": "#888", "width": 2, "dash": "dash"},
                       "hoverinfo": "name"})
    layout: dict[str, Any] = {
        "template": "plotly_white",
        "title": {"text": f"{kernel} on {gpu}: roofline", "font": {"size": 15}},
        "xaxis": {"title": {"text": "arithmetic intensity (FLOPs / byte)"}, "type": "log",
                  "dtick": "D2"},
        "yaxis": {"title": {"text": "achieved TFLOP/s"}, "type": "log", "dtick": "D2"},
        "legend": {"title": {"text": color}},
        "hovermode": "closest",
        "margin": {"t": 60, "l": 70, "r": 20, "b": 60},
    }
    if not sku:
        layout["title"]["text"] += " (no spec-sheet peaks known for this SKU)"
    return {"data": traces, "layout": layout}, csv_rows


@callback(
    Output(f"{P}-graph", "figure"),
    Output(f"{P}-graph-rows", "data"),
    Output(f"{P}-search", "data"),
    Input(f"{P}-kernel", "value"),
    Input(f"{P}-gpu", "value"),
    Input(f"{P}-version", "value"),
    Input(f"{P}-color", "value"),
)
def update(kernel: str, gpu: str, version: str, color: str) -> tuple[Any, ...]:
    fixed = {} if version in (None, ALL) else {"flashinfer_version": version}
    with reading() as s:
        rows = queries.roofline_points(s, kernel, gpu, fixed)
        copy_bw = queries.measured_copy_bandwidth(s, gpu)
    fig, csv_rows = roofline_figure(rows, kernel, gpu, color, copy_bw)
    search = search_string({"kernel": kernel, "gpu": gpu,
                            "version": None if version == ALL else version, "color": color})
    return fig, csv_rows, search


register_csv(f"{P}-graph")
register_url_sync(P)
