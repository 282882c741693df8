"""What differs between the environments of two sets of runs (the comparison names it), and
where a series' environment changed (its history breaks there)."""

from __future__ import annotations

from kernelwatch.core.environment import (
    SAME_AS_FLASHINFER,
    context,
    env_fingerprint,
    environment_changed,
    environment_differences,
)

H200 = {"device": "cuda", "gpu_name": "NVIDIA H200", "driver": "580.159.04", "torch": "2.11.0",
        "torch_cuda": "13.0", "power_limit_w": 700.0, "max_sm_clock_mhz": 1980}


def _env(version: str, **over: object) -> dict[str, object]:
    return {**H200, "flashinfer": version, "flashinfer_cubin": version, **over}


def test_two_releases_in_one_environment_differ_in_nothing_that_is_named() -> None:
    # Each side's cubin package is its own release's: expected, whatever the release.
    assert environment_differences([_env("0.6.18.post1")], [_env("0.7.4")]) == []
    assert context(_env("0.7.4"))["flashinfer_cubin"] == SAME_AS_FLASHINFER


def test_a_different_driver_torch_or_stale_cubin_is_named() -> None:
    diffs = environment_differences(
        [_env("0.6.18.post1")],
        [_env("0.7.4", driver="590.10", torch="2.12.0", flashinfer_cubin="0.7.2")],
    )
    by_field = {d.field: d for d in diffs}
    assert set(by_field) == {"driver", "torch", "flashinfer_cubin"}
    assert by_field["driver"].describe() == "driver: 580.159.04 vs 590.10"
    assert by_field["flashinfer_cubin"].contender == ("0.7.2",)
    assert by_field["torch"].as_dict()["text"] == "torch: 2.11.0 vs 2.12.0"


def test_a_side_measured_on_mixed_environments_is_named_too() -> None:
    diffs = environment_differences([_env("0.6.18.post1"), _env("0.6.18.post1", driver="590.10")],
                                    [_env("0.7.4")])
    assert [(d.field, d.baseline, d.contender) for d in diffs] == [
        ("driver", ("580.159.04", "590.10"), ("580.159.04",))]


def test_fields_no_run_recorded_are_left_out_and_missing_ones_said() -> None:
    cpu = {"device": "cpu", "torch": "2.13.0", "torch_threads": 1}
    assert environment_differences([cpu], [cpu]) == []
    diffs = environment_differences([cpu], [{**cpu, "torch": None}])
    assert [d.describe() for d in diffs] == ["torch: 2.13.0 vs unrecorded"]


def test_history_breaks_where_the_context_changed() -> None:
    assert environment_changed(_env("0.6.18.post1"), _env("0.7.4")) == []
    assert environment_changed(_env("0.7.4"), _env("0.7.4", driver="590.10")) == ["driver"]
    assert environment_changed(None, None) == []


def test_the_fingerprint_ignores_what_does_not_change_a_number() -> None:
    a = _env("0.7.4", gpu_uuid="GPU-1", clocks={"sm": 1980})
    b = _env("0.7.4", gpu_uuid="GPU-2", clocks={"sm": 1755})
    assert env_fingerprint(a) == env_fingerprint(b)
    assert env_fingerprint(a) != env_fingerprint(_env("0.7.4", driver="590.10"))
