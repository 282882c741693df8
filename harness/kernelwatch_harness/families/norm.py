"""The norm family: RMSNorm and its fused-residual and Gemma forms (``flashinfer.norm``), as
flashinfer_benchmark.py's norm routines of the same names run them.

- ``rmsnorm``: ``out = x / sqrt(mean(x^2) + eps) * w``;
- ``gemma_rmsnorm``: the same with ``(1 + w)`` (Gemma's weight offset);
- ``fused_add_rmsnorm`` / ``gemma_fused_add_rmsnorm``: ``r = x + r`` then the norm of ``r``,
  both written in place (``x`` holds the output, ``r`` the sum), one pass over memory.

``x`` is ``[batch_size, hidden_size]``, or ``[batch_size, num_heads, hidden_size]`` when
``num_heads`` > 0 (a per-head norm, as for q/k norms); ``eps`` is FlashInfer's and the tool's
default, 1e-6. Backends: FlashInfer's ``auto`` (the library's own dispatch: its CUDA kernel,
or its CuTe-DSL kernel where a release and the node have it; the one that ran is recorded),
and ``torch`` (``torch.nn.functional.rms_norm``, with the residual add and the Gemma offset
as a PyTorch user writes them). The reference is float32.

The norm is memory bound: bytes are one read of ``x`` (and ``r``), one of ``w``, one write of
the output (and ``r``), as flashinfer_benchmark.py counts them; FLOPs are 5 per element (6
with the residual add): square, sum, scale, weight, and the Gemma offset or the add.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:

    pass

EPS = 1e-6
# Where FlashInfer's norm kernels run (its CUDA kernels build for every architecture it
# supports; flashinfer_benchmark.py lists them from SM75 to SM121).
ARCHS = (*AMPERE_HOPPER, "sm100", "sm103", "sm120")

FUSED = ("fused_add_rmsnorm", "gemma_fused_add_rmsnorm")
GEMMA = ("gemma_rmsnorm", "gemma_fused_add_rmsnorm")



class NormFamily(Family):
    name = "norm"
    ops = "kernelwatch_harness.families.norm_ops"
    params = by_name(
        Param("batch_size", int, 1, min=1, max=16384,
              doc="tokens (rows) normalised in one call"),
        Param("hidden_size", int, 4096, min=16, max=65536,
              doc="elements normalised together (the last dimension)"),
        Param("num_heads", int, 0, min=0, max=256,
              doc="0: x is [batch_size, hidden_size]; n: [batch_size, n, hidden_size], a "
                  "per-head norm"),
        Param("dtype", str, "bfloat16", choices=("float16", "bfloat16"),
              doc="x, r, w and the output"),
    )
    _params = ("batch_size", "hidden_size", "num_heads", "dtype")
    kernels = {
        k.name: k for k in (
            Kernel("rmsnorm", "norm", _params, ("auto",), ("torch",),
                   "RMSNorm: x / rms(x) * w", routine="rmsnorm", archs=ARCHS),
            Kernel("fused_add_rmsnorm", "norm", _params, ("auto",), ("torch",),
                   "residual add then RMSNorm, both in place", routine="fused_add_rmsnorm",
                   archs=ARCHS),
            Kernel("gemma_rmsnorm", "norm", _params, ("auto",), ("torch",),
                   "Gemma's RMSNorm: x / rms(x) * (1 + w)", routine="gemma_rmsnorm",
                   archs=ARCHS),
            Kernel("gemma_fused_add_rmsnorm", "norm", _params, ("auto",), ("torch",),
                   "residual add then Gemma's RMSNorm, both in place",
                   routine="gemma_fused_add_rmsnorm", archs=ARCHS),
        )
    }

    axes = ("batch_size", "hidden_size", "num_heads")
    shape = ("batch_size", "num_heads", "hidden_size")

    # flashinfer_benchmark.py's norm routines: --backends cuda (its default; 0.6 runs the same
    # public flashinfer.norm call for "cute-dsl") is kernelwatch's "auto".
    routine_flags = frozenset({"--backends", "--batch_size", "--hidden_size", "--num_heads",
                               "--input_dtype", "--eps", "--no_cuda_graph"})
    refused_flags = {f: f"{f}: the quantising norm routines are not measured yet"
                     for f in ("--out_dtype", "--scale", "--use_global_scale",
                               "--is_sf_swizzled_layout")}

    def repro(self, kernel: str, params: dict[str, Any], backend: str) -> Repro:
        args = ["--routine", kernel, "--backends", "cuda", "--batch_size",
                str(params["batch_size"]), "--hidden_size", str(params["hidden_size"])]
        if int(params.get("num_heads", 0)):
            args += ["--num_heads", str(params["num_heads"])]
        return Repro([*args, "--input_dtype", str(params["dtype"])])

    def from_flags(self, kernel: str, flags: Flags) -> list[LineGroup]:
        if float(flags.one("--eps", str(EPS))) != EPS:
            raise Unmapped(f"--eps {flags.one('--eps')}: kernelwatch measures eps={EPS}")
        for backend in flags.get("--backends") or ["cuda"]:
            if backend not in ("cuda", "cute-dsl"):
                raise Unmapped(f"--backends {backend}: kernelwatch runs {kernel} with "
                               "FlashInfer's own dispatch (cuda, cute-dsl)")
        dtype = flags.one("--input_dtype", "bfloat16")
        if dtype not in (self.params["dtype"].choices or ()):
            raise Unmapped(f"--input_dtype {dtype} cannot be mapped")
        params = {"batch_size": int(flags.one("--batch_size")),
                  "hidden_size": int(flags.one("--hidden_size")),
                  "num_heads": int(flags.one("--num_heads", "0")), "dtype": dtype}
        return [(["auto"], params)]

    def elements(self, point: dict[str, Any]) -> int:
        rows = int(point["batch_size"]) * max(1, int(point.get("num_heads", 0)))
        return rows * int(point["hidden_size"])

    def work(self, kernel: str, point: dict[str, Any]) -> Work:
        n, size = self.elements(point), DTYPE_BYTES[str(point["dtype"])]
        streams = 4 if kernel in FUSED else 2  # (x, r) in and out, or x in and out
        return Work(flops=float(n * (6 if kernel in FUSED else 5)),
                    bytes=float(n * size * streams + int(point["hidden_size"]) * size))

    def memory_bytes(self, kernel: str, point: dict[str, Any]) -> float:
        # the streams, a pristine copy for the reference, and the float32 reference
        n = self.elements(point)
        return self.work(kernel, point).bytes * 2 + n * 4 * (2 if kernel in FUSED else 1)

    def tolerance(self, kernel: str, params: dict[str, Any]) -> float:
        # Outputs reach ~9 (normal x, w in [-1, 1), Gemma's 1 + w): one rounding there is
        # 0.03 in bf16 (8 bits), plus as much again where a fused kernel normalises the
        # rounded sum; a wrong kernel is off by O(1).
        return {"float16": 2e-2, "bfloat16": 1e-1}[str(params["dtype"])]


FAMILY = NormFamily()
