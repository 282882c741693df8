"""Every backend kernelwatch offers, for every kernel, on the GPU and FlashInfer versions at
hand: what each (kernel, backend, KV dtype) becomes through the worker's harness (ok with
its resolved backend and median, unsupported with the library's message, incorrect, error).

One small point per kernel (variable-length batches, zipf lengths) in bfloat16, plus the
decode kernels with fp8 (e4m3) KV, each version in its own environment built by
``worker/envs.py`` and measured by ``worker/runner.py``'s HarnessRunner, as a job would be.
Prints a table per version and writes the raw harness messages (``--out``/raw-<version>.jsonl).

Run on a GPU node with the wheels in .whl/:
    python3 bench/gpu_backends.py --versions 0.6.18.post1 0.5.3 --out OUT
On CPU (torch backends only, FlashInfer ones unsupported) it runs with --device cpu.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.gpu_sweep import harness_for  # noqa: E402
from kernelwatch.worker.runner import HarnessRequest, HarnessRunner  # noqa: E402
from kernelwatch_harness.catalogue import KERNELS, TORCH_BACKENDS, complete_params  # noqa: E402

POINTS: dict[str, dict[str, Any]] = {
    "single_decode": {"kv_len": 4096},
    "batch_decode": {"batch_size": 16, "kv_len": 4096, "kv_len_distribution": "zipf", "seed": 1},
    "single_prefill": {"qo_len": 512, "kv_len": 2048, "causal": True},
    "batch_prefill": {"batch_size": 4, "qo_len": 256, "kv_len": 2048, "causal": True,
                      "kv_len_distribution": "uniform", "seed": 1},
    "batch_prefill_ragged": {"batch_size": 4, "qo_len": 256, "kv_len": 2048, "causal": True,
                             "kv_len_distribution": "uniform", "seed": 1},
    "mla_decode": {"batch_size": 16, "kv_len": 2048, "page_size": 64},
}
FP8_KERNELS = ("single_decode", "batch_decode")
# paged kernels also measured with the HND cache, the layout cuDNN reads
HND_KERNELS = ("batch_prefill",)
TIMING = {"warmup": 5, "iterations": 30, "repeats": 3, "cold_l2": True,
          "check_correctness": True}


def requests(device: str, torch_only: bool,
             only: list[str] | None = None) -> list[tuple[str, HarnessRequest]]:
    out = []
    for kernel, given in POINTS.items():
        backends = list(TORCH_BACKENDS if torch_only else KERNELS[kernel].backends)
        backends = [b for b in backends if not only or b in only]
        if not backends:
            continue
        variants: list[tuple[str, dict[str, Any]]] = [("bf16", {})]
        if kernel in FP8_KERNELS:
            variants.append(("fp8kv", {"kv_dtype": "float8_e4m3fn"}))
        if kernel in HND_KERNELS:
            variants.append(("hnd", {"kv_layout": "HND"}))
        for name, extra in variants:
            params = complete_params(kernel, {**given, **extra, "dtype": "bfloat16"})
            out.append((name, HarnessRequest(kernel, device, backends, dict(TIMING),
                                             [(0, params)])))
    return out


def row(kernel: str, variant: str, m: dict[str, Any]) -> str:
    med = statistics.median(m["samples_us"]) if m.get("samples_us") else None
    err = (m.get("error") or "").strip().splitlines()
    why = err[-1][:110] if err else ""
    return (f"{kernel:21} {variant:6} {m['backend']:11} {m.get('resolved_backend')!s:11} "
            f"{m['status']:11} {'' if med is None else f'{med:10.2f}':>10}  {why}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--versions", nargs="*", default=["0.6.18.post1", "0.5.3"])
    ap.add_argument("--wheelhouse", default=str(REPO / ".whl"))
    ap.add_argument("--envs-dir", default="/tmp/kw-envs")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, default=Path("gpu-backends-out"))
    ap.add_argument("--kernels", nargs="*", default=list(POINTS), choices=list(POINTS),
                    help="only these kernels (default: all)")
    ap.add_argument("--backends", nargs="*", default=None,
                    help="only these backends (default: every one each kernel offers)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    labels: list[str | None] = list(args.versions) if args.device == "cuda" else [None]
    for version in labels:
        python, env = harness_for(version, args.envs_dir, args.wheelhouse)
        print(f"== FlashInfer {version or '(none: torch backends)'} on {args.device}", flush=True)
        print(f"{'kernel':21} {'kv':6} {'backend':11} {'resolved':11} {'status':11} "
              f"{'median us':>10}  message", flush=True)
        t0 = time.perf_counter()
        with open(args.out / f"raw-{version or 'torch'}.jsonl", "w") as raw:
            for variant, req in requests(args.device, version is None, args.backends):
                if req.kernel not in args.kernels:
                    continue
                for m in HarnessRunner(python, req, env).messages():
                    raw.write(json.dumps({**m, "kernel": req.kernel, "variant": variant})
                              + "\n")
                    raw.flush()
                    if m.get("type") == "point":
                        print(row(req.kernel, variant, m), flush=True)
        print(f"   {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
