"""Series identity: the clock the samples were kept at is part of it, and keys made before it
existed do not change."""

from __future__ import annotations

from pathlib import Path

from kernelwatch.core.fixtures import read_file
from kernelwatch.core.series import clock_state, series_key

PARAMS = {"batch_size": 64, "kv_len": 32768, "num_qo_heads": 32, "num_kv_heads": 8}
GPU = Path(__file__).parent / "fixtures" / "gpu"


def test_samples_kept_at_the_boost_clock_are_another_series() -> None:
    plain = series_key("batch_decode", PARAMS, "fa2", "h200")
    boost = series_key("batch_decode", PARAMS, "fa2", "h200", clock="boost")
    assert plain != boost
    # No clock: the key every point stored before the clock floor existed carries.
    assert series_key("batch_decode", PARAMS, "fa2", "h200", True, None) == plain


def test_clock_state_reads_the_message_or_its_repeats_telemetry() -> None:
    assert clock_state({"clock_floor": 0.985}) == "boost"
    assert clock_state({"clock_floor": None, "telemetry": {}}) is None  # CPU, CUPTI, floor off
    # A failed point of a floored run is still in the boost series (compared as not ok).
    assert clock_state({"clock_floor": 0.985, "status": "error", "telemetry": {}}) == "boost"
    # Raw files written before the message said so: the repeats' clock telemetry does.
    reps = {"telemetry": {"repeats": [{"clock": {"floor_mhz": 1885.0}}]}}
    assert clock_state(reps) == "boost"
    assert clock_state({"telemetry": {"repeats": [{"clock": {"floor_mhz": None}}]}}) is None


def test_the_evidence_puts_the_three_releases_in_one_series_per_point() -> None:
    # All three releases were measured with the clock floor: each decode point of one is the
    # same series in the others, so the dashboard compares them point by point. (Points
    # measured without the floor are other series: see the clock-key test above.)
    decode = read_file(GPU / "gpu-evidence-decode.json.gz")
    keys: dict[str | None, set[str]] = {}
    for run in decode["runs"]:
        keys.setdefault(run["flashinfer_version"], set()).update(
            p["series_key"] for p in run["points"])
    assert len(keys["0.6.18.post1"]) == 32
    assert keys["0.5.3"] == keys["0.6.18.post1"] == keys["0.7.2.post1"]
    assert keys[None].isdisjoint(keys["0.6.18.post1"])  # torch-sdpa: another backend
