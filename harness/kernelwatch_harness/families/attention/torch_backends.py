"""PyTorch baselines on the same shapes as FlashInfer's kernels.

torch-sdpa: ``torch.nn.functional.scaled_dot_product_attention`` (grouped heads through
``enable_gqa``, or ``repeat_interleave`` on a torch without it), batched when all requests have
the same lengths, one call per request otherwise: what a PyTorch user would write.
The kernel SDPA dispatches to (cuDNN, flash, efficient, math) is recorded with the point.
torch-math: the naive float32 ``softmax(q k^T) v``, grouped by KV head so K/V are not copied.

Both measure the attention variants (sliding window, soft cap, positional encoding), except
the soft cap on torch-sdpa, which refuses it (SDPA takes no logits transform). RoPE rotates q
and k before the attention and ALiBi is a bias (torch-sdpa: an additive ``attn_mask``, which
keeps SDPA off its flash kernel), inside the timed call: FlashInfer fuses them into its
kernels, a PyTorch user pays for them as separate operations.

A prepared backend is a callable ``fn(data) -> raw`` (the timed part) plus ``outputs(raw)``
turning its result into per-request ``[L_q, H_qo, D_vo]`` tensors for the correctness check.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from kernelwatch_harness.families.attention.inputs import Inputs, torch_v
from kernelwatch_harness.families.attention.reference import (
    Variant,
    alibi_bias,
    attention_mask,
    logits,
    rope_qk,
    variant,
)
from kernelwatch_harness.prepared import Prepared

NO_VARIANT = variant({})


def _causal_args(
    q: torch.Tensor, k: torch.Tensor, causal: bool, var: Variant = NO_VARIANT
) -> tuple[torch.Tensor | None, bool]:
    """SDPA's (attn_mask, is_causal) for FlashInfer's causal, window and ALiBi convention."""
    lq, lkv = q.shape[-2], k.shape[-2]
    alibi = var.pos_encoding == "ALIBI"
    # SDPA's is_causal aligns top-left; FlashInfer aligns bottom-right. They agree when
    # lq == lkv, which keeps SDPA on its fused causal path; otherwise pass the mask.
    if causal and lq == lkv and lq > 1 and var.window_left < 0 and not alibi:
        return None, True
    mask = attention_mask(lq, lkv, causal, var.window_left, q.device)
    if not alibi:
        return mask, False
    bias = alibi_bias(q.shape[-3], lq, lkv, q.device)
    if mask is not None:
        bias = bias.masked_fill(~mask, -math.inf)
    return bias.to(q.dtype), False  # SDPA takes a float mask of the query's dtype only


def _sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool,
    var: Variant = NO_VARIANT,
) -> torch.Tensor:
    if var.pos_encoding == "ROPE_LLAMA":  # rotated in float32, attended in the inputs' dtype
        qr, kr = rope_qk(q, k, seq_dim=-2)
        q, k = qr.to(q.dtype), kr.to(k.dtype)
    mask, is_causal = _causal_args(q, k, causal, var)
    if q.shape[-3] != k.shape[-3]:
        try:
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=True
            )
        except TypeError:  # torch < 2.5: no enable_gqa
            g = q.shape[-3] // k.shape[-3]
            k, v = k.repeat_interleave(g, dim=-3), v.repeat_interleave(g, dim=-3)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale)


def sdpa_kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool,
    var: Variant = NO_VARIANT,
) -> str | None:
    """Which of its fused kernels SDPA dispatches these inputs to (``CUDNN_ATTENTION``,
    ``FLASH_ATTENTION``, ``EFFICIENT_ATTENTION``, ``MATH``): "FlashInfer vs torch-sdpa" means
    a different kernel from one torch build or GPU to the next. None where torch cannot say."""
    mask, is_causal = _causal_args(q, k, causal, var)
    gqa = q.shape[-3] != k.shape[-3]
    try:
        choice = torch._fused_sdp_choice(  # type: ignore[attr-defined]
            q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=gqa
        )
        return str(torch.nn.attention.SDPBackend(choice).name)
    except Exception:  # private API: absent or changed on this torch
        return None


def _math(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool,
    var: Variant = NO_VARIANT,
) -> torch.Tensor:
    b, h_qo, lq, _ = q.shape
    h_kv = k.shape[1]
    q, k = rope_qk(q, k, seq_dim=-2) if var.pos_encoding == "ROPE_LLAMA" else (q, k)
    qg = q.float().reshape(b, h_kv, h_qo // h_kv, lq, q.shape[-1])
    scores = logits(torch.einsum("bhgqd,bhkd->bhgqk", qg, k.float()), scale, causal, var)
    out = torch.einsum("bhgqk,bhkd->bhgqd", torch.softmax(scores, dim=-1), v.float())
    return out.reshape(b, h_qo, lq, v.shape[-1])


def prepare_torch(backend: str, inp: Inputs, scale: float) -> Prepared:
    attend_fn = {"torch-sdpa": _sdpa, "torch-math": _math}[backend]
    causal = bool(inp.params.get("causal", False))
    var = variant(inp.params)
    if backend == "torch-sdpa" and var.soft_cap > 0:
        raise NotImplementedError(
            "torch-sdpa has no logits soft cap (scaled_dot_product_attention takes no logits "
            "transform); torch-math computes it")

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
               causal: bool) -> torch.Tensor:
        return attend_fn(q, k, v, scale, causal, var)
    mla = inp.kernel == "mla_decode"

    def value(data: dict[str, Any], i: int | None) -> torch.Tensor:
        if mla:
            return torch_v(inp, data["k"] if i is None else data["k"][i])
        return data["v"] if i is None else data["v"][i]

    if inp.dense:

        def fn(data: dict[str, Any]) -> Any:
            return attend(data["q"], data["k"], value(data, None), scale, causal)

        def outputs(raw: Any) -> list[torch.Tensor]:
            return [raw[i].transpose(0, 1) for i in range(raw.shape[0])]
    else:

        def fn(data: dict[str, Any]) -> Any:
            return [
                attend(q, k, value(data, i), scale, causal)
                for i, (q, k) in enumerate(zip(data["q"], data["k"], strict=True))
            ]

        def outputs(raw: Any) -> list[torch.Tensor]:
            return [o[0].transpose(0, 1) for o in raw]

    notes: dict[str, Any] = {}
    if backend == "torch-sdpa":
        d = inp.data
        q, k, v = (d["q"], d["k"], value(d, None)) if inp.dense else (
            d["q"][0], d["k"][0], value(d, 0))
        notes["sdpa_kernel"] = sdpa_kernel(q, k, v, scale, causal, var)
    return Prepared(fn, outputs, backend, notes=notes)
