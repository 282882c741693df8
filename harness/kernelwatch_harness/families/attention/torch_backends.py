"""PyTorch baselines on the same shapes as FlashInfer's kernels.

torch-sdpa: ``torch.nn.functional.scaled_dot_product_attention`` (grouped heads through
``enable_gqa``, or ``repeat_interleave`` on a torch without it), batched when all requests have
the same lengths, one call per request otherwise: what a PyTorch user would write.
The kernel SDPA dispatches to (cuDNN, flash, efficient, math) is recorded with the point.
torch-math: the naive float32 ``softmax(q k^T) v``, grouped by KV head so K/V are not copied.

A prepared backend is a callable ``fn(data) -> raw`` (the timed part) plus ``outputs(raw)``
turning its result into per-request ``[L_q, H_qo, D_vo]`` tensors for the correctness check.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from kernelwatch_harness.families.attention.inputs import Inputs, torch_v
from kernelwatch_harness.families.attention.reference import attention_mask, scaled_logits, variant
from kernelwatch_harness.prepared import Prepared


def _causal_args(
    q: torch.Tensor, k: torch.Tensor, causal: bool, window_left: int = -1
) -> tuple[torch.Tensor | None, bool]:
    """SDPA's (attn_mask, is_causal) for FlashInfer's causal and window convention."""
    lq, lkv = q.shape[-2], k.shape[-2]
    # SDPA's is_causal aligns top-left; FlashInfer aligns bottom-right. They agree when
    # lq == lkv, which keeps SDPA on its fused causal path; otherwise pass the mask.
    if causal and lq == lkv and lq > 1 and window_left < 0:
        return None, True
    return attention_mask(lq, lkv, causal, window_left, q.device), False


def _sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool,
    window_left: int = -1, soft_cap: float = 0.0,
) -> torch.Tensor:
    mask, is_causal = _causal_args(q, k, causal, window_left)
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
    window_left: int = -1,
) -> str | None:
    """Which of its fused kernels SDPA dispatches these inputs to (``CUDNN_ATTENTION``,
    ``FLASH_ATTENTION``, ``EFFICIENT_ATTENTION``, ``MATH``): "FlashInfer vs torch-sdpa" means
    a different kernel from one torch build or GPU to the next. None where torch cannot say."""
    mask, is_causal = _causal_args(q, k, causal, window_left)
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
    window_left: int = -1, soft_cap: float = 0.0,
) -> torch.Tensor:
    b, h_qo, lq, _ = q.shape
    h_kv, lkv = k.shape[1], k.shape[2]
    qg = q.float().reshape(b, h_kv, h_qo // h_kv, lq, q.shape[-1])
    scores = scaled_logits(torch.einsum("bhgqd,bhkd->bhgqk", qg, k.float()) * scale, soft_cap)
    mask = attention_mask(lq, lkv, causal, window_left, q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf)
    out = torch.einsum("bhgqk,bhkd->bhgqd", torch.softmax(scores, dim=-1), v.float())
    return out.reshape(b, h_qo, lq, v.shape[-1])


def prepare_torch(backend: str, inp: Inputs, scale: float) -> Prepared:
    attend_fn = {"torch-sdpa": _sdpa, "torch-math": _math}[backend]
    causal = bool(inp.params.get("causal", False))
    window_left, soft_cap = variant(inp.params)
    if backend == "torch-sdpa" and soft_cap > 0:
        raise NotImplementedError(
            "torch-sdpa has no logits soft cap (scaled_dot_product_attention takes no logits "
            "transform); torch-math computes it")

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
               causal: bool) -> torch.Tensor:
        return attend_fn(q, k, v, scale, causal, window_left, soft_cap)
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
        notes["sdpa_kernel"] = sdpa_kernel(q, k, v, scale, causal, window_left)
    return Prepared(fn, outputs, backend, notes=notes)
