"""kernelwatch's graph timing and FlashInfer's ``bench_gpu_time`` on the SAME inputs in the
SAME process, alternated (ours, theirs, ours, theirs, ...), for the reference decode sweep.

``bench/gpu_agreement.py`` runs FlashInfer's timer in a separate process after the harness;
this separates a disagreement of method from one of state (allocation, clocks, what ran
before). Both sides: CUDA-graph replay, cold L2 by rotating input copies, the graph holding one
pass over the copies (FlashInfer's own rotation count on its side), 5 warm-up replays, 30 timed.

Run on a GPU node with FlashInfer importable (e.g. PYTHONPATH=/tmp/fi6:.):
    python3 bench/gpu_agreement_interleaved.py [--rounds 3] [--backend fa2]
Prints one line per point: each round's medians (us) and the spread, then a summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from core.catalogue import complete_params
from worker.harness import timing
from worker.harness.flashinfer_backends import prepare_flashinfer
from worker.harness.inputs import flashinfer_inputs, sm_scale


def one_point(batch: int, kv_len: int, backend: str, rounds: int) -> dict[str, Any]:
    from flashinfer.testing import bench_gpu_time
    from flashinfer.testing.utils import calculate_rotation_count

    params = complete_params("batch_decode", {
        "batch_size": batch, "kv_len": kv_len, "num_qo_heads": 32, "num_kv_heads": 8,
        "head_dim": 128, "page_size": 16, "dtype": "bfloat16"})
    inp = flashinfer_inputs("batch_decode", params, "cuda")
    prepared = prepare_flashinfer(backend, inp, sm_scale("batch_decode", params))
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    rot = timing.rotation_for(inp.data_bytes(), l2, torch.cuda.mem_get_info()[0], True)
    datas = [inp.data] + [inp.copy_data() for _ in range(rot.copies - 1)]
    calls = timing.calls_per_graph(rot.copies, timing.estimate_call_us(prepared.fn, datas))
    fi_copies = calculate_rotation_count(list(inp.data.values()))
    fi_calls = timing.calls_per_graph(fi_copies, timing.estimate_call_us(prepared.fn, datas))

    def with_kwargs(**data: Any) -> Any:
        return prepared.fn(data)

    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(rounds):
        g = timing.time_cuda_graph(prepared.fn, datas, 5, 30, calls, inp.data_ptrs)
        ours.append(statistics.median(g.samples_us))
        t = bench_gpu_time(with_kwargs, input_kwargs=inp.data, cold_l2_cache=True,
                           use_cuda_graph=True, dry_run_iters=5, repeat_iters=30,
                           num_iters_within_graph=fi_calls)
        theirs.append(statistics.median(t) * 1000.0)
    mo, mt = statistics.median(ours), statistics.median(theirs)
    return {"batch_size": batch, "kv_len": kv_len, "backend": backend, "copies": rot.copies,
            "calls": calls, "fi_copies": fi_copies, "fi_calls": fi_calls,
            "ours_us": ours, "flashinfer_us": theirs, "delta_pct": 100.0 * (mo - mt) / mt}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backend", default="fa2")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    for batch in (1, 16, 64, 256):
        for kv_len in (512, 2048, 8192, 32768):
            row = one_point(batch, kv_len, args.backend, args.rounds)
            rows.append(row)
            torch.cuda.empty_cache()  # the point's input copies went with one_point's frame
            print(f"B={batch:<4} kv={kv_len:<6} ours {[round(x, 2) for x in row['ours_us']]} "
                  f"flashinfer {[round(x, 2) for x in row['flashinfer_us']]} "
                  f"delta {row['delta_pct']:+.2f}%", flush=True)
    within = sum(abs(r["delta_pct"]) <= 3.0 for r in rows)
    worst = max(rows, key=lambda r: abs(r["delta_pct"]))
    print(f"{within}/{len(rows)} medians within +-3%; worst {worst['delta_pct']:+.2f}% "
          f"(B={worst['batch_size']}, kv={worst['kv_len']})")
    if args.out:
        args.out.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
