"""Float32 reference attention and the correctness check every measured backend passes first.

Causal masks are aligned bottom-right, as FlashInfer aligns them: query ``i`` of ``L_q`` sees
keys ``j <= i + (L_kv - L_q)``. A sliding window (``window_left`` >= 0) also hides keys more
than ``window_left`` positions left of that diagonal, ``j < i + (L_kv - L_q) - window_left``,
causal or not, as FlashInfer's mask does. A logits soft cap ``c`` > 0 replaces the scaled
logits ``x`` by ``c * tanh(x / c)`` before the softmax. Query head ``h`` reads KV head
``h // (H_qo // H_kv)``.

Positional encoding, as FlashInfer's kernels apply it (``pos_encoding_mode``):

- ``ROPE_LLAMA`` rotates q and k before their product, query ``i`` at its position in the
  sequence ``i + (L_kv - L_q)`` and key ``j`` at ``j``: dimension ``d < D/2`` pairs with
  ``d + D/2`` (the halves, not interleaved pairs) and turns by ``pos * theta^(-2d/D) / scale``,
  at FlashInfer's defaults ``theta = 1e4``, ``scale = 1``, the angle computed in float32 as
  the kernels compute it.
- ``ALIBI`` adds ``m_h * (j - i - (L_kv - L_q))`` to the scaled logits of query head ``h``
  (before the soft cap, where one is set), with FlashInfer's slopes ``m_h`` for ``H_qo``
  heads (``alibi_slopes``). FlashInfer's kernels add ``m_h * (j - i)``: the two differ by a
  constant per query row, which the softmax does not see.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

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


class Variant(NamedTuple):
    window_left: int
    soft_cap: float
    pos_encoding: str


def variant(params: Mapping[str, Any]) -> Variant:
    """The attention variant of a point: -1, 0 and NONE where the kernel has none."""
    return Variant(int(params.get("window_left", -1)), float(params.get("logits_soft_cap", 0)),
                   str(params.get("pos_encoding_mode", "NONE")))


ROPE_THETA = 1e4
ROPE_SCALE = 1.0
"""FlashInfer's defaults for ``rope_theta`` and ``rope_scale``, which the harness never sets."""


class Llama31(NamedTuple):
    """Llama 3.1's frequency scaling (``flashinfer.rope.apply_llama31_rope``'s arguments)."""

    low_freq_factor: float
    high_freq_factor: float
    old_context_len: float


def rope_frequencies(rotary_dim: int, theta: float = ROPE_THETA, scale: float = ROPE_SCALE,
                     llama31: Llama31 | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """Float32 ``[rotary_dim / 2]``: the angle per position of each rotated pair, as
    FlashInfer's kernels compute it: ``theta^(-2i / rotary_dim)``, blended towards that over
    ``scale`` by ``1 - s`` where ``s`` is Llama 3.1's smoothing factor
    ``clamp((old_context_len / wavelength - low) / (high - low), 0, 1)`` (0 without Llama 3.1
    scaling, so plain RoPE divides every frequency by ``scale``)."""
    freq = torch.pow(torch.tensor(theta, dtype=torch.float32, device=device),
                     -torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=device)
                     / rotary_dim)
    smooth = torch.zeros_like(freq)
    if llama31 is not None:
        low, high, old = llama31
        smooth = ((old * freq / (2 * math.pi) - low) / (high - low)).clamp(0, 1)
    return (1 - smooth) * (freq / scale) + smooth * freq


def rope_rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                interleave: bool = False) -> torch.Tensor:
    """``x`` (``[..., D]``) in float32 with its first ``2 * cos.shape[-1]`` dimensions rotated
    (the rest passed through): pair ``i`` is ``(i, i + R/2)`` of those ``R`` (the halves,
    FlashInfer's and Llama's default) or ``(2i, 2i + 1)`` when ``interleave`` (GPT-J's), and
    turns by the angle whose ``cos`` and ``sin`` (broadcasting against ``x.shape[:-1]``) are
    given."""
    x = x.float()
    r = 2 * cos.shape[-1]
    rot, rest = x[..., :r], x[..., r:]
    if interleave:
        a, b = rot[..., 0::2], rot[..., 1::2]
        out = torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2)
    else:
        a, b = rot.chunk(2, dim=-1)
        out = torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)
    return torch.cat((out, rest), dim=-1)


def rope_angles(positions: torch.Tensor,
                freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of ``position * freq`` (``[..., R/2]``), the product in float32 as the
    kernels form it."""
    angle = positions.to(torch.float32)[..., None] * freq
    return angle.cos(), angle.sin()


def rope_llama(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``x`` (``[..., D]``) in float32, rotated as FlashInfer's ROPE_LLAMA rotates it inside
    its kernels; ``positions`` broadcasts against ``x.shape[:-1]``."""
    freq = rope_frequencies(x.shape[-1], device=x.device)
    return rope_rotate(x, *rope_angles(positions, freq))


def rope_qk(q: torch.Tensor, k: torch.Tensor, seq_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q and k rotated at their positions (the last query at the last key's), in float32;
    ``seq_dim`` (negative) is their sequence dimension."""
    lq, lkv = q.shape[seq_dim], k.shape[seq_dim]
    pos = torch.arange(lkv, device=q.device).view(-1, *[1] * (-seq_dim - 2))
    return rope_llama(q, pos[lkv - lq:]), rope_llama(k, pos)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """FlashInfer's ALiBi slopes (``flashinfer.utils.get_alibi_slopes``, the ALiBi paper's):
    a geometric series from ``2^(-8/n)`` for the largest power of two ``n <= n_heads``, the
    remaining heads taking every other slope of the series for ``2n``."""
    n = 2 ** math.floor(math.log2(n_heads))
    m = torch.pow(2.0 ** (-8.0 / n), torch.arange(1, 1 + n))
    if n < n_heads:
        m = torch.cat([m, torch.pow(2.0 ** (-4.0 / n), torch.arange(1, 1 + 2 * (n_heads - n), 2))])
    return m.float()


def alibi_bias(n_heads: int, lq: int, lkv: int, device: torch.device) -> torch.Tensor:
    """Float32 ``[n_heads, lq, lkv]``: ALiBi's bias of query ``i`` and key ``j`` (bottom-right
    aligned, so 0 on the diagonal and ``-m_h`` per position to its left)."""
    dist = (torch.arange(lkv, device=device)[None, :]
            - torch.arange(lkv - lq, lkv, device=device)[:, None]).float()
    return alibi_slopes(n_heads).to(device)[:, None, None] * dist


def scaled_logits(scores: torch.Tensor, soft_cap: float) -> torch.Tensor:
    return soft_cap * torch.tanh(scores / soft_cap) if soft_cap > 0 else scores


def logits(scores: torch.Tensor, scale: float, causal: bool, var: Variant) -> torch.Tensor:
    """The logits the softmax takes, from q.k products grouped by KV head,
    ``[..., H_kv, H_qo // H_kv, L_q, L_kv]``: scaled, ALiBi's bias added, soft-capped, masked
    (-inf)."""
    h_kv, g, lq, lkv = scores.shape[-4:]
    scores = scores * scale
    if var.pos_encoding == "ALIBI":
        scores = scores + alibi_bias(h_kv * g, lq, lkv, scores.device).view(h_kv, g, lq, lkv)
    scores = scaled_logits(scores, var.soft_cap)
    mask = attention_mask(lq, lkv, causal, var.window_left, scores.device)
    return scores if mask is None else scores.masked_fill(~mask, -math.inf)


def attend_fp32(req: Request, scale: float, causal: bool, window_left: int = -1,
                soft_cap: float = 0.0, pos_encoding: str = "NONE") -> torch.Tensor:
    """softmax(q k^T * scale) v in float32 for one request: ``[L_q, H_qo, D_vo]``."""
    q, k, v = (t.float() for t in req)
    lq, h_qo, _ = q.shape
    h_kv = k.shape[1]
    g = h_qo // h_kv
    if pos_encoding == "ROPE_LLAMA":
        q, k = rope_qk(q, k, seq_dim=-3)
    # Group query heads by their KV head instead of repeating K/V: no copy of the cache.
    qg = q.reshape(lq, h_kv, g, q.shape[-1])
    scores = torch.einsum("qhgd,khd->hgqk", qg, k)
    p = torch.softmax(logits(scores, scale, causal, Variant(window_left, soft_cap,
                                                            pos_encoding)), dim=-1)
    out = torch.einsum("hgqk,khd->qhgd", p, v)
    return out.reshape(lq, h_qo, v.shape[-1])


def reference(inp: Inputs, scale: float) -> list[torch.Tensor]:
    causal = bool(inp.params.get("causal", False))
    return [attend_fp32(r, scale, causal, *variant(inp.params)) for r in inp.requests()]
