"""The harness's timing plan, decided before anything runs on a GPU: how many rotated input
copies make L2 cold, how many calls a graph holds, how long a point warms up. CPU only."""

from __future__ import annotations

from kernelwatch.core.spec import Timing
from kernelwatch_harness import timing
from kernelwatch_harness.families.attention import suites

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


def test_the_gpu_sweeps_use_the_services_timing_defaults() -> None:
    # The harness's copy, used by the sweep and cross-check benchmarks on a GPU node.
    defaults = Timing().model_dump()
    assert {k: defaults[k] for k in suites.TIMING} == suites.TIMING


def test_the_harness_clock_floor_is_the_specs_default() -> None:
    # The harness (no pydantic there) keeps its own copy of the default.
    assert Timing().clock_floor == timing.CLOCK_FLOOR


def test_heavy_replays_warm_up_for_a_few_ms_light_ones_by_count() -> None:
    assert timing.warmup_count(250.0, 4, 5) == 5  # a 1 ms replay: the whole count
    assert timing.warmup_count(3300.0, 1, 5) == 2  # heavy prefill: ~5 ms, not 16.5 ms
    assert timing.warmup_count(11_800.0, 1, 5) == 1
    assert timing.warmup_count(20.0, 150, 5) == 5  # light calls keep the count
    assert timing.warmup_count(10.0, 1, 0) == 1  # at least one replay before any sample


def fake_bursts(plan: list[list[tuple[float, float]]]) -> tuple[timing.Burst, list[int]]:
    """Bursts that return the (sample, clock) pairs of ``plan`` in turn, as many as asked."""
    asked: list[int] = []

    def burst(n: int) -> tuple[list[float], list[float]]:
        asked.append(n)
        pairs = plan[len(asked) - 1][:n]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    return burst, asked


def test_samples_under_the_clock_floor_are_retaken_after_an_idle_gap() -> None:
    # 4 samples asked; the limiter lowers the clock after two, the next burst is at boost.
    burst, asked = fake_bursts([
        [(100.0, 1915.0), (101.0, 1910.0), (108.0, 1850.0), (109.0, 1849.0)],
        [(100.5, 1912.0), (100.2, 1914.0)],
    ])
    slept: list[float] = []
    got = timing.collect_at_clock(burst, 4, floor_mhz=1890.0, sleep=slept.append)
    assert got.samples_us == [100.0, 101.0, 100.5, 100.2]
    assert min(got.clocks_mhz) >= 1890.0
    assert (got.bursts, got.discarded, got.floor_met) == (2, 2, True)
    assert asked == [4, 2] and slept == [timing.RECOVERY_S]


def test_a_call_the_limiter_never_spares_keeps_its_last_burst_and_is_flagged() -> None:
    # Two bursts in a row keep nothing: stop, fill from the last burst, floor not met.
    burst, asked = fake_bursts([
        [(11.9e3, 1820.0), (11.9e3, 1818.0)],
        [(11.8e3, 1830.0), (11.85e3, 1825.0)],
        [(11.4e3, 1910.0), (11.4e3, 1910.0)],
    ])
    got = timing.collect_at_clock(burst, 2, floor_mhz=1890.0, sleep=lambda s: None)
    assert got.samples_us == [11.8e3, 11.85e3] and not got.floor_met
    assert (got.bursts, got.discarded) == (2, 2) and asked == [2, 2]


def test_bursts_stop_at_the_cap_and_fill_from_the_last_one() -> None:
    # Each burst keeps only its first sample: the cap ends it, the last burst fills the rest.
    def burst(n: int) -> tuple[list[float], list[float]]:
        return [100.0] + [110.0] * (n - 1), [1900.0] + [1800.0] * (n - 1)

    got = timing.collect_at_clock(burst, 5, floor_mhz=1890.0, max_bursts=3, sleep=lambda s: None)
    assert got.samples_us == [100.0, 100.0, 100.0, 110.0, 110.0]
    assert (got.bursts, got.discarded, got.floor_met) == (3, 7, False)


def test_the_specs_cold_l2_methods_are_the_harnesss() -> None:
    """Every cold_l2_method a job may name is one the harness runs: rotation or a flush."""
    import typing

    allowed = typing.get_args(Timing.model_fields["cold_l2_method"].annotation)
    assert allowed == ("rotate", *timing.FLUSHES)
