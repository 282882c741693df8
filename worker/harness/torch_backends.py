"""PyTorch baselines on the same shapes as FlashInfer's kernels.

torch-sdpa: ``torch.nn.functional.scaled_dot_product_attention`` (grouped heads through
``enable_gqa``, or ``repeat_interleave`` on a torch without it), batched when all requests have
the same lengths, one call per request otherwise: what a PyTorch user would write.
torch-math: the naive float32 ``softmax(q k^T) v``, grouped by KV head so K/V are not copied.

A prepared backend is a callable ``fn(data) -> raw`` (the timed part) plus ``outputs(raw)``
turning its result into per-request ``[L_q, H_qo, D_vo]`` tensors for the correctness check.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from worker.harness.inputs import Inputs, torch_v
from worker.harness.prepared import Prepared
from worker.harness.reference import causal_mask


def _sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool
) -> torch.Tensor:
    lq, lkv = q.shape[-2], k.shape[-2]
    mask = None
    is_causal = False
    if causal and lq > 1:
        # SDPA's is_causal aligns top-left; FlashInfer aligns bottom-right. They agree when
        # lq == lkv, which keeps SDPA on its fused causal path; otherwise pass the mask.
        if lq == lkv:
            is_causal = True
        else:
            mask = causal_mask(lq, lkv, q.device)
    if q.shape[-3] != k.shape[-3]:
        try:
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=True
            )
        except TypeError:  # torch < 2.5: no enable_gqa
            g = q.shape[-3] // k.shape[-3]
            k, v = k.repeat_interleave(g, dim=-3), v.repeat_interleave(g, dim=-3)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale)


def _math(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool
) -> torch.Tensor:
    b, h_qo, lq, _ = q.shape
    h_kv, lkv = k.shape[1], k.shape[2]
    qg = q.float().reshape(b, h_kv, h_qo // h_kv, lq, q.shape[-1])
    scores = torch.einsum("bhgqd,bhkd->bhgqk", qg, k.float()) * scale
    if causal and lq > 1:
        scores = scores.masked_fill(~causal_mask(lq, lkv, q.device), -math.inf)
    out = torch.einsum("bhgqk,bhkd->bhgqd", torch.softmax(scores, dim=-1), v.float())
    return out.reshape(b, h_qo, lq, v.shape[-1])


def prepare_torch(backend: str, inp: Inputs, scale: float) -> Prepared:
    attend = {"torch-sdpa": _sdpa, "torch-math": _math}[backend]
    causal = bool(inp.params.get("causal", False))
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

    return Prepared(fn, outputs, backend)
