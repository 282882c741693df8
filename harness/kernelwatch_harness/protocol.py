"""The protocol between a worker and its harness subprocess: typed JSON lines.

The harness is installed into each FlashInfer version's own environment and started there as
``python -m kernelwatch_harness``; it imports only torch, flashinfer and the standard library.
It reads one ``Request`` (one JSON object) from stdin and writes one ``Message`` per line to
stdout, flushing after each, so the worker stores every point the moment it is measured. Each
point is measured in ``timing.repeats`` repeats, interleaved over up to 32 (point, backend)
units (``__main__.REPEAT_WINDOW``), and emitted after its last repeat: a crash loses at most
the points of the window in flight.

The message order: ``env`` once (or ``fatal``: the harness cannot go on), then per unit and
repeat a ``start`` (the runner blames that unit when the harness dies or hangs before its
point), a ``point`` per (point, backend) after its last repeat, ``log`` lines at any time,
and ``done`` at the end. With ``Request.crosscheck``, a unit's ``point`` is followed by its
``crosscheck``: FlashInfer's own benchmark run on the same shape right after it.

This module is the one definition both sides use: the worker builds a ``Request`` and reads
messages through ``parse_message``; the harness builds its messages with the TypedDicts
below. The service's job spec takes its timing defaults and allowed values from
``TIMING_DEFAULTS``, ``TIMING_METHODS`` and ``COLD_L2_METHODS``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal, NotRequired, TypedDict, get_args

# 2: repeats (repeat_sizes); 3: clock_floor and per-sample clocks; 4: "start" before each
# repeat; 5: the request and the env message carry the protocol version; 6: timing.clock
# (boost | sustained) and the point's clock_mode; 7: the cross-check (Request.crosscheck and the
# "crosscheck" message); 8: a point's params per backend (PointRequest.params_by_backend).
PROTOCOL_VERSION = 8

# --------------------------------------------------------------------------- timing

TimingMethod = Literal["cuda_graph", "cupti", "auto", "cuda_event"]
ColdL2Method = Literal["rotate", "flush", "flush_clean"]
# boost: short bursts, samples under the clock floor retaken (what reruns reproduce);
# sustained: heavy calls warmed for SUSTAINED_WARMUP_MS first, every sample kept (the clock a
# serving engine's steady load runs at).
ClockMode = Literal["boost", "sustained"]
# The method a point was actually timed with ("auto" resolves; CPU runs use the host clock).
MeasuredMethod = Literal["cuda_graph", "cupti", "cuda_event", "cpu_perf_counter"]
PointStatusName = Literal["ok", "incorrect", "unsupported", "error"]

TIMING_METHODS: tuple[str, ...] = get_args(TimingMethod)
CLOCK_MODES: tuple[str, ...] = get_args(ClockMode)
# The sustained clock's default warm-up: GPU time that heavy calls (>= 100 us) run before
# their samples. Well past the tens of ms in which the power limiter lowers the SM clock.
SUSTAINED_WARMUP_MS = 500.0
COLD_L2_METHODS: tuple[str, ...] = get_args(ColdL2Method)


@dataclass(frozen=True)
class TimingDefaults:
    """What a point is measured with when the spec says nothing: the one set of defaults the
    job spec, the harness and the benchmarks share."""

    warmup: int = 5
    # Calls of >= 100 us warm up for this much GPU time first (sustained-load clock); 0: off.
    warmup_ms: float = 0.0
    # Graph-replay samples taken under this fraction of the boost clock are retaken.
    clock_floor: float = 0.985
    iterations: int = 30
    repeats: int = 3
    cold_l2: bool = True
    check_correctness: bool = True
    method: TimingMethod = "cuda_graph"
    cold_l2_method: ColdL2Method = "rotate"
    clock: ClockMode = "boost"

    def as_dict(self) -> TimingConfig:
        return TimingConfig(**asdict(self))  # type: ignore[typeddict-item]


TIMING_DEFAULTS = TimingDefaults()


def samples_per_repeat(iterations: int, repeats: int) -> int:
    """Timed samples in each repeat of a point: equal repeats (the two-stage bootstrap's fast
    path in core.stats) of at least ``iterations`` in all. Here because the harness splits
    the iterations and the service validates the split."""
    return -(-int(iterations) // max(1, int(repeats)))


class TimingConfig(TypedDict, total=False):
    """``Request.timing``: any subset; missing keys take ``TIMING_DEFAULTS``."""

    warmup: int
    warmup_ms: float
    clock_floor: float
    iterations: int
    repeats: int
    cold_l2: bool
    check_correctness: bool
    method: TimingMethod
    cold_l2_method: ColdL2Method
    clock: ClockMode


# --------------------------------------------------------------------------- request


class PointRequest(TypedDict):
    point_index: int
    # The point's completed parameters for each backend of the request (defaults filled in by
    # the service: some depend on the backend, catalogue.BACKEND_DEFAULTS). What a backend is
    # run with is exactly what its point is stored with.
    params_by_backend: dict[str, dict[str, Any]]


class CrosscheckLine(TypedDict):
    """One unit's flashinfer_benchmark.py arguments, or why it has none (the point cannot be
    expressed in that tool's flags)."""

    point_index: int
    backend: str
    args: list[str] | None
    reason: str | None


class CrosscheckRequest(TypedDict):
    script_dir: str  # the version's ``benchmarks/`` folder (flashinfer_benchmark.py, routines/)
    lines: list[CrosscheckLine]


class Request(TypedDict):
    protocol: int
    kernel: str
    device: str  # "cuda" | "cpu"
    backends: list[str]
    timing: TimingConfig
    points: list[PointRequest]
    skip: list[tuple[int, str]]  # (point_index, backend) already stored: not measured again
    crosscheck: NotRequired[CrosscheckRequest | None]


# --------------------------------------------------------------------------- messages


class ClockIdentity(TypedDict):
    """The clock discipline a harness keeps every point's samples under (series identity)."""

    clock_floor: float | None  # samples kept only at >= this x the boost clock
    clock_mode: ClockMode | None  # the clock it measures at (GPU points)


class EnvMessage(TypedDict):
    type: Literal["env"]
    protocol: int
    environment: dict[str, Any]  # the fingerprint: GPU, driver, CUDA, torch, flashinfer, ...
    timing_method: str
    # what every point of this harness carries: the worker stamps it on the points it errors
    # for a harness that died, so that they stay in their series
    clock: NotRequired[ClockIdentity]


class StartMessage(TypedDict):
    type: Literal["start"]
    point_index: int
    backend: str
    repeat: int  # 1-based


class PointMessage(TypedDict):
    type: Literal["point"]
    point_index: int
    backend: str
    status: PointStatusName
    error: str | None
    samples_us: list[float]  # every timed iteration, microseconds, repeat after repeat
    repeat_sizes: NotRequired[list[int]]  # samples of each repeat (the two-stage CI)
    resolved_backend: NotRequired[str | None]  # what "auto" (or a fallback) really ran
    timing_method: NotRequired[str | None]
    jit_seconds: NotRequired[float | None]  # first call, compile included
    plan_seconds: NotRequired[float | None]
    max_abs_error: NotRequired[float | None]
    peak_memory_bytes: NotRequired[int | None]
    throttled: NotRequired[bool]
    # NVML before/after, L2 rotation facts, per repeat the probe's clock of every kept sample
    # and the discards, the traceback of an error.
    telemetry: NotRequired[dict[str, Any]]
    clock_floor: NotRequired[float | None]  # samples kept only at >= this x the boost clock
    clock_mode: NotRequired[ClockMode | None]  # the clock it was measured at (GPU points)


CrosscheckStatus = Literal["ok", "error", "unavailable"]


class CrosscheckMessage(TypedDict):
    """FlashInfer's own benchmark on a unit's shape: ``unavailable`` when it cannot run there
    (no command for the point, no GPU), ``error`` when it ran and failed."""

    type: Literal["crosscheck"]
    point_index: int
    backend: str
    status: CrosscheckStatus
    command: str | None  # the command line run, as a user would type it
    error: NotRequired[str | None]
    median_us: NotRequired[float | None]
    std_us: NotRequired[float | None]
    method: NotRequired[str | None]  # cupti | cuda_graph | cuda_event: what its timer used
    resolved_backend: NotRequired[str | None]  # as the tool reports it (0.6+)
    cold_l2: NotRequired[bool | None]  # None: the tool's L2 state could not be told
    l2_detail: NotRequired[str | None]  # why its L2 was cold or warm (tool_timer.l2_state)
    cuda_graph_plan: NotRequired[bool | None]  # the wrapper's use_cuda_graph in that tool
    clock_mhz: NotRequired[float | None]  # NVML SM clock, median over the tool's run
    wall_s: NotRequired[float | None]  # the tool's wall time for the unit
    row: NotRequired[dict[str, str]]  # its output CSV row, as written


class LogMessage(TypedDict):
    type: Literal["log"]
    message: str


class FatalMessage(TypedDict):
    type: Literal["fatal"]
    error: str
    traceback: NotRequired[str]


class DoneMessage(TypedDict):
    type: Literal["done"]


Message = (EnvMessage | StartMessage | PointMessage | CrosscheckMessage | LogMessage
           | FatalMessage | DoneMessage)

# The keys each message type must carry (the rest are optional).
_REQUIRED: dict[str, tuple[str, ...]] = {
    "env": ("protocol", "environment", "timing_method"),
    "start": ("point_index", "backend", "repeat"),
    "point": ("point_index", "backend", "status", "samples_us"),
    "crosscheck": ("point_index", "backend", "status", "command"),
    "log": ("message",),
    "fatal": ("error",),
    "done": (),
}


class ProtocolError(ValueError):
    """A line that claims to be a message but is not one this protocol version knows."""


def parse_message(line: str) -> Message | None:
    """One stdout line of the harness as a message; None for a blank line. A line that is not
    a JSON object (something in the environment printed to stdout) becomes a ``log`` message;
    a JSON object with an unknown type or a missing key raises ``ProtocolError``."""
    line = line.strip()
    if not line:
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return LogMessage(type="log", message=line)
    if not isinstance(obj, dict):
        return LogMessage(type="log", message=line)
    kind = obj.get("type")
    if kind not in _REQUIRED:
        raise ProtocolError(f"unknown harness message type {kind!r}: {line[:200]}")
    missing = [k for k in _REQUIRED[kind] if k not in obj]
    if missing:
        raise ProtocolError(f"harness {kind} message without {', '.join(missing)}: {line[:200]}")
    if kind in ("start", "point", "crosscheck"):
        obj["point_index"] = int(obj["point_index"])
        obj["backend"] = str(obj["backend"])
    return obj  # type: ignore[return-value]


def error_point(point_index: int, backend: str, error: str,
                clock: ClockIdentity | None = None) -> PointMessage:
    """The point message for a unit that could not be measured (no env, a crashed harness),
    with the harness's clock discipline when it said one (its env message): the point keeps
    the series identity its measured twins have."""
    msg = PointMessage(type="point", point_index=point_index, backend=backend, status="error",
                       error=error, samples_us=[])
    if clock is not None:
        msg.update(clock)  # type: ignore[typeddict-item]
    return msg


def version_mismatch(got: object) -> str | None:
    """Why a request (or env message) of protocol ``got`` cannot be served; None when it can."""
    if got == PROTOCOL_VERSION:
        return None
    return (f"protocol version mismatch: the worker speaks {got!r}, this harness "
            f"{PROTOCOL_VERSION}; reinstall the harness into the environment")
