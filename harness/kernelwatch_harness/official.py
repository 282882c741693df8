"""FlashInfer's own benchmark, ``benchmarks/flashinfer_benchmark.py`` of the version under test,
run on a unit's shape right after kernelwatch measured it: the cross-check.

It runs in the harness process, on the GPU and CUDA context kernelwatch just used, through the
script's own ``parse_args`` and ``run_test``, so each unit costs only the tool's measurement
(no new interpreter, no second import of torch and FlashInfer, no second JIT load). Its result
is read from the CSV it writes with ``--output_path``, the output users of the tool read; its
stdout is kept apart from the protocol's. Nothing here imports FlashInfer at module level.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import shlex
import statistics
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernelwatch_harness.protocol import CrosscheckLine, CrosscheckMessage
from kernelwatch_harness.routed import routed
from kernelwatch_harness.timing import l2_bytes
from kernelwatch_harness.tool_timer import TimerCall, TimerSpy, l2_state

SCRIPT = "flashinfer_benchmark.py"
MS_TO_US = 1000.0
# Routines whose wrapper flashinfer_benchmark.py builds without use_cuda_graph for fa2 (its
# timer then runs them eagerly too): the paged and ragged prefill wrappers.
_NO_GRAPH_FOR_FA2 = ("BatchPrefillWithPagedKVCacheWrapper", "BatchPrefillWithRaggedKVCacheWrapper")


def command_line(args: list[str]) -> str:
    """The command a user runs from FlashInfer's ``benchmarks/`` folder."""
    return f"python {SCRIPT} " + shlex.join(args)


class ClockSampler:
    """The NVML SM clock every ``period_s`` while the tool runs (a thread: the tool's own
    loops cannot be instrumented), so its clock state is recorded like kernelwatch's."""

    def __init__(self, nvml: Any, period_s: float = 0.005) -> None:
        self.nvml, self.period_s = nvml, period_s
        self.readings: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> None:
        nv = self.nvml.nv
        while not self._stop.is_set():
            mhz = self.nvml._get("nvmlDeviceGetClockInfo", nv.NVML_CLOCK_SM)
            if mhz:
                self.readings.append(float(mhz))
            self._stop.wait(self.period_s)

    def __enter__(self) -> ClockSampler:
        if self.nvml is not None and self.nvml.nv is not None:
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def median_mhz(self) -> float | None:
        return round(statistics.median(self.readings), 1) if self.readings else None


def read_rows(path: Path) -> list[dict[str, str]]:
    """The tool's output CSV: a header of its output columns, then one line per backend run.
    It joins values with commas unquoted; none of the values it writes holds a comma."""
    with path.open(newline="") as f:
        return [dict(row) for row in csv.DictReader(f)]


def timer_method(parsed: Any, messages: list[str]) -> str:
    """What the tool's timer used: CUPTI unless it was off (0.5's default, ``--use_cuda_events``)
    or fell back with a warning (no cupti-python); else CUDA events, around a graph unless the
    graph was off."""
    fell_back = any("falling back" in m.lower() for m in messages)
    if getattr(parsed, "use_cupti", False) and not fell_back:
        return "cupti"
    return "cuda_event" if getattr(parsed, "no_cuda_graph", False) else "cuda_graph"


def cuda_graph_plan(parsed: Any, backend: str) -> bool:
    """The wrapper's CUDA-graph plan mode in the tool (what kernelwatch's ``use_cuda_graph``
    parameter sets): on unless ``--no_cuda_graph``, and off for fa2 prefill."""
    if getattr(parsed, "no_cuda_graph", False):
        return False
    return not (parsed.routine in _NO_GRAPH_FOR_FA2 and backend == "fa2")


def result_of(row: dict[str, str]) -> dict[str, Any]:
    """Median and std (the tool writes ms) as microseconds, and the backend it resolved."""

    def us(name: str) -> float | None:
        text = row.get(name) or ""
        try:
            return float(text) * MS_TO_US
        except ValueError:
            return None

    return {"median_us": us("median_time"), "std_us": us("std_time"),
            "resolved_backend": row.get("resolved_backend") or None}


class ToolRefused(Exception):
    """The version's flashinfer_benchmark.py does not accept the command (argparse exits):
    a routine or a flag that this version's tool does not have."""


def _parse(module: Any, args: list[str]) -> Any:
    """The tool's ``parse_args``, whose argparse would exit the harness on a command it does not
    know (FlashInfer 0.5's tool has no norm routine): refused instead, with argparse's reason."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            return module.parse_args(list(args))
    except SystemExit:
        reason = [line for line in said.getvalue().splitlines() if line.strip()][-1:]
        raise ToolRefused(f"{SCRIPT} of this version refused the command"
                          + (f": {reason[0][:500]}" if reason else "")) from None


@dataclass
class ToolRun:
    """One run of the tool: its parsed arguments, CSV rows, what it said, its clock and the
    call its routine made to FlashInfer's own timer (None when kernelwatch's timer ran)."""

    parsed: Any
    rows: list[dict[str, str]]
    said: list[str]
    clocks: ClockSampler
    timer_call: TimerCall | None


class OfficialBenchmark:
    """One version's flashinfer_benchmark.py, loaded once per harness run."""

    def __init__(self, script_dir: str, nvml: Any = None, timer: Any = None) -> None:
        self.script_dir = Path(script_dir)
        self.nvml = nvml
        # A stand-in for the routines' bench_gpu_time (routed.RoutedTimer), or None: the tool's
        self.timer = timer
        self._module: Any = None

    def load(self) -> Any:
        if self._module is None:
            script = self.script_dir / SCRIPT
            if not script.is_file():
                raise FileNotFoundError(f"no {SCRIPT} in {self.script_dir}")
            # The script imports its routines as the top-level package ``routines``.
            sys.path.insert(0, str(self.script_dir))
            spec = importlib.util.spec_from_file_location("flashinfer_benchmark", script)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {script}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self._module = module
        return self._module

    def run(self, line: CrosscheckLine) -> CrosscheckMessage:
        index, backend = int(line["point_index"]), str(line["backend"])
        args = line["args"]
        if args is None:
            return CrosscheckMessage(type="crosscheck", point_index=index, backend=backend,
                                     status="unavailable", command=None,
                                     error=line["reason"] or "no command for this point")
        command = command_line(args)
        msg = CrosscheckMessage(type="crosscheck", point_index=index, backend=backend,
                                status="ok", command=command)
        started = time.perf_counter()
        try:
            msg.update(self._run(args, backend))  # type: ignore[typeddict-item]
        except ToolRefused as exc:
            msg["status"] = "unavailable"
            msg["error"] = str(exc)[:2000]
        except Exception as exc:  # the tool's failure is the cross-check's, never the point's
            msg["status"] = "error"
            msg["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        msg["wall_s"] = round(time.perf_counter() - started, 3)
        return msg

    def rows(self, args: list[str]) -> ToolRun:
        """The tool run in-process on ``args``: its parsed arguments, its CSV rows (one per
        backend), what it printed or warned, the SM clock over its run and, when its own timer
        ran, what its routine asked that timer for."""
        module = self.load()
        spy = None
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out.csv"
            out.write_text(",".join(module.full_output_columns) + "\n")
            parsed = _parse(module, args)
            parsed.output_path = str(out)
            printed = io.StringIO()
            if self.timer is not None:
                timer: Any = routed(self.timer)
            else:
                import flashinfer.testing.utils as ftu

                # FlashInfer's own timer, unchanged, read on the way through (tool_timer)
                spy = TimerSpy(ftu.bench_gpu_time, ftu)
                timer = routed(spy)
            with ClockSampler(self.nvml) as clocks, contextlib.redirect_stdout(printed), \
                    warnings.catch_warnings(record=True) as caught, timer:
                warnings.simplefilter("always")
                try:
                    module.run_test(parsed)
                except SystemExit as exc:  # the tool's own exit must not end the harness
                    raise RuntimeError(f"{SCRIPT} exited with {exc.code!r}") from None
            rows = read_rows(out)
        return ToolRun(parsed, rows, [str(w.message) for w in caught]
                       + printed.getvalue().splitlines(), clocks,
                       spy.last if spy is not None else None)

    def _run(self, args: list[str], backend: str) -> dict[str, Any]:
        run = self.rows(args)
        if not run.rows:
            errors = [s for s in run.said if "[ERROR]" in s or "rror" in s][:3]
            raise RuntimeError("flashinfer_benchmark.py wrote no result"
                               + (f": {' | '.join(errors)}" if errors else ""))
        row = run.rows[-1]
        result = result_of(row)
        if result["median_us"] is None:
            raise RuntimeError(f"flashinfer_benchmark.py wrote no median: {row}")
        method = timer_method(run.parsed, run.said)
        cold: bool | None
        if self.timer is not None:  # kernelwatch's timer (routed): cold when it could rotate
            calls = getattr(self.timer, "calls", None) or [{}]
            cold = bool(calls[-1].get("rotated"))
            why = ("kernelwatch's timer rotated the routine's inputs past the L2" if cold else
                   "the routine handed kernelwatch's timer no tensors to rotate")
        else:
            cold, why = l2_state(method, run.timer_call, l2_bytes())
        return {**result, "method": method, "cold_l2": cold, "l2_detail": why,
                "cuda_graph_plan": cuda_graph_plan(run.parsed, backend),
                "clock_mhz": run.clocks.median_mhz, "row": row}
