"""The notification's text for one GPU tag: every count a reader needs to trust the verdict,
one-sided series included (a release that measured a series the other did not)."""

from __future__ import annotations

from typing import Any

from kernelwatch.core.notify import release_text


def _summary(**counts: int) -> dict[str, Any]:
    base = {"regression": 0, "improvement": 2, "unchanged": 10, "baseline_only": 0,
            "contender_only": 0, "not_comparable": 1}
    return {"release": "0.7.4", "previous": "0.6.18.post1", "release_url": "",
            "gpus": [{"tag": "h100", "state": "done", "comparison_id": 1,
                      "counts": {**base, **counts}, "confirmed": [], "unconfirmed": [],
                      "not_reproduced": 0, "compare_url": "http://d/compare"}]}


def test_one_sided_series_are_counted_in_the_text() -> None:
    text = release_text(_summary(baseline_only=2, contender_only=1))
    assert ("• h100: no confirmed regression; 2 faster, 10 unchanged, 0 flagged but not "
            "reproduced, 1 not comparable, 3 measured in one release only "
            "<http://d/compare|compare>") in text


def test_nothing_one_sided_says_nothing_of_it() -> None:
    text = release_text(_summary())
    assert "one release only" not in text
    assert "1 not comparable <http://d/compare|compare>" in text


def test_moved_pytorch_controls_are_said_apart_from_flashinfers_changes() -> None:
    summary = _summary()
    summary["gpus"][0].update(controls=12, controls_moved=3)
    text = release_text(summary)
    assert ("    PyTorch controls: 3 of 12 series moved between the runs (the same code in "
            "both: the node moved, not FlashInfer)") in text
    summary["gpus"][0].update(controls_moved=0)
    assert "PyTorch controls" not in release_text(summary)
