"""Why torch-sdpa's repeats of one point disagree: the harness's own repeats of the torch
decode points whose first repeat ran 8-10% faster than the other two in every committed run
(B=256 kv=512: 128.8 us, then 141.7 and 141.5; B=1 kv=8192: 15.5, then 16.5 and 16.6).

Each variant runs the harness's interleaved repeats (``kernelwatch_harness.__main__``'s
``measure_interleaved`` on a ``Measurer``) over the same units and prints each repeat's median
and calls per graph replay, with what the profiler saw the GPU run in that repeat (kernel
names, count, mean time) when ``--profile`` is given:

- ``harness``: as a sweep runs them (repeat 1 checks correctness against the float32
  reference before timing; later repeats rebuild the inputs and time);
- ``nocheck``: the same without the correctness check, so repeat 1 differs from the others
  only in its first-call timing;
- ``keepcache``: as ``harness``, but the allocator's cache is not emptied between repeats
  (later repeats' inputs land in blocks earlier ones used, not in memory fresh from the
  driver);
- the kernel torch's SDPA dispatcher picks for the inputs (``torch_backends.sdpa_kernel``).

Run on a GPU node (torch only, no FlashInfer needed):
    python3 bench/gpu_torch_repeats.py [--shapes 256:512,1:8192] [--profile] [--out F]
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from gpu_agreement_interleaved import params_for  # the reference decode shapes

from kernelwatch_harness.__main__ import measure_interleaved
from kernelwatch_harness.inputs import sm_scale, torch_inputs
from kernelwatch_harness.measure import Measurer
from kernelwatch_harness.torch_backends import sdpa_kernel


def sdp_choice(params: dict[str, Any]) -> str | None:
    inp = torch_inputs("batch_decode", params, "cuda")
    d = inp.data
    return sdpa_kernel(d["q"], d["k"], d["v"], sm_scale("batch_decode", params), False)


def profiled(measurer: Measurer, rows: list[dict[str, Any]]) -> None:
    """Wrap ``measurer.measure`` so each repeat's GPU kernels are recorded in ``rows``."""
    measure = measurer.measure

    def wrapper(kernel: str, index: int, params: dict[str, Any], backend: str,
                previous: dict[str, Any] | None = None) -> dict[str, Any]:
        acts = [torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=acts) as prof:
            msg = measure(kernel, index, params, backend, previous)
        kernels: dict[str, list[float]] = collections.defaultdict(list)
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                kernels[e.name].append(e.device_time)
        top = sorted(kernels.items(), key=lambda kv: -sum(kv[1]))[:4]
        rows.append({
            "point_index": index, "repeat": len(msg.get("repeat_sizes") or []),
            "kernels": [(name[:90], len(t), round(sum(t) / len(t), 2)) for name, t in top],
        })
        return msg

    measurer.measure = wrapper  # type: ignore[method-assign]


def run_variant(name: str, shapes: list[tuple[int, int]], check: bool,
                profile: bool, keep_cache: bool = False) -> list[dict[str, Any]]:
    cfg = {"warmup": 5, "iterations": 30, "repeats": 3, "cold_l2": True,
           "check_correctness": check}
    measurer = Measurer("cuda", cfg)
    prof_rows: list[dict[str, Any]] = []
    if profile:
        profiled(measurer, prof_rows)
    units = [(i, params_for(b, kv), "torch-sdpa") for i, (b, kv) in enumerate(shapes)]
    out = io.StringIO()
    empty_cache = torch.cuda.empty_cache
    if keep_cache:  # the allocator keeps its blocks between repeats: inputs reuse them
        torch.cuda.empty_cache = lambda: None
    try:
        measure_interleaved(measurer, "batch_decode", units, out)
    finally:
        torch.cuda.empty_cache = empty_cache
    rows = []
    for line in out.getvalue().splitlines():
        msg = json.loads(line)
        if msg.get("type") != "point":
            continue
        b, kv = shapes[msg["point_index"]]
        reps = msg["telemetry"].get("repeats") or []
        row = {
            "variant": name, "batch_size": b, "kv_len": kv, "status": msg["status"],
            "repeat_medians_us": [round(r["median_us"], 2) for r in reps],
            "calls_per_replay": (msg["telemetry"].get("rotation") or {}).get("calls_per_replay"),
            "kernels": [p["kernels"] for p in prof_rows if p["point_index"] == msg["point_index"]],
        }
        rows.append(row)
        print(f"{name:8} B={b:<4} kv={kv:<6} repeats {row['repeat_medians_us']} "
              f"calls/replay {row['calls_per_replay']} {msg['status']}", flush=True)
        for n, ks in enumerate(row["kernels"], 1):
            print(f"           repeat {n}: {ks}", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="256:512,1:8192,1:32768,64:512,16:2048")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    shapes = [(int(s.split(":")[0]), int(s.split(":")[1])) for s in args.shapes.split(",")]
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)
    rows: list[dict[str, Any]] = []
    for b, kv in shapes:
        choice = sdp_choice(params_for(b, kv))
        print(f"sdp choice B={b} kv={kv}: {choice}", flush=True)
        rows.append({"variant": "sdp_choice", "batch_size": b, "kv_len": kv, "choice": choice})
        torch.cuda.empty_cache()
    rows += run_variant("harness", shapes, True, False)
    rows += run_variant("nocheck", shapes, False, False)
    rows += run_variant("keepcache", shapes, True, False, keep_cache=True)
    if args.profile:
        rows += run_variant("profiled", shapes, True, True)
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
