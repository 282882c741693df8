"""The mamba family: Mamba-2's selective state update, the generation step of a selective
state-space layer (``flashinfer.mamba.selective_state_update``), as flashinfer_benchmark.py's
routine of the same name runs it.

Per request and head, a ``[dim, dstate]`` state read from (and written back to) a slot of a
state cache turns a token's ``x`` into an output::

    dt = dt + dt_bias                     (softplus(dt + dt_bias) when dt_softplus)
    state = state * exp(A * dt) + (dt * B) x^T
    out = state C + D * x                 (times silu(z) when has_z)

``A``, ``D``, ``dt`` and ``dt_bias`` hold one value per head (broadcast over ``dim`` and
``dstate`` through zero strides, the layout FlashInfer's kernel checks); ``B`` and ``C`` are
shared by the ``nheads / ngroups`` heads of a group. ``cache_steps`` 0 is one token a request
(STP: ``x`` ``[batch_size, nheads, dim]``); ``cache_steps`` n >= 1 is n tokens a request in one
call (MTP: ``[batch_size, n, nheads, dim]``), the state carried from token to token. The cache
has ``max(384, 10 * batch_size)`` slots, the requests' slots a seeded permutation's first
``batch_size``, as the tool builds it.

Parameters and defaults are the tool's (``--nheads``, ``--dim`` and ``--dstate`` have none
there: kernelwatch's are its sample testlist's Mamba-2 shape, 64 heads of 128 x 128); inputs
are bfloat16, the weights (``dt``, ``D``, ``dt_bias``) ``weight_dtype``, ``A`` float32. The
tool's varlen mode (``--varlen``) is not measured yet. kernelwatch's inputs keep the state
bounded: ``dt + dt_bias`` in (0, 0.6) (the tool's ``dt_bias`` near -4 grows it by up to e^8 a
step), ``B`` and ``C`` of variance ``1 / dstate``.

Backends: FlashInfer's ``auto`` (the tool's ``flashinfer``, with its ``algorithm``; the tool's
``triton`` baseline comes from FlashInfer's tests) and ``torch`` (the update in PyTorch in the
input dtype). The reference is the same update in float32 (kernelwatch's own, from FlashInfer's
``tests/mamba`` and its API docs); it checks the output and the requests' new states.
FlashInfer runs it on every architecture from SM75 (SM80, SM90, SM100, SM103, SM120 here), its
``vertical`` and ``horizontal`` algorithms on SM90 and newer (TMA); it is in FlashInfer from
0.6.1.

FLOPs and bytes are the tool's: 5 FLOPs per state element and token; bytes read the requests'
states, ``x``, ``dt``, ``B``, ``C`` (and ``z``), ``A``, ``D`` and ``dt_bias`` (one value a head)
and write the states and the output.
"""

from __future__ import annotations

from typing import Any

from kernelwatch_harness import shared_params as shared
from kernelwatch_harness.family import (
    AMPERE_HOPPER,
    DTYPE_BYTES,
    Family,
    Flags,
    Kernel,
    LineGroup,
    Param,
    Repro,
    Unmapped,
    Work,
    by_name,
)

KERNEL = "selective_state_update"
ARCHS = (*AMPERE_HOPPER, "sm100", "sm103", "sm120")
SINCE = "0.6.1"
# FlashInfer's kernel is built for these (flashinfer_benchmark.py refuses others for it).
DIMS = (64, 128, 256)
HEADS_PER_GROUP = (1, 8, 16)
TMA_ALGORITHMS = ("vertical", "horizontal")  # SM90 and newer; STP only
VARLEN_NOTE = "--varlen: the varlen (cu_seqlens) mode is not measured yet"


def cache_slots(batch_size: int) -> int:
    """The state cache's slots, as the tool sizes it."""
    return max(384, 10 * batch_size)


def tokens(point: dict[str, Any]) -> int:
    return int(point["batch_size"]) * max(1, int(point["cache_steps"]))


class MambaFamily(Family):
    name = "mamba"
    ops = "kernelwatch_harness.families.mamba_ops"
    # Shared names are declared once, in shared_params, with mamba's doc.
    params = by_name(
        shared.batch_size(doc="requests (sequences)"),
        Param("nheads", int, 64, min=1, max=1024, doc="SSM heads"),
        Param("dim", int, 128, choices=DIMS, doc="head dimension"),
        Param("dstate", int, 128, choices=DIMS, doc="SSM state size"),
        Param("ngroups", int, 8, min=1, max=1024,
              doc="groups sharing B and C (nheads / ngroups: 1, 8 or 16)"),
        Param("cache_steps", int, 0, min=0, max=64,
              doc="0: one token a request (STP); n: n tokens a request (MTP)"),
        shared.dtype(doc="x, B, C, z and the output (the kernel takes bfloat16)"),
        shared.state_dtype(
            doc="the recurrent state (gdn: float32 or bfloat16; mamba: all three)"),
        Param("weight_dtype", str, "float32", choices=("float32", "bfloat16"),
              doc="dt, D and dt_bias"),
        Param("has_z", bool, False, choices=(False, True),
              doc="gate the output by silu(z)"),
        Param("dt_softplus", bool, False, choices=(False, True),
              doc="softplus(dt + dt_bias) instead of dt + dt_bias"),
        Param("algorithm", str, "auto", choices=("auto", "simple", "vertical", "horizontal"),
              doc="FlashInfer's kernel algorithm (MTP: auto or simple)"),
    )
    kernels = {
        KERNEL: Kernel(KERNEL, "mamba", tuple(params), ("auto",), ("torch",),
                       "Mamba-2 selective state update (one or several tokens a request)",
                       routine=KERNEL, archs=ARCHS, since=SINCE),
    }
    # The tool's --state_dtype defaults to bfloat16 (the shared declaration's is float32).
    backend_defaults = {KERNEL: {"*": {"state_dtype": "bfloat16"}}}

    axes = ("batch_size", "nheads", "cache_steps", "dim", "dstate")
    shape = ("batch_size", "nheads", "dim", "dstate", "ngroups", "cache_steps")

    routine_flags = frozenset({"--backends", "--batch_size", "--nheads", "--dim", "--dstate",
                               "--ngroups", "--cache_steps", "--input_dtype", "--state_dtype",
                               "--weight_dtype", "--has_z", "--dt_softplus", "--algorithm",
                               "--no_cuda_graph"})
    refused_flags = {"--varlen": VARLEN_NOTE}

    def check_point(self, kernel: str, point: dict[str, Any]) -> None:
        if point["dtype"] != "bfloat16":
            raise ValueError(f"dtype={point['dtype']}: {kernel} takes bfloat16 inputs "
                             "(flashinfer_benchmark.py's only --input_dtype)")
        nheads, ngroups = int(point["nheads"]), int(point["ngroups"])
        if nheads % ngroups or nheads // ngroups not in HEADS_PER_GROUP:
            raise ValueError(f"nheads={nheads}, ngroups={ngroups}: nheads must be ngroups "
                             f"times {', '.join(map(str, HEADS_PER_GROUP))} (FlashInfer's "
                             "kernel)")
        if int(point["cache_steps"]) and point["algorithm"] in TMA_ALGORITHMS:
            raise ValueError(f"algorithm={point['algorithm']} with cache_steps="
                             f"{point['cache_steps']}: multi-token updates take algorithm "
                             "auto or simple")

    # --- flashinfer_benchmark.py ---------------------------------------------------------

    def repro(self, kernel: str, params: dict[str, Any], backend: str) -> Repro:
        args = ["--routine", kernel, "--backends", "flashinfer"]
        for name in ("batch_size", "nheads", "dim", "dstate", "ngroups", "cache_steps"):
            args += [f"--{name}", str(params[name])]
        args += ["--input_dtype", str(params["dtype"]), "--state_dtype",
                 str(params["state_dtype"]), "--weight_dtype", str(params["weight_dtype"])]
        args += [f"--{s}" for s in ("has_z", "dt_softplus") if params[s]]
        return Repro([*args, "--algorithm", str(params["algorithm"])])

    def from_flags(self, kernel: str, flags: Flags) -> list[LineGroup]:
        for backend in flags.get("--backends") or ["flashinfer"]:
            if backend != "flashinfer":
                raise Unmapped(f"--backends {backend}: the tool's Triton kernel comes from "
                               f"FlashInfer's tests/, not the library; kernelwatch runs "
                               f"{kernel} with FlashInfer (flashinfer) and its own torch "
                               "backend")
        for switch in ("--has_z", "--dt_softplus"):
            if flags.get(switch, []):
                raise Unmapped(f"{switch} takes no value")
        params: dict[str, Any] = {
            name: int(flags.one(f"--{name}", default)) for name, default in (
                ("batch_size", None), ("nheads", None), ("dim", None), ("dstate", None),
                ("ngroups", "8"), ("cache_steps", "0"))}
        for name, flag, default in (("dtype", "--input_dtype", "bfloat16"),
                                    ("state_dtype", "--state_dtype", "bfloat16"),
                                    ("weight_dtype", "--weight_dtype", "float32"),
                                    ("algorithm", "--algorithm", "auto")):
            value = flags.one(flag, default)
            if value not in (self.params[name].choices or ()):
                raise Unmapped(f"{flag} {value} cannot be mapped")
            params[name] = value
        for dim in ("dim", "dstate"):
            if params[dim] not in DIMS:
                raise Unmapped(f"--{dim} {params[dim]}: FlashInfer's kernel takes "
                               f"{', '.join(map(str, DIMS))}")
        params["has_z"] = "--has_z" in flags
        params["dt_softplus"] = "--dt_softplus" in flags
        return [(["auto"], params)]

    # --- formulas --------------------------------------------------------------------------

    def work(self, kernel: str, point: dict[str, Any]) -> Work:
        b, h, dim, n = (int(point[k]) for k in ("batch_size", "nheads", "dim", "dstate"))
        t, g = tokens(point), int(point["ngroups"])
        size, weight = DTYPE_BYTES[str(point["dtype"])], DTYPE_BYTES[str(point["weight_dtype"])]
        states = b * h * dim * n * DTYPE_BYTES[str(point["state_dtype"])]
        xs = t * h * dim * size
        moved = (states * 2  # read and written
                 + xs * (3 if point["has_z"] else 2)  # x (and z) read, the output written
                 + t * h * weight  # dt, one a head
                 + 2 * t * g * n * size  # B, C
                 + h * 4 + 2 * h * weight)  # A (float32), D and dt_bias, one a head
        return Work(flops=float(5 * t * h * dim * n), bytes=float(moved),
                    extra={"tokens": t})

    def memory_bytes(self, kernel: str, point: dict[str, Any]) -> float:
        # the whole state cache, what the call moves, and the requests' states and outputs
        # again in float32 (pristine copy, reference, the torch path's temporaries)
        h, dim, n = (int(point[k]) for k in ("nheads", "dim", "dstate"))
        cache = cache_slots(int(point["batch_size"])) * h * dim * n \
            * DTYPE_BYTES[str(point["state_dtype"])]
        states = int(point["batch_size"]) * h * dim * n * 4
        return cache + self.work(kernel, point).bytes + states * 4

    def tolerance(self, kernel: str, params: dict[str, Any]) -> float:
        # Outputs reach ~15 (C of variance 1 / dstate over states ~3, plus D x, times
        # silu(z)): bfloat16 rounds them by up to 0.06, and the torch path's bfloat16
        # arithmetic adds as much for each token carried; a missing term (D x, the z gate,
        # the decay) is off by O(1).
        return 0.12 * max(1, int(params["cache_steps"])) ** 0.5


FAMILY = MambaFamily()
