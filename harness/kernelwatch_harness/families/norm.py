"""The norm family: RMSNorm and its fused-residual and Gemma forms, the quantising and fused
norms (``flashinfer.norm``), as flashinfer_benchmark.py's norm routines of the same names run
them.

- ``rmsnorm``: ``out = x / sqrt(mean(x^2) + eps) * w``;
- ``gemma_rmsnorm``: the same with ``(1 + w)`` (Gemma's weight offset);
- ``fused_add_rmsnorm`` / ``gemma_fused_add_rmsnorm``: ``r = x + r`` then the norm of ``r``,
  both written in place (``x`` holds the output, ``r`` the sum), one pass over memory;
- ``rmsnorm_quant`` / ``fused_add_rmsnorm_quant``: RMSNorm (of ``x + r``, ``r`` written in
  place) divided by ``quant_scale``, clamped to the FP8 range and written as ``quant_dtype``;
- ``layernorm_quant``: LayerNorm with float32 ``gamma`` and ``beta``, quantised the same way
  (bfloat16 input only);
- ``fused_rmsnorm_silu``: ``silu(rmsnorm(x))``, bfloat16 in and out;
- ``fused_dit_layernorm``: a diffusion transformer's gated residual and LayerNorm over a
  hidden dimension of 3072 (``[batch_size, seq_len, 3072]``), in the tool's three
  ``dit_mode``s: ``r = r + x * (gate + gate_bias)`` (or ``r + x``), then ``LayerNorm(r)``
  with ``gamma``/``beta`` or modulated by ``(1 + scale + scale_bias)`` and
  ``shift + shift_bias``; gate, scale and shift are slices of one ``[.., 6, 3072]`` embedding
  (WAN's ``temb.chunk(6, dim=2)``, the stride FlashInfer requires);
- ``fused_qk_rmsnorm_rope``: a video DiT's packed ``qkv`` ``[batch_size, ppf*pph*ppw,
  3 * hidden_size]``: RMSNorm of q and k across all heads, then 3D RoPE (interleaved pairs;
  each head's dimensions split between frame, height and width positions as the tool splits
  them: ``2 * (head_dim // 6)`` each for height and width, the rest for frames), v copied.

``x`` is ``[batch_size, hidden_size]``, or ``[batch_size, num_heads, hidden_size]`` when
``num_heads`` > 0 for the four unquantised forms (a per-head norm, as for q/k norms); the
quantising and fused ones are 2D as the tool builds them. ``eps`` is FlashInfer's and the
tool's default, 1e-6; ``quant_scale`` and ``quant_dtype`` default to the tool's ``--scale 1``
and ``--out_dtype fp8_e4m3``. Backends: FlashInfer's ``auto`` (the library's own dispatch:
its CUDA kernel, or its CuTe-DSL kernel where a release and the node have it; the one that ran
is recorded), and ``torch`` (``torch.nn.functional.rms_norm``/``layer_norm``/``silu``, the
residual add, Gemma's offset, the FP8 cast and the rotation as a PyTorch user writes them).
The reference is float32; a quantised output is compared dequantised (times the scale).

The norms are memory bound: bytes are one read of each input and one write of each output, as
flashinfer_benchmark.py counts them (the FP8 output one byte an element), with what the tool
leaves out counted too (the DiT's gate/scale/shift slices and float32 vectors). FLOPs are 5
an element for RMSNorm (6 with the residual add): square, sum, scale, weight, and the Gemma
offset or the add; one more for the quantising division; 7 for LayerNorm (mean, centre,
square, sum, normalise, gamma, beta); 2 for SiLU; see ``work`` for the fused DiT and QK forms.
FlashInfer releases before 0.6.0 have none of the quantising or fused norms (``since``).

Declared for Blackwell only: ``rmsnorm_fp4quant`` and ``add_rmsnorm_fp4quant``, RMSNorm (of
``x + r``, ``r`` written in place) quantised to NVFP4 (one FP8 scale per 16 elements) or MXFP4
(one UE8M0 scale per 32), ``fp4_format``, by CuTe-DSL kernels that flashinfer_benchmark.py
runs on SM100, SM103 and SM120/121 only. Every other node reports them unsupported with the
reason, a Blackwell node that kernelwatch does not run their FP4 call yet; a testlist line
naming them is refused for that reason. Their bytes count the packed FP4 output (half a byte
an element) and its one-byte scales, their FLOPs those of ``rmsnorm_quant``.
"""

from __future__ import annotations

import math
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
    not_run_yet,
)

EPS = 1e-6
# Where FlashInfer's norm kernels run (its CUDA kernels build for every architecture it
# supports; flashinfer_benchmark.py lists them from SM75 to SM121, the quantising ones on
# SM80 and newer; the fused SiLU, DiT and QK kernels check for SM80 themselves).
ARCHS = (*AMPERE_HOPPER, "sm100", "sm103", "sm120")

FUSED = ("fused_add_rmsnorm", "gemma_fused_add_rmsnorm")
GEMMA = ("gemma_rmsnorm", "gemma_fused_add_rmsnorm")
QUANT = ("rmsnorm_quant", "fused_add_rmsnorm_quant", "layernorm_quant")
RESIDUAL = (*FUSED, "fused_add_rmsnorm_quant")  # r = x + r, written in place
SILU = "fused_rmsnorm_silu"
DIT = "fused_dit_layernorm"
QK_ROPE = "fused_qk_rmsnorm_rope"
# The FP4 norms (CuTe-DSL, routine_cc_to_supported_backends: 10.0, 10.3, 12.0, 12.1), the
# elements per scale of each FP4 format, and the tool's flags only they read.
FP4 = ("rmsnorm_fp4quant", "add_rmsnorm_fp4quant")
FP4_ARCHS = ("sm100", "sm103", "sm120")
FP4_BLOCK = {"nvfp4": 16, "mxfp4": 32}
FP4_FLAGS = ("--use_global_scale", "--is_sf_swizzled_layout", "--output_both_sf_layouts")
# The kernels FlashInfer runs in bfloat16 only (the tool refuses or ignores other dtypes).
BF16_ONLY = ("layernorm_quant", SILU, DIT, QK_ROPE)

# The first FlashInfer release with each (read from the tags' flashinfer/norm).
SINCE = {"rmsnorm_quant": "0.6.0", "fused_add_rmsnorm_quant": "0.6.0", SILU: "0.6.8",
         DIT: "0.6.11", QK_ROPE: "0.6.12", "layernorm_quant": "0.6.16"}

# The DiT LayerNorm's modes (the tool's --dit_mode) and FlashInfer's function for each.
DIT_MODES = {
    "gate_residual_gamma_beta": "fused_dit_gate_residual_layernorm_gamma_beta",
    "gate_residual_scale_shift": "fused_dit_gate_residual_layernorm_scale_shift",
    "residual_scale_shift": "fused_dit_residual_layernorm_scale_shift",
}
DIT_HIDDEN = 3072  # the only hidden dimension FlashInfer's DiT kernel takes (WAN 2.2 5B)
QK_HEAD_DIMS = (64, 128, 256)  # what FlashInfer's fused QK kernel takes
QK_MAX_HEADS = 32

# FP8 formats: mantissa bits, largest finite value, smallest normal exponent.
FP8 = {"float8_e4m3fn": (3, 448.0, -6), "float8_e5m2": (2, 57344.0, -14)}
# The tool's --out_dtype names.
FP8_FLAG = {"float8_e4m3fn": "fp8_e4m3", "float8_e5m2": "fp8_e5m2"}
# The largest magnitude a quantising kernel's normalised output reaches with kernelwatch's
# inputs (x standard normal: |x / rms(x)| stays below ~6.2 even over 1e9 elements; weights,
# gamma and beta within 0.5), below 4, so one FP8 step there bounds the rounding.
QUANT_PEAK = 4.0


def fp8_step(dtype: str, bound: float) -> float:
    """The widest spacing of FP8 values below ``bound`` (values up to the format's largest;
    the subnormals' spacing below the normals)."""
    mantissa, largest, emin = FP8[dtype]
    exponent = max(math.ceil(math.log2(min(max(bound, 1e-30), largest))) - 1, emin)
    return float(2.0 ** (exponent - mantissa))


def _kernel(name: str, params: tuple[str, ...], description: str) -> Kernel:
    return Kernel(name, "norm", params, ("auto",), ("torch",), description, routine=name,
                  archs=ARCHS, since=SINCE.get(name))


def _fp4_kernel(name: str, description: str) -> Kernel:
    return Kernel(name, "norm", ("batch_size", "hidden_size", "fp4_format", "dtype"),
                  ("cute-dsl",), (), description, routine=name, archs=FP4_ARCHS,
                  declared=True)


def fp4_refusal(kernel: str) -> str:
    """Why kernelwatch does not run an FP4 norm on a Blackwell node."""
    return not_run_yet(kernel, "its FP4 block-scaled output", FP4_ARCHS)


class NormFamily(Family):
    name = "norm"
    ops = "kernelwatch_harness.families.norm_ops"
    # Shared names are declared once, in shared_params, with norm's doc.
    params = by_name(
        shared.batch_size(doc="tokens (rows) normalised in one call; fused_dit_layernorm and "
                              "fused_qk_rmsnorm_rope: sequences"),
        shared.hidden_size(doc="elements normalised together (the last dimension); "
                               "fused_qk_rmsnorm_rope: q's width, num_heads * head_dim"),
        Param("num_heads", int, 0, min=0, max=256,
              doc="0: x is [batch_size, hidden_size]; n: [batch_size, n, hidden_size], a "
                  "per-head norm; fused_qk_rmsnorm_rope: heads of q, k and v"),
        shared.seq_len(
            doc="fused_dit_layernorm: rows of each sequence (the tool's --hidden_size)"),
        shared.dtype(doc="x, r, w and the unquantised outputs"),
        shared.quant_dtype(doc="the quantising norms' output format (the tool's --out_dtype)"),
        Param("quant_scale", float, 1.0, min=0.001, max=1000.0,
              doc="the quantising norms divide their output by it before the FP8 cast "
                  "(the tool's --scale)"),
        Param("dit_mode", str, "gate_residual_gamma_beta", choices=tuple(DIT_MODES),
              doc="fused_dit_layernorm: gated residual and gamma/beta, gated residual and "
                  "scale/shift, or plain residual and scale/shift"),
        Param("ppf", int, 5, min=1, max=1024,
              doc="fused_qk_rmsnorm_rope: patches along frames (sequence = ppf * pph * ppw)"),
        Param("pph", int, 12, min=1, max=1024, doc="fused_qk_rmsnorm_rope: patches along height"),
        Param("ppw", int, 32, min=1, max=1024, doc="fused_qk_rmsnorm_rope: patches along width"),
        Param("fp4_format", str, "nvfp4", choices=tuple(FP4_BLOCK),
              doc="the FP4 norms' output format (the tool's --out_dtype nvfp4 or mxfp4)"),
    )
    _params = ("batch_size", "hidden_size", "num_heads", "dtype")
    _quant = ("batch_size", "hidden_size", "dtype", "quant_dtype", "quant_scale")
    kernels = {
        k.name: k for k in (
            _kernel("rmsnorm", _params, "RMSNorm: x / rms(x) * w"),
            _kernel("fused_add_rmsnorm", _params, "residual add then RMSNorm, both in place"),
            _kernel("gemma_rmsnorm", _params, "Gemma's RMSNorm: x / rms(x) * (1 + w)"),
            _kernel("gemma_fused_add_rmsnorm", _params,
                    "residual add then Gemma's RMSNorm, both in place"),
            _kernel("rmsnorm_quant", _quant, "RMSNorm quantised to FP8"),
            _kernel("fused_add_rmsnorm_quant", _quant,
                    "residual add (in place) then RMSNorm quantised to FP8"),
            _kernel("layernorm_quant", _quant,
                    "LayerNorm (float32 gamma, beta) quantised to FP8, bfloat16 input"),
            _kernel(SILU, ("batch_size", "hidden_size", "dtype"),
                    "silu(RMSNorm(x)), bfloat16"),
            _kernel(DIT, ("batch_size", "seq_len", "hidden_size", "dit_mode", "dtype"),
                    "a DiT's gated residual then LayerNorm (gamma/beta or scale/shift), "
                    "hidden 3072, bfloat16"),
            _kernel(QK_ROPE, ("batch_size", "hidden_size", "num_heads", "ppf", "pph", "ppw",
                              "dtype"),
                    "RMSNorm of q and k across heads, 3D RoPE, v copied, from packed qkv, "
                    "bfloat16"),
            _fp4_kernel("rmsnorm_fp4quant", "RMSNorm quantised to NVFP4 or MXFP4 (Blackwell)"),
            _fp4_kernel("add_rmsnorm_fp4quant",
                        "residual add (in place) then RMSNorm quantised to NVFP4 or MXFP4 "
                        "(Blackwell)"),
        )
    }
    # What the tool builds these with where kernelwatch's shared defaults differ: the DiT's
    # one hidden dimension, and WAN 2.2 5B's 24 heads of 128 for the fused QK kernel (the tool
    # has no default: --hidden_size and --num_heads are required).
    backend_defaults = {DIT: {"*": {"hidden_size": DIT_HIDDEN}},
                        QK_ROPE: {"*": {"hidden_size": 3072, "num_heads": 24}}}

    axes = ("batch_size", "hidden_size", "num_heads", "seq_len", "quant_scale")
    shape = ("batch_size", "num_heads", "seq_len", "hidden_size")

    # flashinfer_benchmark.py's norm routines: --backends cuda (its default; 0.6 runs the same
    # public flashinfer.norm call for "cute-dsl") is kernelwatch's "auto".
    # The FP4 routines' own flags are known, so that their lines are refused for the routine
    # (from_flags), and another routine's line naming one for the flag.
    routine_flags = frozenset({"--backends", "--batch_size", "--hidden_size", "--num_heads",
                               "--input_dtype", "--eps", "--no_cuda_graph", "--out_dtype",
                               "--scale", "--dit_mode", "--ppf", "--pph", "--ppw", *FP4_FLAGS})

    def check_point(self, kernel: str, point: dict[str, Any]) -> None:
        if kernel in FP4:
            block = FP4_BLOCK[str(point["fp4_format"])]
            if int(point["hidden_size"]) % block:
                raise ValueError(f"hidden_size={point['hidden_size']}: {point['fp4_format']} "
                                 f"quantises blocks of {block}; hidden_size must be a "
                                 f"multiple of {block}")
        if kernel in BF16_ONLY and point.get("dtype") != "bfloat16":
            raise ValueError(f"dtype={point.get('dtype')}: FlashInfer runs {kernel} in "
                             "bfloat16 only (allowed: bfloat16)")
        hidden = int(point["hidden_size"])
        if kernel == SILU and hidden > 32768 and hidden % 2:
            # its loads move 2 elements (odd rows: 1) per lane, at most 1024 loads a row
            raise ValueError(f"hidden_size={hidden}: {SILU} takes an even hidden_size above "
                             "32768")
        if kernel == DIT and hidden != DIT_HIDDEN:
            raise ValueError(f"hidden_size={hidden}: FlashInfer's {DIT} takes hidden_size "
                             f"{DIT_HIDDEN} only (allowed: {DIT_HIDDEN})")
        if kernel == QK_ROPE:
            heads = int(point["num_heads"])
            if not 1 <= heads <= QK_MAX_HEADS:
                raise ValueError(f"num_heads={heads}: {QK_ROPE} takes 1 to {QK_MAX_HEADS} "
                                 "heads")
            if hidden % heads or hidden // heads not in QK_HEAD_DIMS:
                raise ValueError(f"hidden_size={hidden}, num_heads={heads}: {QK_ROPE} needs "
                                 "hidden_size = num_heads * head_dim with head_dim one of "
                                 f"{', '.join(map(str, QK_HEAD_DIMS))}")

    # --- flashinfer_benchmark.py ---------------------------------------------------------

    def repro(self, kernel: str, params: dict[str, Any], backend: str) -> Repro:
        if kernel in FP4:
            return Repro(None, fp4_refusal(kernel))
        args = ["--routine", kernel, "--backends", "cuda", "--batch_size",
                str(params["batch_size"])]
        note = None
        if kernel == DIT:
            # the tool reads --hidden_size as the rows of each sequence
            args += ["--hidden_size", str(params["seq_len"]), "--dit_mode", params["dit_mode"]]
            note = (f"flashinfer_benchmark.py reads --hidden_size as {DIT}'s rows per "
                    f"sequence (kernelwatch's seq_len); its hidden dimension is {DIT_HIDDEN}")
        else:
            args += ["--hidden_size", str(params["hidden_size"])]
        if int(params.get("num_heads", 0)):
            args += ["--num_heads", str(params["num_heads"])]
        if kernel == QK_ROPE:
            for name in ("ppf", "pph", "ppw"):
                args += [f"--{name}", str(params[name])]
        if kernel in QUANT:  # str() of a float is exact
            args += ["--out_dtype", FP8_FLAG[params["quant_dtype"]],
                     "--scale", str(params["quant_scale"])]
        return Repro([*args, "--input_dtype", str(params["dtype"])], note)

    def from_flags(self, kernel: str, flags: Flags) -> list[LineGroup]:
        if kernel in FP4:
            raise Unmapped(f"--routine {kernel}: {fp4_refusal(kernel)}")
        for flag in FP4_FLAGS:
            if flag in flags:
                raise Unmapped(f"{flag}: only the FP4 norm routines (rmsnorm_fp4quant, "
                               "add_rmsnorm_fp4quant, Blackwell only) read it; kernelwatch does "
                               "not run them yet")
        if float(flags.one("--eps", str(EPS))) != EPS:
            raise Unmapped(f"--eps {flags.one('--eps')}: kernelwatch measures eps={EPS}")
        # The tool runs layernorm_quant with cuda only; the fused SiLU, DiT and QK routines
        # read no --backends (one CUDA kernel each); the others run cuda as cute-dsl.
        allowed = ("cuda",) if kernel == "layernorm_quant" else ("cuda", "cute-dsl")
        for backend in flags.get("--backends") or ["cuda"]:
            if backend not in allowed:
                raise Unmapped(f"--backends {backend}: kernelwatch runs {kernel} with "
                               f"FlashInfer's own dispatch ({', '.join(allowed)})")
        wanted = self.kernels[kernel].params
        dtype = flags.one("--input_dtype", "bfloat16")
        if kernel in (SILU, DIT, QK_ROPE):
            dtype = "bfloat16"  # the tool builds these in bfloat16 whatever --input_dtype says
        elif kernel == "layernorm_quant" and dtype != "bfloat16":
            raise Unmapped(f"--input_dtype {dtype}: flashinfer_benchmark.py runs "
                           f"{kernel} in bfloat16 only")
        if dtype not in (self.params["dtype"].choices or ()):
            raise Unmapped(f"--input_dtype {dtype} cannot be mapped")
        params: dict[str, Any] = {"batch_size": int(flags.one("--batch_size"))}
        if kernel == DIT:
            params.update(seq_len=int(flags.one("--hidden_size")), hidden_size=DIT_HIDDEN,
                          dit_mode=flags.one("--dit_mode", "gate_residual_gamma_beta"))
            if params["dit_mode"] not in DIT_MODES:
                raise Unmapped(f"--dit_mode {params['dit_mode']} cannot be mapped")
        else:
            params["hidden_size"] = int(flags.one("--hidden_size"))
        if kernel == QK_ROPE and "--num_heads" not in flags:
            raise Unmapped(f"--num_heads is required for {kernel}")
        # Flags a routine does not read are left out, as the tool ignores them.
        if "num_heads" in wanted:
            params["num_heads"] = int(flags.one("--num_heads", "0"))
        for name, default in (("ppf", "5"), ("pph", "12"), ("ppw", "32")):
            if name in wanted:
                params[name] = int(flags.one(f"--{name}", default))
        if "quant_dtype" in wanted:
            out = flags.one("--out_dtype", "fp8_e4m3")
            by_flag = {v: k for k, v in FP8_FLAG.items()}
            if out not in by_flag:
                raise Unmapped(f"--out_dtype {out}: {kernel} quantises to fp8_e4m3 or "
                               "fp8_e5m2 (nvfp4 and mxfp4 are the Blackwell FP4 routines')")
            params["quant_dtype"] = by_flag[out]
            params["quant_scale"] = float(flags.one("--scale", "1.0"))
        params["dtype"] = dtype
        return [(["auto"], params)]

    # --- formulas --------------------------------------------------------------------------

    def elements(self, kernel: str, point: dict[str, Any]) -> int:
        """Elements of the normalised tensor (the DiT's rows; q's for the fused QK kernel)."""
        if kernel == DIT:
            rows = int(point["batch_size"]) * int(point["seq_len"])
        elif kernel == QK_ROPE:
            rows = int(point["batch_size"]) * self.qk_seq_len(point)
        else:
            rows = int(point["batch_size"]) * max(1, int(point.get("num_heads", 0)))
        return rows * int(point["hidden_size"])

    def qk_seq_len(self, point: dict[str, Any]) -> int:
        return int(point["ppf"]) * int(point["pph"]) * int(point["ppw"])

    def work(self, kernel: str, point: dict[str, Any]) -> Work:
        n, hidden = self.elements(kernel, point), int(point["hidden_size"])
        size = DTYPE_BYTES[str(point["dtype"])]
        if kernel in FP4:
            # x (and r) in, r out, w; the packed FP4 output and its one-byte scales
            residual = kernel == "add_rmsnorm_fp4quant"
            scales = n // FP4_BLOCK[str(point["fp4_format"])]
            return Work(flops=float(n * (7 if residual else 6)),
                        bytes=float(n * size * (3 if residual else 1) + n / 2 + scales
                                    + hidden * size), extra={"scales": scales})
        if kernel in QUANT:
            fp8 = DTYPE_BYTES[str(point["quant_dtype"])]
            if kernel == "layernorm_quant":  # x in, FP8 out, float32 gamma and beta
                return Work(flops=float(n * 8), bytes=float(n * (size + fp8) + 2 * hidden * 4))
            streams = 3 if kernel in RESIDUAL else 1  # x (and r) in, r out
            return Work(flops=float(n * (7 if kernel in RESIDUAL else 6)),
                        bytes=float(n * (size * streams + fp8) + hidden * size))
        if kernel == SILU:
            return Work(flops=float(n * 7), bytes=float(n * size * 2 + hidden * size))
        if kernel == DIT:
            return self._dit_work(n, hidden, size, str(point["dit_mode"]))
        if kernel == QK_ROPE:
            # qkv read, q k v written, the two weights; RMSNorm (5) and rotation (3) of q, k
            return Work(flops=float(2 * n * 8), bytes=float(6 * n * size + 2 * hidden * size))
        streams = 4 if kernel in FUSED else 2  # (x, r) in and out, or x in and out
        return Work(flops=float(n * (6 if kernel in FUSED else 5)),
                    bytes=float(n * size * streams + hidden * size))

    def _dit_work(self, n: int, hidden: int, size: int, mode: str) -> Work:
        gated, modulated = mode.startswith("gate_"), mode.endswith("scale_shift")
        # x and r in, r and the norm out, and the embedding's slices it reads: the gate, the
        # scale and shift (the tool counts the four streams only); float32 vectors: gamma
        # and beta, or the scale and shift biases, and the gate's bias
        slices = int(gated) + 2 * int(modulated)
        vectors = 2 + int(gated)
        # the residual: gate + bias, times x, plus r (3), or the add (1); LayerNorm with an
        # affine (7); the modulation's 1 + scale + bias and shift + bias (3 more)
        flops = (3 if gated else 1) + 7 + (3 if modulated else 0)
        return Work(flops=float(n * flops),
                    bytes=float(n * size * (4 + slices) + vectors * hidden * 4))

    def memory_bytes(self, kernel: str, point: dict[str, Any]) -> float:
        # the streams, a pristine copy for the reference, and the float32 reference
        n = self.elements(kernel, point)
        work = self.work(kernel, point).bytes
        if kernel == DIT:  # the whole [.., 6, 3072] embedding is allocated, 2 outputs checked
            return work * 2 + n * DTYPE_BYTES[str(point["dtype"])] * 6 + n * 4 * 2
        if kernel == QK_ROPE:  # q, k and v checked
            return work * 2 + n * 4 * 3
        return work * 2 + n * 4 * (2 if kernel in RESIDUAL else 1)

    def tolerance(self, kernel: str, params: dict[str, Any]) -> float:
        if kernel in QUANT:
            # One FP8 step at the largest output, in output units: the kernel may round the
            # normalised value (to the input dtype, or the scale's reciprocal) before the cast
            # and land on the neighbouring FP8 value; a wrong kernel is off by O(1).
            scale = float(params["quant_scale"])
            return scale * fp8_step(str(params["quant_dtype"]), QUANT_PEAK / scale)
        # Outputs reach ~9 (normal x, w in [-1, 1), Gemma's 1 + w; the DiT's modulated norm
        # stays below 16): one rounding there is 0.03 in bf16 (8 bits), plus as much again
        # where a fused kernel normalises the rounded sum; a wrong kernel is off by O(1).
        return {"float16": 2e-2, "bfloat16": 1e-1}[str(params["dtype"])]


FAMILY = NormFamily()
