"""The rope family's FP8 kernels (``flashinfer.rope``'s RoPE-then-quantise functions), as
flashinfer_benchmark.py's routines of the same names run them; declarations only (no torch),
the tensors are ``rope_fp8_ops``'s.

Each head is given in two parts, as FlashInfer takes it: the ``rope_dim`` dimensions that
rotate (``q_rope``, ``k_rope``) and the ``no_rope_dim`` that only pass through (``q_nope``,
``k_nope``; None where 0, as the tool passes them). Both parts of q and k are quantised to
``quant_dtype`` at scale 1 (the tool's):

- ``rope_quantize_fp8``: q ``[tokens, num_qo_heads, dim]``, k ``[tokens, num_kv_heads, dim]``;
- ``mla_rope_quantize_fp8``: the same with MLA's one shared k head, k ``[tokens, dim]``;
- ``rope_quantize_fp8_append_paged_kv_cache``: q as above returned, k (both parts) and v
  ``[tokens, num_kv_heads, rope_dim + no_rope_dim]`` quantised into a paged FP8 cache of
  ``page_size`` tokens a page in ``kv_layout`` (``batch_size`` requests of ``seq_len`` tokens
  each, its pages in order).

Angles come from a float32 cos/sin table of ``seq_len`` rows indexed by int32 ``pos_ids``;
kernelwatch's table holds the angles at theta 1e4 (the tool fills it with random numbers: the
kernel's work is the same). The tool's ``--head_dim`` is the two parts together: its MLA
routine rotates ``head_dim - no_rope_dim`` dimensions, ``rope_quantize_fp8`` takes both parts
from ``--rotary_dim`` (default ``head_dim``) and ``--no_rope_dim`` (default 0), the append
routine ``--rotary_dim`` and leaves ``head_dim - rotary_dim`` unrotated (its ``--no_rope_dim``
is ignored, as the tool ignores it).

Bytes count as the tool counts them: every part of q and k read in the input dtype and written
in FP8 (v too for the append), the float32 table (``seq_len`` rows) and int32 ``pos_ids``; the
append's per-token ``batch_indices`` and ``positions`` and its page indices are not counted
(by the tool either). FLOPs are the rotation's, 3 per rotated element (the tool reports 0).
"""

from __future__ import annotations

from typing import Any

from kernelwatch_harness.family import DTYPE_BYTES, Flags, Unmapped, Work

MLA = "mla_rope_quantize_fp8"
QUANT = "rope_quantize_fp8"
APPEND = "rope_quantize_fp8_append_paged_kv_cache"
FP8 = (MLA, QUANT, APPEND)
# FP8 conversions need Ada or newer: flashinfer_benchmark.py lists these from SM89.
FP8_ARCHS = ("sm89", "sm90", "sm100", "sm103", "sm120")

PARAMS = ("batch_size", "seq_len", "num_qo_heads", "num_kv_heads", "rope_dim", "no_rope_dim",
          "interleave", "dtype", "quant_dtype")
MLA_PARAMS = tuple(p for p in PARAMS if p != "num_kv_heads")  # one shared k head
APPEND_PARAMS = (*PARAMS, "page_size", "kv_layout")

# The tensors FlashInfer's functions take first, by position, in order (as the tool passes
# them); ``paged_kv_cache`` is the (k_cache, v_cache) pair.
TENSORS = ("q_rope", "k_rope", "q_nope", "k_nope", "cos_sin_cache", "pos_ids")
APPEND_TENSORS = ("q_rope", "k_rope", "q_nope", "k_nope", "v", "cos_sin_cache", "pos_ids",
                  "paged_kv_cache", "kv_indices", "kv_indptr", "batch_indices", "positions")

# The tool's --quant_dtype values for kernelwatch's (torch's) names.
QUANT_FLAG = {"float8_e4m3fn": "fp8_e4m3", "float8_e5m2": "fp8_e5m2"}
# Mantissa bits of each FP8 format (the step between neighbouring values is 2^-bits of the
# power of two below them).
MANTISSA_BITS = {"float8_e4m3fn": 3, "float8_e5m2": 2}

# The first release whose kernel writes a non-rotated part narrower than (or not a multiple
# of) ``rope_dim``: earlier ones move it in whole ``rope_dim`` chunks and write past the head.
# RopeQuantize from 0.6.0 (scale_store_partial_chunk); the append kernel from 0.7.4, the first
# release kernelwatch reads that has it (0.7.2.post1 has not).
PARTIAL_NOPE_SINCE = {MLA: "0.6.0", QUANT: "0.6.0", APPEND: "0.7.4"}


def kv_heads(kernel: str, point: dict[str, Any]) -> int:
    return 1 if kernel == MLA else int(point["num_kv_heads"])


def head_dim(point: dict[str, Any]) -> int:
    """Both parts of a head: the tool's --head_dim."""
    return int(point["rope_dim"]) + int(point["no_rope_dim"])


def check_point(kernel: str, point: dict[str, Any]) -> None:
    rope, nope = int(point["rope_dim"]), int(point["no_rope_dim"])
    # Each lane of FlashInfer's kernels moves a 16-element vector of one half of the rotated
    # part (32 for both halves), and of the non-rotated part.
    if rope % 32:
        raise ValueError(f"rope_dim={rope}: FlashInfer rotates 16-element vectors of each "
                         "half; rope_dim is a multiple of 32")
    if nope % 16:
        raise ValueError(f"no_rope_dim={nope}: FlashInfer moves 16-element vectors; "
                         "no_rope_dim is a multiple of 16")


def partial_nope_refusal(kernel: str, point: dict[str, Any]) -> str | None:
    """Why a release older than ``PARTIAL_NOPE_SINCE`` cannot run the point, or None."""
    rope, nope = int(point["rope_dim"]), int(point["no_rope_dim"])
    if nope % rope == 0:
        return None
    return (f"no_rope_dim={nope} is not a multiple of rope_dim={rope}: FlashInfer's {kernel} "
            f"before {PARTIAL_NOPE_SINCE[kernel]} writes the non-rotated part in whole "
            "rope_dim chunks, past the head")


def repro_args(kernel: str, params: dict[str, Any]) -> list[str]:
    """The tool's flags for an FP8 point (after --routine and --backends)."""
    args = ["--batch_size", str(params["batch_size"]), "--seq_len", str(params["seq_len"]),
            "--num_qo_heads", str(params["num_qo_heads"]),
            # the MLA routine reads no k heads (one is shared) but requires the flag
            "--num_kv_heads", str(kv_heads(kernel, params)),
            "--head_dim", str(head_dim(params))]
    if kernel == MLA:
        args += ["--no_rope_dim", str(params["no_rope_dim"])]
    else:
        args += ["--rotary_dim", str(params["rope_dim"])]
        if kernel == QUANT:
            args += ["--no_rope_dim", str(params["no_rope_dim"])]
        else:
            args += ["--page_size", str(params["page_size"]), "--kv_layout",
                     str(params["kv_layout"])]
    if params["interleave"]:
        args.append("--interleave")
    return [*args, "--input_dtype", str(params["dtype"]), "--quant_dtype",
            QUANT_FLAG[str(params["quant_dtype"])]]


def from_flags(kernel: str, flags: Flags) -> dict[str, Any]:
    """An FP8 line's parameters but the input dtype (the family's)."""
    params: dict[str, Any] = {}
    for name in ("batch_size", "seq_len", "num_qo_heads"):
        params[name] = int(flags.one(f"--{name}"))
    num_kv = int(flags.one("--num_kv_heads"))  # required by the tool for every routine
    if kernel != MLA:
        params["num_kv_heads"] = num_kv
    total = int(flags.one("--head_dim"))
    if kernel == MLA:
        nope = int(flags.one("--no_rope_dim", "0"))
        rope = total - nope
    else:
        rope = int(flags.one("--rotary_dim", str(total)))
        nope = int(flags.one("--no_rope_dim", "0")) if kernel == QUANT else total - rope
    if rope <= 0 or nope < 0:
        raise Unmapped(f"--head_dim {total}: the rotated part would be {rope} dimensions and "
                       f"the other {nope}; both parts of a head are at least 0 and the rotated "
                       "one more")
    params.update(rope_dim=rope, no_rope_dim=nope)
    if flags.get("--interleave", []):
        raise Unmapped("--interleave takes no value")
    params["interleave"] = "--interleave" in flags
    quant = flags.one("--quant_dtype", "fp8_e4m3")
    names = {flag: name for name, flag in QUANT_FLAG.items()}
    if quant not in names:
        raise Unmapped(f"--quant_dtype {quant} cannot be mapped; allowed: "
                       f"{', '.join(names)}")
    params["quant_dtype"] = names[quant]
    if kernel == APPEND:
        params["page_size"] = int(flags.one("--page_size", "16"))
        params["kv_layout"] = flags.one("--kv_layout", "NHD")
    return params


def elements(kernel: str, point: dict[str, Any]) -> tuple[int, int]:
    """Elements of q and of k (both parts), per call."""
    tokens = int(point["batch_size"]) * int(point["seq_len"])
    dim = head_dim(point)
    return tokens * int(point["num_qo_heads"]) * dim, tokens * kv_heads(kernel, point) * dim


def work(kernel: str, point: dict[str, Any]) -> Work:
    q, k = elements(kernel, point)
    moved_elements = q + k * (2 if kernel == APPEND else 1)  # the append moves v as well
    per_element = DTYPE_BYTES[str(point["dtype"])] + DTYPE_BYTES[str(point["quant_dtype"])]
    tokens = int(point["batch_size"]) * int(point["seq_len"])
    table = int(point["seq_len"]) * int(point["rope_dim"]) * 4  # float32 cos and sin
    moved = moved_elements * per_element + table + tokens * 4  # int32 pos_ids
    rotated = (q + k) // head_dim(point) * int(point["rope_dim"])
    return Work(flops=float(rotated * 3), bytes=float(moved))


def memory_bytes(kernel: str, point: dict[str, Any]) -> float:
    # inputs and outputs (and the cache), then the float32 reference and as much again for
    # the torch path's float32 temporaries
    q, k = elements(kernel, point)
    return work(kernel, point).bytes * 2 + (q + 2 * k) * 4 * 2


def tolerance(params: dict[str, Any]) -> float:
    """Half a step of the FP8 format between 8 and 16. Outputs are rotations of standard
    normal inputs, themselves standard normal: in any point kernelwatch can hold they stay
    below 8 (beyond it one in 10^15), where rounding to the format is at most that; the
    float32 arithmetic before it is ~1e-6. A wrong pairing, angle or position moves values by
    O(1) to O(5)."""
    return 2.0 ** (3 - MANTISSA_BITS[str(params["quant_dtype"])]) / 2
