"""Measuring one (point, backend): inputs, correctness against the float32 reference, first-call
and plan() seconds, then the timed samples, with telemetry around it. Every failure becomes a
point message with a status; nothing here ends the harness."""

from __future__ import annotations

import gc
import statistics
import time
import traceback
from typing import Any, Literal

import torch

from kernelwatch_harness import timing
from kernelwatch_harness.catalogue import KERNELS, family_of
from kernelwatch_harness.family import Operands, max_abs_error
from kernelwatch_harness.prepared import Prepared
from kernelwatch_harness.protocol import (
    SUSTAINED_WARMUP_MS,
    TIMING_DEFAULTS,
    ClockIdentity,
    ClockMode,
    PointMessage,
    TimingConfig,
    samples_per_repeat,
)
from kernelwatch_harness.telemetry import Nvml, is_throttled


class Unsupported(Exception):
    """The backend refuses this combination; the message is the library's own."""


# Phrases FlashInfer (and torch) use when refusing a combination rather than failing on it.
_UNSUPPORTED_HINTS = (
    "not supported",
    "unsupported",
    "not implemented",
    "only supports",
    "does not support",
    "only support",
    "is not available",
    "requires sm",
    "not compiled",
    "no kernel",
    "invalid backend",
)


def classify(exc: BaseException) -> Literal["unsupported", "error"]:
    if isinstance(exc, Unsupported | NotImplementedError):
        return "unsupported"
    text = str(exc).lower()
    return "unsupported" if any(h in text for h in _UNSUPPORTED_HINTS) else "error"


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _prepare(backend: str, inp: Operands, device: str) -> Prepared:
    kernel = KERNELS[inp.kernel]
    if backend not in kernel.backends:
        # FlashInfer wrappers may silently ignore an unknown backend name: never pass one.
        raise Unsupported(f"backend {backend!r} is not offered for {inp.kernel}; allowed: "
                          f"{', '.join(kernel.backends)}")
    if device == "cuda" and backend in kernel.flashinfer_backends:
        major, minor = torch.cuda.get_device_capability()
        arch = f"sm{major}{minor}"
        if arch not in kernel.archs:
            raise Unsupported(f"FlashInfer runs {inp.kernel} on {', '.join(kernel.archs)}; "
                              f"this GPU is {arch}")
    return family_of(inp.kernel).prepare(backend, inp, device)


class Measurer:
    def __init__(self, device: str, timing_cfg: TimingConfig) -> None:
        self.device = device
        cfg: TimingConfig = {**TIMING_DEFAULTS.as_dict(), **timing_cfg}
        self.warmup = int(cfg["warmup"])
        # Calls >= timing.SUSTAINED_MIN_CALL_US warm up for at least this much GPU time.
        self.warmup_ms = float(cfg["warmup_ms"])
        # The sustained clock: heavy calls warm up first (SUSTAINED_WARMUP_MS unless warmup_ms
        # says otherwise) and every sample is kept; warmup_ms > 0 alone asks for it too.
        self.clock_mode: ClockMode = (
            "sustained" if cfg["clock"] == "sustained" or self.warmup_ms > 0 else "boost")
        if self.clock_mode == "sustained" and self.warmup_ms <= 0:
            self.warmup_ms = SUSTAINED_WARMUP_MS
        floor = float(cfg["clock_floor"])
        self.boost_mhz: float | None = None  # the probe's boost reading, taken at first use
        # A point is measured in ``repeats`` repeats (harness/__main__.py interleaves them
        # with the other points); each repeat times ``iterations`` samples.
        self.repeats = max(1, int(cfg["repeats"]))
        self.iterations = samples_per_repeat(int(cfg["iterations"]), self.repeats)
        self.cold_l2 = bool(cfg["cold_l2"])
        self.check = bool(cfg["check_correctness"])
        # Default "cuda_graph" (graph replay, the method verified on the GPU machine);
        # "cupti" (kernel time from CUPTI activity records, when cupti-python is installed)
        # and "auto" (CUPTI when available) are opt-in; "cuda_event" is the fallback.
        self.method = str(cfg["method"])
        self.cupti = timing.cupti_module() if device == "cuda" else None
        # How CUPTI timing makes L2 cold: "rotate" (input copies totalling >= 5x L2, each
        # call reads the next), "flush" (FlashInfer's bench_gpu_time convention: the same
        # inputs, a 2x-L2 buffer written before each call) or "flush_clean" (that buffer read
        # instead, leaving no dirty lines for the call to write back: timing.l2_flusher).
        # Graph replay always rotates.
        self.cold_l2_method = str(cfg["cold_l2_method"])
        if self.method == "auto":
            self.method = timing.CUPTI if self.cupti is not None else timing.CUDA_GRAPH
        if self.method == timing.CUPTI and self.cupti is None:
            self.method = timing.CUDA_GRAPH
        self.nvml = Nvml() if device == "cuda" else None
        # Graph-replay samples taken under this fraction of the boost clock are retaken after
        # an idle gap (timing.collect_at_clock). Graph replay only (CUPTI and CUDA-event timing
        # keep every call), and off when warmup_ms asks for the sustained-load clock.
        on_graph = device == "cuda" and self.method == timing.CUDA_GRAPH
        self.clock_floor = floor if on_graph and self.warmup_ms <= 0 else 0.0
        self.l2_bytes = timing.l2_bytes() if device == "cuda" else 0

    def clock_identity(self) -> ClockIdentity:
        """The clock discipline every point of this harness keeps its samples under: part of
        the series identity (core.series.clock_state), sent with the env message too so that
        a point the worker errors for a crashed harness carries it as well."""
        return {"clock_floor": self.clock_floor or None,
                "clock_mode": self.clock_mode if self.device == "cuda" else None}

    @property
    def default_method(self) -> str:
        if self.device != "cuda":
            return timing.CPU_PERF_COUNTER
        return self.method

    def measure(
        self,
        kernel: str,
        index: int,
        params: dict[str, Any],
        backend: str,
        previous: PointMessage | None = None,
    ) -> PointMessage:
        """One repeat of (point, backend). The first (``previous`` None) also records the
        first-call/JIT and plan() seconds and checks correctness; a later one rebuilds the
        inputs, times again and appends its samples to ``previous`` (``repeat_sizes`` says
        where each repeat's samples start). A failed repeat ends the point with its status."""
        first = previous is None
        msg: PointMessage = (
            previous
            if previous is not None
            else {
                "type": "point",
                "point_index": index,
                "backend": backend,
                "resolved_backend": None,
                "status": "ok",
                "error": None,
                "samples_us": [],
                "repeat_sizes": [],
                "timing_method": None,
                "jit_seconds": None,
                "plan_seconds": None,
                "max_abs_error": None,
                "peak_memory_bytes": None,
                "throttled": False,
                "telemetry": {},
                **self.clock_identity(),
            }
        )
        # The first repeat's telemetry stays at the top level; every repeat's NVML readings
        # and median are listed under "repeats".
        telemetry: dict[str, Any] = msg["telemetry"] if first else {}
        if self.nvml is not None:
            telemetry["nvml_before"] = self.nvml.snapshot()
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        samples: list[float] = []
        started = time.perf_counter()
        try:
            if first:
                samples = self._measure(kernel, params, backend, msg)
            else:
                samples = self._remeasure(kernel, params, backend, msg, telemetry)
        except Exception as exc:  # one point never ends the harness
            msg["status"] = classify(exc)
            where = "" if first else f"repeat {len(msg['repeat_sizes']) + 1}: "
            msg["error"] = f"{where}{type(exc).__name__}: {exc}".strip()[:4000]
            if msg["status"] == "error":
                msg["telemetry"]["traceback"] = traceback.format_exc(limit=8)[-4000:]
            msg["samples_us"], msg["repeat_sizes"], samples = [], [], []
        finally:
            if self.device == "cuda":
                try:
                    torch.cuda.synchronize()
                    peak = int(torch.cuda.max_memory_allocated())
                    msg["peak_memory_bytes"] = max(peak, msg["peak_memory_bytes"] or 0)
                except Exception:  # a broken context: keep the message we have
                    pass
            if self.nvml is not None:
                telemetry["nvml_after"] = self.nvml.snapshot()
                before = (telemetry.get("nvml_before") or {}).get("throttle_reasons")
                after = (telemetry.get("nvml_after") or {}).get("throttle_reasons")
                msg["throttled"] = bool(msg["throttled"]) or is_throttled(before, after)
            if (telemetry.get("clock") or {}).get("floor_met") is False:
                msg["throttled"] = True  # samples under the clock floor had to be kept
            if samples:
                msg["samples_us"].extend(samples)
                msg["repeat_sizes"].append(len(samples))
                msg["telemetry"].setdefault("repeats", []).append(
                    {
                        "median_us": statistics.median(samples),
                        "nvml_before": telemetry.get("nvml_before"),
                        "nvml_after": telemetry.get("nvml_after"),
                        "rotation_verified": (telemetry.get("rotation") or {}).get("verified"),
                        "warmup": telemetry.get("warmup"),
                        "clock": telemetry.get("clock"),
                        # wall time of the repeat: inputs, (JIT, plan, check,) copies, capture,
                        # warm-up and samples; the sweep's wall time is the sum of these
                        "seconds": round(time.perf_counter() - started, 4),
                    }
                )
            # Free this repeat's tensors held in reference cycles before the cache is
            # emptied, then freeze the survivors: a full collection over torch's and
            # FlashInfer's objects took ~90 ms, once per repeat, a third of a sweep's time;
            # frozen, each collection scans only what was made since the last one.
            gc.collect()
            gc.freeze()
            if self.device == "cuda":
                torch.cuda.empty_cache()
        return msg

    def _inputs(self, kernel: str, params: dict[str, Any], backend: str) -> Operands:
        """The seeded inputs in the layout the backend reads, on this measurer's device."""
        return family_of(kernel).inputs(kernel, params, backend, self.device)

    def _measure(
        self, kernel: str, params: dict[str, Any], backend: str, msg: PointMessage
    ) -> list[float]:
        telemetry = msg["telemetry"]
        family = family_of(kernel)
        inp = self._inputs(kernel, params, backend)
        t0 = time.perf_counter()
        prepared = _prepare(backend, inp, self.device)
        first = prepared.fn(inp.data)
        _sync(self.device)
        # First call (and first plan()): module load and JIT compilation land here, never in
        # the samples.
        msg["jit_seconds"] = time.perf_counter() - t0
        msg["resolved_backend"] = prepared.resolved_backend
        telemetry.update(prepared.notes)
        if prepared.plan is not None:
            plans = []
            for _ in range(3):
                _sync(self.device)
                t1 = time.perf_counter()
                prepared.plan()
                _sync(self.device)
                plans.append(time.perf_counter() - t1)
            msg["plan_seconds"] = sorted(plans)[1]
            telemetry["first_plan_seconds"] = prepared.first_plan_seconds
        if self.check:
            err = max_abs_error(prepared.outputs(first), family.reference(inp))
            msg["max_abs_error"] = err
            tol = family.tolerance(kernel, params)
            telemetry["tolerance"] = tol
            if not err <= tol:
                msg["status"] = "incorrect"
                msg["error"] = f"max abs error {err:.3g} vs float32 reference exceeds {tol:g}"
        del first
        samples, msg["timing_method"] = self._time(prepared, inp, telemetry)
        return samples

    def _remeasure(
        self,
        kernel: str,
        params: dict[str, Any],
        backend: str,
        msg: PointMessage,
        telemetry: dict[str, Any],
    ) -> list[float]:
        """A later repeat: the same seeded inputs built anew (so they land elsewhere in
        memory), the backend prepared again (JIT is warm), timed by the same method."""
        inp = self._inputs(kernel, params, backend)
        prepared = _prepare(backend, inp, self.device)
        samples, method = self._time(prepared, inp, telemetry)
        if method != msg["timing_method"]:
            # Pooling samples of two methods would mix two quantities.
            raise RuntimeError(
                f"timing fell back from {msg['timing_method']} to {method}: "
                f"{telemetry.get('cuda_graph_error') or telemetry.get('cupti_error')}"
            )
        return samples

    def _time(
        self, prepared: Prepared, inp: Operands, telemetry: dict[str, Any]
    ) -> tuple[list[float], str]:
        """Samples and the method that produced them: the configured method, falling back
        (CUPTI -> graph replay -> CUDA events) with the reason kept in the telemetry."""
        if self.device != "cuda":
            samples = timing.time_cpu(prepared.fn, [inp.data], self.warmup, self.iterations)
            return samples, timing.CPU_PERF_COUNTER
        if self.method == timing.CUPTI and self.cold_l2 and self.cold_l2_method in timing.FLUSHES:
            try:
                return self._cupti_flush(prepared, inp, telemetry), timing.CUPTI
            except Exception as exc:
                telemetry["cupti_error"] = f"{type(exc).__name__}: {exc}"[:1000]
                torch.cuda.synchronize()
        free, _ = torch.cuda.mem_get_info()
        rot = timing.rotation_for(inp.data_bytes(), self.l2_bytes, free, self.cold_l2)
        datas = [inp.data] + [inp.copy_data() for _ in range(rot.copies - 1)]
        ptrs = [tuple(inp.data_ptrs(d)) for d in datas]
        telemetry["rotation"] = {**rot.as_dict(), "distinct_copies": len(set(ptrs))}
        if self.method == timing.CUPTI:
            try:
                return self._cupti_rotate(prepared, inp, datas, telemetry), timing.CUPTI
            except Exception as exc:  # CUPTI busy or refused: graph replay instead
                telemetry["cupti_error"] = f"{type(exc).__name__}: {exc}"[:1000]
                torch.cuda.synchronize()
        if self.method in (timing.CUPTI, timing.CUDA_GRAPH):
            try:
                return self._graph(prepared, inp, datas, telemetry), timing.CUDA_GRAPH
            except Exception as exc:  # capture refused (host sync inside, …): events instead
                telemetry["cuda_graph_error"] = f"{type(exc).__name__}: {exc}"[:1000]
                torch.cuda.synchronize()
        warm = self._warmup(timing.estimate_call_us(prepared.fn, datas), telemetry)
        samples = timing.time_cuda_events(prepared.fn, datas, warm, self.iterations)
        return samples, timing.CUDA_EVENT

    def _warmup(self, est_call_us: float, telemetry: dict[str, Any]) -> int:
        """How many eager calls warm up before the samples (CUPTI, CUDA events), from an
        eager estimate of the call time (host launch gaps included, so short calls may
        look heavy: their warm-up is then longer than needed, never shorter)."""
        warm = timing.warmup_replays(est_call_us, 1, self.warmup, self.warmup_ms)
        telemetry["warmup"] = {"calls": warm, "gpu_ms": round(warm * est_call_us / 1000.0, 2)}
        return warm

    def _graph(
        self,
        prepared: Prepared,
        inp: Operands,
        datas: list[dict[str, Any]],
        telemetry: dict[str, Any],
    ) -> list[float]:
        est = timing.estimate_call_us(prepared.fn, datas)
        calls = timing.calls_per_graph(len(datas), est)
        if self.boost_mhz is None:
            self.boost_mhz = timing.boost_reference_mhz()
        floor = self.clock_floor * self.boost_mhz
        res = timing.time_cuda_graph(
            prepared.fn,
            datas,
            timing.warmup_count(est, calls, self.warmup),
            self.iterations,
            calls,
            inp.data_ptrs,
            self.warmup_ms,
            timing.PROBE_CYCLES,
            floor,
            prepared.generators,
        )
        telemetry["warmup"] = {"replays": res.warmup_replays, "gpu_ms": res.warmup_gpu_ms}
        clocks = res.clocks_mhz or []
        telemetry["clock"] = {
            "boost_mhz": round(self.boost_mhz, 1),
            "floor_mhz": round(floor, 1) if floor else None,
            "bursts": res.bursts,
            "discarded": res.discarded,
            "floor_met": res.floor_met,
            "median_mhz": round(statistics.median(clocks), 1) if clocks else None,
            "min_mhz": round(min(clocks), 1) if clocks else None,
            "samples_mhz": [round(c, 1) for c in clocks],
        }
        if res.floor_met and clocks:
            # The probe reads the same boost clock a little differently from load to load;
            # the highest median seen is the reference for the points after this one.
            self.boost_mhz = max(self.boost_mhz, statistics.median(clocks))
        check = res.rotation_check()
        telemetry["rotation"].update(check)
        # calls >= copies, so every copy must have been read inside the graph
        telemetry["rotation"]["verified"] = check["distinct_inputs_in_graph"] == len(datas)
        return res.samples_us

    def _cupti_rotate(
        self,
        prepared: Prepared,
        inp: Operands,
        datas: list[dict[str, Any]],
        telemetry: dict[str, Any],
    ) -> list[float]:
        # Every timed call reads the next copy; copies made early are long evicted by the
        # ones made after them.
        warm = self._warmup(timing.estimate_call_us(prepared.fn, datas), telemetry)
        order = [datas[(warm + i) % len(datas)] for i in range(self.iterations)]
        samples = timing.time_cupti(prepared.fn, datas, warm, order, self.cupti)
        used = {tuple(inp.data_ptrs(d)) for d in order}
        telemetry["rotation"]["distinct_inputs_timed"] = len(used)
        telemetry["rotation"]["verified"] = len(used) == min(self.iterations, len(datas))
        return samples

    def _cupti_flush(
        self, prepared: Prepared, inp: Operands, telemetry: dict[str, Any]
    ) -> list[float]:
        clean = self.cold_l2_method == "flush_clean"
        flush, nbytes = timing.l2_flusher(self.l2_bytes, clean=clean)
        warm = self._warmup(timing.estimate_call_us(prepared.fn, [inp.data]), telemetry)
        samples = timing.time_cupti(
            prepared.fn,
            [inp.data],
            warm,
            [inp.data] * self.iterations,
            self.cupti,
            before=flush,
        )
        telemetry["cold_l2"] = {
            "method": self.cold_l2_method,
            "flush_bytes": nbytes,
            "flush_writes": not clean,
            "l2_bytes": self.l2_bytes,
            "flushes": self.iterations,
        }
        return samples
