"""Two GPU evidence runs of the same sweep, compared point by point: whether their median CIs
overlap, how far their medians are apart, and how far the SM clock the probe read under their
kept samples is apart, from the raw harness messages that bench/gpu_sweep.py writes
(``raw-<label>.jsonl``; committed under tests/fixtures/gpu/raw/). Two files from two calls of
the device tool are two machine starts, possibly two GPUs; one file with ``--run-b 2`` is the
sweep's two runs.

    python bench/gpu_runs_compare.py A.jsonl [B.jsonl] [--run 1] [--run-b 2]

The last line relates the two: the correlation of the points' median differences with their
clock differences (points over 20 us). The clock floor keeps samples within 1.5% of boost; a
negative correlation says part of what is left between two runs is where in that band the
clock sat.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_sweep import ci, clock_of, load_saved, overlap, stats_of  # stats_of: as stored


def points(path: str, run: int) -> dict[tuple[str, int, str], dict[str, Any]]:
    results, _, _ = load_saved([Path(path)], None)
    return {
        (suite, int(m["point_index"]), str(m["backend"])): m
        for (_, suite, r), msgs in results.items()
        if r == run
        for m in msgs
        if m.get("samples_us")
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b", nargs="?", help="default: A again (with --run-b, its other run)")
    ap.add_argument("--run", type=int, default=1, help="which run of each file (gpu_sweep --runs)")
    ap.add_argument("--run-b", type=int, help="which run of B (default: --run)")
    args = ap.parse_args()
    a = points(args.a, args.run)
    b = points(args.b or args.a, args.run_b or args.run)
    overlaps = within1 = within2 = n = 0
    d_time: list[float] = []
    d_clock: list[float] = []
    for key in sorted(set(a) & set(b)):
        sa, sb = stats_of(a[key]), stats_of(b[key])
        if sa is None or sb is None:
            continue
        n += 1
        ok = overlap(ci(sa), ci(sb))
        delta = 100.0 * (sb.median / sa.median - 1.0)
        overlaps += ok
        within1 += abs(delta) <= 1.0
        within2 += abs(delta) <= 2.0
        # NaN where a run was measured without the probe (before it existed, CUPTI)
        clock = 100.0 * (clock_of(b[key])[0] / clock_of(a[key])[0] - 1.0)
        if sa.median > 20 and not math.isnan(clock):
            d_time.append(delta)
            d_clock.append(clock)
        print(f"{key[0]:<8}{key[1]:>3} {key[2]:<11}{sa.median:>11.2f}{sb.median:>11.2f}"
              f"{delta:>+7.2f}%  CIs {'overlap' if ok else 'apart':<8}"
              + ("" if math.isnan(clock) else f" clock {clock:>+6.2f}%"))
    print(f"{n} points: CIs overlap {overlaps}/{n}; medians within 1% {within1}/{n}, "
          f"within 2% {within2}/{n}")
    if len(d_time) > 2:
        r = statistics.correlation(d_clock, d_time)
        print(f"points over 20 us: median difference vs probe-clock difference, correlation "
              f"{r:+.2f} over {len(d_time)} points; mean |difference| "
              f"{statistics.fmean(map(abs, d_time)):.2f}% (time), "
              f"{statistics.fmean(map(abs, d_clock)):.2f}% (clock)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
