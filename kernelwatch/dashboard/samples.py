"""A point's raw samples as a histogram, for every page that clicks through to a point (job,
history)."""

from __future__ import annotations

from typing import Any

from kernelwatch.core.series import ClockSummary
from kernelwatch.core.stats import summarize
from kernelwatch.dashboard.common import empty_figure, fmt


def clock_note(clock: ClockSummary | None) -> str:
    """The clock the samples were kept at, for the histogram's title."""
    if clock is None or clock.median_mhz is None:
        return ""
    if not clock.floored:  # timing.clock_floor 0: every sample kept, whatever the clock
        return f" · clock {clock.median_mhz:.0f} MHz"
    if not clock.floor_met:
        return f" · clock {clock.median_mhz:.0f} MHz: <b>under the floor</b> (throttled)"
    return f" · clock {clock.median_mhz:.0f} MHz (boost), {clock.discarded} retaken"


def histogram_figure(point_id: int, samples: list[tuple[float, int]],
                     clock: ClockSummary | None = None) -> dict[str, Any]:
    """The raw samples, one stacked trace per repeat (a repeat sitting apart from the others
    is GPU state, and it is what widens the CI), with the median and its CI."""
    if not samples:
        return empty_figure(f"Point {point_id} has no samples (not measured)")
    values = [v for v, _ in samples]
    repeats = sorted({r for _, r in samples})
    st = summarize(values, [r for _, r in samples])
    shapes = [
        {"type": "rect", "xref": "x", "yref": "paper", "x0": st.ci_low, "x1": st.ci_high,
         "y0": 0, "y1": 1, "fillcolor": "rgba(214,39,40,0.12)", "line": {"width": 0},
         "layer": "below"},
        {"type": "line", "xref": "x", "yref": "paper", "x0": st.median, "x1": st.median,
         "y0": 0, "y1": 1, "line": {"color": "#d62728", "width": 2}},
    ]
    lo, hi = min(values), max(values)
    bins = {"start": lo, "end": hi, "size": (hi - lo) / min(60, max(10, len(values) // 2))
            or 1.0}
    data = [
        {"type": "histogram", "x": [v for v, rr in samples if rr == r],
         "name": f"repeat {r + 1}" if len(repeats) > 1 else "samples", "xbins": bins,
         "hovertemplate": "%{x} µs: %{y} samples<extra></extra>"}
        for r in repeats
    ]
    split = f" in {len(repeats)} repeats" if len(repeats) > 1 else ""
    return {
        "data": data,
        "layout": {
            "template": "plotly_white",
            "title": {"text": f"point {point_id}: {len(values)} raw samples{split} · median "
                              f"{fmt(st.median)} µs (red), 95% CI shaded · CV {st.cv:.3f}"
                              + clock_note(clock),
                      "font": {"size": 14}},
            "xaxis": {"title": {"text": "latency (µs)"}},
            "yaxis": {"title": {"text": "samples"}},
            "barmode": "stack", "showlegend": len(repeats) > 1,
            "shapes": shapes, "bargap": 0.05, "margin": {"t": 60, "l": 60, "r": 20, "b": 50},
        },
    }
