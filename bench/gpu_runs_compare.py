"""Two GPU evidence runs of the same sweep, compared point by point: whether their median CIs
overlap, how far their medians are apart, and each one's CV, from the raw harness messages
that bench/gpu_sweep.py writes (``raw-<label>.jsonl``; committed under tests/fixtures/gpu/raw/).
Two files from two calls of the device tool are two machine starts, possibly two GPUs.

    python bench/gpu_runs_compare.py A.jsonl B.jsonl [--run 1]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_sweep import stats_of  # the statistics the service stores (two-stage CI)


def points(path: str, run: int) -> dict[tuple[str, int, str], dict[str, Any]]:
    out: dict[tuple[str, int, str], dict[str, Any]] = {}
    suite, cur = "", 0
    for line in Path(path).read_text().splitlines():
        m = json.loads(line)
        if m.get("type") == "request":
            suite, cur = m["suite"], int(m["run"])
        elif m.get("type") == "point" and cur == run and m.get("samples_us"):
            out[(suite, int(m["point_index"]), str(m["backend"]))] = m
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--run", type=int, default=1, help="which run of each file (gpu_sweep --runs)")
    args = ap.parse_args()
    a, b = points(args.a, args.run), points(args.b, args.run)
    overlap = within1 = within2 = n = 0
    for key in sorted(set(a) & set(b)):
        sa, sb = stats_of(a[key]), stats_of(b[key])
        if sa is None or sb is None:
            continue
        n += 1
        ok = sa.ci_low <= sb.ci_high and sb.ci_low <= sa.ci_high
        delta = 100.0 * (sb.median / sa.median - 1.0)
        overlap += ok
        within1 += abs(delta) <= 1.0
        within2 += abs(delta) <= 2.0
        print(f"{key[0]:<8}{key[1]:>3} {key[2]:<11}{sa.median:>11.2f}{sb.median:>11.2f}"
              f"{delta:>+7.2f}%  CIs {'overlap' if ok else 'apart'}")
    print(f"{n} points: CIs overlap {overlap}/{n}; medians within 1% {within1}/{n}, "
          f"within 2% {within2}/{n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
