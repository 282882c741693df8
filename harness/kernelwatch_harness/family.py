"""What a kernel family declares, and what the rest of kernelwatch asks of it.

A family (``kernelwatch_harness.families.<name>``) owns everything that is particular to its
kernels: their parameters with allowed values and defaults, the cross-parameter rules of a
valid point, the FLOPs and bytes a point moves, its seeded inputs, its call for each backend
and FlashInfer version, its float32 (or PyTorch) reference and tolerance, and how it refuses a
combination it cannot run. The harness's measuring loop, the job spec's validation, storage,
comparison, the release flow, the dashboard and the CLI go through this interface only, so a
kernel is added by touching its family's module alone.

This module imports no torch: the service reads the declarations (the catalogue) without it.
A family's ``inputs``, ``prepare`` and ``reference`` run in the harness, where torch is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from kernelwatch_harness.prepared import Prepared


# Bytes per element of the dtypes kernelwatch names (torch's names): every family's byte
# counts read this one table.
DTYPE_BYTES: dict[str, int] = {"float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1,
                               "float8_e5m2": 1}


def release(version: str) -> tuple[int, int, int]:
    """A FlashInfer version's release numbers (``0.6.18.post1`` and ``0.6.18rc7`` are both
    0.6.18), to compare with the first release that has a function."""
    import re

    match = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"unrecognised FlashInfer version {version!r}")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def spell(value: Any) -> str:
    """A parameter value as a spec writes it (JSON's true/false)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class Param:
    name: str
    kind: type  # int, float, str or bool
    default: Any
    choices: tuple[Any, ...] | None = None
    min: int | float | None = None
    max: int | float | None = None
    doc: str = ""  # what it means, shown by the catalogue API and CLI

    def describe_allowed(self) -> str:
        if self.choices is not None:
            return ", ".join(spell(c) for c in self.choices)
        if self.kind is float:
            return f"numbers from {self.min:g} to {self.max:g}"
        return f"integers from {self.min} to {self.max}"


def by_name(*params: Param) -> dict[str, Param]:
    """A family's parameters keyed by name, in declaration order."""
    return {p.name: p for p in params}


# Compute capabilities kernelwatch names (FlashInfer's support tables use the same).
ARCHS = ("sm80", "sm86", "sm89", "sm90", "sm100", "sm103", "sm120")
AMPERE_HOPPER = ("sm80", "sm86", "sm89", "sm90")


@dataclass(frozen=True)
class Kernel:
    name: str
    family: str
    params: tuple[str, ...]
    flashinfer_backends: tuple[str, ...]
    torch_backends: tuple[str, ...]
    description: str
    # flashinfer_benchmark.py's routine measuring the same thing (None: it has none)
    routine: str | None = None
    # where FlashInfer runs it: a node of another architecture reports it unsupported
    archs: tuple[str, ...] = ARCHS
    # the first FlashInfer release that has it (None: every release kernelwatch supports)
    since: str | None = None
    # True: declared only (parameters, architectures, formulas, the tool's routine), its
    # FlashInfer call not run by kernelwatch yet: the harness refuses it with the reason
    declared: bool = False

    @property
    def backends(self) -> tuple[str, ...]:
        return (*self.flashinfer_backends, *self.torch_backends)


class Operands:
    """A point's inputs as the measuring loop sees them: ``data`` is what each call reads (the
    timer rotates copies of it for a cold L2); the family keeps anything else it needs."""

    def __init__(self, kernel: str, params: dict[str, Any], data: dict[str, Any]) -> None:
        self.kernel, self.params, self.data = kernel, params, data
        self.kept: dict[str, Any] = {}  # the family's own (not rotated, not timed)

    def data_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in tensors(self.data))

    def data_ptrs(self, data: dict[str, Any] | None = None) -> list[int]:
        return [t.data_ptr() for t in tensors(self.data if data is None else data)]

    def copy_data(self) -> dict[str, Any]:
        """A fresh copy of ``data`` in new memory (a rotation buffer for cold-L2 timing)."""
        return clone(self.data)


def tensors(obj: Any) -> list[torch.Tensor]:
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in tensors(v)]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in tensors(v)]
    return []


def clone(obj: Any) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: clone(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clone(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(clone(v) for v in obj)
    return obj


def check_backend_arch(kernel: str, backend: str, archs: tuple[str, ...], arch: str) -> None:
    """Refuse a FlashInfer backend on a GPU outside the architectures it runs on (the kernel's
    ``archs`` are the union over its backends: the measuring loop checks those)."""
    if arch not in archs:
        raise NotImplementedError(f"FlashInfer's {backend} backend of {kernel} runs on "
                                  f"{', '.join(archs)}; this GPU is {arch}")


def max_abs_error(outputs: list[torch.Tensor], refs: list[torch.Tensor]) -> float:
    """The largest absolute difference between outputs and references, in float32; NaN or
    infinity anywhere makes it infinite (never hidden by a max that skips NaN)."""
    import torch

    worst = 0.0
    for out, ref in zip(outputs, refs, strict=True):
        if out.shape != ref.shape:
            raise ValueError(f"output shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
        diff = (out.float() - ref.float()).abs()
        if not bool(torch.isfinite(diff).all()):
            return float("inf")
        if diff.numel():
            worst = max(worst, float(diff.max()))
    return worst


def module_installed(module: str) -> bool:
    """Whether ``import module`` would find it, without running it (its parent packages are
    imported to look; a dotted name whose parent package is missing is not installed)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def require_module(module: str, dist: str, what: str) -> None:
    """Refuse (NotImplementedError, naming the package) ``what`` on a node without the
    package FlashInfer imports only when that code runs: without this check the call would
    fail with an ImportError that reads as a broken kernel, or, where FlashInfer catches the
    import, as a function the release does not have."""
    if not module_installed(module):
        raise NotImplementedError(f"{what} needs the {dist} package (import {module}), which "
                                  f"this node lacks")


def flashinfer_module(module_name: str) -> Any:
    """FlashInfer's module ``module_name`` (dotted, ``flashinfer.fused_moe.bgmv_moe``), or
    None in a release without it. An attribute on the way that is not a module counts as
    absent: a package may re-export one of its modules' functions under the module's own name
    (``flashinfer.fused_moe.bgmv_moe`` is then the function), and the module itself is the one
    ``sys.modules`` holds."""
    import importlib
    from types import ModuleType

    import flashinfer

    module: Any = flashinfer
    for part in module_name.split(".")[1:]:
        module = getattr(module, part, None)
        if not isinstance(module, ModuleType):
            module = None
            break
    if module is None:  # a submodule flashinfer does not import itself, or a shadowed one
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # a release before the module
            module = None
    return module


def flashinfer_api(api: str, note: str = "") -> tuple[Any, str]:
    """FlashInfer's function ``api`` (its dotted name, ``flashinfer.rope.apply_rope``) and the
    installed release's version; a release without it, or without its module, is refused
    (NotImplementedError) naming both, with ``note`` after (where a release adds it)."""
    import flashinfer

    version = str(getattr(flashinfer, "__version__", "unknown"))
    module_name, name = api.rsplit(".", 1)
    module = flashinfer_module(module_name)
    op = getattr(module, name, None)
    if op is None:
        raise NotImplementedError(f"FlashInfer {version} has no {api}{note}")
    return op, version


def require_keywords(fn: Any, api: str, version: str, names: Any) -> None:
    """Refuse (NotImplementedError, naming the release and the keywords) a FlashInfer function
    of this ``version`` that lacks any of ``names``: a release older than the call's keyword
    would otherwise fail with a TypeError that reads as a broken kernel."""
    import inspect

    accepted = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        return
    missing = [n for n in names if n not in accepted]
    if missing:
        raise NotImplementedError(f"FlashInfer {version} {api} takes no {', '.join(missing)}")


# ----------------------------------------------------------------- flashinfer_benchmark.py

BENCHMARK_SCRIPT = "benchmarks/flashinfer_benchmark.py"
# What a user adds to check and see the run (the cross-check leaves them out: kernelwatch checks
# correctness itself, and the tool's reference would double its cost).
_SHOWN_FLAGS = ["--refcheck", "-vv"]


@dataclass(frozen=True)
class Repro:
    """flashinfer_benchmark.py's arguments measuring the same experiment as a point, or why
    there are none."""

    args: list[str] | None
    reason: str | None = None

    @property
    def command(self) -> str | None:
        """The command line a user runs (from FlashInfer's source root)."""
        if self.args is None:
            return None
        import shlex

        return f"python {BENCHMARK_SCRIPT} " + shlex.join([*self.args, *_SHOWN_FLAGS])


class Unmapped(ValueError):
    """A flashinfer_benchmark.py flag (or value) that no kernelwatch parameter expresses."""


class Flags(dict[str, list[str]]):
    """One flashinfer_benchmark.py command line's flags, each with its values."""

    def one(self, name: str, default: str | None = None) -> str:
        values = self.get(name)
        if values is None:
            if default is None:
                raise Unmapped(f"{name} is required")
            return default
        if len(values) != 1:
            raise Unmapped(f"{name} takes one value")
        return values[0]


# A group of a line's backends that the tool builds the same way, and its parameters.
LineGroup = tuple[list[str], dict[str, Any]]


@dataclass(frozen=True)
class Work:
    """What one call of a point moves and computes (the roofline's two axes)."""

    flops: float
    bytes: float
    extra: dict[str, Any] = field(default_factory=dict)  # family facts (lengths, ...)

    def as_dict(self) -> dict[str, Any]:
        return {"flops": self.flops, "bytes": self.bytes, **self.extra}


class Family(ABC):
    """One kernel family. Subclasses set ``name``, ``params`` and ``kernels`` and implement
    the methods; ``legacy`` gives the value stored points had before a parameter existed."""

    name: str
    params: Mapping[str, Param]
    kernels: Mapping[str, Kernel]
    legacy: Mapping[str, Any] = {}
    # How pages draw its points: numeric parameters worth an axis (the first is the default
    # x), parameters shown together as one axis value (e.g. a head configuration), and the
    # parameters that name a point's shape in a label, in order.
    axes: tuple[str, ...] = ()
    groups: Mapping[str, tuple[str, ...]] = {}
    shape: tuple[str, ...] = ()
    # Defaults that depend on the backend, per kernel: "*" for every backend, a backend's own
    # entry for what differs for it (catalogue.backend_defaults). The torch backends take
    # ``default_backend``'s: the one FlashInfer runs when none is named.
    backend_defaults: Mapping[str, Mapping[str, Mapping[str, Any]]] = {}
    default_backend: str = "auto"

    # --- declarations (service and harness) ----------------------------------------------

    def check_point(self, kernel: str, point: dict[str, Any]) -> None:  # noqa: B027
        """Cross-parameter rules of a valid point: ValueError naming the parameters. A family
        without any keeps this (every combination of allowed values is valid)."""

    @abstractmethod
    def work(self, kernel: str, point: dict[str, Any]) -> Work:
        """FLOPs and bytes of one call (kernelwatch's own formulas, tested)."""

    @abstractmethod
    def memory_bytes(self, kernel: str, point: dict[str, Any]) -> float:
        """Device memory one point needs (inputs, outputs, the reference), for validation."""

    # --- flashinfer_benchmark.py, both ways ------------------------------------------------

    # The tool's flags this family's routines map (beyond the shared ones), and flags it
    # refuses with a reason of its own.
    routine_flags: frozenset[str] = frozenset()
    refused_flags: Mapping[str, str] = {}

    def repro(self, kernel: str, params: dict[str, Any], backend: str) -> Repro:
        """The tool's arguments for the point (completed parameters, a FlashInfer backend)."""
        return Repro(None, f"flashinfer_benchmark.py has no routine for {kernel}")

    def from_flags(self, kernel: str, flags: Flags) -> list[LineGroup]:
        """What one line of the tool measures, as kernelwatch parameters: one group per set
        of its backends built the same way. Unmapped names what cannot be expressed."""
        raise Unmapped(f"--routine {flags.one('--routine')}: no mapping for {kernel}")

    # --- measuring (harness: torch and FlashInfer are importable) ------------------------

    # The module holding the family's torch side (``inputs``, ``prepare``, ``reference``
    # with the signatures below), imported only when the harness measures, so that the
    # declarations stay importable without torch.
    ops: str = ""

    def _ops(self) -> Any:
        import importlib

        return importlib.import_module(self.ops)

    def inputs(self, kernel: str, params: dict[str, Any], backend: str,
               device: str) -> Operands:
        """Seeded inputs, in the layout ``backend`` reads."""
        return self._ops().inputs(kernel, params, backend, device)  # type: ignore[no-any-return]

    def prepare(self, backend: str, inp: Operands, device: str) -> Prepared:
        """The timed call for ``backend`` (raise NotImplementedError, with the reason, for a
        combination it cannot run)."""
        return self._ops().prepare(backend, inp, device)  # type: ignore[no-any-return]

    def reference(self, inp: Operands) -> list[torch.Tensor]:
        """The reference outputs in float32, in the shape ``Prepared.outputs`` gives."""
        return self._ops().reference(inp)  # type: ignore[no-any-return]

    @abstractmethod
    def tolerance(self, kernel: str, params: dict[str, Any]) -> float:
        """The largest absolute error accepted against ``reference``."""


class DeclaredFamily(Family):
    """A family whose kernels are all declared (``Kernel.declared``): the catalogue lists
    them with their parameters, architectures and formulas, and everything that would run or
    map one refuses it with ``why_not_run``'s reason. A node outside a kernel's ``archs`` is
    refused by the measuring loop first, naming them; no torch side exists to import."""

    @abstractmethod
    def why_not_run(self, kernel: str) -> str:
        """Why kernelwatch does not run the kernel (on a GPU FlashInfer runs it on)."""

    def repro(self, kernel: str, params: dict[str, Any], backend: str) -> Repro:
        return Repro(None, self.why_not_run(kernel))

    def from_flags(self, kernel: str, flags: Flags) -> list[LineGroup]:
        raise Unmapped(f"--routine {flags.one('--routine')}: {self.why_not_run(kernel)}")

    def inputs(self, kernel: str, params: dict[str, Any], backend: str,
               device: str) -> Operands:
        return Operands(kernel, params, {})  # nothing to draw: prepare refuses it

    def prepare(self, backend: str, inp: Operands, device: str) -> Prepared:
        if backend not in self.kernels[inp.kernel].flashinfer_backends:
            raise NotImplementedError(f"backend {backend!r} is not offered for {inp.kernel}")
        raise NotImplementedError(self.why_not_run(inp.kernel))

    def reference(self, inp: Operands) -> list[torch.Tensor]:
        raise NotImplementedError(self.why_not_run(inp.kernel))

    def tolerance(self, kernel: str, params: dict[str, Any]) -> float:
        return 0.0  # never compared: nothing runs


def not_run_yet(kernel: str, what: str, archs: tuple[str, ...]) -> str:
    """The refusal of a declared kernel on a GPU FlashInfer runs it on: what kernelwatch's
    call would need (``what``), and where FlashInfer runs it."""
    return (f"kernelwatch does not run {kernel}'s FlashInfer call yet ({what}; FlashInfer "
            f"runs it on {', '.join(archs)})")
