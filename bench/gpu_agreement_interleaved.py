"""kernelwatch's harness measurement and FlashInfer's ``bench_gpu_time`` on the same shapes in
the SAME process, alternated, for the reference decode sweep: the agreement of the two timing
methods with the GPU's state (clocks under the power cap, temperature) shared by both.

``bench/gpu_agreement.py`` runs FlashInfer's timer in a separate process after the harness;
on the H200 that process measured large decode points 3-8% slower than the harness, and on
those points its own repeats spread by up to 7% while the harness's agreed within 1%. This script
separates a disagreement of method from one of state:

- ours: ``worker.harness.measure.Measurer`` (the harness's own code: correctness check in the
  first repeat, CUDA-graph replay with rotated inputs, one repeat per pass);
- theirs: ``bench_gpu_time`` as bench/gpu_agreement.py calls it with the graph sized like ours;
- ``--repeats`` passes over the points, each point's ours/theirs order alternating from pass
  to pass (and from point to point) so neither side always runs on a GPU the other just
  heated; both pool their samples over the passes.
NVML's SM clock and power after each side are printed, so a disagreement shows its state.

Run on a GPU node with FlashInfer importable (e.g. PYTHONPATH=/tmp/fi6:.):
    python3 bench/gpu_agreement_interleaved.py [--repeats 3] [--backend fa2] [--out F]
        [--samples-per-repeat 10] [--warmup-ms 0]
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
from gpu_agreement import bench_one

from bench.gpu_sweep import agrees, delta_pct
from core.catalogue import complete_params
from worker.harness.measure import Measurer

SHAPES = [(b, kv) for b in (1, 16, 64, 256) for kv in (512, 2048, 8192, 32768)]


def params_for(batch: int, kv_len: int) -> dict[str, Any]:
    return complete_params("batch_decode", {
        "batch_size": batch, "kv_len": kv_len, "num_qo_heads": 32, "num_kv_heads": 8,
        "head_dim": 128, "page_size": 16, "dtype": "bfloat16"})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples-per-repeat", type=int, default=10)
    ap.add_argument("--warmup-ms", type=float, default=0.0,
                    help="timing.warmup_ms of the harness's Measurer; 0: off")
    ap.add_argument("--backend", default="fa2")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    # The harness's warm-up and cold L2; its samples per repeat by default.
    measurer = Measurer("cuda", {"warmup": 5, "warmup_ms": args.warmup_ms,
                                 "iterations": args.samples_per_repeat * args.repeats,
                                 "repeats": args.repeats, "cold_l2": True})
    nvml = measurer.nvml

    def state() -> dict[str, Any]:
        snap = (nvml.snapshot() if nvml else None) or {}
        return {"sm_mhz": snap.get("sm_clock_mhz"), "power_w": snap.get("power_w")}

    ours: dict[int, dict[str, Any]] = {}
    theirs: dict[int, dict[str, Any]] = {
        i: {"samples": [], "medians": [], "states": []} for i in range(len(SHAPES))}
    our_states: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(SHAPES))}
    for rep in range(args.repeats):
        for i, (batch, kv_len) in enumerate(SHAPES):
            params = params_for(batch, kv_len)

            def run_ours(i: int = i, params: dict[str, Any] = params) -> None:
                ours[i] = measurer.measure("batch_decode", i, params, args.backend, ours.get(i))
                our_states[i].append(state())

            def run_theirs(i: int = i, params: dict[str, Any] = params) -> None:
                got = bench_one("batch_decode", params, args.backend)
                theirs[i]["samples"].extend(got["samples_us"])
                theirs[i]["medians"].append(statistics.median(got["samples_us"]))
                theirs[i]["states"].append(state())
                torch.cuda.empty_cache()

            for side in ((run_ours, run_theirs) if (rep + i) % 2 == 0
                         else (run_theirs, run_ours)):
                side()
    rows = []
    for i, (batch, kv_len) in enumerate(SHAPES):
        m, t = ours[i], theirs[i]
        if m["status"] != "ok" or not t["samples"]:
            print(f"B={batch:<4} kv={kv_len:<6} {m['status']}: {m.get('error')}")
            continue
        mo, mt = statistics.median(m["samples_us"]), statistics.median(t["samples"])
        row = {"batch_size": batch, "kv_len": kv_len, "backend": args.backend,
               "ours_us": mo, "flashinfer_us": mt, "delta_pct": delta_pct(mo, mt),
               "ours_repeat_medians_us": [r["median_us"] for r in m["telemetry"]["repeats"]],
               "flashinfer_repeat_medians_us": t["medians"],
               "ours_states": our_states[i], "flashinfer_states": t["states"]}
        rows.append(row)
        print(f"B={batch:<4} kv={kv_len:<6} ours {mo:10.2f} "
              f"{[round(x, 2) for x in row['ours_repeat_medians_us']]} flashinfer {mt:10.2f} "
              f"{[round(x, 2) for x in t['medians']]} delta {row['delta_pct']:+.2f}% "
              f"sm MHz ours {[s['sm_mhz'] for s in our_states[i]]} "
              f"theirs {[s['sm_mhz'] for s in t['states']]}", flush=True)
    within = sum(agrees(r["ours_us"], r["flashinfer_us"]) for r in rows)
    worst = max(rows, key=lambda r: abs(r["delta_pct"]))
    print(f"{within}/{len(rows)} medians within +-3%; worst {worst['delta_pct']:+.2f}% "
          f"(B={worst['batch_size']}, kv={worst['kv_len']})")
    if args.out:
        args.out.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
