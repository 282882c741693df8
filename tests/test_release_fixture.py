"""The release flow's GPU evidence, recorded by bench/regression_gpu_release.py on GPU
machines: FlashInfer 0.6.18.post1 vs 0.5.3 (decode and prefill; one H200, then a machine with
two) and 0.7.4 vs 0.6.18.post1 (the standard suite's decode, prefill, norm and GEMM jobs on one
H100, docs/results/h100-2026-12.md), replayed through the comparison engine and the
confirmation: the verdicts must follow again from the stored raw samples. The two-GPU run also
shows a sweep shared by two pinned workers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernelwatch.core.compare import compare_runs
from kernelwatch.core.compare.runs import release_controls
from kernelwatch.core.fixtures import import_job, read_file
from kernelwatch.core.models import Comparison, Regression, Run
from kernelwatch.core.series import rekey
from kernelwatch.worker.confirm import settle
from kernelwatch_harness.catalogue import with_legacy_values

RELEASE = Path(__file__).parent / "fixtures" / "gpu" / "release"
FAMILIES = Path(__file__).parent / "fixtures" / "gpu" / "families"
FIXTURES = {
    "1xh200": RELEASE / "release-0.6.18.post1-vs-0.5.3-h200.json.gz",
    "2xh200": RELEASE / "release-0.6.18.post1-vs-0.5.3-2xh200.json.gz",
    "1xh100": RELEASE / "release-0.7.4-vs-0.6.18.post1-h100.json.gz",
    "suite-h100": RELEASE / "release-0.7.4-vs-0.6.18.post1-h100-whole-suite-joint.json.gz",
    "suite-alternating-h100":
        RELEASE / "release-0.7.4-vs-0.6.18.post1-h100-whole-suite-alternating.json.gz",
    "older-h100": RELEASE / "release-0.6.18.post1-vs-0.5.3-h100-older-families.json.gz",
}


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = read_file(FIXTURES[name])
    return data


def _import_runs(session: Session, data: dict[str, Any], kind: str) -> dict[str, list[int]]:
    """Import the jobs of ``kind``; their run ids by FlashInfer version."""
    runs: dict[str, list[int]] = {}
    for export in data["jobs"]:
        if export["job"]["kind"] != kind:
            continue
        job = import_job(session, export)
        session.flush()
        for run in session.scalars(select(Run).where(Run.job_id == job.id).order_by(Run.id)):
            runs.setdefault(str(run.flashinfer_version), []).append(run.id)
    session.commit()
    return runs


@pytest.mark.parametrize("name", list(FIXTURES))
def test_recorded_release_verdicts_follow_from_the_raw_samples(session: Session,
                                                               name: str) -> None:
    data = _load(name)
    recorded = data["comparisons"][0]
    runs = _import_runs(session, data, "release")
    old, new = data["release"]["previous_version"], data["release"]["version"]

    # A flow recorded since PyTorch's series are controls counts them apart.
    controls = release_controls(True) if "control_counts" in recorded["summary"] else ()
    result = compare_runs(session, runs[old], runs[new], controls=controls)

    flagged = {(p.kernel, p.backend, json.dumps(p.params, sort_keys=True))
               for p in result.regressions}
    # Recorded before use_cuda_graph was a parameter: its points import with what they measured.
    expected = {(r["kernel"], r["backend"],
                 json.dumps(with_legacy_values(r["kernel"], r["params"]), sort_keys=True))
                for r in recorded["regressions"]}
    assert flagged == expected
    assert result.counts == {k: v for k, v in recorded["summary"]["counts"].items()
                             if k in result.counts}
    if controls:
        assert result.control_counts == recorded["summary"]["control_counts"]


def test_every_point_flagged_on_one_h200_held_up_when_re_measured() -> None:
    regs = _load("1xh200")["comparisons"][0]["regressions"]
    assert {r["state"] for r in regs} == {"confirmed"}
    assert all(r["confirm_ci_low"] > 1.0 for r in regs)


@pytest.mark.parametrize("name", list(FIXTURES))
def test_a_release_run_compared_with_itself_reports_nothing(session: Session, name: str) -> None:
    data = _load(name)
    runs = _import_runs(session, data, "release")
    new = data["release"]["version"]
    result = compare_runs(session, runs[new], runs[new])
    assert result.regressions == []
    assert result.counts["unchanged"] > 0


def test_two_pinned_gpus_shared_each_release_sweep() -> None:
    data = _load("2xh200")
    release_runs = [r for j in data["jobs"] if j["job"]["kind"] == "release" for r in j["runs"]]
    # one worker per GPU, each pinned to its own GPU by UUID
    by_node = {r["node_name"]: r["environment"] for r in release_runs}
    assert sorted(by_node) == ["vm:gpu0", "vm:gpu1"]
    uuids = {env["gpu_uuid"] for env in by_node.values()}
    assert len(uuids) == 2
    for env in by_node.values():
        assert env["cuda_visible_devices"] == f"GPU-{env['gpu_uuid']}"
        assert env["gpu_name"] == "NVIDIA H200"
    # each version's grid split in two chunks, measured on the two GPUs, every point once
    for export in (j for j in data["jobs"] if j["job"]["kind"] == "release"):
        spec_points = export["job"]["total_points"]
        for version in ("0.5.3", "0.6.18.post1"):
            runs = [r for r in export["runs"] if r["flashinfer_version"] == version]
            assert sorted(r["chunk"] for r in runs) == [0, 1]
            assert all(r["chunks"] == 2 and r["status"] == "succeeded" for r in runs)
            assert {r["node_name"] for r in runs} == {"vm:gpu0", "vm:gpu1"}
            indices = sorted(i for r in runs for i in r["point_indices"])
            assert indices == sorted(set(indices))
            stored = [(p["point_index"], p["backend"]) for r in runs for p in r["points"]]
            assert len(stored) == len(set(stored))
        assert sum(len(r["points"]) for r in export["runs"]) == spec_points
    # the confirmation ran on one GPU (the node's own queue), the versions interleaved
    confirm_runs = [r for j in data["jobs"] if j["job"]["kind"] == "confirm" for r in j["runs"]]
    assert len({r["node_name"] for r in confirm_runs}) == 1
    assert len({r["queue"] for r in confirm_runs}) == 1
    for export in (j for j in data["jobs"] if j["job"]["kind"] == "confirm"):
        order = [r["flashinfer_version"] for r in sorted(export["runs"],
                                                         key=lambda r: r["started_at"])]
        assert order == ["0.5.3", "0.6.18.post1"] * 5


def _settle_again(session: Session, name: str) -> tuple[list[Regression], dict[str, str],
                                                        dict[str, Any]]:
    """The recorded run's flagged points, settled again by the confirmation from the raw
    samples of its confirm jobs: (regressions, their new states, what was recorded)."""
    data = _load(name)
    recorded = data["comparisons"][0]
    old, new = data["release"]["previous_version"], data["release"]["version"]
    release = _import_runs(session, data, "release")
    confirm = _import_runs(session, data, "confirm")
    comparison = Comparison(baseline_run_ids=release[old], contender_run_ids=release[new],
                            baseline_label=old, contender_label=new,
                            gpu_sku=recorded["gpu_sku"],
                            threshold=recorded["summary"]["threshold"], summary={})
    session.add(comparison)
    session.flush()
    regs = []
    for r in recorded["regressions"]:
        # Recorded before use_cuda_graph was a parameter, as the imported points are upgraded.
        params = with_legacy_values(r["kernel"], r["params"])
        key = rekey(r["kernel"], r["params"], params, r["backend"], r["gpu_sku"],
                    r["series_key"])
        reg = Regression(comparison_id=comparison.id, state="confirming",
                         params=params, series_key=key or r["series_key"],
                         **{k: r[k] for k in ("kernel", "backend", "gpu_sku",
                                              "baseline_version", "contender_version",
                                              "ratio", "ci_low", "ci_high")})
        session.add(reg)
        regs.append(reg)
    session.flush()
    roles = {rid: "baseline" for rid in confirm[old]}
    roles.update({rid: "contender" for rid in confirm[new]})
    return regs, settle(session, comparison, regs, roles, {}), recorded


def test_confirmation_pairs_rounds_and_repeats(session: Session) -> None:
    """The two-GPU run's confirmation, settled again from its raw samples. One point (B=1
    kv=2048 decode, tensor cores) was +5.2% in all 15 (round, repeat) blocks, but its
    repeats 1-3 sat at three levels for both versions: the pooled statistic the run used gave
    CI 0.997-1.110 and called it not reproduced. Paired by block, all four hold up."""
    regs, states, recorded = _settle_again(session, "2xh200")

    assert sorted(states.values()) == ["confirmed"] * 4
    was = {(r["backend"], json.dumps(with_legacy_values(r["kernel"], r["params"]),
                                     sort_keys=True)): r for r in recorded["regressions"]}
    blurred = [r for r in regs if was[(r.backend, json.dumps(r.params, sort_keys=True))]
               ["state"] == "not_reproduced"]
    assert len(blurred) == 1 and blurred[0].params["batch_size"] == 1
    assert blurred[0].confirm_ci_low is not None and blurred[0].confirm_ci_low > 1.03
    for r in regs:  # each confirmed ratio is close to what the release comparison found
        assert r.confirm_ratio is not None and abs(r.confirm_ratio - r.ratio) < 0.015


def test_074s_cuda_core_decode_regression_holds_up_on_two_machines(session: Session) -> None:
    """0.7.4 against 0.6.18.post1 on an H100: fa2's CUDA-core decode at batch 128 was flagged
    and confirmed (about +9-10 %), batch 16 was flagged (+5.4 %) and not reproduced, as the
    run recorded; and the two confirmed points are among those the whole release suite's run,
    on another machine, flagged (the attention family's fixture)."""
    regs, states, recorded = _settle_again(session, "1xh100")
    got = {(r.params["batch_size"], r.params["kv_len"]): states[str(r.id)] for r in regs}
    assert got == {(16, 1024): "not_reproduced", (128, 1024): "confirmed",
                   (128, 8192): "confirmed"}
    assert {(r["params"]["batch_size"], r["params"]["kv_len"]): r["state"]
            for r in recorded["regressions"]} == got
    for r in regs:
        assert r.backend == "fa2" and r.params["use_tensor_cores"] is False
        if states[str(r.id)] == "confirmed":
            assert r.confirm_ci_low is not None and r.confirm_ci_low > 1.09
            assert r.confirm_ratio is not None and 1.09 < r.confirm_ratio < 1.11

    # the whole release suite's run of the same two releases, on another H100 node
    suite = read_file(FAMILIES / "attention.json.gz")
    decode = [j for j in suite["jobs"] if j["job"]["kernel"] == "batch_decode"
              and j["job"]["spec"]["flashinfer_versions"] == ["0.6.18.post1", "0.7.4"]]
    by_version = _import_runs(session, {"jobs": decode}, "release")
    other_run = compare_runs(session, by_version["0.6.18.post1"], by_version["0.7.4"])
    flagged = {(p.params["batch_size"], p.params["kv_len"], p.params["use_tensor_cores"])
               for p in other_run.regressions if p.backend == "fa2"}
    confirmed = {(b, kv, False) for (b, kv), state in got.items() if state == "confirmed"}
    assert confirmed <= flagged


def test_the_whole_suites_confirmation_keeps_decode_and_drops_a_noisy_flag(
        session: Session) -> None:
    """The whole suite from a fresh H100 (joint sampler, cross-check on), its confirmation
    settled again from its raw samples: the three CUDA-core decode regressions hold up over
    five alternated rounds, Mamba's +3.5 % at batch 64 (CI 2.9-4.2 % in the suite's one run)
    does not, and bgmv_moe's 6x and 27x hold up on the rounds measured before the flow's
    limit (fewer than two paired blocks: the pooled samples decide)."""
    regs, states, _ = _settle_again(session, "suite-h100")
    got = {(r.kernel, r.params.get("batch_size"), r.params.get("kv_len"),
            r.params.get("num_tokens")): states[str(r.id)] for r in regs}
    assert got == {("batch_decode", 16, 1024, None): "confirmed",
                   ("batch_decode", 128, 1024, None): "confirmed",
                   ("batch_decode", 128, 8192, None): "confirmed",
                   ("selective_state_update", 64, None, None): "not_reproduced",
                   ("bgmv_moe", None, None, 16): "confirmed",
                   ("bgmv_moe", None, None, 1024): "confirmed"}
    mamba = next(r for r in regs if r.kernel == "selective_state_update")
    assert mamba.ratio > 1.03 and mamba.confirm_ratio is not None
    assert abs(mamba.confirm_ratio - 1.0) < 0.01


def test_the_suite_without_the_cross_check_confirms_the_largest_slowdown_first(
        session: Session) -> None:
    """The whole suite from a fresh H100 without the cross-check, builds started long and
    short in turn: its confirmation took bgmv_moe (27x) first and decode after, each settled
    as its own confirm job was measured; settled again from the raw samples, both hold up."""
    data = _load("suite-alternating-h100")
    confirms = sorted((j for j in data["jobs"] if j["job"]["kind"] == "confirm"),
                      key=lambda j: j["job"]["id"])
    assert [j["job"]["kernel"] for j in confirms] == ["bgmv_moe", "batch_decode"]
    regs, states, recorded = _settle_again(session, "suite-alternating-h100")
    assert set(states.values()) == {"confirmed"}
    assert {r["state"] for r in recorded["regressions"]} == {"confirmed"}
    got = {(r.kernel, r.params.get("batch_size"), r.params.get("kv_len"),
            r.params.get("num_tokens")): r.confirm_ratio for r in regs}
    assert set(got) == {("batch_decode", 16, 1024, None), ("batch_decode", 128, 1024, None),
                        ("batch_decode", 128, 8192, None), ("bgmv_moe", None, None, 16),
                        ("bgmv_moe", None, None, 1024)}
    assert 25.0 < (got[("bgmv_moe", None, None, 1024)] or 0) < 28.0
    for key in [k for k in got if k[0] == "batch_decode"]:
        assert 1.04 < (got[key] or 0) < 1.11
    # the figures docs/results/h100-2026-12.md quotes: ratio (CI) over the rounds
    assert {key: _rounded(r) for key, r in zip(got, regs, strict=True)} == {
        ("batch_decode", 16, 1024, None): (1.043, 1.012, 1.075),
        ("batch_decode", 128, 1024, None): (1.098, 1.095, 1.101),
        ("batch_decode", 128, 8192, None): (1.085, 1.081, 1.090),
        ("bgmv_moe", None, None, 16): (5.94, 5.91, 5.96),
        ("bgmv_moe", None, None, 1024): (26.6, 26.5, 26.8)}


def _rounded(r: Regression) -> tuple[float, float, float]:
    """A confirmation's ratio and CI as the results quote them: 3 decimals, or 3 figures."""
    digits = 3 if (r.confirm_ratio or 0) < 2 else (2 if (r.confirm_ratio or 0) < 10 else 1)
    assert r.confirm_ratio and r.confirm_ci_low and r.confirm_ci_high
    return (round(r.confirm_ratio, digits), round(r.confirm_ci_low, digits),
            round(r.confirm_ci_high, digits))


def test_fa2_prefill_slowed_from_0_5_3_to_0_6_18_post1_on_an_h100(session: Session) -> None:
    """0.6.18.post1 against 0.5.3 for the four families 0.5.3 has, on an H100: fa2's prefill is
    +7.7 % and +9.3 % in the release's one run and holds up over five alternated rounds each;
    the check's limit stopped the decode confirmation after its first rounds, so the two
    decode points are still confirming (what the run recorded)."""
    regs, states, recorded = _settle_again(session, "older-h100")
    by_kernel: dict[str, list[Regression]] = {}
    for r in regs:
        by_kernel.setdefault(r.kernel, []).append(r)
    for r in by_kernel["batch_prefill"]:
        assert r.backend == "fa2" and states[str(r.id)] == "confirmed"
        assert r.confirm_ci_low is not None and r.confirm_ci_low > 1.05
    assert {r.params["batch_size"]: _rounded(r) for r in by_kernel["batch_prefill"]} == {
        1: (1.063, 1.053, 1.074), 8: (1.092, 1.088, 1.097)}  # as the results quote them
    # settled from the 3 + 2 rounds measured before the limit (not evidence: docs say so)
    assert {r.params["kv_len"]: _rounded(r) for r in by_kernel["batch_decode"]} == {
        1024: (1.043, 1.008, 1.080), 8192: (1.029, 1.019, 1.039)}
    assert {r["kernel"]: r["state"] for r in recorded["regressions"]} == {
        "batch_prefill": "confirmed", "batch_decode": "confirming"}
    assert {(r.params["batch_size"], r.params["use_tensor_cores"])
            for r in by_kernel["batch_decode"]} == {(1, True)}
