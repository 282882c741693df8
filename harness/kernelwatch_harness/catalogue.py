"""The kernel catalogue: every kernel kernelwatch benchmarks, from every family
(``kernelwatch_harness.families``), with its parameters, allowed values, defaults and backends.

A point's parameters are always completed with its kernel's defaults for the backend that runs
it (``complete_params``), so two points with the same completed parameters are the same
experiment (see ``kernelwatch.core.series``). Nothing
here is particular to one family: the service validates, stores, compares and draws any
kernel through these functions and the family's interface (``kernelwatch_harness.family``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from kernelwatch_harness.families.attention import FAMILY as ATTENTION
from kernelwatch_harness.families.comm import FAMILY as COMM
from kernelwatch_harness.families.gdn import FAMILY as GDN
from kernelwatch_harness.families.gemm import FAMILY as GEMM
from kernelwatch_harness.families.mamba import FAMILY as MAMBA
from kernelwatch_harness.families.moe import FAMILY as MOE
from kernelwatch_harness.families.norm import FAMILY as NORM
from kernelwatch_harness.families.quantization import FAMILY as QUANTIZATION
from kernelwatch_harness.families.rope import FAMILY as ROPE
from kernelwatch_harness.families.sampling import FAMILY as SAMPLING
from kernelwatch_harness.families.sparse_attention import FAMILY as SPARSE_ATTENTION
from kernelwatch_harness.family import Family, Kernel, Param

__all__ = [
    "ALL_BACKENDS",
    "FAMILIES",
    "FLASHINFER_BACKENDS",
    "KERNELS",
    "LEGACY_VALUES",
    "PARAMS",
    "TORCH_BACKENDS",
    "Kernel",
    "Param",
    "check_point",
    "complete_params",
    "family_of",
    "memory_bytes",
    "params_of",
    "shared_defaults",
    "with_legacy_values",
    "work",
]

FAMILIES: dict[str, Family] = {f.name: f for f in (ATTENTION, NORM, GEMM, ROPE, SAMPLING,
                                                     MOE, GDN, MAMBA, QUANTIZATION,
                                                     SPARSE_ATTENTION, COMM)}
KERNELS: dict[str, Kernel] = {
    name: kernel for f in FAMILIES.values() for name, kernel in f.kernels.items()
}


def _union(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


FLASHINFER_BACKENDS = _union([b for k in KERNELS.values() for b in k.flashinfer_backends])
TORCH_BACKENDS = _union([b for k in KERNELS.values() for b in k.torch_backends])
ALL_BACKENDS = (*FLASHINFER_BACKENDS, *TORCH_BACKENDS)


def _same(a: Param, b: Param) -> bool:
    return (a.kind, a.default, a.choices, a.min, a.max) == (b.kind, b.default, b.choices,
                                                            b.min, b.max)


def _all_params() -> dict[str, Param]:
    """Every parameter by name. Families may share a name (``batch_size``, ``dtype``) only
    with the same meaning: one column, one axis, one filter on every page (such a name is
    declared once, in ``shared_params``; this check also catches one declared by hand)."""
    out: dict[str, Param] = {}
    for f in FAMILIES.values():
        for name, p in f.params.items():
            if name in out and not _same(out[name], p):
                raise TypeError(f"parameter {name!r} is declared differently by two families")
            out.setdefault(name, p)
    return out


PARAMS: dict[str, Param] = _all_params()


def family_of(kernel: str) -> Family:
    return FAMILIES[KERNELS[kernel].family]


def params_of(kernel: str) -> dict[str, Param]:
    """The kernel's parameters, in its declared order."""
    family = family_of(kernel)
    return {name: family.params[name] for name in KERNELS[kernel].params}


def backend_defaults(kernel: str, backend: str) -> dict[str, Any]:
    """Every parameter's default for ``kernel`` run by ``backend``: the static default, unless
    its family gives the backend another (``Family.backend_defaults``: what FlashInfer's own
    benchmark builds the routine with). Torch backends take the family's default backend's."""
    family, spec = family_of(kernel), KERNELS[kernel]
    table = family.backend_defaults.get(kernel, {})
    own = table.get(family.default_backend if backend in spec.torch_backends else backend, {})
    by_backend = {**table.get("*", {}), **own}
    return {name: by_backend.get(name, p.default) for name, p in params_of(kernel).items()}


def shared_defaults(kernel: str) -> dict[str, Any]:
    """The parameters whose default is the same for every backend of the kernel, with that
    default (a parameter whose default follows the backend is left out)."""
    per_backend = [backend_defaults(kernel, b) for b in KERNELS[kernel].backends]
    if not per_backend:  # declared, not measured yet: the static defaults
        return {name: p.default for name, p in params_of(kernel).items()}
    return {name: v for name, v in per_backend[0].items()
            if all(repr(d[name]) == repr(v) for d in per_backend[1:])}


def complete_params(kernel: str, params: dict[str, Any], backend: str) -> dict[str, Any]:
    """The kernel's full parameter set for ``backend``: given values, the backend's defaults
    for the rest. A parameter a spec gives is used as given for every backend."""
    return {**backend_defaults(kernel, backend),
            **{k: v for k, v in params.items() if k in KERNELS[kernel].params}}


def with_legacy_values(kernel: str, params: dict[str, Any],
                       names: Sequence[str] | None = None) -> dict[str, Any]:
    """A stored point's parameters with the values (of ``names``, default all) its family
    recorded for points measured before those parameters existed, where it lacks them."""
    spec = KERNELS.get(kernel)
    if spec is None:
        return dict(params)
    legacy = family_of(kernel).legacy
    wanted = legacy if names is None else {n: legacy[n] for n in names if n in legacy}
    extra = {k: v for k, v in wanted.items() if k in spec.params and k not in params}
    return {**params, **extra}


# Every family's legacy values by parameter name (migrations add them by name).
LEGACY_VALUES: dict[str, Any] = {k: v for f in FAMILIES.values() for k, v in f.legacy.items()}


def check_point(kernel: str, point: dict[str, Any]) -> None:
    family_of(kernel).check_point(kernel, point)


def work(kernel: str, point: dict[str, Any]) -> dict[str, Any]:
    """FLOPs and bytes of one call (with the family's own facts), and their ratio."""
    w = family_of(kernel).work(kernel, point)
    return {**w.as_dict(),
            "arithmetic_intensity": w.flops / w.bytes if w.bytes else math.nan}


def memory_bytes(kernel: str, point: dict[str, Any]) -> float:
    return family_of(kernel).memory_bytes(kernel, point)


def axes_of(kernel: str) -> list[str]:
    """The kernel's numeric parameters worth an axis, the default x first."""
    return [a for a in family_of(kernel).axes if a in KERNELS[kernel].params]


def groups_of(kernel: str) -> dict[str, tuple[str, ...]]:
    """Combined dimensions (one axis value made of several parameters) the kernel has."""
    params = KERNELS[kernel].params
    return {g: members for g, members in family_of(kernel).groups.items()
            if all(m in params for m in members)}


def shape_of(kernel: str, point: dict[str, Any]) -> str:
    """A point's shape in a few words: ``batch_size=8 kv_len=4096 ...``."""
    return " ".join(f"{k}={point[k]}" for k in family_of(kernel).shape if k in point)


def point_label(kernel: str, point: dict[str, Any]) -> str:
    """A point in one line: its shape, then the parameters that are not at their default for
    every backend (a variant, a dtype, a plan mode), so two series never read the same."""
    if kernel not in KERNELS:
        return " ".join(f"{k}={v}" for k, v in point.items())
    shape, shared = family_of(kernel).shape, shared_defaults(kernel)
    rest = [f"{k}={v}" for k, v in point.items()
            if k not in shape and k in KERNELS[kernel].params
            and (k not in shared or shared[k] != v)]
    return " ".join([shape_of(kernel, point), *rest]).strip()


def describe() -> list[dict[str, Any]]:
    """Every kernel with its family, parameters (kind, default, allowed values, and the default
    per backend where it follows the backend), backends, flashinfer_benchmark.py routine,
    architectures, first release and whether it is only declared (listed, its points refused
    with the reason): what ``GET /v1/catalogue`` and ``kernelwatch catalogue`` list."""
    out = []
    for name, k in KERNELS.items():
        by_backend = {b: backend_defaults(name, b) for b in k.backends}
        shared = shared_defaults(name)
        params = []
        for pname, p in params_of(name).items():
            varies = pname not in shared
            params.append({
                "name": pname, "kind": p.kind.__name__,
                # what every backend takes, or the static default where it follows the backend
                "default": shared.get(pname, p.default),
                "allowed": p.describe_allowed(),
                "choices": list(p.choices) if p.choices is not None else None,
                "min": p.min, "max": p.max, "doc": p.doc,
                "by_backend": ({b: d[pname] for b, d in by_backend.items()} if varies
                               else None),
            })
        out.append({"name": name, "family": k.family, "description": k.description,
                    "backends": list(k.backends),
                    "flashinfer_backends": list(k.flashinfer_backends),
                    "torch_backends": list(k.torch_backends), "routine": k.routine,
                    "archs": list(k.archs), "since": k.since, "declared": k.declared,
                    "params": params})
    return out
