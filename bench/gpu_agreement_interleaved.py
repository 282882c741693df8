"""kernelwatch's harness measurement and FlashInfer's ``bench_gpu_time`` on the same shapes in
the SAME process, alternated, for the evidence sweeps (gpu_sweep.py's suites): the agreement of
the two timing methods with the GPU's state shared by both: clocks under the power cap,
temperature, and where the caching allocator put the inputs (a point's turn of ours and theirs
frees and allocates the same sizes one after the other).

``bench/gpu_agreement.py`` runs FlashInfer's timer in a separate process after the harness. On
the H200 some light points run at two or three levels set by where their buffers land (B=1
kv=512 decode: 10.1 or 10.85 us, in both tools), so a separate process compares one draw of
that placement with another; this script separates a disagreement of method from one of state:

- ours: ``kernelwatch_harness.measure.Measurer`` (the harness's own code and gpu_sweep.py's timing:
  correctness check in the first repeat, CUDA-graph replay with rotated inputs, the clock
  floor, one repeat per pass);
- theirs: ``bench_gpu_time`` as bench/gpu_agreement.py calls it on the harness's schedule
  (graph sized like ours, the harness's warm-up and samples per repeat) with the harness's
  recovery idle before each burst (its ``settled_`` configuration); ``--timer-from`` another
  release's ``flashinfer/testing/utils.py`` (0.5: its own timer has no cold L2);
- ``--cupti``: FlashInfer's CUPTI timer too, on the same schedule (needs cupti-python >= 13);
- ``--repeats`` passes over the units, each unit's sides in an order rotating from pass to
  pass (and from unit to unit) so no side always runs on a GPU another just heated; each side
  pools its samples over the passes.
Per pass, each side's median and NVML's SM clock after it are kept, so a disagreement shows
its state.

Run on a GPU node with FlashInfer importable (e.g. PYTHONPATH=/tmp/fi6:.):
    python3 bench/gpu_agreement_interleaved.py [--suites decode,prefill,single] [--repeats 3]
        [--cupti] [--timer-from utils.py] [--samples-per-repeat 10] [--out F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from gpu_agreement import bench_one, cupti_installed, dry_runs, load_timer

from bench.gpu_sweep import SUITES, TIMING, agrees, delta_pct, grid, short
from kernelwatch_harness.measure import Measurer
from kernelwatch_harness.timing import RECOVERY_S

Unit = tuple[str, str, int, dict[str, Any], str]  # suite, kernel, point index, params, backend


def units_of(suites: list[str], backends: list[str] | None = None) -> list[Unit]:
    """The FlashInfer (point, backend) units of gpu_sweep.py's suites, in its order."""
    return [
        (suite, SUITES[suite]["kernel"], index, params, backend)
        for suite in suites
        for index, params in enumerate(grid(SUITES[suite]["kernel"], SUITES[suite]["params"]))
        for backend in (backends or SUITES[suite]["backends"])
    ]


def summary_lines(rows: list[dict[str, Any]], sides: list[str]) -> list[str]:
    """Per suite and over all: how many units' medians are within +-3% of each of
    FlashInfer's timers run (and, with two, of either), and the worst."""
    out = []
    for suite in [*dict.fromkeys(r["suite"] for r in rows), None]:
        part = [r for r in rows if suite is None or r["suite"] == suite]
        name = suite or "all"
        for side in sides:
            got = [r for r in part if f"{side}_us" in r]
            if not got:
                continue
            within = sum(agrees(r["ours_us"], r[f"{side}_us"]) for r in got)
            worst = max(got, key=lambda r: abs(r[f"{side}_delta_pct"]))
            out.append(f"{name}: {within}/{len(got)} medians within +-3% of FlashInfer's "
                       f"{side} timer; worst {worst[f'{side}_delta_pct']:+.2f}% "
                       f"({worst['backend']} {worst['label']})")
        if len(sides) > 1:
            either = sum(any(agrees(r["ours_us"], r[f"{s}_us"]) for s in sides if f"{s}_us" in r)
                         for r in part)
            out.append(f"{name}: {either}/{len(part)} within +-3% of either")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suites", default="decode", help="gpu_sweep.py's suites, comma-separated")
    ap.add_argument("--backends", default=None, help="default: each suite's (gpu_sweep.py)")
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
    # gpu_sweep.py's timing (the service's defaults), one repeat measured per pass
    measurer = Measurer("cuda", {**TIMING, "warmup_ms": args.warmup_ms,
                                 "iterations": args.samples_per_repeat * args.repeats,
                                 "repeats": args.repeats})
    # the harness's warm-up, as in gpu_agreement.py's same-schedule configurations
    dry = dry_runs(int(TIMING["warmup"]))
    timer = load_timer(args.timer_from) if args.timer_from else None
    sides = ["graph"]
    if args.cupti:
        if not cupti_installed():
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
