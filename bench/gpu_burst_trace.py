"""How the GPU's state moves while one point is measured: every graph replay of a long burst
after the GPU idled, timed alone, with NVML's SM clock and power polled beside it; then the
same point rebuilt several times (new allocations) and measured with the harness's schedule.

The harness times a point in short bursts (warm-up replays, then the samples of one repeat);
``bench_gpu_time`` in longer ones (3 eager calls, 5 estimate, 5 dry and 30 timed replays). If
a replay's time depends on how long the burst has run (clocks settling under the power cap,
a fast start after idle), two timers that differ only in burst length disagree. This script
measures that dependence instead of assuming it:

- ``burst``: per-replay times in windows of the burst (replays 0-5, 5-15, 15-45, 45-100, ...)
  with the median SM clock and power NVML saw during each window;
- ``rebuilds``: the point's inputs built anew ``--rebuilds`` times; each gets an idle gap,
  then 45 replays: the median of replays 5-15 (the harness's 10-sample repeat after 5
  warm-up replays) and of 15-45 (a 30-sample repeat after 15 replays), and where the
  paged cache landed (its address modulo 2 MiB and 1 GiB).

Run on a GPU node with FlashInfer importable (e.g. PYTHONPATH=/tmp/fi6:.):
    python3 bench/gpu_burst_trace.py [--shapes 1:2048,256:8192] [--backend fa2] [--out F]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from gpu_agreement_interleaved import params_for  # the reference decode shapes

from kernelwatch_harness import timing
from kernelwatch_harness.flashinfer_backends import prepare_flashinfer
from kernelwatch_harness.inputs import flashinfer_inputs, sm_scale
from kernelwatch_harness.telemetry import Nvml

WINDOWS = [(0, 5), (5, 15), (15, 45), (45, 100), (100, 300), (300, 1000), (1000, 4000)]


class Poller:
    """NVML SM clock and power every ``period`` seconds on a thread, with perf_counter times
    (the main thread waits in CUDA synchronisation, which releases the GIL)."""

    def __init__(self, nvml: Nvml, period: float = 0.002) -> None:
        self.nvml, self.period = nvml, period
        self.rows: list[tuple[float, int | None, float | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        nv = self.nvml.nv
        while not self._stop.is_set():
            t = time.perf_counter()
            mhz = self.nvml._get("nvmlDeviceGetClockInfo", nv.NVML_CLOCK_SM)
            mw = self.nvml._get("nvmlDeviceGetPowerUsage")
            self.rows.append((t, mhz, mw / 1000.0 if mw is not None else None))
            time.sleep(self.period)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, t0: float, t1: float) -> dict[str, Any]:
        rows = [r for r in self.rows if t0 <= r[0] <= t1]
        mhz = [r[1] for r in rows if r[1] is not None]
        watts = [r[2] for r in rows if r[2] is not None]
        return {
            "polls": len(rows),
            "sm_mhz": statistics.median(mhz) if mhz else None,
            "power_w": round(statistics.median(watts), 1) if watts else None,
        }


def build(
    params: dict[str, Any], backend: str, l2_bytes: int, kernel: str = "batch_decode"
) -> dict[str, Any]:
    """The point as the harness's Measurer builds it: inputs, prepared call, rotation copies,
    graph size."""
    inp = flashinfer_inputs(kernel, params, "cuda")
    prepared = prepare_flashinfer(backend, inp, sm_scale(kernel, params))
    free, _ = torch.cuda.mem_get_info()
    rot = timing.rotation_for(inp.data_bytes(), l2_bytes, free, True)
    datas = [inp.data] + [inp.copy_data() for _ in range(rot.copies - 1)]
    calls = timing.calls_per_graph(len(datas), timing.estimate_call_us(prepared.fn, datas))
    return {"inp": inp, "prepared": prepared, "datas": datas, "calls": calls, "copies": rot.copies}


def burst(point: dict[str, Any], replays: int, idle_s: float) -> list[float]:
    """Idle, then ``replays`` replays each timed by events; returns per-replay us per call.
    Records when the replays began on the host clock, so windows map onto NVML polls: the
    harness's timer returns right after the last replay, so the replays began their summed
    GPU time before it returned (eager warm-up and capture come before them)."""
    torch.cuda.synchronize()
    time.sleep(idle_s)
    res = timing.time_cuda_graph(
        point["prepared"].fn, point["datas"], 0, replays, point["calls"], point["inp"].data_ptrs
    )
    point["burst_start"] = time.perf_counter() - sum(res.samples_us) * point["calls"] / 1e6
    return res.samples_us


def window_rows(
    samples: list[float], calls: int, t0: float, poller: Poller
) -> list[dict[str, Any]]:
    # Replay i began the summed GPU time of the replays before it after t0.
    ends = [0.0]
    for s in samples:
        ends.append(ends[-1] + s * calls / 1e6)
    rows = []
    for lo, hi in WINDOWS:
        if lo >= len(samples):
            break
        hi = min(hi, len(samples))
        part = samples[lo:hi]
        state = poller.between(t0 + ends[lo], t0 + ends[hi] + 0.004)
        rows.append(
            {
                "replays": [lo, hi],
                "median_us": statistics.median(part),
                "ms_into_burst": round(1000 * ends[lo], 2),
                **state,
            }
        )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="1:512,1:2048,16:512,64:32768,256:8192")
    ap.add_argument("--backend", default="fa2")
    ap.add_argument("--burst-ms", type=float, default=400.0)
    ap.add_argument("--idle-s", type=float, default=0.5)
    ap.add_argument("--rebuilds", type=int, default=6)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    nvml = Nvml()
    if nvml.nv is None:
        print("NVML is not available: no clocks", file=sys.stderr)
    l2 = int(torch.cuda.get_device_properties(0).L2_cache_size)
    out_rows = []
    with Poller(nvml) as poller:
        for shape in args.shapes.split(","):
            batch, kv_len = (int(x) for x in shape.split(":"))
            params = params_for(batch, kv_len)
            point = build(params, args.backend, l2)
            est = statistics.median(burst(point, 5, 0.0)) * point["calls"]
            replays = max(60, min(4000, math.ceil(args.burst_ms * 1000 / est)))
            samples = burst(point, replays, args.idle_s)
            rows = window_rows(samples, point["calls"], point["burst_start"], poller)
            print(
                f"== B={batch} kv={kv_len} {args.backend}: {point['copies']} copies, "
                f"{point['calls']} calls per graph, {replays} replays after "
                f"{args.idle_s} s idle",
                flush=True,
            )
            for r in rows:
                print(
                    f"  replays {r['replays'][0]:>4}-{r['replays'][1]:<4} "
                    f"at {r['ms_into_burst']:8.1f} ms: {r['median_us']:10.2f} us  "
                    f"SM {r['sm_mhz']} MHz  {r['power_w']} W ({r['polls']} polls)",
                    flush=True,
                )
            del point
            torch.cuda.empty_cache()
            rebuilds = []
            for k in range(args.rebuilds):
                point = build(params, args.backend, l2)
                cache = point["inp"].data.get("kv_cache")
                addr = cache.data_ptr() if isinstance(cache, torch.Tensor) else None
                got = burst(point, 45, args.idle_s)
                rebuilds.append(
                    {
                        "rebuild": k,
                        "replays_5_15_us": statistics.median(got[5:15]),
                        "replays_15_45_us": statistics.median(got[15:45]),
                        "cache_addr_mod_2mib": addr % (2 << 20) if addr else None,
                        "cache_addr_mod_1gib": addr % (1 << 30) if addr else None,
                    }
                )
                del point
                torch.cuda.empty_cache()
            for r in rebuilds:
                print(
                    f"  rebuild {r['rebuild']}: replays 5-15 {r['replays_5_15_us']:10.2f} us"
                    f"  15-45 {r['replays_15_45_us']:10.2f} us  cache at "
                    f"{r['cache_addr_mod_1gib']} mod 1 GiB",
                    flush=True,
                )
            out_rows.append(
                {
                    "batch_size": batch,
                    "kv_len": kv_len,
                    "backend": args.backend,
                    "burst": rows,
                    "rebuilds": rebuilds,
                }
            )
    if args.out:
        args.out.write_text("\n".join(json.dumps(r) for r in out_rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
