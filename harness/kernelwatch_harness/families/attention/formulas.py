"""Per-request lengths, FLOPs and bytes of an attention call.

Standard library only: the GPU harness (which runs inside each FlashInfer version's own
environment, without kernelwatch's dependencies) imports this module too, so the lengths it
builds inputs from and the bytes/FLOPs the service reports come from one place.

FLOPs and bytes follow FlashInfer's conventions (docs/measurement.md):
  non-causal FLOPs = 2 * H_qo * (d_qk + d_vo) * sum(lq_i * lkv_i)
  causal FLOPs     = H_qo * (d_qk + d_vo) * sum(lq_i * (2 * lkv_i - lq_i))
  bytes = sum(lq)*H_qo*d_qk*sz_q + sum(lkv)*H_kv*(d_qk+d_vo)*sz_kv + sum(lq)*H_qo*d_vo*sz_o
"""

from __future__ import annotations

import math
import random
from typing import Any

from kernelwatch_harness.family import DTYPE_BYTES

KV_DISTRIBUTIONS = ("constant", "uniform", "zipf")


def request_lengths(mean_len: int, batch_size: int, distribution: str, seed: int) -> list[int]:
    """Per-request lengths whose mean is about ``mean_len``.

    constant: every request has ``mean_len``.
    uniform:  integers drawn uniformly from [1, 2*mean_len - 1].
    zipf:     a heavy tail (a few long requests, many short ones), as in real serving
              traffic; drawn with exponent 1.2 over ranks, then scaled so the mean is
              ``mean_len``. Seeded, so a point is reproducible.
    """
    if distribution not in KV_DISTRIBUTIONS:
        raise ValueError(f"kv_len_distribution must be one of {', '.join(KV_DISTRIBUTIONS)}")
    if distribution == "constant" or batch_size == 1:
        return [mean_len] * batch_size
    rng = random.Random(seed)
    if distribution == "uniform":
        return [rng.randint(1, max(1, 2 * mean_len - 1)) for _ in range(batch_size)]
    # Weight rank**-1.2 for a random rank: most requests short, a few long.
    weights = [rng.randint(1, 1000) ** -1.2 for _ in range(batch_size)]
    scale = mean_len * batch_size / sum(weights)
    return [max(1, round(w * scale)) for w in weights]


def query_lengths(kernel: str, params: dict[str, Any], kv_lens: list[int]) -> list[int]:
    """Query length per request: 1 for decode kernels, ``qo_len`` (capped by kv) for prefill."""
    if kernel in ("single_decode", "batch_decode", "mla_decode"):
        return [1] * len(kv_lens)
    qo = int(params.get("qo_len", 1))
    if params.get("causal"):
        return [min(qo, lkv) for lkv in kv_lens]
    return [qo] * len(kv_lens)


def head_dims(kernel: str, params: dict[str, Any]) -> tuple[int, int]:
    """(d_qk, d_vo). MLA attends with the compressed KV plus the rope part."""
    if kernel == "mla_decode":
        ckv = int(params.get("head_dim_ckv", 512))
        kpe = int(params.get("head_dim_kpe", 64))
        return ckv + kpe, ckv
    d = int(params.get("head_dim", 128))
    return d, d


def attention_flops(
    qo_lens: list[int], kv_lens: list[int], num_qo_heads: int, d_qk: int, d_vo: int, causal: bool
) -> float:
    if causal:
        s = sum(lq * (2 * lkv - lq) for lq, lkv in zip(qo_lens, kv_lens, strict=True))
        return float(num_qo_heads * (d_qk + d_vo) * s)
    s = sum(lq * lkv for lq, lkv in zip(qo_lens, kv_lens, strict=True))
    return float(2 * num_qo_heads * (d_qk + d_vo) * s)


def attention_bytes(
    qo_lens: list[int],
    kv_lens: list[int],
    num_qo_heads: int,
    num_kv_heads: int,
    d_qk: int,
    d_vo: int,
    sz_q: int,
    sz_kv: int,
    sz_o: int,
) -> float:
    lq = sum(qo_lens)
    lkv = sum(kv_lens)
    return float(
        lq * num_qo_heads * d_qk * sz_q
        + lkv * num_kv_heads * (d_qk + d_vo) * sz_kv
        + lq * num_qo_heads * d_vo * sz_o
    )


def point_work(kernel: str, params: dict[str, Any]) -> dict[str, Any]:
    """Lengths, FLOPs and bytes of one grid point (params completed with defaults)."""
    batch = 1 if kernel.startswith("single_") else int(params.get("batch_size", 1))
    kv_lens = request_lengths(
        int(params["kv_len"]),
        batch,
        str(params.get("kv_len_distribution", "constant")),
        int(params.get("seed", 0)),
    )
    qo_lens = query_lengths(kernel, params, kv_lens)
    d_qk, d_vo = head_dims(kernel, params)
    h_qo = int(params.get("num_qo_heads", 128))
    dtype = str(params.get("dtype", "bfloat16"))
    kv_dtype = str(params.get("kv_dtype") or dtype)
    sz, sz_kv = DTYPE_BYTES[dtype], DTYPE_BYTES[kv_dtype]
    flops = attention_flops(qo_lens, kv_lens, h_qo, d_qk, d_vo, bool(params.get("causal", False)))
    if kernel == "mla_decode":
        # One shared compressed KV (ckv + kpe) per token, read once; it serves as K and V.
        lq, lkv = sum(qo_lens), sum(kv_lens)
        nbytes = float(lq * h_qo * d_qk * sz + lkv * d_qk * sz_kv + lq * h_qo * d_vo * sz)
    else:
        h_kv = int(params["num_kv_heads"])
        nbytes = attention_bytes(qo_lens, kv_lens, h_qo, h_kv, d_qk, d_vo, sz, sz_kv, sz)
    return {
        "qo_lens": qo_lens,
        "kv_lens": kv_lens,
        "flops": flops,
        "bytes": nbytes,
        "arithmetic_intensity": flops / nbytes if nbytes else math.nan,
    }
