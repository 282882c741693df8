"""The cross-check of kernelwatch's timing against FlashInfer's own timers: the harness's
measurement (``kernelwatch_harness.measure.Measurer``) and FlashInfer's ``bench_gpu_time`` on
the sweep's reference shapes (kernelwatch_harness.families.attention.suites) in the SAME
process, alternated, so that both see one GPU state: clocks under the power cap, temperature,
and where the caching allocator put the inputs (a point's turn of ours and theirs frees and
allocates the same sizes one after the other). On the H200 some light points run at two or
three levels set by where their buffers land (B=1 kv=512 decode: 10.1 or 10.85 us, with either
timer), so timers in separate processes would compare one draw of that placement with another.

- ours: the harness's own code with the service's default timing (correctness check in the
  first repeat, CUDA-graph replay with rotated inputs, the clock floor, one repeat per pass);
- graph: ``bench_gpu_time`` with CUDA graphs on the harness's schedule (graph sized like ours,
  the harness's warm-up and samples per repeat) after the harness's recovery idle;
  ``--timer-from`` another release's ``flashinfer/testing/utils.py`` (0.5: its own graph timer
  has no cold L2);
- ``--cupti``: FlashInfer's CUPTI timer too (the default of flashinfer_benchmark.py: L2
  flushed before every call), on the same schedule (needs cupti-python >= 13);
- ``--repeats`` passes over the units, each unit's sides in an order rotating from pass to
  pass (and from unit to unit) so no side always runs on a GPU another just heated; each side
  pools its samples over the passes.
Per pass, each side's median and NVML's SM clock after it are kept, so a disagreement shows
its state. Prints one line per unit, then per suite how many medians are within +-3% of each
of FlashInfer's timers; ``--out`` writes the rows as JSON lines.

Runs in a FlashInfer version's environment (kernelwatch_harness installed, as
kernelwatch.worker.envs.build_env makes it; scripts/gpu-check crosscheck runs it there):
    python bench/gpu_crosscheck.py [--suites decode,prefill,single] [--repeats 3]
        [--cupti] [--timer-from utils.py] [--samples-per-repeat 10] [--out F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from kernelwatch_harness.families.attention.crosscheck import (
    bench_one,
    dry_runs,
    load_timer,
    summary_lines,
    units_of,
)
from kernelwatch_harness.families.attention.suites import TIMING, delta_pct, short
from kernelwatch_harness.measure import Measurer
from kernelwatch_harness.timing import RECOVERY_S, cupti_module


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suites", default="decode",
                    help="kernelwatch_harness.families.attention.suites' suites, comma-separated")
    ap.add_argument("--backends", default=None, help="default: each suite's")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples-per-repeat", type=int, default=10)
    ap.add_argument("--warmup-ms", type=float, default=0.0,
                    help="timing.warmup_ms of the harness's Measurer; 0: off")
    ap.add_argument("--cupti", action="store_true", help="FlashInfer's CUPTI timer too")
    ap.add_argument("--timer-from", default=None,
                    help="another release's flashinfer/testing/utils.py for the graph timer")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    units = units_of(args.suites.split(","), args.backends.split(",") if args.backends else None)
    # the service's default timing, one repeat measured per pass
    measurer = Measurer("cuda", {**TIMING, "warmup_ms": args.warmup_ms,
                                 "iterations": args.samples_per_repeat * args.repeats,
                                 "repeats": args.repeats})
    # the harness's warm-up replays as FlashInfer's dry runs
    dry = dry_runs(int(TIMING["warmup"]))
    timer = load_timer(args.timer_from) if args.timer_from else None
    sides = ["graph"]
    if args.cupti:
        # bench_gpu_time(enable_cupti=True) silently falls back to CUDA graphs without it.
        if cupti_module() is None:
            raise SystemExit("--cupti: cupti-python >= 13 is not installed")
        sides.append("cupti")
    nvml = measurer.nvml

    def sm_mhz() -> Any:
        return ((nvml.snapshot() if nvml else None) or {}).get("sm_clock_mhz")

    ours: dict[int, dict[str, Any]] = {}
    passes: dict[int, dict[str, list[Any]]] = {j: {} for j in range(len(units))}
    samples: dict[int, dict[str, list[float]]] = {
        j: {side: [] for side in sides} for j in range(len(units))}
    for rep in range(args.repeats):
        for j, (_, kernel, index, params, backend) in enumerate(units):

            def run(side: str, j: int = j, kernel: str = kernel, index: int = index,
                    params: dict[str, Any] = params, backend: str = backend) -> None:
                if side == "ours":
                    m = ours[j] = measurer.measure(kernel, index, params, backend, ours.get(j))
                    median = m["telemetry"]["repeats"][-1]["median_us"] \
                        if m.get("status") == "ok" else None
                else:
                    try:
                        got = bench_one(kernel, params, backend, dry_run_iters=dry,
                                        repeat_iters=args.samples_per_repeat,
                                        settle_s=RECOVERY_S, cupti=side == "cupti",
                                        timer=None if side == "cupti" else timer)
                    except Exception as exc:
                        passes[j].setdefault(f"{side}_error", [f"{type(exc).__name__}: {exc}"])
                        return
                    samples[j][side].extend(got["samples_us"])
                    median = statistics.median(got["samples_us"])
                    torch.cuda.empty_cache()
                passes[j].setdefault(f"{side}_pass_medians_us", []).append(median)
                passes[j].setdefault(f"{side}_pass_sm_mhz", []).append(sm_mhz())

            order = ["ours", *sides]
            shift = (rep + j) % len(order)
            for side in order[shift:] + order[:shift]:
                run(side)
    rows = []
    for j, (suite, kernel, index, params, backend) in enumerate(units):
        m = ours[j]
        row: dict[str, Any] = {"suite": suite, "kernel": kernel, "point_index": index,
                               "backend": backend, "label": short(kernel, params),
                               "status": m["status"], **passes[j]}
        if m["status"] != "ok":
            row["error"] = m.get("error")
            print(f"{suite:8} {backend:5} {row['label']:28} {m['status']}: {m.get('error')}")
            rows.append(row)
            continue
        row["resolved_backend"] = m.get("resolved_backend")
        row["ours_us"] = statistics.median(m["samples_us"])
        text = [f"{suite:8} {backend:5} {row['label']:28} ours {row['ours_us']:10.2f} "
                f"{[round(x, 2) for x in passes[j]['ours_pass_medians_us']]}"]
        for side in sides:
            if samples[j][side]:
                row[f"{side}_us"] = statistics.median(samples[j][side])
                row[f"{side}_delta_pct"] = delta_pct(row["ours_us"], row[f"{side}_us"])
                text.append(f"{side} {row[f'{side}_us']:10.2f} "
                            f"{[round(x, 2) for x in passes[j][f'{side}_pass_medians_us']]} "
                            f"{row[f'{side}_delta_pct']:+.2f}%")
            else:
                text.append(f"{side}: {passes[j].get(f'{side}_error')}")
        rows.append(row)
        print("  ".join(text), flush=True)
    ok = [r for r in rows if r["status"] == "ok"]
    for line in summary_lines(ok, sides):
        print(line)
    if args.out:
        args.out.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
