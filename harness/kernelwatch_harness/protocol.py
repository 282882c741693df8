"""The protocol between a worker and its harness subprocess (JSON lines).

The harness is installed into each FlashInfer version's own environment and started there as
``python -m kernelwatch_harness``; it imports only torch, flashinfer and the standard library.
It reads one request from stdin and writes one JSON object per line to stdout, flushing after
each, so the worker stores every
point the moment it is measured. Each point is measured in ``timing.repeats`` repeats,
interleaved over up to 32 (point, backend) units (``__main__.REPEAT_WINDOW``), and emitted after
its last repeat: a crash loses at most the points of the window in flight.

Request (stdin, one JSON object):
    {"kernel": "batch_decode",
     "device": "cuda" | "cpu",
     "backends": ["fa2", "torch-sdpa"],
     "timing": {"warmup": 5, "iterations": 30, "repeats": 3, "cold_l2": true,
                "check_correctness": true},
     "points": [{"point_index": 0, "params": {...completed params...}}, ...],
     "skip": [[point_index, backend], ...]}          # already stored: do not measure again

Messages (stdout, one per line):
    {"type": "env", "environment": {...fingerprint...}, "timing_method": "cuda_graph"}
    {"type": "point", "point_index": 0, "backend": "fa2", "resolved_backend": "fa2",
     "status": "ok" | "incorrect" | "unsupported" | "error", "error": null | "message",
     "samples_us": [...every timed iteration, microseconds, repeat after repeat...],
     "repeat_sizes": [10, 10, 10],        # samples of each repeat (core.stats: two-stage CI)
     "timing_method": "cuda_graph" | "cupti" | "cuda_event" | "cpu_perf_counter",
     "jit_seconds": float | null, "plan_seconds": float | null,
     "max_abs_error": float | null, "peak_memory_bytes": int | null,
     "throttled": bool, "telemetry": {...NVML before/after, L2 rotation facts, per repeat
     the probe's clock of every kept sample and the discards...},
     "clock_floor": 0.985 | null}          # samples kept only at >= this x the boost clock
    {"type": "start", "point_index": 0, "backend": "fa2", "repeat": 1}
                                          # before each repeat: the runner blames this unit
                                          # when the harness dies or hangs before its point
    {"type": "log", "message": "..."}
    {"type": "fatal", "error": "..."}     # the harness cannot go on (e.g. import failed)
    {"type": "done"}
"""

PROTOCOL_VERSION = 4  # 2: repeats (repeat_sizes); 3: clock_floor and per-sample clocks;
# 4: "start" before each repeat
