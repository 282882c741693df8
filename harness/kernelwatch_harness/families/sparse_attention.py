"""The sparse_attention family: FlashInfer's MiniMax Sparse Attention (``flashinfer.msa_ops``),
as flashinfer_benchmark.py's sparse_attention routines of the same names run them.

- ``MSAProxyScore``: the indexer, each query's maximum logit over every 128-token KV block
  (``msa_proxy_score``: q ``[batch_size * qo_len, num_qo_heads, 128]`` against k), float32
  scores ``[num_qo_heads, ceil(kv_len / 128), batch_size * qo_len]``;
- ``MSASparseAttention``: prefill attention over each query's ``topk_blocks`` selected KV
  blocks (``msa_sparse_attention``, the selection an int32 ``[num_kv_heads, queries,
  topk_blocks]``);
- ``MSASparseDecode``: the same for one query token per request
  (``msa_sparse_decode_attention``);
- ``MSAPipeline``: the three stages end to end (proxy score, ``msa_topk_select``, sparse
  prefill).

Head dimension 128 only (the tool's ``--head_dim`` must be 128); the tool's defaults are
``qo_len`` = ``kv_len`` = 4096, 64 query heads over 4 KV heads, 16 blocks, causal. All four are
declared, not measured: their one backend (CuTe-DSL, the tool's ``cudsl``) runs on SM120/121
only (the tool's ``is_sm12x_supported`` gate), so every other node reports them unsupported
with the reason, and kernelwatch does not run their calls yet (an SM120 node says so). The
tool's NVFP4 K/V (``--kv_dtype nvfp4``) and paged layouts are not expressed.

FLOPs are the tool's: the proxy's dense ``2 * qo_len * kv_len * 128`` per request and query
head, the sparse stage's ``4 * 128 * 128`` per query, head and selected block (QK and PV).
Bytes are kernelwatch's: each tensor read or written once, and of K/V only the blocks the
selection reaches: per request and KV head, the expected distinct blocks that ``qo_len``
uniform draws of ``topk_blocks`` hit (the tool draws the selection uniformly).
"""

from __future__ import annotations

import math
from typing import Any

from kernelwatch_harness import shared_params as shared
from kernelwatch_harness.families.moe import expected_distinct
from kernelwatch_harness.family import (
    DTYPE_BYTES,
    DeclaredFamily,
    Kernel,
    Param,
    Work,
    by_name,
    not_run_yet,
)

ARCHS = ("sm120",)  # is_sm12x_supported: SM120 and SM121
BACKEND = "cudsl"  # the tool's only --backends choice
HEAD_DIM = 128
BLOCK = 128  # KV tokens per block (the tool's BLK_KV)
SCORE_BYTES = 4  # float32 proxy scores
INDEX_BYTES = 4  # int32 block indices and cu_seqlens

PROXY, PREFILL, DECODE, PIPELINE = ("MSAProxyScore", "MSASparseAttention", "MSASparseDecode",
                                    "MSAPipeline")
DESCRIPTIONS = {
    PROXY: "MSA indexer: each query's max logit per 128-token KV block",
    PREFILL: "MSA sparse prefill over each query's selected KV blocks",
    DECODE: "MSA sparse decode (one query per request) over selected KV blocks",
    PIPELINE: "MSA prefill end to end: proxy score, top-k block selection, sparse prefill",
}
_HEADS = ("num_qo_heads", "num_kv_heads")
_PARAMS = {
    PROXY: ("batch_size", "qo_len", "kv_len", *_HEADS, "causal", "dtype"),
    PREFILL: ("batch_size", "qo_len", "kv_len", *_HEADS, "topk_blocks", "causal", "dtype",
              "kv_dtype"),
    DECODE: ("batch_size", "kv_len", *_HEADS, "topk_blocks", "dtype", "kv_dtype"),
    PIPELINE: ("batch_size", "qo_len", "kv_len", *_HEADS, "topk_blocks", "causal", "dtype",
               "kv_dtype"),
}
# The K/V dtypes the kernels take besides the tool's NVFP4 (None: dtype's).
KV_DTYPES = (None, "float16", "bfloat16", "float8_e4m3fn")


class SparseAttentionFamily(DeclaredFamily):
    name = "sparse_attention"
    # Shared names are declared once, in shared_params (as the attention family takes them);
    # kv_dtype keeps attention's choices, float8_e5m2 refused by check_point. The tool's
    # --topk (KV blocks) is topk_blocks: top_k is the sampling family's (tokens kept).
    params = by_name(
        shared.batch_size(doc="requests in the batch"),
        shared.qo_len(doc="query tokens per request (the tool's --s_qo)"),
        shared.kv_len(doc="KV tokens per request (the tool's --s_kv)"),
        shared.num_qo_heads(doc="query heads"),
        shared.num_kv_heads(doc="KV heads (num_qo_heads a multiple of it: grouped heads)"),
        Param("topk_blocks", int, 16, min=1, max=4096,
              doc="KV blocks of 128 tokens each query attends to (the tool's --topk)"),
        shared.causal(doc="causal mask"),
        shared.dtype(doc="q and output dtype (and K/V unless kv_dtype; the tool's --q_dtype)"),
        shared.kv_dtype(doc="K/V dtype when it differs from dtype (the tool's --kv_dtype)"),
    )
    kernels = {
        name: Kernel(name, "sparse_attention", _PARAMS[name], (BACKEND,), (), description,
                     routine=name, archs=ARCHS, declared=True)
        for name, description in DESCRIPTIONS.items()
    }
    # flashinfer_benchmark.py's defaults where kernelwatch's shared ones differ
    backend_defaults = {
        name: {"*": {k: v for k, v in {"qo_len": 4096, "kv_len": 4096, "num_qo_heads": 64,
                                       "num_kv_heads": 4, "causal": True}.items()
                     if k in _PARAMS[name]}}
        for name in DESCRIPTIONS
    }
    default_backend = BACKEND
    axes = ("kv_len", "qo_len", "batch_size", "topk_blocks")
    shape = ("batch_size", "qo_len", "kv_len", "num_qo_heads", "num_kv_heads")

    def why_not_run(self, kernel: str) -> str:
        return not_run_yet(kernel, "its CuTe-DSL MSA call", ARCHS)

    def check_point(self, kernel: str, point: dict[str, Any]) -> None:
        qo, kv = int(point["num_qo_heads"]), int(point["num_kv_heads"])
        if qo % kv:
            raise ValueError(f"num_qo_heads={qo}, num_kv_heads={kv}: num_qo_heads must be a "
                             "multiple of num_kv_heads")
        if point.get("kv_dtype") not in KV_DTYPES:
            raise ValueError(f"kv_dtype={point.get('kv_dtype')}: {kernel} takes K/V in "
                             "float16, bfloat16 or float8_e4m3fn (allowed: null, float16, "
                             "bfloat16, float8_e4m3fn)")

    # --- formulas --------------------------------------------------------------------------

    def queries(self, kernel: str, point: dict[str, Any]) -> int:
        qo_len = 1 if kernel == DECODE else int(point["qo_len"])
        return int(point["batch_size"]) * qo_len

    def work(self, kernel: str, point: dict[str, Any]) -> Work:
        b, kv_len = int(point["batch_size"]), int(point["kv_len"])
        hq, hkv = int(point["num_qo_heads"]), int(point["num_kv_heads"])
        size = DTYPE_BYTES[str(point["dtype"])]
        q = self.queries(kernel, point)
        blocks = math.ceil(kv_len / BLOCK)
        q_bytes = q * hq * HEAD_DIM * size
        scores = hq * blocks * q * SCORE_BYTES
        # the proxy: q and k read, the scores written
        proxy = Work(flops=float(2 * b * int(point.get("qo_len", 1)) * kv_len * hq * HEAD_DIM),
                     bytes=float(q_bytes + b * kv_len * hkv * HEAD_DIM * size + scores))
        if kernel == PROXY:
            return Work(proxy.flops, proxy.bytes, extra={"kv_blocks": blocks})
        k = min(int(point["topk_blocks"]), blocks)
        kv_size = DTYPE_BYTES[str(point.get("kv_dtype") or point["dtype"])]
        per_request = q // b
        distinct = expected_distinct(blocks, per_request, k)
        # q, the selection (int32) read, the selected K and V blocks read once, output
        sparse = Work(
            flops=float(4 * q * hq * k * BLOCK * HEAD_DIM),
            bytes=float(2 * q_bytes + hkv * q * k * INDEX_BYTES
                        + 2 * b * hkv * distinct * BLOCK * HEAD_DIM * kv_size))
        extra = {"kv_blocks": blocks, "distinct_blocks": distinct}
        if kernel != PIPELINE:
            return Work(sparse.flops, sparse.bytes, extra=extra)
        # proxy, then the selection reads the scores back and writes its indices
        return Work(flops=proxy.flops + sparse.flops,
                    bytes=proxy.bytes + scores + hkv * q * k * INDEX_BYTES + sparse.bytes,
                    extra=extra)

    def memory_bytes(self, kernel: str, point: dict[str, Any]) -> float:
        # q, the whole K and V, the scores or output, and a float32 reference of the output
        b, kv_len = int(point["batch_size"]), int(point["kv_len"])
        size = DTYPE_BYTES[str(point["dtype"])]
        q = self.queries(kernel, point) * int(point["num_qo_heads"]) * HEAD_DIM
        kv = 2 * b * kv_len * int(point["num_kv_heads"]) * HEAD_DIM * size
        return float(self.work(kernel, point).bytes + kv + q * (size + 4))


FAMILY = SparseAttentionFamily()
