"""What separates FlashInfer's two timers, and which one kernelwatch agrees with.

FlashInfer's ``bench_gpu_time`` times a point two ways: CUDA-graph replay with rotating input
copies (its graph timer), or CUPTI with a 2 x L2 buffer written before every call and the
device synchronised after it (its CUPTI timer, flashinfer_benchmark.py's default). On the
H200 the two disagree by up to 18 % on light points. The harness can time the same way as
either (its default graph replay; ``timing.method: cupti`` with ``cold_l2_method`` ``rotate``
or ``flush``), so per point this prints:

- ``graph``: the harness's default (graph replay, rotation, clock floor);
- ``cupti rot``, ``cupti fl``: the harness timing by CUPTI, inputs rotated / L2 flushed;
- ``cupti cl``: the same with the 2 x L2 buffer read instead of written (``flush_clean``):
  no dirty lines left in L2 for the timed call to write back;
- ``FI graph``, ``FI cupti``: FlashInfer's two timers on the harness's schedule with its
  recovery idle (``settled_median_us``, ``cupti_median_us`` of bench/gpu_agreement.py);

then how many points each pair of the columns given puts within +-3 %. Only the points every
file has are compared. With no file named, the fourth session's calls 1 and 2::

    python bench/gpu_timers.py    # or --graph/--agreement/--cupti-rotate/--cupti-flush/
                                  # --cupti-clean FILES (the columns of the files named)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.gpu_sweep import SUITES, agrees, grid, load_saved, short, stats_of  # noqa: E402

RAW = REPO / "tests" / "fixtures" / "gpu" / "raw"
COLUMNS = ("graph", "cupti rot", "cupti fl", "cupti cl", "FI graph", "FI cupti")
# (what is compared, column a, column b): a within +-3 % of b
PAIRS = (
    ("harness graph vs FlashInfer graph", "graph", "FI graph"),
    ("harness graph vs FlashInfer CUPTI", "graph", "FI cupti"),
    ("FlashInfer graph vs FlashInfer CUPTI", "FI graph", "FI cupti"),
    ("harness CUPTI + flush vs FlashInfer CUPTI (the same method)", "cupti fl", "FI cupti"),
    ("harness CUPTI + rotation vs harness graph (CUPTI without the flush)", "cupti rot", "graph"),
    ("harness CUPTI + flush vs harness CUPTI + rotation (what the flush adds)", "cupti fl",
     "cupti rot"),
    ("harness CUPTI + read flush vs harness CUPTI + rotation (a flush without dirty lines)",
     "cupti cl", "cupti rot"),
    ("harness CUPTI + flush vs harness CUPTI + read flush (what the dirty lines add)",
     "cupti fl", "cupti cl"),
    ("harness CUPTI + read flush vs harness graph", "cupti cl", "graph"),
)


def medians(raw: Path, label: str) -> dict[tuple[str, int, str], float]:
    """Run 1's median per (suite, point, backend) of a gpu_sweep.py raw file."""
    results, _, _ = load_saved([raw], None)
    out = {}
    for (lab, suite, run), msgs in results.items():
        if lab != label or run != 1:
            continue
        for m in msgs:
            s = stats_of(m) if m.get("type") == "point" else None
            if s is not None:
                out[(suite, int(m["point_index"]), str(m["backend"]))] = s.median
    return out


def fi_medians(agreement: Path, label: str, key: str) -> dict[tuple[str, int, str], float]:
    _, _, agree = load_saved([], agreement)
    return {
        (suite, index, backend): float(row[key])
        for (lab, suite), rows in agree.items() if lab == label
        for (index, backend), row in rows.items() if row.get(key)
    }


def table(cols: dict[str, dict[tuple[str, int, str], float]]) -> str:
    """Per point the columns given (in COLUMNS' order), then the pairs among them."""
    names = [c for c in COLUMNS if c in cols]
    pairs = [(name, a, b) for name, a, b in PAIRS if a in cols and b in cols]
    keys = sorted(set.intersection(*(set(c) for c in cols.values())),
                  key=lambda k: (list(SUITES).index(k[0]), k[1], k[2]))
    lines = [f"{'suite':8}{'point':22}{'backend':9}"
             + "".join(f"{c:>11}" for c in names)]
    params: dict[str, list[dict[str, Any]]] = {}
    agreed = {name: 0 for name, _, _ in pairs}
    for suite, index, backend in keys:
        kernel = SUITES[suite]["kernel"]
        p = params.setdefault(suite, grid(kernel, SUITES[suite]["params"]))[index]
        row = [cols[c][(suite, index, backend)] for c in names]
        lines.append(f"{suite:8}{short(kernel, p):22}{backend:9}"
                     + "".join(f"{v:>11.2f}" for v in row))
        for name, a, b in pairs:
            agreed[name] += agrees(cols[a][(suite, index, backend)],
                                   cols[b][(suite, index, backend)])
    lines += [f"{name}: within ±3% for {agreed[name]}/{len(keys)}" for name, _, _ in pairs]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", default="0.6.18.post1")
    ap.add_argument("--graph", type=Path)
    ap.add_argument("--agreement", type=Path)
    ap.add_argument("--cupti-rotate", type=Path)
    ap.add_argument("--cupti-flush", type=Path)
    ap.add_argument("--cupti-clean", type=Path)
    args = ap.parse_args()
    files = {"graph": args.graph, "cupti rot": args.cupti_rotate, "cupti fl": args.cupti_flush,
             "cupti cl": args.cupti_clean}
    if not any(files.values()) and args.agreement is None:
        files = {"graph": RAW / "cupti-h200-0.6.18.post1.jsonl",
                 "cupti rot": RAW / "harness-cupti-rotate-0.6.18.post1.jsonl",
                 "cupti fl": RAW / "harness-cupti-flush-0.6.18.post1.jsonl"}
        args.agreement = RAW / "agreement-cupti-v6.jsonl"
    cols = {name: medians(path, args.label) for name, path in files.items() if path}
    if args.agreement:
        cols["FI graph"] = fi_medians(args.agreement, args.label, "settled_median_us")
        cols["FI cupti"] = fi_medians(args.agreement, args.label, "cupti_median_us")
    sys.stdout.write(table(cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
