"""The GEMM family: FlashInfer's dense matrix multiplications (``flashinfer.gemm``), as
flashinfer_benchmark.py's gemm routines of the same names run them.

Measured (a FlashInfer backend on Ampere/Hopper in some release, and the PyTorch baseline):

- ``bmm_fp8``: ``out[b] = (A[b] @ B[b]) * a_scale * b_scale``, A ``[batch, m, k]`` and B
  ``[batch, k, n]`` (column-major) in FP8 with one per-tensor scale each;
- ``mm_fp8``: ``out = (a @ b.T) * alpha``, a ``[m, k]``, b ``[n, k]`` FP8, bfloat16 out
  (cublas/cudnn from 0.7.2; trtllm_low_latency takes the weight through FlashInfer's
  ``prepare_low_latency_gemm_weights``);
- ``mm_bf16``: ``out = a @ b (+ bias)``, a ``[m, k]``, b ``[k, n]`` column-major, bfloat16;
- ``bmm_bf16``: the batched form, ``[batch, m, k] @ [batch, k, n]``;
- ``tinygemm_bf16``: ``out = F.linear(x, w, bias)`` with w ``[n, k]`` (a router GEMM).

Declared for Blackwell only (their FlashInfer backends need SM100+; every node of another
architecture reports them unsupported with the reason, and kernelwatch does not run their
quantised FlashInfer call yet): ``mm_fp4``, ``mm_mxfp8``, ``bmm_mxfp8``, ``mm_bf16_fp4``,
``gemm_fp8_nt_groupwise``, ``group_gemm_fp8_nt_groupwise``. Their ``torch`` backend is the
bfloat16 GEMM on the unquantised operands (what flashinfer_benchmark.py checks them against).

Inputs are standard normal from one seed, as flashinfer_benchmark.py draws them; FP8 operands
are quantised with one scale per tensor (``448 / amax`` for e4m3) as its ``to_float8`` does.
The ``torch`` backend is what a PyTorch user writes: ``torch.mm``/``torch.bmm``/``F.linear``
on the same bfloat16 operands, and for FP8 kernels the same on the *dequantised* operands
(each FP8 tensor upcast to the output dtype and times its scale, then the GEMM in that
dtype): PyTorch has no batched FP8 GEMM and no FP8 GEMM on CPU. The reference is float32 on the very
operands the kernel reads (the dequantised FP8 values, not the originals), so quantisation
error never counts against a kernel; see ``tolerance``.

FLOPs are ``2*m*n*k`` per matrix (times ``batch_size`` or ``group_size``; ``+ m*n`` with a
bias). Bytes are one read of each operand and one write of the output, per matrix of the
batch. flashinfer_benchmark.py's ``bmm_fp8`` counts its bytes for one matrix only (its FLOPs
for the whole batch), so its TB/s reads ``batch_size`` times low; kernelwatch counts them all.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:

    pass

BLACKWELL = ("sm100", "sm103", "sm120")
HOPPER_ON = ("sm90", *BLACKWELL)
FP8_ON = ("sm89", *HOPPER_ON)
AMPERE_ON = (*AMPERE_HOPPER, *BLACKWELL)

# Where each FlashInfer backend runs (its ``@supported_compute_capability`` in the 0.6.18.post1
# and 0.7.4 wheels); ``auto`` runs wherever one of the kernel's backends does. The measuring
# loop refuses a kernel outside the union (``Kernel.archs``), ``prepare`` a backend outside
# its own entry.
BACKEND_ARCHS: dict[str, dict[str, tuple[str, ...]]] = {
    "bmm_fp8": {"cudnn": FP8_ON, "cublas": FP8_ON, "cutlass": BLACKWELL, "auto": FP8_ON},
    "mm_fp8": {"cublas": FP8_ON, "cudnn": FP8_ON, "trtllm_low_latency": ("sm100", "sm103")},
    "mm_bf16": {"cudnn": AMPERE_ON, "cublaslt": AMPERE_ON, "tinygemm": HOPPER_ON,
                "cutile": HOPPER_ON, "cutlass": ("sm100", "sm103"), "tgv": ("sm100", "sm103"),
                "auto": AMPERE_ON},
    "bmm_bf16": {"cudnn": AMPERE_ON, "cutile": HOPPER_ON, "cutlass": ("sm100", "sm103"),
                 "auto": AMPERE_ON},
    "tinygemm_bf16": {"tinygemm": HOPPER_ON},
    "mm_fp4": {"cudnn": BLACKWELL, "cutlass": BLACKWELL, "trtllm": ("sm100", "sm103"),
               "auto": BLACKWELL},
    "mm_mxfp8": {"cutlass": BLACKWELL, "cudnn": BLACKWELL, "auto": BLACKWELL},
    "bmm_mxfp8": {"cudnn": BLACKWELL},
    "mm_bf16_fp4": {"cute-dsl": BLACKWELL, "cudnn": BLACKWELL},
    "gemm_fp8_nt_groupwise": {"cutlass": BLACKWELL},
    "group_gemm_fp8_nt_groupwise": {"cutlass": BLACKWELL},
}
# Kernels whose FlashInfer call kernelwatch runs; the others are declared (catalogue, formulas,
# flashinfer_benchmark.py lines, the torch baseline) and their FlashInfer backends refused.
MEASURED = ("bmm_fp8", "mm_fp8", "mm_bf16", "bmm_bf16", "tinygemm_bf16")
# flashinfer.gemm's function for each kernel, and the first release with it (0.5.3 lacks the
# bf16 GEMMs), then backends added after the function: the first release tag containing the
# commit that added each (FlashInfer's git history); the wheels of the supported releases
# confirm them (tests/test_family_gemm.py against the signature snapshot).
API = {k: k for k in MEASURED}
SINCE = {"mm_bf16": "0.6.1", "bmm_bf16": "0.6.1", "tinygemm_bf16": "0.6.5"}
BACKEND_SINCE = {("mm_fp8", "cublas"): "0.7.2", ("mm_fp8", "cudnn"): "0.7.2",
                 ("mm_bf16", "cudnn"): "0.6.3", ("bmm_bf16", "cudnn"): "0.6.3",
                 ("mm_bf16", "cublaslt"): "0.6.11", ("mm_bf16", "tinygemm"): "0.6.11",
                 ("mm_bf16", "cutile"): "0.6.14", ("bmm_bf16", "cutile"): "0.6.14"}

BATCHED = ("bmm_fp8", "bmm_bf16", "bmm_mxfp8")
GROUPED = ("group_gemm_fp8_nt_groupwise",)
FP8 = ("bmm_fp8", "mm_fp8")  # per-tensor FP8 operands kernelwatch quantises and runs

# Bytes per element of each operand as the kernel reads it, block scales included (which
# flashinfer_benchmark.py leaves out but for mm_bf16_fp4): FP4 packs two per byte with one
# 8-bit scale per 32 elements (MXFP4, mm_fp4's default; --use_nvfp4 is refused) or per 16
# (mm_bf16_fp4's NVFP4 weights), MXFP8 one per 32. The bfloat16 operands (mm_bf16, bmm_bf16,
# tinygemm_bf16, and mm_bf16_fp4's activations) read 2.
OPERAND_BYTES = {"bmm_fp8": 1.0, "mm_fp8": 1.0, "gemm_fp8_nt_groupwise": 1.0,
                 "group_gemm_fp8_nt_groupwise": 1.0, "mm_fp4": 0.5 + 1 / 32,
                 "mm_bf16_fp4": 0.5 + 1 / 16, "mm_mxfp8": 1 + 1 / 32, "bmm_mxfp8": 1 + 1 / 32}
FP8_DTYPES = ("float8_e4m3fn", "float8_e5m2")
# flashinfer_benchmark.py's dtype names for kernelwatch's (torch's) names
TOOL_DTYPE = {"float8_e4m3fn": "fp8_e4m3", "float8_e5m2": "fp8_e5m2", "bfloat16": "bfloat16",
              "float16": "float16"}
# The dtype flags a routine checks though kernelwatch's kernel has no such parameter (the
# tool makes tinygemm_bf16's default bfloat16 when the flag is absent); the other routines
# without the parameter do not read the flag.
TOOL_FIXED_DTYPES = {
    "mm_fp8": {"input_dtype": "fp8_e4m3", "mat2_dtype": "fp8_e4m3", "out_dtype": "bfloat16"},
    "tinygemm_bf16": {"input_dtype": "bfloat16", "mat2_dtype": "bfloat16",
                      "out_dtype": "bfloat16"},
    "mm_bf16_fp4": {"input_dtype": "bfloat16"},
}
# --backends when a line names none: cudnn, but the routines that lack it say their own
TOOL_DEFAULT_BACKEND = {"mm_fp8": "trtllm_low_latency", "tinygemm_bf16": "tinygemm",
                        "mm_bf16_fp4": "cute-dsl"}
# The routines whose line the tool builds the same for every backend but which it only runs
# with some of kernelwatch's backends (it passes mm_fp8's prepared weight to every backend).
TOOL_BACKENDS = {"mm_fp8": ("trtllm_low_latency",), "bmm_bf16": ("cudnn", "cutlass", "auto")}



def _kernel(name: str, params: tuple[str, ...], description: str,
            since: str | None = None) -> Kernel:
    archs = tuple(a for a in ("sm80", "sm86", "sm89", "sm90", *BLACKWELL)
                  if any(a in v for v in BACKEND_ARCHS[name].values()))
    return Kernel(name, "gemm", params, tuple(BACKEND_ARCHS[name]), ("torch",), description,
                  routine=name, archs=archs, since=since, declared=name not in MEASURED)


_MNK = ("m", "n", "k")


class GemmFamily(Family):
    name = "gemm"
    ops = "kernelwatch_harness.families.gemm_ops"
    params = by_name(
        shared.batch_size(doc="matrices multiplied in one batched call"),
        Param("group_size", int, 1, min=1, max=1024,
              doc="groups of a grouped GEMM, each [m, k] x [k, n]"),
        shared.m(doc="rows of the output (tokens)"),
        Param("n", int, 4096, min=1, max=131072, doc="columns of the output"),
        shared.k(doc="the reduced dimension"),
        Param("input_dtype", str, "float8_e4m3fn", choices=FP8_DTYPES,
              doc="the first operand's FP8 format"),
        Param("mat2_dtype", str, "float8_e4m3fn", choices=FP8_DTYPES,
              doc="the second operand's FP8 format"),
        Param("out_dtype", str, "bfloat16", choices=("bfloat16", "float16"),
              doc="the output"),
        Param("bias", bool, False, choices=(False, True),
              doc="add a bias vector of n elements to every row"),
    )
    kernels = {
        k.name: k for k in (
            _kernel("bmm_fp8", ("batch_size", *_MNK, "input_dtype", "mat2_dtype",
                                "out_dtype"), "batched FP8 GEMM with per-tensor scales"),
            _kernel("mm_fp8", _MNK,
                    "FP8 (e4m3) GEMM with a per-tensor output scale, bfloat16 out"),
            _kernel("mm_bf16", (*_MNK, "out_dtype", "bias"), "bfloat16 GEMM",
                    since=SINCE["mm_bf16"]),
            _kernel("bmm_bf16", ("batch_size", *_MNK, "out_dtype"), "batched bfloat16 GEMM",
                    since=SINCE["bmm_bf16"]),
            _kernel("tinygemm_bf16", (*_MNK, "bias"),
                    "small-m bfloat16 GEMM (router GEMM), F.linear's layout",
                    since=SINCE["tinygemm_bf16"]),
            _kernel("mm_fp4", (*_MNK, "out_dtype"), "FP4 (NVFP4/MXFP4) GEMM, Blackwell"),
            _kernel("mm_mxfp8", (*_MNK, "out_dtype"), "MXFP8 GEMM, Blackwell"),
            _kernel("bmm_mxfp8", ("batch_size", *_MNK, "out_dtype"),
                    "batched MXFP8 GEMM, Blackwell"),
            _kernel("mm_bf16_fp4", (*_MNK, "out_dtype"),
                    "bfloat16 activations x FP4 weights, Blackwell"),
            _kernel("gemm_fp8_nt_groupwise", (*_MNK, "out_dtype"),
                    "FP8 GEMM with 1x128x128 group-wise scales, Blackwell"),
            _kernel("group_gemm_fp8_nt_groupwise", ("group_size", *_MNK, "out_dtype"),
                    "grouped FP8 GEMM with group-wise scales, Blackwell"),
        )
    }

    axes = ("m", "n", "k", "batch_size", "group_size")
    shape = ("batch_size", "group_size", "m", "n", "k")

    # --- declarations ------------------------------------------------------------------

    def check_point(self, kernel: str, point: dict[str, Any]) -> None:
        if point.get("input_dtype") == point.get("mat2_dtype") == "float8_e5m2":
            # cuBLASLt and cuDNN FP8 GEMMs take e5m2 for one operand at most
            raise ValueError("input_dtype and mat2_dtype cannot both be float8_e5m2")

    def batch(self, kernel: str, point: dict[str, Any]) -> int:
        if kernel in GROUPED:
            return int(point["group_size"])
        return int(point["batch_size"]) if kernel in BATCHED else 1

    def work(self, kernel: str, point: dict[str, Any]) -> Work:
        m, n, k = (int(point[d]) for d in _MNK)
        b = self.batch(kernel, point)
        ab = OPERAND_BYTES.get(kernel, 2.0)
        a_bytes = m * k * (2 if kernel == "mm_bf16_fp4" else ab)
        out = m * n * DTYPE_BYTES[str(point.get("out_dtype", "bfloat16"))]
        flops = 2.0 * m * n * k
        bias = bool(point.get("bias", False))
        return Work(flops=b * (flops + (m * n if bias else 0)),
                    bytes=b * (a_bytes + n * k * ab + out + (n * 2 if bias else 0)),
                    extra={"batch": b})

    def memory_bytes(self, kernel: str, point: dict[str, Any]) -> float:
        # the operands and output, the bfloat16 originals, the float32 reference
        m, n, _ = (int(point[d]) for d in _MNK)
        b = self.batch(kernel, point)
        return self.work(kernel, point).bytes * 2 + b * m * n * 4

    # --- flashinfer_benchmark.py ---------------------------------------------------------

    routine_flags = frozenset({"--backends", "--batch_size", "--group_size", "--m", "--n",
                               "--k", "--input_dtype", "--mat2_dtype", "--out_dtype",
                               "--bias", "--no_cuda_graph", "--tile_size",
                               "--scale_major_mode", "--mma_sm"})
    refused_flags = {
        "--autotune": "--autotune: kernelwatch times FlashInfer's untuned GEMMs",
        "--use_nvfp4": "--use_nvfp4: kernelwatch does not run mm_fp4's FlashInfer call yet",
        "--use_128x4_sf_layout": "--use_128x4_sf_layout: kernelwatch does not run the "
                                 "block-scaled FlashInfer GEMMs yet",
    }
    # flags whose only value kernelwatch measures is the tool's default
    _FIXED = {"--tile_size": "128", "--scale_major_mode": "MN", "--mma_sm": "1"}

    def repro(self, kernel: str, params: dict[str, Any], backend: str) -> Repro:
        tool = TOOL_BACKENDS.get(kernel)
        if tool is not None and backend not in tool:
            return Repro(None, f"flashinfer_benchmark.py's {kernel} routine runs "
                               f"{', '.join(tool)} only")
        args = ["--routine", kernel, "--backends", backend]
        if kernel in BATCHED:
            args += ["--batch_size", str(params["batch_size"])]
        if kernel in GROUPED:
            args += ["--group_size", str(params["group_size"])]
        args += [a for d in _MNK for a in (f"--{d}", str(params[d]))]
        for name in ("input_dtype", "mat2_dtype", "out_dtype"):
            if name in params:
                args += [f"--{name}", TOOL_DTYPE[str(params[name])]]
        if params.get("bias"):
            args.append("--bias")
        return Repro(args)

    def from_flags(self, kernel: str, flags: Flags) -> list[LineGroup]:
        spec = self.kernels[kernel]
        for flag, value in self._FIXED.items():
            if flags.one(flag, value) != value:
                raise Unmapped(f"{flag} {flags.one(flag)}: kernelwatch measures {flag} {value}")
        backends = flags.get("--backends") or [TOOL_DEFAULT_BACKEND.get(kernel, "cudnn")]
        for b in backends:
            if b not in spec.flashinfer_backends:
                raise Unmapped(f"--backends {b}: kernelwatch runs {kernel} with "
                               f"{', '.join(spec.flashinfer_backends)}")
        by_tool = {v: k for k, v in TOOL_DTYPE.items()}
        params: dict[str, Any] = {d: int(flags.one(f"--{d}")) for d in _MNK}
        for name, default in (("input_dtype", "fp8_e4m3"), ("mat2_dtype", "fp8_e4m3"),
                              ("out_dtype", "bfloat16")):
            if name in spec.params:
                value = flags.one(f"--{name}", default)
                if by_tool.get(value) not in (self.params[name].choices or ()):
                    raise Unmapped(f"--{name} {value} cannot be mapped")
                params[name] = by_tool[value]
                continue
            fixed = TOOL_FIXED_DTYPES.get(kernel, {}).get(name)  # else the routine ignores it
            if fixed is not None and flags.one(f"--{name}", fixed) != fixed:
                raise Unmapped(f"--{name} {flags.one(f'--{name}')}: flashinfer_benchmark.py "
                               f"runs {kernel} with {fixed} only")
        for name in ("batch_size", "group_size"):
            if name in spec.params:
                params[name] = int(flags.one(f"--{name}", "1"))
            elif flags.one(f"--{name}", "1") != "1":
                raise Unmapped(f"--{name} {flags.one(f'--{name}')}: {kernel} is one GEMM")
        if "bias" in spec.params:
            params["bias"] = "--bias" in flags
        elif "--bias" in flags:
            raise Unmapped(f"--bias: {kernel} takes no bias")
        return [(list(backends), params)]

    # --- measuring -------------------------------------------------------------------------

    def tolerance(self, kernel: str, params: dict[str, Any]) -> float:
        # Every output passes through bfloat16 (the output, or torch's product of bfloat16
        # operands before a float16 cast): one rounding is 2^-8 of a value, and with standard
        # normal (or dequantised ~ standard normal) operands the largest of m*n outputs is
        # ~5 sqrt(k). 16 sqrt(k) 2^-8 leaves room for two roundings and a split-k sum, and is
        # still a fraction of what a wrong kernel makes (a missing scale or transposed
        # operand: errors of order sqrt(k) on every element, ~16x the bound).
        return 16 * math.sqrt(int(params["k"])) * 2.0 ** -8


FAMILY = GemmFamily()
