"""The named sustained timing mode (timing.clock): what the harness does with it, that it is
recorded per point, and that it is part of the series identity."""

from __future__ import annotations

from kernelwatch.core.series import clock_state, series_key
from kernelwatch.core.spec import SweepSpec, Timing, cpu_decode_sweep
from kernelwatch_harness.measure import Measurer
from kernelwatch_harness.protocol import SUSTAINED_WARMUP_MS


def test_the_spec_names_the_clock_and_a_time_based_warm_up_means_sustained() -> None:
    assert Timing().clock == "boost"
    assert Timing(clock="sustained").clock == "sustained"
    # A warm-up in ms has always measured the sustained clock: the spec now says so.
    assert Timing(warmup_ms=150).clock == "sustained"
    spec = SweepSpec(**cpu_decode_sweep(timing={"clock": "sustained"}))
    assert spec.timing.config()["clock"] == "sustained"


def test_the_harness_warms_heavy_calls_and_keeps_every_sample_at_the_sustained_clock() -> None:
    boost = Measurer("cpu", {})
    sustained = Measurer("cpu", {"clock": "sustained"})
    assert (boost.clock_mode, boost.warmup_ms) == ("boost", 0.0)
    assert (sustained.clock_mode, sustained.warmup_ms) == ("sustained", SUSTAINED_WARMUP_MS)
    assert sustained.clock_floor == 0.0  # nothing is retaken under a floor
    assert Measurer("cpu", {"clock": "sustained", "warmup_ms": 200}).warmup_ms == 200


def test_the_clock_mode_is_part_of_the_series_identity() -> None:
    assert clock_state({"clock_mode": "sustained", "clock_floor": None}) == "sustained"
    assert clock_state({"clock_mode": "boost", "clock_floor": 0.985}) == "boost"
    assert clock_state({"clock_mode": None, "clock_floor": None}) is None  # CPU points
    p = {"kv_len": 512}
    keys = {series_key("single_decode", p, "fa2", "h200", True, c)
            for c in (None, "boost", "sustained")}
    assert len(keys) == 3
