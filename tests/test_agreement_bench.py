"""bench/gpu_agreement.py's CUPTI configuration (FlashInfer's preferred timer) and how
bench/gpu_sweep.py counts it. On the GPU machine these run against FlashInfer's own
``bench_gpu_time``; here the glue is checked: the calling convention of each release, and
that a silent fallback to another timer never passes for a CUPTI number."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from bench import gpu_sweep
from bench.gpu_agreement import cupti_bench

RAW = Path(__file__).parent / "fixtures" / "gpu" / "raw"


def count(lines: list[str], prefix: str) -> str:
    """The figure after ": " on the report line that starts with ``prefix``."""
    return next(line for line in lines if line.startswith(prefix)).rsplit(": ", 1)[1]


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


def test_the_report_counts_cupti_agreement(tmp_path: Path) -> None:
    """With CUPTI rows (here the committed 0.6.18.post1 graph rows relabelled: a CUPTI run is
    needed for real ones), the report adds their columns and counts; the counts are those of
    the same medians under their graph label."""
    rows = [json.loads(line) for line in (RAW / "agreement-v6.jsonl").read_text().splitlines()]
    for row in rows:
        row["cupti_median_us"] = row["settled_median_us"]
        row["cupti30_median_us"] = row["fi30_median_us"]
    agreement = tmp_path / "agreement.jsonl"
    agreement.write_text("".join(json.dumps(r) + "\n" for r in rows))
    saved = gpu_sweep.load_saved([RAW / "h200-0.6.18.post1.jsonl"], agreement)
    gpu_sweep.report(*saved, ["decode", "prefill", "single"], [("0.6.18.post1", "0.6.18.post1")],
                     2, tmp_path)
    lines = (tmp_path / "summary.txt").read_text().splitlines()

    settled = count(lines, "median within ±3% of bench_gpu_time on the harness's schedule, the GPU")
    fi30 = count(lines, "median within ±3% of bench_gpu_time with flashinfer_benchmark.py's 5 dry")
    assert count(lines, "median within ±3% of bench_gpu_time with CUPTI (L2 flushed before every "
                 "call), on the harness's schedule") == settled == "49/53"
    assert count(lines, "median within ±3% of bench_gpu_time with CUPTI as "
                        "flashinfer_benchmark") == fi30
    header = next(line for line in lines if line.startswith("point "))
    assert "cupti30" in header
    assert all(len(line) == len(lines[2]) for line in lines[2:18])  # the columns line up


def test_a_newer_timer_is_loaded_from_a_wheel_beside_the_installed_release(
        tmp_path: Path) -> None:
    """``--timer-from``: a wheel's flashinfer/testing/utils.py, extracted and loaded as a
    module of its own; whether a bench_gpu_time rotates is read from its signature."""
    import zipfile

    from bench.gpu_agreement import load_timer, rotates

    wheel = tmp_path / "flashinfer_python-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("flashinfer/testing/utils.py",
                   "def bench_gpu_time(fn, input_kwargs=None, cold_l2_cache=True):\n"
                   "    return [1.0]\n"
                   "def calculate_rotation_count(tensors):\n    return 7\n")
    timer_from = gpu_sweep.timer_from_wheel(wheel, tmp_path / "out")
    assert timer_from["version"] == "9.9.9"
    module = load_timer(timer_from["path"])
    assert rotates(module.bench_gpu_time) and module.calculate_rotation_count([]) == 7
    assert not rotates(lambda fn, l2_flush=True: None)  # 0.5's signature


def test_the_report_counts_the_newer_timers_agreement(tmp_path: Path) -> None:
    """``rot_`` rows (here 0.5.3's committed graph-timer medians relabelled: only a GPU run
    makes real ones) get their own column and count, and count towards "either"."""
    rows = [json.loads(line)
            for line in (RAW / "agreement-cupti-v5.jsonl").read_text().splitlines()]
    for row in rows:
        row["rot_median_us"] = row["settled_median_us"]
    agreement = tmp_path / "agreement.jsonl"
    agreement.write_text("".join(json.dumps(r) + "\n" for r in rows))
    saved = gpu_sweep.load_saved([RAW / "cupti-h200-0.5.3.jsonl"], agreement)
    gpu_sweep.report(*saved, ["decode", "prefill", "single"], [("0.5.3", "0.5.3")], 2, tmp_path)
    lines = (tmp_path / "summary.txt").read_text().splitlines()

    settled = count(lines, "median within ±3% of bench_gpu_time on the harness's schedule, the GPU")
    assert count(lines, "median within ±3% of bench_gpu_time with the graph timer and rotated") \
        == settled
    committed = (RAW / "summary-cupti-v5.txt").read_text().splitlines()
    either = "median within ±3% of bench_gpu_time with either of its timers"
    assert count(lines, either) == count(committed, either)
    assert "FI rot" in next(line for line in lines if line.startswith("point "))
    assert all(len(line) == len(lines[2]) for line in lines[2:18])  # the columns line up


def test_the_interleaved_agreement_covers_the_evidence_sweeps_units() -> None:
    from bench.gpu_agreement_interleaved import units_of

    units = units_of(["decode", "prefill", "single"])
    assert len(units) == 53  # the figure's 53 points: 32 decode, 16 prefill, 5 single
    assert [u[0] for u in units].count("prefill") == 16
    suite, kernel, index, params, backend = units[0]
    assert (suite, kernel, index, backend) == ("decode", "batch_decode", 0, "fa2")
    assert (params["batch_size"], params["kv_len"]) == (1, 512)
    assert units_of(["single"], ["fa3"])[-1][4] == "fa3"


def test_the_interleaved_summary_counts_each_timer_and_either() -> None:
    from bench.gpu_agreement_interleaved import summary_lines

    def row(suite: str, ours: float, graph: float, cupti: float) -> dict[str, Any]:
        return {"suite": suite, "backend": "fa2", "label": "b=1", "ours_us": ours,
                "graph_us": graph, "graph_delta_pct": gpu_sweep.delta_pct(ours, graph),
                "cupti_us": cupti, "cupti_delta_pct": gpu_sweep.delta_pct(ours, cupti)}

    rows = [row("decode", 10.0, 10.1, 12.0), row("decode", 10.0, 10.7, 10.2),
            row("prefill", 100.0, 107.0, 100.1)]
    lines = summary_lines(rows, ["graph", "cupti"])
    assert "decode: 1/2 medians within +-3% of FlashInfer's graph timer; worst -6.54%" \
        in lines[0]
    assert "decode: 2/2 within +-3% of either" in lines
    assert "all: 1/3 medians within +-3% of FlashInfer's graph timer; worst -6.54%" in lines[6]
    assert lines[-1] == "all: 3/3 within +-3% of either"
