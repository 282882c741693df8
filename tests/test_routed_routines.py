"""The prototype that runs flashinfer_benchmark.py's routines with their bench_gpu_time routed
to kernelwatch's timer (kernelwatch_harness.routed, bench/routed_routines.py), on a CPU: a
stand-in tool laid out as the real one (a script that imports a routine module when it runs
it, the routine importing bench_gpu_time from flashinfer.testing.utils and handing it its
call and tensors)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from kernelwatch_harness.official import OfficialBenchmark
from kernelwatch_harness.routed import RoutedTimer
from tests.bench_support import load_bench

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = '''
import argparse, csv
full_output_columns = ["routine", "median_time", "std_time", "backend"]

def parse_args(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--routine")
    ap.add_argument("--backends", nargs="+", default=["cuda"])
    ap.add_argument("--pass_tensors", action="store_true")
    return ap.parse_args(argv)

def run_test(args):
    from routines.fake import run  # imported when first run, as the tool does
    ms = run(args)
    with open(args.output_path, "a", newline="") as f:
        for b in args.backends:
            csv.writer(f).writerow([args.routine, sorted(ms)[len(ms) // 2], 0.0, b])
'''

ROUTINE = '''
import torch
from flashinfer.testing.utils import bench_gpu_time

SEEN = []

def run(args):
    x = torch.ones(1024)
    def fn(t=None):
        t = x if t is None else t
        SEEN.append(t.data_ptr())
        return t * 2
    if args.pass_tensors:
        return bench_gpu_time(fn=fn, dry_run_iters=2, repeat_iters=7, input_args=(x,))
    return bench_gpu_time(fn=fn, dry_run_iters=2, repeat_iters=7)
'''


@pytest.fixture
def tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OfficialBenchmark:
    bench = tmp_path / "benchmarks"
    (bench / "routines").mkdir(parents=True)
    (bench / "flashinfer_benchmark.py").write_text(SCRIPT)
    (bench / "routines" / "__init__.py").write_text("")
    (bench / "routines" / "fake.py").write_text(ROUTINE)

    def own_timer(fn: Any, dry_run_iters: int = 0, repeat_iters: int = 0,
                  **kw: Any) -> list[float]:
        return [9.0] * repeat_iters  # FlashInfer's timer: 9 ms a call

    fi, testing, utils = (ModuleType(n) for n in ("flashinfer", "flashinfer.testing",
                                                  "flashinfer.testing.utils"))
    utils.bench_gpu_time = own_timer  # type: ignore[attr-defined]
    testing.bench_gpu_time = own_timer  # type: ignore[attr-defined]
    testing.utils = utils  # type: ignore[attr-defined]
    fi.testing = testing  # type: ignore[attr-defined]
    for name, module in (("flashinfer", fi), ("flashinfer.testing", testing),
                         ("flashinfer.testing.utils", utils)):
        monkeypatch.setitem(sys.modules, name, module)
    for name in [n for n in sys.modules if n == "routines" or n.startswith("routines.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return OfficialBenchmark(str(bench))


def test_the_tools_timer_answers_until_a_timer_is_routed(tool: OfficialBenchmark) -> None:
    rows = tool.rows(["--routine", "fake", "--pass_tensors"]).rows
    assert [r["median_time"] for r in rows] == ["9.0"]

    timer = RoutedTimer("cpu")
    tool.timer = timer
    rows = tool.rows(["--routine", "fake", "--pass_tensors", "--backends", "a", "b"]).rows
    median_ms = float(rows[0]["median_time"])
    assert 0 < median_ms < 9.0 and [r["backend"] for r in rows] == ["a", "b"]
    (call,) = timer.calls
    assert call["rotated"] and call["method"] == "cpu_perf_counter"
    assert call["bytes_per_copy"] == 1024 * 4
    # every name is put back, also in the routine module imported while routed
    routine = sys.modules["routines.fake"]
    assert routine.bench_gpu_time is sys.modules["flashinfer.testing.utils"].bench_gpu_time
    tool.timer = None
    rows = tool.rows(["--routine", "fake", "--pass_tensors"]).rows
    assert rows[0]["median_time"] == "9.0"


def test_a_routine_that_keeps_its_tensors_is_timed_unrotated_and_says_so(
        tool: OfficialBenchmark) -> None:
    timer = RoutedTimer("cpu")
    tool.timer = timer
    tool.rows(["--routine", "fake"])
    (call,) = timer.calls
    assert call["rotated"] is False and call["copies"] == 1


def test_rotation_hands_the_routine_distinct_copies_of_its_inputs() -> None:
    """Sized as on a GPU with a 40 MB L2 (5x L2 of 4 KB inputs: capped at the most copies),
    each call reads another copy of the routine's input, with the same values."""
    seen: list[int] = []
    timer = RoutedTimer("cpu")
    timer._memory = lambda: (40 << 20, 1 << 30)  # type: ignore[method-assign]
    x = torch.arange(1024.0)

    def fn(t: torch.Tensor) -> None:
        assert torch.equal(t, x)
        seen.append(t.data_ptr())

    out = timer(fn, 1, 4, input_args=(x,))
    assert len(out) == 4 and all(ms >= 0 for ms in out)
    assert len(seen) == 5 and len(set(seen[1:])) == 4  # the four timed calls: four copies
    assert timer.calls[0]["copies"] == 4096 and timer.calls[0]["rotated"]


def _bench_module() -> Any:
    return load_bench("routed_routines")


def test_the_bench_reads_a_testlist_and_compares_per_backend(tmp_path: Path) -> None:
    bench = _bench_module()
    testlist = tmp_path / "t.txt"
    testlist.write_text("# a comment\n\n--routine rmsnorm --batch_size 8\n"
                        "--routine softmax --batch_size 4\n--routine rmsnorm --batch_size 16\n")
    assert bench.testlist_lines(testlist, {"rmsnorm"}, None) == [
        ["--routine", "rmsnorm", "--batch_size", "8"],
        ["--routine", "rmsnorm", "--batch_size", "16"]]
    assert len(bench.testlist_lines(testlist, None, 2)) == 2
    assert [a[1] for a in bench.testlist_lines(testlist, None, None, 1)] == ["rmsnorm",
                                                                           "softmax"]
    own = {"backends": {"cuda": 10.0, "cudnn": 20.0}}
    routed = {"backends": {"cuda": 10.5, "cudnn": None}}
    assert bench.compare(own, routed) == {"cuda": 0.05}
    text = bench.summary([{"routine": "rmsnorm", "diff": {"cuda": 0.05},
                           "tool": {"status": "ok", "wall_s": 1.0},
                           "routed": {"status": "ok", "wall_s": 2.0},
                           "routed_calls": [{"rotated": True}]}])
    assert "rmsnorm: 1 lines; tool ok 1, routed ok 1; 0/1 within 3%" in text
    assert "inputs rotated: [True]" in text and "routed 2.0 s" in text


def test_a_call_that_cannot_be_captured_is_timed_with_events_and_says_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As the adapters fall back: graph capture refused (a host sync inside the routine's
    call), the routed timer times the same rotation with CUDA events and records the error."""
    from kernelwatch_harness import routed, timing

    timer = RoutedTimer("cuda")
    monkeypatch.setattr(timer, "_memory", lambda: (0, 0))

    def refuse(*args: Any) -> list[float]:
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(timer, "_graph", refuse)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(timing, "time_cuda_events", lambda fn, datas, w, n: [2000.0] * n)
    assert routed.timing is timing
    assert timer(lambda t: t, 1, 3, input_args=(torch.ones(4),)) == [2.0, 2.0, 2.0]
    (call,) = timer.calls
    assert call["method"] == "cuda_event" and "capturing" in call["cuda_graph_error"]


def test_a_captured_call_is_recorded_as_graph_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    """The graph path's record: method, calls per replay and whether the captured calls read
    distinct copies. The GPU's graph timer is replaced at its boundary (time_cuda_graph), so
    everything the routed timer does around it runs here."""
    from kernelwatch_harness import timing

    timer = RoutedTimer("cuda")
    monkeypatch.setattr(timer, "_memory", lambda: (1 << 20, 1 << 30))
    monkeypatch.setattr(timing, "estimate_call_us", lambda call, datas: 5.0)
    monkeypatch.setattr(timing, "boost_reference_mhz", lambda: 1980.0)
    seen: dict[str, Any] = {}

    def graph(fn: Any, datas: list[dict[str, Any]], warmup: int, iterations: int, calls: int,
              **kw: Any) -> timing.GraphTiming:
        seen.update(copies=len(datas), calls=calls, floor_mhz=kw["floor_mhz"])
        pointers = [tuple(kw["pointers"](datas[i % len(datas)])) for i in range(calls)]
        return timing.GraphTiming([3000.0] * iterations, calls, pointers)

    monkeypatch.setattr(timing, "time_cuda_graph", graph)
    x = torch.ones(64 * 1024)  # 256 KiB: rotated over copies to exceed the 1 MiB L2
    assert timer(lambda t: t, 1, 4, input_args=(x,)) == [3.0] * 4
    (call,) = timer.calls
    assert call["method"] == "cuda_graph" and "cuda_graph_error" not in call
    assert call["calls_per_replay"] == seen["calls"]
    assert call["distinct_inputs_in_graph"] == min(seen["calls"], seen["copies"]) > 1
    assert seen["floor_mhz"] == pytest.approx(timer.clock_floor * 1980.0) and call["floor_met"]


def test_the_tools_own_timer_is_read_for_its_l2_state(tool: OfficialBenchmark,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Unrouted, the tool's own timer answers, and what the routine handed it decides whether
    the cross-check calls the tool's L2 cold: here a graph timer that cycles ten copies of a
    4 KiB input through a 50 MiB L2 (warm), or that is handed nothing to rotate."""
    from kernelwatch_harness import official

    monkeypatch.setattr(official, "l2_bytes", lambda: 50 << 20)
    utils = sys.modules["flashinfer.testing.utils"]
    utils.calculate_rotation_count = lambda tensors, device: 126  # type: ignore[attr-defined]
    got = tool._run(["--routine", "fake", "--pass_tensors"], "cuda")
    assert got["median_us"] == pytest.approx(9000.0) and got["method"] == "cuda_graph"
    assert got["cold_l2"] is False
    assert "over 10 of its 126 input copies" in got["l2_detail"]
    got = tool._run(["--routine", "fake"], "cuda")
    assert got["cold_l2"] is False and "no tensors to rotate" in got["l2_detail"]
    # the routine's module keeps the tool's own timer afterwards
    assert sys.modules["routines.fake"].bench_gpu_time is utils.bench_gpu_time
    # routed to kernelwatch's timer, the inputs handed over are rotated: cold
    tool.timer = RoutedTimer("cpu")
    assert tool._run(["--routine", "fake", "--pass_tensors"], "cuda")["cold_l2"] is True
    assert tool._run(["--routine", "fake"], "cuda")["cold_l2"] is False


def test_a_command_the_versions_tool_refuses_is_unavailable_not_fatal(
        tool: OfficialBenchmark) -> None:
    """argparse exits on a routine or flag the version's tool lacks (FlashInfer 0.5.3's tool
    has no norm routine); that once ended the harness and errored every later point. The
    cross-check is unavailable with argparse's reason, and the harness goes on."""
    line: Any = {"point_index": 3, "backend": "cuda", "args": ["--routine", "fake", "--rms"],
                 "reason": None}
    msg = tool.run(line)
    assert msg["status"] == "unavailable" and msg["point_index"] == 3
    assert msg["error"].startswith("flashinfer_benchmark.py of this version refused the "
                                   "command: ")
    assert msg["error"].endswith("error: unrecognized arguments: --rms")
    ok = tool.run({**line, "args": ["--routine", "fake", "--pass_tensors"]})
    assert ok["status"] == "ok" and ok["median_us"] == pytest.approx(9000.0)
