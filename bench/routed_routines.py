"""Measure before choosing how to cover FlashInfer: each line of a flashinfer_benchmark.py
testlist run in-process twice, alternating, in the version's environment: with the tool's own
timer, and with its routines' ``bench_gpu_time`` routed to kernelwatch's timer
(kernelwatch_harness.routed: cold L2 by rotating the routine's own input tensors, CUDA-graph
replay, boost-clock floor). Prints, per routine and in total, how many lines each way runs,
how far the routed medians are from the tool's, which routines hand their tensors to the
timer (so that they can be rotated), and what each way costs in wall time.

On a GPU node, in the version's env (scripts/gpu-check builds it), from the repository root:

    python bench/routed_routines.py --benchmarks ENVS/benchmarks/V/benchmarks \\
        [--testlist FILE] [--routines rmsnorm,BatchDecodeWithPagedKVCacheWrapper] \\
        [--per-routine 2] [--limit 40] --out $OUT/routed.jsonl

``--testlist`` defaults to the version's own ``samples/sample_testlist.txt``. Each line's
result is appended to ``--out`` as it finishes.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import time
from pathlib import Path
from typing import Any

from kernelwatch_harness.official import OfficialBenchmark, result_of
from kernelwatch_harness.routed import RoutedTimer

AGREE = 0.03


def testlist_lines(path: Path, routines: set[str] | None, limit: int | None,
                   per_routine: int | None = None) -> list[list[str]]:
    """The testlist's command lines (comments and blank lines skipped), as argument lists,
    only those of ``routines`` when given, the first ``per_routine`` of each routine."""
    out = []
    count: dict[str | None, int] = {}
    for text in path.read_text().splitlines():
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        args = shlex.split(text)
        routine = args[args.index("--routine") + 1] if "--routine" in args else None
        if routines and routine not in routines:
            continue
        count[routine] = count.get(routine, 0) + 1
        if per_routine and count[routine] > per_routine:
            continue
        out.append(args)
    return out[:limit] if limit else out


def run_once(tool: OfficialBenchmark, args: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        run = tool.rows(args)
        rows, said = run.rows, run.said
        result: dict[str, Any] = {"status": "ok" if rows else "error",
                                  "backends": {r.get("backend", "?"): result_of(r)["median_us"]
                                               for r in rows}}
        if not rows:
            result["error"] = " | ".join(s for s in said if "rror" in s)[:500] or "no row"
    except Exception as exc:  # one line's failure is that line's result
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:500],
                  "backends": {}}
    result["wall_s"] = round(time.perf_counter() - started, 3)
    return result


def compare(own: dict[str, Any], routed: dict[str, Any]) -> dict[str, float]:
    """Routed median / the tool's - 1, per backend both measured."""
    return {b: round(routed["backends"][b] / t - 1, 4) for b, t in own["backends"].items()
            if t and routed["backends"].get(b)}


def summary(results: list[dict[str, Any]]) -> str:
    lines = []
    by_routine: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_routine.setdefault(r["routine"], []).append(r)
    for routine, rs in sorted(by_routine.items()):
        diffs = [d for r in rs for d in r["diff"].values()]
        within = sum(abs(d) <= AGREE for d in diffs)
        rotated = {c["rotated"] for r in rs for c in r["routed_calls"]}
        lines.append(
            f"{routine}: {len(rs)} lines; tool ok {sum(r['tool']['status'] == 'ok' for r in rs)}"
            f", routed ok {sum(r['routed']['status'] == 'ok' for r in rs)}; "
            f"{within}/{len(diffs)} within {AGREE:.0%}"
            + (f" (median diff {statistics.median(diffs):+.1%})" if diffs else "")
            + f"; inputs rotated: {sorted(rotated)}; wall tool "
            f"{sum(r['tool']['wall_s'] for r in rs):.1f} s, routed "
            f"{sum(r['routed']['wall_s'] for r in rs):.1f} s")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmarks", type=Path, required=True,
                    help="the version's benchmarks/ folder (flashinfer_benchmark.py)")
    ap.add_argument("--testlist", type=Path)
    ap.add_argument("--routines", help="comma-separated routine names to keep")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--per-routine", type=int, help="at most this many lines of each routine")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    testlist = args.testlist or args.benchmarks / "samples" / "sample_testlist.txt"
    routines = set(args.routines.split(",")) if args.routines else None
    lines = testlist_lines(testlist, routines, args.limit, args.per_routine)
    timer = RoutedTimer(args.device)
    tool = OfficialBenchmark(str(args.benchmarks))
    results = []
    with open(args.out, "a") as out:
        for argv in lines:
            tool.timer = None
            own = run_once(tool, argv)
            before = len(timer.calls)
            tool.timer = timer
            routed = run_once(tool, argv)
            result = {"routine": argv[argv.index("--routine") + 1],
                      "command": shlex.join(argv), "tool": own, "routed": routed,
                      "diff": compare(own, routed), "routed_calls": timer.calls[before:]}
            out.write(json.dumps(result) + "\n")
            out.flush()
            results.append(result)
            print(f"{result['routine']}: tool {own['status']} {own['wall_s']} s, routed "
                  f"{routed['status']} {routed['wall_s']} s, diff {result['diff']}", flush=True)
    print(summary(results))


if __name__ == "__main__":
    main()
