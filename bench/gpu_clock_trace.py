"""What the SM clock does while a point is timed, read in the stream by the harness's clock
probe (``kernelwatch_harness.timing.clock_probe``: a kernel spinning a known number of SM cycles
before every replay) rather than by NVML's sampled reading, which lags the power limiter.

For each shape (decode and causal prefill, as the harness builds them):
- ``burst``: after ``--idle-s`` of idle, replays for ``--burst-ms`` with a probe before each;
  per window of replays, the median replay time and the median and lowest probe clock;
- ``recovery``: the GPU loaded for ``--burst-ms`` (long enough for the limiter), then idle for
  each gap in ``--gaps-ms``, then 12 probed replays: how long an idle gap restores the clock
  and the call's time;
and once, the probe's reading after 20 ms of spinning (the boost clock it reads unloaded)
against NVML's maximum SM clock.

Run on a GPU node with FlashInfer importable (e.g. PYTHONPATH=/tmp/fi6:.):
    python3 bench/gpu_clock_trace.py [--shapes decode:64:32768,prefill:8:2048:8192:auto]
        [--burst-ms 300] [--gaps-ms 5,20,50,100,250] [--out F]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from gpu_burst_trace import WINDOWS, build  # the point as the harness builds it

from kernelwatch_harness import timing
from kernelwatch_harness.catalogue import complete_params
from kernelwatch_harness.telemetry import Nvml

DEFAULT_SHAPES = (
    "decode:1:512:fa2,decode:16:8192:fa2,decode:64:32768:fa2,decode:256:8192:fa2,"
    "decode:256:32768:fa2,prefill:1:512:2048:fa2,prefill:8:512:2048:fa2,"
    "prefill:8:2048:8192:auto"
)
HEADS = {"num_qo_heads": 32, "num_kv_heads": 8, "head_dim": 128, "page_size": 16,
         "dtype": "bfloat16"}


def parse_shape(text: str) -> tuple[str, dict[str, Any], str]:
    """decode:B:KV:backend or prefill:B:QO:KV:backend (causal)."""
    kind, *nums, backend = text.split(":")
    if kind == "decode":
        b, kv = (int(x) for x in nums)
        return "batch_decode", complete_params(
            "batch_decode", {"batch_size": b, "kv_len": kv, **HEADS}), backend
    b, qo, kv = (int(x) for x in nums)
    return "batch_prefill", complete_params("batch_prefill", {
        "batch_size": b, "qo_len": qo, "kv_len": kv, "causal": True, **HEADS}), backend


def probed(point: dict[str, Any], replays: int, idle_s: float) -> timing.GraphTiming:
    torch.cuda.synchronize()
    time.sleep(idle_s)
    return timing.time_cuda_graph(
        point["prepared"].fn, point["datas"], 0, replays, point["calls"],
        point["inp"].data_ptrs, probe_cycles=timing.PROBE_CYCLES)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=DEFAULT_SHAPES)
    ap.add_argument("--burst-ms", type=float, default=300.0)
    ap.add_argument("--idle-s", type=float, default=0.5)
    ap.add_argument("--gaps-ms", default="5,20,50,100,250")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    nvml = Nvml()
    max_sm = nvml._get("nvmlDeviceGetMaxClockInfo", nvml.nv.NVML_CLOCK_SM) if nvml.nv else None
    boost = timing.boost_reference_mhz()
    print(f"probe after 20 ms of spin: {boost:.0f} MHz; NVML max SM clock {max_sm} MHz",
          flush=True)
    l2 = int(torch.cuda.get_device_properties(0).L2_cache_size)
    rows: list[dict[str, Any]] = [{"probe_boost_mhz": boost, "nvml_max_sm_mhz": max_sm}]
    for text in args.shapes.split(","):
        kernel, params, backend = parse_shape(text)
        point = build(params, backend, l2, kernel)
        est = statistics.median(probed(point, 5, 0.0).samples_us) * point["calls"]
        replays = max(60, min(4000, math.ceil(args.burst_ms * 1000 / est)))
        res = probed(point, replays, args.idle_s)
        clocks = res.clocks_mhz or []
        print(f"== {text}: {point['calls']} calls per replay, {replays} replays of "
              f"{est / 1000:.2f} ms after {args.idle_s} s idle", flush=True)
        windows = []
        elapsed = 0.0
        for lo, hi in WINDOWS:
            if lo >= replays:
                break
            hi = min(hi, replays)
            w = {"replays": [lo, hi], "ms_into_burst": round(elapsed, 2),
                 "median_us": statistics.median(res.samples_us[lo:hi]),
                 "probe_mhz": statistics.median(clocks[lo:hi]),
                 "probe_min_mhz": min(clocks[lo:hi])}
            elapsed += sum(res.samples_us[lo:hi]) * point["calls"] / 1000.0
            windows.append(w)
            print(f"  replays {lo:>4}-{hi:<4} at {w['ms_into_burst']:8.1f} ms: "
                  f"{w['median_us']:10.2f} us  probe {w['probe_mhz']:.0f} MHz "
                  f"(min {w['probe_min_mhz']:.0f})", flush=True)
        recovery = []
        for gap in (float(g) for g in args.gaps_ms.split(",")):
            probed(point, replays, 0.0)  # load the GPU into the limiter again
            got = probed(point, 12, gap / 1000.0)
            c = got.clocks_mhz or []
            r = {"gap_ms": gap, "first3_us": statistics.median(got.samples_us[:3]),
                 "first3_mhz": statistics.median(c[:3]),
                 "rest_us": statistics.median(got.samples_us[3:]),
                 "rest_mhz": statistics.median(c[3:]),
                 "samples_us": got.samples_us, "clocks_mhz": c}
            recovery.append(r)
            print(f"  after {gap:6.0f} ms idle: replays 0-3 {r['first3_us']:10.2f} us "
                  f"{r['first3_mhz']:.0f} MHz; 3-12 {r['rest_us']:10.2f} us "
                  f"{r['rest_mhz']:.0f} MHz", flush=True)
        rows.append({"shape": text, "calls": point["calls"], "burst": windows,
                     "recovery": recovery, "samples_us": res.samples_us, "clocks_mhz": clocks})
        del point
        torch.cuda.empty_cache()
    if args.out:
        args.out.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
