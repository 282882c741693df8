"""bench/release_timeline.py on the whole-suite release flow recorded on an H100 (0.7.4 against
0.6.18.post1 from a fresh node): the figures docs/results/h100-2026-12.md quotes follow from
the recorded flow."""

from __future__ import annotations

from pathlib import Path

from kernelwatch.core.fixtures import read_file
from tests.bench_support import load_bench

FLOW = (Path(__file__).parent / "fixtures" / "gpu" / "release"
        / "release-0.7.4-vs-0.6.18.post1-h100-whole-suite.json.gz")


def test_where_the_whole_suites_time_went() -> None:
    lines = load_bench("release_timeline").timeline(read_file(FLOW))
    text = "\n".join(lines)
    assert lines[0] == ("release 0.7.4 vs 0.6.18.post1 (complete): triggered "
                        "2026-12-06 10:19:50")
    assert "h100: 18 run(s) built side by side, 1004 s wall, 3609 s of JIT" in text
    assert ("  longest build: top_k_top_p_sampling_from_logits 0.7.4, 952 s, ended after "
            "1004 s") in text
    assert ("  points stored: 148; 135 before the last build ended, the last of those after "
            "732 s") in text
    assert ("comparison 1 (h100): 1041 s after the trigger, 5 regression, 8 improvement, "
            "61 unchanged; regressions confirm_failed") in text
    assert "confirmation of batch_decode: 5 of 10 runs measured, from 1041 s (running)" in text
    assert lines[-1] == "notification: 1081 s after the trigger"
    # the builds in the order they ended, the sampler's last
    builds = [line for line in lines if "built in" in line]
    assert len(builds) == 18 and builds[-1].split()[:2] == ["top_k_top_p_sampling_from_logits",
                                                            "0.7.4"]


JOINT = FLOW.with_name("release-0.7.4-vs-0.6.18.post1-h100-whole-suite-joint.json.gz")


def test_the_suite_with_the_joint_sampler_and_the_measuring_it_waited_for() -> None:
    """The suite with its sampler filtering jointly and its entries longest build first, from
    a fresh H100: the builds end by 676 s, the node's one-at-a-time measuring (cross-check on)
    bounds the comparison at 994 s, and replayed without the cross-check the last run ends at
    684 s. The confirmation reproduces the decode regressions and not the Mamba one."""
    lines = load_bench("release_timeline").timeline(read_file(JOINT))
    text = "\n".join(lines)
    assert "h100: 18 run(s) built side by side, 676 s wall, 3019 s of JIT" in text
    assert "  longest build: bgmv_moe 0.7.4, 676 s, ended after 676 s" in text
    assert ("  measuring: 18 run(s) one at a time, from 162 s to 994 s, 832 s busy; the "
            "cross-check took 379 s of it (most in one run: batch_decode 0.6.18.post1, 186 s)"
            ) in text
    assert ("  without the cross-check (estimate, this order replayed): the last run would "
            "have ended after 684 s") in text
    assert ("comparison 1 (h100): 994 s after the trigger, 6 regression, 8 improvement, "
            "25 unchanged; regressions confirming") in text
    # the builds' start orders replayed: the model reproduces the run (993 s against 994 s),
    # and alternating the longest and shortest builds starts the measuring earlier
    assert "  build orders replayed (8 at a time, the recorded times):" in text
    assert ("    as run: builds end after 676 s; measuring ends after 993 s with the "
            "cross-check, 684 s without") in text
    assert ("    alternating longest and shortest: builds end after 676 s; measuring ends "
            "after 842 s with the cross-check, 684 s without") in text
    assert ("  {'batch_size': 128, 'kv_len': 8192, 'use_tensor_cores': False}: 1.105 over "
            "5+5 rounds (median of medians)") in text
    assert "  {'batch_size': 64}: 1.001 over 5+5 rounds (median of medians)" in text
    sampler = [line for line in lines if line.lstrip().startswith("top_k_top_p_sampling")]
    assert [line.split()[4] for line in sampler] == ["161", "198"]  # built in, joint: no top-k


def test_the_replay_without_the_cross_check_on_the_earlier_run() -> None:
    """In the earlier run the sampler's top-k build (ended 1004 s) bounded everything: taking
    the cross-check away would not have moved the last run."""
    text = "\n".join(load_bench("release_timeline").timeline(read_file(FLOW)))
    assert ("  measuring: 18 run(s) one at a time, from 45 s to 1041 s, 696 s busy; the "
            "cross-check took 308 s of it") in text
    assert "would have ended after 1039 s" in text


ALTERNATING = FLOW.with_name(
    "release-0.7.4-vs-0.6.18.post1-h100-whole-suite-alternating.json.gz")


def test_the_suite_without_the_cross_check_from_a_fresh_node() -> None:
    """The release flow's default (no cross-check), builds started long and short in turn,
    from a fresh H100: the builds end at 452 s, 142 of the 148 points are measured while they
    run, the comparison comes 12 s after the last build, and the confirmation (bgmv_moe's
    27x first, then decode) is done at 571 s."""
    lines = load_bench("release_timeline").timeline(read_file(ALTERNATING))
    text = "\n".join(lines)
    assert lines[0] == ("release 0.7.4 vs 0.6.18.post1 (complete): triggered "
                        "2026-12-06 14:20:38")
    assert "h100: 18 run(s) built side by side, 452 s wall, 1959 s of JIT" in text
    assert "  longest build: bgmv_moe 0.7.4, 452 s, ended after 452 s" in text
    # a node with no build history starts the suite's entries in its listed order
    builds = [line.split()[0] for line in lines if "built in" in line]
    assert builds[:4] == ["gated_delta_rule_decode", "fused_add_rmsnorm",
                          "gated_delta_rule_decode", "fused_add_rmsnorm"]
    assert ("  measuring: 18 run(s) one at a time, from 33 s to 464 s, 324 s busy; the "
            "cross-check took 0 s of it") in text
    assert ("  points stored: 148; 142 before the last build ended, the last of those after "
            "428 s") in text
    assert ("comparison 1 (h100): 464 s after the trigger, 5 regression, 6 improvement, "
            "28 unchanged; regressions confirmed") in text
    confirmations = [line for line in lines if line.startswith("confirmation of")]
    assert confirmations == [
        "confirmation of bgmv_moe: 10 of 10 runs measured, from 464 s (succeeded)",
        "confirmation of batch_decode: 10 of 10 runs measured, from 517 s (succeeded)"]
    assert lines[-1] == "notification: 571 s after the trigger"


def test_what_builds_beside_the_measuring_and_another_node_moved() -> None:
    """Decode's confirmed series, measured in the release's runs while builds ran, read within
    1.4 % of the confirmation's rounds measured after them; the same 148 series on two fresh
    H100 nodes differ by 1.0 % at the median, most where CUDA events time PyTorch's MoE."""
    bench = load_bench("release_timeline")
    flow = read_file(ALTERNATING)
    text = "\n".join(bench.timeline(flow))
    assert ("  {'batch_size': 16, 'kv_len': 1024, 'use_tensor_cores': False}: 1.051 over 5+5 "
            "rounds (median of medians); the release's runs read -1.4 % and -0.8 % from them"
            ) in text
    assert ("  {'batch_size': 128, 'kv_len': 1024, 'use_tensor_cores': False}: 1.100 over 5+5 "
            "rounds (median of medians); the release's runs read +1.1 % and -0.7 % from them"
            ) in text
    lines = bench.series_differences(flow, read_file(JOINT))
    assert lines[0] == ("against the other flow: 148 series in common, median difference "
                        "1.0 %, 90th percentile 3.6 %; the largest:")
    assert [line.split()[2:4] for line in lines[1:5]] == [["bgmv_moe", "torch"]] * 4
    assert lines[5].split()[:4] == ["+13.8", "%", "batch_decode", "fa2"]
    assert bench.series_differences(flow, {"jobs": []}) == [
        "against the other flow: no series in common"]
