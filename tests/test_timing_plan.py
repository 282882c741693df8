"""The harness's timing plan, decided before anything runs on a GPU: how many rotated input
copies make L2 cold, how many calls a graph holds, how long a point warms up. CPU only."""

from __future__ import annotations

import sys
from pathlib import Path

from core.spec import Timing
from worker.harness import timing

L2 = 60 * 2**20  # the H200's L2 as torch reports it
GIB = 2**30


def test_rotation_reaches_five_times_l2_or_stops_at_a_cap() -> None:
    rot = timing.rotation_for(8 * 2**20, L2, 100 * GIB, cold_l2=True)
    assert rot.copies == 38 and rot.total_bytes >= timing.L2_FACTOR * L2
    assert not rot.capped_by_memory
    # Inputs already 5x L2: one copy; warm L2 asked for: one copy.
    assert timing.rotation_for(5 * L2, L2, 100 * GIB, cold_l2=True).copies == 1
    assert timing.rotation_for(8 * 2**20, L2, 100 * GIB, cold_l2=False).copies == 1
    # Little free memory: fewer copies, and the telemetry says it was capped.
    capped = timing.rotation_for(8 * 2**20, L2, 100 * 2**20, cold_l2=True)
    assert capped.copies == 5 and capped.capped_by_memory
    assert capped.as_dict()["l2_multiple"] < timing.L2_FACTOR
    assert timing.rotation_for(16, L2, 100 * GIB, cold_l2=True).copies == timing.MAX_COPIES


def test_a_graph_covers_every_copy_and_about_a_millisecond() -> None:
    assert timing.calls_per_graph(38, 11.0) == 38  # one pass over the copies
    assert timing.calls_per_graph(1, 11.0) == timing.MAX_CALLS_PER_GRAPH
    assert timing.calls_per_graph(1, 250.0) == 4
    assert timing.calls_per_graph(1, 3000.0) == 1


def test_heavy_calls_warm_up_for_the_configured_gpu_time() -> None:
    # A 2.8 ms call, one per replay: 150 ms of warm-up is 54 replays, not 5.
    assert timing.warmup_replays(2800.0, 1, 5, 150.0) == 54
    # Many calls per replay count: 4 calls of 250 us are 1 ms a replay.
    assert timing.warmup_replays(250.0, 4, 5, 150.0) == 150
    # Never fewer than the count asked for.
    assert timing.warmup_replays(100_000.0, 1, 5, 150.0) == 5
    # Short calls (their clock did not move on the H200) and warmup_ms=0 keep the count.
    assert timing.warmup_replays(19.0, 10, 5, 150.0) == 5
    assert timing.warmup_replays(2800.0, 1, 5, 0.0) == 5
    assert timing.warmup_replays(timing.SUSTAINED_MIN_CALL_US, 1, 5, 150.0) == 1500


def test_the_gpu_sweep_bench_uses_the_services_timing_defaults() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import gpu_sweep

    defaults = Timing().model_dump()
    assert {k: defaults[k] for k in gpu_sweep.TIMING} == gpu_sweep.TIMING
