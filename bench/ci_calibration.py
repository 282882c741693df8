"""Whether the point CIs are as wide as two runs of the same sweep say they should be: for
every point measured twice (run 1 and run 2 of bench/gpu_sweep.py's raw files), how often the
two runs' CIs overlap, with the percentile interval of the two-stage bootstrap and with the CI
the service stores (core.stats: its standard error scaled by Student's t for the repeat
count), and the difference of the two medians in units of its bootstrap standard error, whose
tails show how far a z interval can be trusted.

    python bench/ci_calibration.py OUT/raw-*.jsonl

Prints per file the points measured twice and how many of their CIs overlap (percentile and
stored), then the tails of the two runs' differences and the CIs' half-widths.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from kernelwatch.core.fixtures import read_raw
from kernelwatch.core.stats import (
    BOOTSTRAP_RESAMPLES,
    Summary,
    repeat_labels,
    resampled_medians,
    summarize,
)


def points(path: Path, run: int) -> dict[tuple[str, int, str], dict[str, Any]]:
    """Run ``run``'s point messages with samples in a raw file, by (suite, point, backend)."""
    return {
        (r["meta"]["suite"], int(m["point_index"]), str(m["backend"])): m
        for r in read_raw([path])
        if int(r["meta"]["run"]) == run
        for m in r["points"]
        if m.get("samples_us")
    }


def stored_stats(m: dict[str, Any]) -> Summary:
    """A point message's statistics as the service stores them (two-stage CI over repeats)."""
    return summarize(m["samples_us"], repeat_labels(m.get("repeat_sizes"), len(m["samples_us"])))


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def bootstrap(m: dict[str, Any]) -> tuple[float, float, float, float]:
    """(median, percentile low, percentile high, standard error) of the two-stage bootstrap
    exactly as core.stats draws it (same seed and resamples)."""
    x = np.asarray(m["samples_us"], dtype=np.float64)
    labels = np.asarray(repeat_labels(m.get("repeat_sizes"), x.size))
    reps = resampled_medians(x, labels, BOOTSTRAP_RESAMPLES, np.random.default_rng(0))
    lo, hi = np.quantile(reps, [0.025, 0.975])
    return float(np.median(x)), float(lo), float(hi), float(reps.std(ddof=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path, help="raw files of two-run sweeps")
    args = ap.parse_args(argv)
    files = args.files
    zs: list[float] = []
    widths: dict[str, list[float]] = {"percentile": [], "stored": []}
    tot = {"n": 0, "percentile": 0, "stored": 0}
    print(f"{'file':44} {'points':>6} {'percentile CIs overlap':>23} {'stored CIs overlap':>19}")
    for path in files:
        a, b = points(path, 1), points(path, 2)
        if not a or not b:
            print(f"{path.name:44} has no second run, skipped")
            continue
        n = pct = kept = 0
        for key in sorted(set(a) & set(b)):
            ba, bb = bootstrap(a[key]), bootstrap(b[key])
            sa, sb = stored_stats(a[key]), stored_stats(b[key])
            n += 1
            pct += overlap(ba[1:3], bb[1:3])
            kept += overlap((sa.ci_low, sa.ci_high), (sb.ci_low, sb.ci_high))
            zs.append((bb[0] - ba[0]) / math.hypot(ba[3], bb[3]))
            for s, (lo, hi) in ((sa, ba[1:3]), (sb, bb[1:3])):
                widths["percentile"].append(50.0 * (hi - lo) / s.median)
                widths["stored"].append(50.0 * (s.ci_high - s.ci_low) / s.median)
        print(f"{path.name:44} {n:6d} {pct:19d}/{n:<3d} {kept:15d}/{n:<3d}")
        tot["n"] += n
        tot["percentile"] += pct
        tot["stored"] += kept
    n = tot["n"]
    if not n:
        print("no point was measured twice")
        return 1
    print(f"{'all':44} {n:6d} {tot['percentile']:19d}/{n:<3d} {tot['stored']:15d}/{n:<3d}")
    z = np.abs(np.asarray(zs))
    print(f"median difference of two runs / its bootstrap standard error, {z.size} pairs: "
          f"|z| median {np.median(z):.2f} (normal: 0.67)")
    for c, normal in ((1.96, 5.0), (2.58, 1.0), (4.0, 0.006)):
        print(f"  |z| > {c}: {100 * np.mean(z > c):.1f}% of pairs (normal: {normal}%)")
    for name, w in widths.items():
        print(f"CI half-width, {name}: median {np.median(w):.2f}% of the median, "
              f"p90 {np.quantile(w, 0.9):.2f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
