"""Whether the point CIs are as wide as two runs of the same sweep say they should be: for
every point measured twice (the evidence sweeps' run 1 and run 2, committed under
tests/fixtures/gpu/raw/), how often the two runs' CIs overlap, with the percentile interval of
the two-stage bootstrap and with the CI the service stores (core.stats: its standard error
scaled by Student's t for the repeat count), and the difference of the two medians in units of
its bootstrap standard error, whose tails show how far a z interval can be trusted.

    python bench/ci_calibration.py [RAW.jsonl ...]

With no files: every committed sweep that holds two runs of 3 or 5 repeats.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_runs_compare import points
from gpu_sweep import ci, overlap, stats_of

from kernelwatch.core.stats import BOOTSTRAP_RESAMPLES, repeat_labels, resampled_medians

RAW = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "gpu" / "raw"
# The committed sweeps with two runs of the same points (gpu_sweep.py --runs 2).
DEFAULT_FILES = (
    "h200-0.5.3.jsonl", "h200-0.6.18.post1.jsonl", "h200-0.7.2.post1.jsonl", "h200-torch.jsonl",
    "rerun-h200-0.6.18.post1.jsonl", "rerun-h200-torch.jsonl", "rot-h200-0.5.3.jsonl",
    "cupti-h200-0.5.3.jsonl", "cupti-h200-0.6.18.post1.jsonl", "cupti-h200-torch.jsonl",
    "floor995-h200-0.6.18.post1.jsonl", "earlier-h200-0.6.18.post1.jsonl",
    "experiment-w150-b-raw-0.6.18.post1.jsonl", "no-clock-floor-h200-0.6.18.post1.jsonl",
    "repeats-r5-0.6.18.post1.jsonl",
)


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
    ap.add_argument("files", nargs="*", type=Path)
    args = ap.parse_args(argv)
    files = args.files or [RAW / f for f in DEFAULT_FILES]
    zs: list[float] = []
    widths: dict[str, list[float]] = {"percentile": [], "stored": []}
    tot = {"n": 0, "percentile": 0, "stored": 0}
    print(f"{'file':44} {'points':>6} {'percentile CIs overlap':>23} {'stored CIs overlap':>19}")
    for path in files:
        a, b = points(str(path), 1), points(str(path), 2)
        if not a or not b:
            print(f"{path.name:44} has no second run, skipped")
            continue
        n = pct = stored = 0
        for key in sorted(set(a) & set(b)):
            ba, bb = bootstrap(a[key]), bootstrap(b[key])
            sa, sb = stats_of(a[key]), stats_of(b[key])
            assert sa is not None and sb is not None
            n += 1
            pct += overlap(ba[1:3], bb[1:3])
            stored += overlap(ci(sa), ci(sb))
            zs.append((bb[0] - ba[0]) / math.hypot(ba[3], bb[3]))
            for s, (lo, hi) in ((sa, ba[1:3]), (sb, bb[1:3])):
                widths["percentile"].append(50.0 * (hi - lo) / s.median)
                widths["stored"].append(50.0 * (s.ci_high - s.ci_low) / s.median)
        print(f"{path.name:44} {n:6d} {pct:19d}/{n:<3d} {stored:15d}/{n:<3d}")
        tot["n"] += n
        tot["percentile"] += pct
        tot["stored"] += stored
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
