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
