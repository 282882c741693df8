"""Small pieces every page uses: labelled controls, the metric table, hover text, tables."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dash import dcc, html
from sqlalchemy.orm import Session

from kernelwatch.core.db import new_session


@contextmanager
def reading() -> Iterator[Session]:
    """A session for one callback's reads. Closing (not rolling back) ends the transaction
    without expiring what was loaded, so rows stay readable after the block."""
    session = new_session()
    try:
        yield session
    finally:
        session.close()


def control(label: str, component: Any, wide: bool = False) -> html.Div:
    return html.Div([html.Label(label), component], className="control wide" if wide
                    else "control")


def dropdown(id_: Any, options: list[str] | list[dict[str, str]], value: Any,
             multi: bool = False, clearable: bool = False) -> dcc.Dropdown:
    opts = [o if isinstance(o, dict) else {"label": o, "value": o} for o in options]
    return dcc.Dropdown(id=id_, options=opts, value=value, multi=multi, clearable=clearable)


# y metric -> (points column, axis title). Every metric but latency is inversely proportional
# to the latency, so its CI comes from the latency CI's opposite ends.
METRICS: dict[str, tuple[str, str]] = {
    "latency": ("median_us", "median latency (µs)"),
    "tbps": ("tbps", "achieved bandwidth (TB/s)"),
    "tflops": ("tflops", "achieved TFLOP/s"),
    "pct_peak_bw": ("pct_peak_bw", "% of the SKU's peak memory bandwidth"),
    "pct_peak_flops": ("pct_peak_flops", "% of the SKU's peak 16-bit TFLOP/s"),
}


def metric_with_ci(row: dict[str, Any], metric: str) -> tuple[float | None, float | None,
                                                              float | None]:
    """(value, low, high) of a metric for one point row, None where it was not measured."""
    column = METRICS[metric][0]
    value = row.get(column)
    med, lo, hi = row.get("median_us"), row.get("ci_low_us"), row.get("ci_high_us")
    if value is None or not med or lo is None or hi is None:
        return value, None, None
    if metric == "latency":
        return value, lo, hi
    return value, value * med / hi if hi else None, value * med / lo if lo else None


ENV_KEYS = ("gpu_name", "driver", "driver_version", "cuda", "cuda_version", "torch",
            "torch_version", "flashinfer", "flashinfer_version", "sm_count", "sm_clock_mhz",
            "memory_clock_mhz", "power_limit_w", "hostname")


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def hover_text(row: dict[str, Any], extra: list[str] | None = None) -> str:
    """The full point: status, statistics, flags and the environment it ran in."""
    lines = list(extra or [])
    lines.append(f"status: <b>{row.get('status')}</b>"
                 + (f" ({str(row.get('error'))[:80]})" if row.get("error") else ""))
    if row.get("median_us") is not None:
        lines.append(f"median {fmt(row['median_us'])} µs, 95% CI [{fmt(row.get('ci_low_us'))}, "
                     f"{fmt(row.get('ci_high_us'))}]")
        lines.append(f"p10 {fmt(row.get('p10_us'))} / p90 {fmt(row.get('p90_us'))} µs")
    lines.append(f"samples: {row.get('n_samples')}, CV {fmt(row.get('cv'), 3)}")
    if row.get("tbps") is not None:
        lines.append(f"{fmt(row['tbps'], 3)} TB/s, {fmt(row.get('tflops'), 3)} TFLOP/s")
    lines.append("throttled: <b>yes</b>" if row.get("throttled") else "throttled: no")
    backend = row.get("backend")
    resolved = row.get("resolved_backend")
    lines.append(f"backend: {backend}" + (f" -> {resolved}" if resolved and resolved != backend
                                          else ""))
    lines.append(f"FlashInfer {row.get('flashinfer_version') or '-'}, timing "
                 f"{row.get('timing_method') or '-'}")
    if row.get("max_abs_error") is not None:
        lines.append(f"max abs error vs fp32: {fmt(row['max_abs_error'], 3)}")
    env = row.get("environment") or {}
    shown = [k for k in ENV_KEYS if k in env and not isinstance(env[k], dict | list)]
    if not shown:
        shown = [k for k, v in env.items() if not isinstance(v, dict | list)][:6]
    for k in shown:
        lines.append(f"{k}: {env[k]}")
    lines.append(f"point {row.get('id')} · run {row.get('run_id')} · job {row.get('job_id')}")
    return "<br>".join(lines)


def simple_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]],
                 links: dict[str, str] | None = None) -> html.Table:
    """A plain HTML table; ``links`` maps a column to the row key holding its href."""
    links = links or {}
    head = html.Thead(html.Tr([html.Th(title) for _, title in columns]))
    body = []
    for r in rows:
        cells = []
        for key, _ in columns:
            v = r.get(key)
            content: Any = fmt(v) if not isinstance(v, str) else v
            if key in links and r.get(links[key]):
                content = dcc.Link(content, href=r[links[key]])
            cells.append(html.Td(content, className="num" if isinstance(v, int | float)
                                 and not isinstance(v, bool) else None))
        body.append(html.Tr(cells))
    return html.Table([head, html.Tbody(body)], className="simple")


EMPTY_LAYOUT: dict[str, Any] = {"template": "plotly_white"}


def empty_figure(message: str) -> dict[str, Any]:
    return {
        "data": [],
        "layout": {
            **EMPTY_LAYOUT,
            "xaxis": {"visible": False},
            "yaxis": {"visible": False},
            "annotations": [{"text": message, "showarrow": False, "font": {"size": 15},
                             "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5}],
        },
    }
