"""Float32 reference attention and the correctness check every measured backend passes first.

Causal masks are aligned bottom-right, as FlashInfer aligns them: query ``i`` of ``L_q`` sees
keys ``j <= i + (L_kv - L_q)``. Query head ``h`` reads KV head ``h // (H_qo // H_kv)``.
"""

from __future__ import annotations

import math

import torch

from kernelwatch_harness.inputs import Inputs, Request

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


def attend_fp32(req: Request, scale: float, causal: bool) -> torch.Tensor:
    """softmax(q k^T * scale) v in float32 for one request: ``[L_q, H_qo, D_vo]``."""
    q, k, v = (t.float() for t in req)
    lq, h_qo, _ = q.shape
    lkv, h_kv, _ = k.shape
    g = h_qo // h_kv
    # Group query heads by their KV head instead of repeating K/V: no copy of the cache.
    qg = q.reshape(lq, h_kv, g, q.shape[-1])
    scores = torch.einsum("qhgd,khd->hgqk", qg, k) * scale
    if causal and lq > 1:
        scores = scores.masked_fill(~causal_mask(lq, lkv, q.device), -math.inf)
    p = torch.softmax(scores, dim=-1)
    out = torch.einsum("hgqk,khd->qhgd", p, v)
    return out.reshape(lq, h_qo, v.shape[-1])


def reference(inp: Inputs, scale: float) -> list[torch.Tensor]:
    causal = bool(inp.params.get("causal", False))
    return [attend_fp32(r, scale, causal) for r in inp.requests()]


def max_abs_error(outputs: list[torch.Tensor], refs: list[torch.Tensor]) -> float:
    """Largest |out - ref| over all requests; NaN or inf anywhere counts as infinite error."""
    worst = 0.0
    for out, ref in zip(outputs, refs, strict=True):
        if out.shape != ref.shape:
            raise ValueError(f"output shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
        diff = (out.float() - ref).abs()
        if not torch.isfinite(diff).all():
            return math.inf
        if diff.numel():
            worst = max(worst, float(diff.max()))
    return worst
