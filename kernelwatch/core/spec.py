"""The sweep spec: what a user asks kernelwatch to measure (JSON or YAML; field names are the
contract). Validation errors name the field and the allowed values; FastAPI turns them into
HTTP 422 with that text.
"""

from __future__ import annotations

import itertools
import json
import reprlib
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kernelwatch.core import gpus
from kernelwatch_harness import catalogue
from kernelwatch_harness.protocol import (
    TIMING_DEFAULTS,
    ClockMode,
    ColdL2Method,
    TimingConfig,
    TimingMethod,
)

MAX_GRID_POINTS = 10_000
MAX_ITERATIONS = 10_000
MAX_REPEATS = 10
MIN_SAMPLES_PER_REPEAT = 10
MAX_WARMUP_MS = 2000.0
GIB = 1 << 30


class Timing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    warmup: int = Field(TIMING_DEFAULTS.warmup, ge=0, le=1000)
    # Calls of >= 100 us also warm up for this much GPU time before each repeat's samples, to
    # measure them under sustained load: a GPU holds its boost clock for the first tens of ms
    # of a heavy kernel, then its power limiter lowers the SM clock by a few %, by an amount
    # that depends on the last seconds of load. Off (0) by default: short bursts measure the
    # boost clock, which repeats reproduce. See docs/measurement.md, "Clocks under load".
    warmup_ms: float = Field(TIMING_DEFAULTS.warmup_ms, ge=0, le=MAX_WARMUP_MS)
    # Graph-replay samples whose replay ran under this fraction of the boost clock (read in
    # the stream by a spin-kernel probe before and after each replay) are discarded and
    # retaken after 100 ms of idle, as nvbench does with its throttle threshold: calls longer
    # than a few ms lower the clock under the power limiter within tens of ms of load. 0 keeps
    # every sample; ignored with warmup_ms > 0, which asks for the sustained-load clock.
    clock_floor: float = Field(TIMING_DEFAULTS.clock_floor, ge=0, le=1)
    # >= 30 timed iterations per point in all: fewer cannot give a median CI worth reporting.
    iterations: int = Field(TIMING_DEFAULTS.iterations, ge=30, le=MAX_ITERATIONS)
    # The iterations are split over this many repeats of the point, interleaved with the
    # other points of the sweep and each on freshly built inputs, so the GPU state of one
    # moment (clocks, temperature, placement) is sampled several times and enters the CI
    # (kernelwatch.core.stats). 1 measures each point once, back to back.
    repeats: int = Field(TIMING_DEFAULTS.repeats, ge=1, le=MAX_REPEATS)
    cold_l2: bool = TIMING_DEFAULTS.cold_l2
    check_correctness: bool = TIMING_DEFAULTS.check_correctness
    # cuda_graph: replay of a graph of N calls over rotated inputs (the method verified on the
    # GPU machine); cupti: kernel time from CUPTI activity records (needs cupti-python on the
    # node, else graph replay is used and recorded); auto: CUPTI when available; cuda_event:
    # events around eager calls (launch gaps included). The method used is stored per point.
    method: TimingMethod = TIMING_DEFAULTS.method
    # How CUPTI timing makes L2 cold: rotate input copies, or flush L2 before each call by
    # writing a 2 x L2 buffer (FlashInfer's CUPTI timer) or by reading one (flush_clean: no
    # dirty lines left for the timed call to write back).
    cold_l2_method: ColdL2Method = TIMING_DEFAULTS.cold_l2_method
    # boost (default): short bursts at the boost clock, samples under the clock floor
    # retaken; sustained: heavy calls warm up first (warmup_ms, default 500 ms) and every
    # sample is kept. Part of the series identity. warmup_ms > 0 implies sustained.
    clock: ClockMode = TIMING_DEFAULTS.clock

    @model_validator(mode="after")
    def _sustained_when_warmed(self) -> Timing:
        if self.warmup_ms > 0 and self.clock == "boost":
            self.clock = "sustained"  # what a time-based warm-up has always measured
        return self

    @model_validator(mode="after")
    def _enough_samples_per_repeat(self) -> Timing:
        if self.iterations < MIN_SAMPLES_PER_REPEAT * self.repeats:
            raise ValueError(
                f"timing.iterations={self.iterations} gives fewer than "
                f"{MIN_SAMPLES_PER_REPEAT} samples to each of timing.repeats={self.repeats}; "
                f"allowed: iterations >= {MIN_SAMPLES_PER_REPEAT} x repeats"
            )
        return self

    def config(self) -> TimingConfig:
        """What the harness is sent (``kernelwatch_harness.protocol.Request.timing``)."""
        return TimingConfig(**self.model_dump())  # type: ignore[typeddict-item]



class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=200)
    kernel: str
    backends: list[str] = Field(default_factory=lambda: ["torch-sdpa"], min_length=1)
    flashinfer_versions: list[str] = Field(default_factory=list)
    targets: list[str] = Field(default_factory=lambda: ["cpu"], min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    timing: Timing = Field(default_factory=Timing)  # type: ignore[arg-type]
    # Run FlashInfer's own benchmarks/flashinfer_benchmark.py (of each version, from its
    # source tag) on every measured point of a FlashInfer backend, right after kernelwatch's
    # measurement on the same node, and store its median beside kernelwatch's
    # (core.crosscheck). Costs about one more measurement per point.
    crosscheck: bool = False

    @field_validator("kernel")
    @classmethod
    def _kernel_known(cls, v: str) -> str:
        if v not in catalogue.KERNELS:
            raise ValueError(
                f"unknown kernel {v!r}; allowed: {', '.join(catalogue.KERNELS)}"
            )
        return v

    @field_validator("flashinfer_versions")
    @classmethod
    def _versions_look_like_versions(cls, v: list[str]) -> list[str]:
        import packaging.version

        for ver in v:
            try:
                packaging.version.Version(ver)
            except packaging.version.InvalidVersion:
                raise ValueError(
                    f"flashinfer_versions: {ver!r} is not a version (e.g. 0.6.18.post1)"
                ) from None
        return list(dict.fromkeys(v))

    @field_validator("targets")
    @classmethod
    def _targets_unique(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(t.lower() for t in v))

    @field_validator("params", mode="before")
    @classmethod
    def _params_as_lists(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            raise ValueError("params must be a mapping of parameter name to a list of values")
        return {k: (val if isinstance(val, list) else [val]) for k, val in v.items()}

    @model_validator(mode="after")
    def _check(self) -> SweepSpec:
        kernel = catalogue.KERNELS[self.kernel]
        if not kernel.backends:  # declared (the catalogue lists it), not measured
            raise ValueError(f"kernel: {self.kernel} is {kernel.description}")
        for b in self.backends:
            if b not in kernel.backends:
                raise ValueError(
                    f"backends: unknown backend {b!r} for kernel {self.kernel}; "
                    f"allowed: {', '.join(kernel.backends)}"
                )
        self.backends = list(dict.fromkeys(self.backends))
        uses_flashinfer = any(b in catalogue.FLASHINFER_BACKENDS for b in self.backends)
        if self.crosscheck and not uses_flashinfer:
            raise ValueError(
                "crosscheck: needs a FlashInfer backend (allowed: "
                f"{', '.join(b for b in kernel.flashinfer_backends)}): flashinfer_benchmark.py "
                "measures FlashInfer's kernels"
            )
        if uses_flashinfer and not self.flashinfer_versions:
            raise ValueError(
                "flashinfer_versions: required when a FlashInfer backend "
                f"({', '.join(b for b in self.backends if b in catalogue.FLASHINFER_BACKENDS)})"
                " is named, e.g. [0.6.18.post1]"
            )
        for name, values in self.params.items():
            if name not in kernel.params:
                raise ValueError(
                    f"params: unknown parameter {name!r} for kernel {self.kernel}; "
                    f"allowed: {', '.join(kernel.params)}"
                )
            if not values:
                raise ValueError(f"params.{name}: empty list; the grid would have no points")
            self.params[name] = [_check_value(name, v) for v in values]
        n = self.grid_size()
        if n > MAX_GRID_POINTS:
            raise ValueError(
                f"params: the grid has {n} points (combinations x backends); "
                f"at most {MAX_GRID_POINTS} are allowed"
            )
        for combo in self.combinations():  # the family's rules, whatever the backend
            catalogue.check_point(self.kernel,
                                  catalogue.complete_params(self.kernel, combo, self.backends[0]))
        return self

    def check_targets(self, known_tags: set[str]) -> None:
        """Targets must be tags a node can carry (built-in or seen on a registered node)."""
        allowed = set(gpus.BUILTIN_TAGS) | known_tags
        for t in self.targets:
            if t not in allowed:
                raise ValueError(
                    f"targets: unknown target {t!r}; allowed: {', '.join(sorted(allowed))}"
                )
        # The backends' defaults differ only in how the kernel runs, not in what it holds.
        for i, point in enumerate(self.grid(self.backends[0])):
            for t in self.targets:
                limit = gpus.largest_memory_gib(t)
                need = estimate_memory_bytes(self.kernel, point)
                if need > limit * GIB:
                    raise ValueError(
                        f"params: point {i} ({_short(point)}) needs about {need / GIB:.1f} GiB, "
                        f"more than the {limit:g} GiB of the largest device of target {t!r}"
                    )

    def combinations(self) -> list[dict[str, Any]]:
        """Every combination of the swept values, by point index: the parameters the spec
        gives each point, for every backend alike."""
        names = list(self.params)
        return [dict(zip(names, combo, strict=True))
                for combo in itertools.product(*(self.params[n] for n in names))]

    def grid(self, backend: str) -> list[dict[str, Any]]:
        """Every point as ``backend`` runs it, by point index: the given values, that
        backend's defaults for the rest (``catalogue.complete_params``)."""
        return [catalogue.complete_params(self.kernel, p, backend) for p in self.combinations()]

    def backend_points(self) -> list[dict[str, dict[str, Any]]]:
        """Every point by point index, as each of the spec's backends runs it."""
        grids = {b: self.grid(b) for b in self.backends}
        return [dict(zip(grids, row, strict=True)) for row in zip(*grids.values(), strict=True)]

    def grid_size(self) -> int:
        n = 1
        for values in self.params.values():
            n *= len(values)
        return n * len(self.backends)

    def versions(self) -> list[str | None]:
        """The FlashInfer versions to run; [None] when only torch backends are asked for."""
        return list(self.flashinfer_versions) or [None]


def _short(point: dict[str, Any]) -> str:
    """The point's first parameters (a kernel declares its shape's parameters first)."""
    return ", ".join(f"{k}={v}" for k, v in list(point.items())[:6])


def _show(value: Any) -> str:
    """A value quoted in an error message, shortened: messages echo user input."""
    return reprlib.repr(value)


def _check_value(name: str, value: Any) -> Any:
    p = catalogue.PARAMS[name]
    if p.kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"params.{name}: {_show(value)} is not allowed; allowed: true, false")
        return value
    if p.kind is float and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError(
            f"params.{name}: {_show(value)} is not a number; allowed: {p.describe_allowed()}"
        )
    if p.kind is float:
        value = float(value)  # 1 and 1.0 are one experiment
    if p.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(
            f"params.{name}: {_show(value)} is not an integer; allowed: {p.describe_allowed()}"
        )
    if p.choices is not None:
        if value not in p.choices:
            raise ValueError(
                f"params.{name}: {_show(value)} is not allowed; allowed: {p.describe_allowed()}"
            )
    elif p.min is not None and p.max is not None and not (p.min <= value <= p.max):
        raise ValueError(
            f"params.{name}: {_show(value)} is out of range; allowed: {p.describe_allowed()}"
        )
    return value


def estimate_memory_bytes(kernel: str, point: dict[str, Any]) -> float:
    """Device memory one point needs, as its family estimates it (inputs, outputs, the
    reference the correctness check builds); cold-L2 input copies are not counted: the
    harness caps them to the memory it has."""
    return catalogue.memory_bytes(kernel, point)


def load_spec_text(text: str) -> dict[str, Any]:
    """Parse JSON or YAML text into a mapping (validation is SweepSpec's job)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError("a sweep spec must be a mapping (JSON object or YAML mapping)")
    return data


def cpu_decode_sweep(name: str = "decode-gqa", *, params: dict[str, Any] | None = None,
                     timing: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """The README's first sweep as a spec: batch decode with grouped heads on a CPU node's
    torch backends. ``params`` and ``timing`` are merged over its own; other keywords replace
    top-level fields. Benchmarks, fixtures and tests start from it."""
    return {
        "name": name,
        "kernel": "batch_decode",
        "backends": ["torch-sdpa", "torch-math"],
        "targets": ["cpu"],
        "params": {"batch_size": [1, 4], "kv_len": [256, 1024], "num_qo_heads": [8],
                   "num_kv_heads": [2], "head_dim": [64], **(params or {})},
        "timing": {"warmup": 5, "iterations": 30, **(timing or {})},
        **top,
    }
