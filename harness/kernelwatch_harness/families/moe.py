"""The MoE family: FlashInfer's mixture-of-experts kernels (``flashinfer.fused_moe``), as
flashinfer_benchmark.py's moe routines of the same names run them.

Measured:

- ``cutlass_fused_moe`` (backend ``cutlass``): the fused MoE layer without quantisation (the
  tool's ``--cutlass_variant base``). Each token goes to ``experts_per_token`` experts picked
  from ``router_logits`` as the tool's ``compute_routing`` does (softmax in float32, top-k,
  the k weights renormalised to sum to 1); each expert is a SwiGLU MLP, ``fc1`` ``[2I, H]``
  holding the up projection (first half) then the gate (second half), ``fc2`` ``[H, I]``:
  ``y = sum_j w_j * fc2_e (silu(x gate_e^T) * (x up_e^T))``. FlashInfer builds it for SM89,
  SM90 and Blackwell (``get_cutlass_fused_moe_module``: Ampere is an invalid backend);
  flashinfer_benchmark.py lists the routine for SM100+ only, so on Hopper kernelwatch measures
  what the tool skips.
- ``bgmv_moe`` (backend ``cuda``, FlashInfer 0.6.13+): the multi-LoRA MoE delta, the tool's
  shrink then expand: for each (token, expert) pair with the token's adapter ``l``,
  ``y[t, slice] += w * (x[t] A[l, e]^T) B[l, e]^T``, ``A`` ``[rank, H]``, ``B`` ``[H, rank]``
  per slice, ``y`` float32 ``[num_tokens, num_slices * H]``. Pairs, experts, adapters and
  weights are drawn as the tool draws them (experts uniformly, weights a softmax of k normals).
  Its CUDA kernels are JIT-built for SM90+ only (``supported_major_versions=[9, 10, 11, 12]``)
  and instantiated for the hidden sizes and ranks in ``BGMV_HIDDEN_SIZES``/``BGMV_RANKS``.

Declared for Blackwell only (flashinfer_benchmark.py runs them on SM100/SM103, b12x on
SM120; every other node reports them unsupported with the reason, and kernelwatch does not run
their FP4/FP8 block-scaled calls yet): ``trtllm_fp4_block_scale_moe``,
``trtllm_fp8_block_scale_moe``, ``trtllm_fp8_per_tensor_scale_moe``,
``cute_dsl_fp4_block_scale_moe``, ``b12x_fused_moe``, ``unified_nvfp4_moe``.

The tool's top-k is ``experts_per_token`` here: ``top_k`` is the sampling family's parameter
(tokens kept by top-k sampling), and one name means one thing on every page.

flashinfer_benchmark.py's moe routines import ``triton`` (its ``moe_utils`` module, for a
helper of the moe_comm routines) from 0.6.3 on, so a node running their command lines needs
it; kernelwatch and FlashInfer's two measured kernels do not.

The ``torch`` backend is what a PyTorch user writes, in the input dtype: a loop over experts,
each taking its tokens with ``index_select`` and adding its weighted output back with
``index_add_`` (``bgmv_moe``: the shrink and expand of each expert's pairs with their adapters'
weights, accumulated in float32 as FlashInfer's output is). The reference is float32 on the
same operands and routing.

FLOPs are the GEMMs' (``2 * H * 2I + 2 * I * H`` per (token, expert) pair; ``bgmv_moe``
``4 * H * rank`` per pair and slice), as the tool counts them. Bytes count each operand read
once and the output written once, and of the weights only the active experts' (the tool
counts the experts its routing selected): the expected number of distinct experts (or
adapter-expert cells) that uniform routing of the point's pairs selects.
"""

from __future__ import annotations

import math
from typing import Any

from kernelwatch_harness import shared_params as shared
from kernelwatch_harness.family import (
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

BLACKWELL = ("sm100", "sm103", "sm120")
# get_cutlass_fused_moe_module's backends in the 0.5.3, 0.6.18.post1 and 0.7.4 wheels: 89, 90,
# 100/103/107/110, 120/121 (SM80 and SM86 raise "Invalid backend").
CUTLASS_ARCHS = ("sm89", "sm90", *BLACKWELL)
# jit/bgmv_moe.py builds for major versions 9, 10, 11, 12 only.
BGMV_ARCHS = ("sm90", *BLACKWELL)
BGMV_SINCE = "0.6.13"  # the first release with flashinfer/fused_moe/bgmv_moe.py
# csrc/bgmv_moe/moe_bgmv_config.h's instantiations (the same in 0.6.18.post1 .. 0.7.4): the
# wide side (hidden size) and the narrow side (LoRA rank); others fail in the kernel.
BGMV_HIDDEN_SIZES = (384, 736, 768, 1024, 1344, 1472, 1536, 1856, 2048, 2112, 2688, 2816,
                     2880, 2944, 3072, 4096, 5120, 5888, 7168, 8192, 10240, 14336, 16384,
                     28672)
BGMV_RANKS = (8, 16, 32, 64)

MEASURED = ("cutlass_fused_moe", "bgmv_moe")
# The Blackwell-only routines: flashinfer_benchmark.py's backend name and where it runs them
# (routine_cc_to_supported_backends).
DECLARED: dict[str, tuple[str, tuple[str, ...], str]] = {
    "trtllm_fp4_block_scale_moe": ("trtllm", ("sm100", "sm103"),
                                   "TensorRT-LLM fused MoE, FP4 block-scaled weights"),
    "trtllm_fp8_block_scale_moe": ("trtllm", ("sm100", "sm103"),
                                   "TensorRT-LLM fused MoE, FP8 block-scaled weights"),
    "trtllm_fp8_per_tensor_scale_moe": ("trtllm", ("sm100", "sm103"),
                                        "TensorRT-LLM fused MoE, per-tensor FP8"),
    "cute_dsl_fp4_block_scale_moe": ("cute-dsl", ("sm100", "sm103"),
                                     "CuTe-DSL fused MoE, NVFP4"),
    "b12x_fused_moe": ("b12x", ("sm120",), "b12x fused MoE, NVFP4 (SM120)"),
    "unified_nvfp4_moe": ("unified", ("sm100", "sm103"),
                          "MoELayer across CuTe-DSL and TensorRT-LLM, NVFP4"),
}
# Bytes per weight element as each kernel reads it, block scales included (the tool's
# calculate_moe_kernel_bandwidth): NVFP4 packs two per byte with an 8-bit scale per 16, FP8
# block scales are one float32 per 128x128; the others read the dtype's.
WEIGHT_BYTES = {"trtllm_fp4_block_scale_moe": 0.5 + 1 / 16,
                "trtllm_fp8_block_scale_moe": 1 + 4 / (128 * 128),
                "trtllm_fp8_per_tensor_scale_moe": 1.0,
                "cute_dsl_fp4_block_scale_moe": 0.5 + 1 / 16, "b12x_fused_moe": 0.5 + 1 / 16,
                "unified_nvfp4_moe": 0.5 + 1 / 16}
# The routed kernels: their experts come from top-k of router logits (at most num_experts).
ROUTED = ("cutlass_fused_moe", *DECLARED)

_LAYER = ("num_tokens", "hidden_size", "intermediate_size", "num_experts", "experts_per_token")
_BGMV = ("num_tokens", "hidden_size", "num_experts", "experts_per_token", "rank", "num_loras",
         "num_slices", "dtype")


def expected_distinct(cells: int, draws: int, per_draw: int = 1) -> float:
    """Expected number of distinct cells hit when ``draws`` draws each pick ``per_draw``
    distinct cells uniformly out of ``cells``."""
    return cells * (1.0 - (1.0 - per_draw / cells) ** draws)


class MoeFamily(Family):
    name = "moe"
    ops = "kernelwatch_harness.families.moe_ops"
    params = by_name(
        shared.num_tokens(doc="tokens routed in one call (the tool's --num_tokens)"),
        shared.hidden_size(
            doc="the model dimension: each token's activations and the output row"),
        Param("intermediate_size", int, 14336, min=16, max=65536,
              doc="each expert's MLP width (fc1 is [2 x intermediate_size, hidden_size])"),
        shared.num_experts(doc="experts of the layer"),
        shared.experts_per_token(doc="experts each token is routed to (the tool's --top_k)"),
        Param("rank", int, 32, choices=BGMV_RANKS, doc="LoRA rank (bgmv_moe)"),
        Param("num_loras", int, 8, min=1, max=256,
              doc="LoRA adapters, one drawn per token (bgmv_moe)"),
        Param("num_slices", int, 1, min=1, max=4,
              doc="weight slices, each its own LoRA pair and output columns (2: gate + up)"),
        shared.dtype(doc="activations, weights and the output (bgmv_moe's output is float32)"),
    )
    kernels = {
        k.name: k for k in (
            Kernel("cutlass_fused_moe", "moe", (*_LAYER, "dtype"), ("cutlass",), ("torch",),
                   "fused MoE layer (top-k routed SwiGLU experts), unquantised",
                   routine="cutlass_fused_moe", archs=CUTLASS_ARCHS),
            Kernel("bgmv_moe", "moe", _BGMV, ("cuda",), ("torch",),
                   "multi-LoRA MoE delta: per-pair LoRA shrink and routing-weighted expand",
                   routine="bgmv_moe", archs=BGMV_ARCHS, since=BGMV_SINCE),
            *(Kernel(name, "moe", _LAYER, (backend,), (), description, routine=name,
                     archs=archs, declared=True)
              for name, (backend, archs, description) in DECLARED.items()),
        )
    }

    axes = ("num_tokens", "hidden_size", "intermediate_size", "num_experts",
            "experts_per_token", "rank")
    shape = ("num_tokens", "hidden_size", "intermediate_size", "num_experts",
             "experts_per_token")

    # --- declarations ------------------------------------------------------------------

    def check_point(self, kernel: str, point: dict[str, Any]) -> None:
        if kernel in ROUTED and int(point["experts_per_token"]) > int(point["num_experts"]):
            raise ValueError("experts_per_token must be at most num_experts (each token's "
                             "experts are distinct)")
        if kernel == "bgmv_moe" and int(point["hidden_size"]) not in BGMV_HIDDEN_SIZES:
            raise ValueError("hidden_size of bgmv_moe must be one FlashInfer's kernel is "
                             f"built for: {', '.join(map(str, BGMV_HIDDEN_SIZES))}")

    def active_experts(self, point: dict[str, Any]) -> float:
        e = int(point["num_experts"])
        return expected_distinct(e, int(point["num_tokens"]),
                                 min(int(point["experts_per_token"]), e))

    def work(self, kernel: str, point: dict[str, Any]) -> Work:
        n, h, k = (int(point[p]) for p in ("num_tokens", "hidden_size", "experts_per_token"))
        size = DTYPE_BYTES[str(point.get("dtype", "bfloat16"))]
        pairs = n * k
        if kernel == "bgmv_moe":
            r, s = int(point["rank"]), int(point["num_slices"])
            cells = expected_distinct(int(point["num_loras"]) * int(point["num_experts"]),
                                      pairs)
            return Work(
                flops=float(s * pairs * 4 * h * r),
                # x; per slice, A and B of each adapter-expert cell used; the pair indices
                # (token, expert: int64) and weights (float32), each token's adapter (int64);
                # the shrink result written and read back; y written (float32)
                bytes=float(n * h * size + s * cells * 2 * r * h * size + pairs * (8 + 8 + 4)
                            + n * 8 + 2 * s * pairs * r * size + n * s * h * 4),
                extra={"pairs": pairs, "active_cells": cells})
        i = int(point["intermediate_size"])
        active = self.active_experts(point)
        weight = WEIGHT_BYTES.get(kernel, size)
        return Work(
            flops=float(pairs * (2 * h * 2 * i + 2 * i * h)),
            # x; the experts (int32) and weights (float32) of each pair; the active experts'
            # fc1 [2I, H] and fc2 [H, I]; the output
            bytes=float(n * h * size + pairs * (4 + 4) + active * 3 * i * h * weight
                        + n * h * size),
            extra={"active_experts": active})

    def memory_bytes(self, kernel: str, point: dict[str, Any]) -> float:
        n, h, e = (int(point[p]) for p in ("num_tokens", "hidden_size", "num_experts"))
        size = DTYPE_BYTES[str(point.get("dtype", "bfloat16"))]
        if kernel == "bgmv_moe":
            s = int(point["num_slices"])
            weights = s * int(point["num_loras"]) * e * 2 * int(point["rank"]) * h * size
            # every weight (not only the active ones), then the torch baseline's gathered
            # per-pair weights of one expert at a time, and y and its float32 reference
            return float(2 * weights + n * s * h * 4 * 3 + n * h * size)
        # every expert's weights (held, not only read), x, output, float32 reference
        return float(e * 3 * int(point["intermediate_size"]) * h * size
                     + n * h * (2 * size + 4) + n * int(point["experts_per_token"]) * 8)

    # --- flashinfer_benchmark.py ---------------------------------------------------------

    # Every flag of the tool's moe parser is known here, so that a line of a routine
    # kernelwatch does not run is refused for that reason, not for a flag; the measured
    # routines refuse the flags that change their experiment (from_flags).
    routine_flags = frozenset({
        "--num_tokens", "--hidden_size", "--intermediate_size", "--num_experts", "--top_k",
        "--input_dtype", "--n_group", "--topk_group", "--routed_scaling_factor",
        "--local_expert_offset", "--local_num_experts", "--routing_method",
        "--use_shuffled_weight", "--weight_layout", "--use_routing_bias",
        "--use_routing_scales_on_input", "--weight_dtype", "--activation-type", "--autotune",
        "--fp4_mode", "--use_functional_api", "--b12x_quant_mode", "--cutlass_variant",
        "--quantized_input", "--tp_size", "--tp_rank", "--ep_size", "--ep_rank", "--rank",
        "--num_loras", "--num_slices", "--no_cuda_graph", "--enable_pdl", "--autotune_cache"})
    # flags whose only value kernelwatch measures is the tool's default (cutlass_fused_moe)
    _CUTLASS_FIXED = {"--cutlass_variant": "base", "--activation-type": "Swiglu",
                      "--tp_size": "1", "--tp_rank": "0", "--ep_size": "1", "--ep_rank": "0"}
    _CUTLASS_REFUSED = {
        "--autotune": "--autotune: kernelwatch times FlashInfer's untuned MoE",
        "--autotune_cache": "--autotune_cache: kernelwatch times FlashInfer's untuned MoE",
        "--quantized_input": "--quantized_input: kernelwatch measures the unquantised "
                             "cutlass_fused_moe (--cutlass_variant base)",
        "--enable_pdl": "--enable_pdl: kernelwatch calls FlashInfer with enable_pdl=False "
                        "(the tool's default)",
    }

    def repro(self, kernel: str, params: dict[str, Any], backend: str) -> Repro:
        if kernel not in MEASURED:
            return Repro(None, f"kernelwatch does not run {kernel}'s FlashInfer call yet")
        args = ["--routine", kernel, "--num_tokens", str(params["num_tokens"]),
                "--hidden_size", str(params["hidden_size"])]
        # bgmv_moe ignores --intermediate_size, but the tool's parser requires one
        inter = params.get("intermediate_size", self.params["intermediate_size"].default)
        args += ["--intermediate_size", str(inter), "--num_experts",
                 str(params["num_experts"]), "--top_k", str(params["experts_per_token"])]
        if kernel == "bgmv_moe":
            args += ["--rank", str(params["rank"]), "--num_loras", str(params["num_loras"]),
                     "--num_slices", str(params["num_slices"])]
        return Repro([*args, "--input_dtype", str(params["dtype"])])

    def from_flags(self, kernel: str, flags: Flags) -> list[LineGroup]:
        if kernel not in MEASURED:
            backend, archs, _ = DECLARED[kernel]
            raise Unmapped(f"--routine {kernel}: FlashInfer runs it ({backend}) on "
                           f"{', '.join(archs)} only, and kernelwatch does not run its "
                           "block-scaled call yet")
        dtype = flags.one("--input_dtype", "bfloat16")
        if dtype not in (self.params["dtype"].choices or ()):
            raise Unmapped(f"--input_dtype {dtype}: kernelwatch measures "
                           f"{self.params['dtype'].describe_allowed()}")
        flags.one("--intermediate_size")  # required by the tool (bgmv_moe ignores it)
        params: dict[str, Any] = {
            "num_tokens": int(flags.one("--num_tokens")),
            "hidden_size": int(flags.one("--hidden_size")),
            "num_experts": int(flags.one("--num_experts")),
            "experts_per_token": int(flags.one("--top_k")), "dtype": dtype}
        if kernel == "bgmv_moe":
            for name, default in (("rank", "32"), ("num_loras", "8"), ("num_slices", "1")):
                params[name] = int(flags.one(f"--{name}", default))
            return [(["cuda"], params)]
        for flag, why in self._CUTLASS_REFUSED.items():
            if flag in flags:
                raise Unmapped(why)
        for flag, value in self._CUTLASS_FIXED.items():
            if flags.one(flag, value) != value:
                raise Unmapped(f"{flag} {flags.one(flag)}: kernelwatch measures "
                               f"cutlass_fused_moe with {flag} {value}")
        params["intermediate_size"] = int(flags.one("--intermediate_size"))
        return [(["cutlass"], params)]

    # --- measuring -------------------------------------------------------------------------

    def tolerance(self, kernel: str, params: dict[str, Any]) -> float:
        # Inputs as the tool draws them. cutlass_fused_moe: x ~ N(0, 1), weights N(0, 1)/10,
        # so fc1's outputs have sigma s1 = sqrt(H)/10, the SwiGLU product at most s1^2, and
        # an expert's output sigma sy = sqrt(I)/10 * s1^2 (the routed sum, weights summing to
        # 1, is no larger). bgmv_moe: x ~ N(0, 1)/10, A and B N(0, 1)/100: sy =
        # 1e-5 sqrt(H rank). The largest output is ~5 sy; the kernels round the
        # intermediate (and cutlass its output) to the 16-bit dtype, 2^-8 of a value each
        # time: 24 sy 2^-8 bounds that (~0.1 sy), while a wrong expert, adapter, weight or
        # gate/up order is off by ~sy.
        h = int(params["hidden_size"])
        if kernel == "bgmv_moe":
            sy = 1e-5 * math.sqrt(h * int(params["rank"]))
        else:
            sy = math.sqrt(int(params["intermediate_size"])) / 10 * (h / 100)
        return 24 * sy * 2.0 ** -8


FAMILY = MoeFamily()
