"""Float32 reference attention and the correctness check every measured backend passes first.

Causal masks are aligned bottom-right, as FlashInfer aligns them: query ``i`` of ``L_q`` sees
keys ``j <= i + (L_kv - L_q)``. A sliding window (``window_left`` >= 0) also hides keys more
than ``window_left`` positions left of that diagonal, ``j < i + (L_kv - L_q) - window_left``,
causal or not, as FlashInfer's mask does. A logits soft cap ``c`` > 0 replaces the scaled
logits ``x`` by ``c * tanh(x / c)`` before the softmax. Query head ``h`` reads KV head
``h // (H_qo // H_kv)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from kernelwatch_harness.families.attention.inputs import Inputs, Request

# Largest max-abs error accepted against the float32 reference. Outputs are softmax-weighted
# means of N(0, 1) values, so they are O(1) and absolute error is meaningful. Half-precision
# inputs and outputs round at about 2^-11 (fp16) and 2^-8 (bf16) relative; kernels also round
# P to the input type before P@V, and fp8 KV kernels may round P to fp8.
TOLERANCES = {"float16": 1e-2, "bfloat16": 4e-2, "float8_e4m3fn": 1.5e-1, "float8_e5m2": 2.5e-1}


def tolerance(params: dict[str, object]) -> float:
    kv = str(params.get("kv_dtype") or params["dtype"])
    return max(TOLERANCES[str(params["dtype"])], TOLERANCES.get(kv, 0.0))


def causal_mask(lq: int, lkv: int, device: torch.device) -> torch.Tensor:
    """Bool ``[lq, lkv]``: True where query i may attend key j (bottom-right aligned)."""
    return torch.ones(lq, lkv, dtype=torch.bool, device=device).tril(diagonal=lkv - lq)


def attention_mask(lq: int, lkv: int, causal: bool, window_left: int,
                   device: torch.device) -> torch.Tensor | None:
    """Bool ``[lq, lkv]`` (True: may attend) for the causal mask and the sliding window; None
    when every key is visible."""
    mask = causal_mask(lq, lkv, device) if causal and lq > 1 else None
    if window_left >= 0:
        window = torch.ones(lq, lkv, dtype=torch.bool, device=device).triu(
            diagonal=lkv - lq - window_left)
        mask = window if mask is None else mask & window
    return mask


def variant(params: Mapping[str, Any]) -> tuple[int, float]:
    """(window_left, logits_soft_cap) of a point: -1 and 0 where the kernel has none."""
    return int(params.get("window_left", -1)), float(params.get("logits_soft_cap", 0))


def scaled_logits(scores: torch.Tensor, soft_cap: float) -> torch.Tensor:
    return soft_cap * torch.tanh(scores / soft_cap) if soft_cap > 0 else scores


def attend_fp32(req: Request, scale: float, causal: bool, window_left: int = -1,
                soft_cap: float = 0.0) -> torch.Tensor:
    """softmax(q k^T * scale) v in float32 for one request: ``[L_q, H_qo, D_vo]``."""
    q, k, v = (t.float() for t in req)
    lq, h_qo, _ = q.shape
    lkv, h_kv, _ = k.shape
    g = h_qo // h_kv
    # Group query heads by their KV head instead of repeating K/V: no copy of the cache.
    qg = q.reshape(lq, h_kv, g, q.shape[-1])
    scores = scaled_logits(torch.einsum("qhgd,khd->hgqk", qg, k) * scale, soft_cap)
    mask = attention_mask(lq, lkv, causal, window_left, q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf)
    p = torch.softmax(scores, dim=-1)
    out = torch.einsum("hgqk,khd->qhgd", p, v)
    return out.reshape(lq, h_qo, v.shape[-1])


def reference(inp: Inputs, scale: float) -> list[torch.Tensor]:
    causal = bool(inp.params.get("causal", False))
    window_left, soft_cap = variant(inp.params)
    return [attend_fp32(r, scale, causal, window_left, soft_cap) for r in inp.requests()]
