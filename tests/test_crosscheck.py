"""The glue between the harness and FlashInfer's own timers that the cross-check
(bench/gpu_crosscheck.py) runs on a GPU node: the calling convention of each release's
``bench_gpu_time``, that a silent fallback to another timer never passes for a CUPTI number,
the units it alternates over and the summary it prints."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from kernelwatch_harness.families.attention.crosscheck import (
    cupti_bench,
    load_timer,
    rotates,
    summary_lines,
    units_of,
)
from kernelwatch_harness.families.attention.suites import delta_pct


class Recorder:
    """Stands in for ``flashinfer.testing.bench_gpu_time``: records its keyword arguments and,
    like FlashInfer without cupti-python, warns that it falls back when told to."""

    def __init__(self, fall_back: bool = False, raises: bool = False) -> None:
        self.fall_back, self.raises = fall_back, raises
        self.kwargs: dict[str, Any] = {}

    def __call__(self, fn: Any, **kwargs: Any) -> list[float]:
        self.kwargs = kwargs
        if self.fall_back:
            warnings.warn("CUPTI is not installed. Try 'pip install -U cupti-python'. "
                          "Falling back to CUDA events for benchmarking.", UserWarning,
                          stacklevel=2)
        if self.raises:
            raise AssertionError("Torch not compiled with CUDA enabled")
        return [0.0101, 0.0102]


@pytest.mark.parametrize("version_kwargs, flush", [(True, "cold_l2_cache"), (False, "l2_flush")])
def test_cupti_bench_calls_flashinfers_cupti_path(version_kwargs: bool, flush: str) -> None:
    """0.6+ take ``cold_l2_cache``, 0.5 ``l2_flush``: either way CUPTI over a one-call graph
    with L2 flushed before every iteration, as flashinfer_benchmark.py runs it."""
    bench = Recorder()
    times = cupti_bench(bench, lambda: None, version_kwargs, dry_run_iters=0, repeat_iters=10)
    assert times == [0.0101, 0.0102]
    assert bench.kwargs == {"enable_cupti": True, "use_cuda_graph": True, flush: True,
                            "dry_run_iters": 0, "repeat_iters": 10}


@pytest.mark.parametrize("raises", [False, True])
def test_a_fallback_is_never_a_cupti_number(raises: bool) -> None:
    """Without CUPTI, bench_gpu_time warns and times with another method (or fails in it):
    that is an error naming the reason, not samples labelled CUPTI."""
    with pytest.raises(RuntimeError, match="did not use CUPTI: CUPTI is not installed"):
        cupti_bench(Recorder(fall_back=True, raises=raises), lambda: None, True)


def test_a_failure_without_fallback_is_the_libraries_own() -> None:
    with pytest.raises(AssertionError, match="not compiled with CUDA"):
        cupti_bench(Recorder(raises=True), lambda: None, True)


def test_another_releases_timer_is_loaded_as_a_module_of_its_own(tmp_path: Path) -> None:
    """``--timer-from``: a release's flashinfer/testing/utils.py loaded beside the installed
    one; whether a bench_gpu_time rotates is read from its signature."""
    utils = tmp_path / "flashinfer" / "testing" / "utils.py"
    utils.parent.mkdir(parents=True)
    utils.write_text("def bench_gpu_time(fn, input_kwargs=None, cold_l2_cache=True):\n"
                     "    return [1.0]\n"
                     "def calculate_rotation_count(tensors):\n    return 7\n")
    module = load_timer(str(utils))
    assert rotates(module.bench_gpu_time) and module.calculate_rotation_count([]) == 7
    assert not rotates(lambda fn, l2_flush=True: None)  # 0.5's signature


def test_the_crosscheck_covers_the_sweeps_units() -> None:
    units = units_of(["decode", "prefill", "single"])
    assert len(units) == 53  # 32 decode, 16 prefill, 5 single (point, backend) units
    assert [u[0] for u in units].count("prefill") == 16
    suite, kernel, index, params, backend = units[0]
    assert (suite, kernel, index, backend) == ("decode", "batch_decode", 0, "fa2")
    assert (params["batch_size"], params["kv_len"]) == (1, 512)
    assert units_of(["single"], ["fa3"])[-1][4] == "fa3"


def test_the_summary_counts_each_timer_and_either() -> None:
    def row(suite: str, ours: float, graph: float, cupti: float) -> dict[str, Any]:
        return {"suite": suite, "backend": "fa2", "label": "b=1", "ours_us": ours,
                "graph_us": graph, "graph_delta_pct": delta_pct(ours, graph),
                "cupti_us": cupti, "cupti_delta_pct": delta_pct(ours, cupti)}

    rows = [row("decode", 10.0, 10.1, 12.0), row("decode", 10.0, 10.7, 10.2),
            row("prefill", 100.0, 107.0, 100.1)]
    lines = summary_lines(rows, ["graph", "cupti"])
    assert "decode: 1/2 medians within +-3% of FlashInfer's graph timer; worst -6.54%" \
        in lines[0]
    assert "decode: 2/2 within +-3% of either" in lines
    assert "all: 1/3 medians within +-3% of FlashInfer's graph timer; worst -6.54%" in lines[6]
    assert lines[-1] == "all: 3/3 within +-3% of either"
