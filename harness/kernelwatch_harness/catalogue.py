"""The kernel catalogue: which kernels kernelwatch benchmarks, their parameters with allowed
values and defaults, and which backends may be asked for.

A point's parameters are always completed with the defaults here, so two points with the same
completed parameters are the same experiment (see ``kernelwatch.core.series``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kernelwatch_harness.families.attention.formulas import KV_DISTRIBUTIONS


@dataclass(frozen=True)
class Param:
    name: str
    kind: type  # int, str or bool
    default: Any
    choices: tuple[Any, ...] | None = None
    min: int | None = None
    max: int | None = None

    def describe_allowed(self) -> str:
        if self.choices is not None:
            return ", ".join(
                str(c).lower() if isinstance(c, bool) else str(c) for c in self.choices
            )
        return f"integers from {self.min} to {self.max}"


DTYPES = ("float16", "bfloat16")
# FlashInfer's PosEncodingMode names, in its order.
POS_ENCODING_MODES = ("NONE", "ROPE_LLAMA", "ALIBI")
KV_DTYPES = ("float16", "bfloat16", "float8_e4m3fn", "float8_e5m2")

PARAMS: dict[str, Param] = {
    p.name: p
    for p in (
        Param("batch_size", int, 1, min=1, max=16384),
        Param("kv_len", int, 1024, min=1, max=1 << 20),
        Param("qo_len", int, 1, min=1, max=1 << 17),
        Param("num_qo_heads", int, 32, min=1, max=256),
        Param("num_kv_heads", int, 8, min=1, max=256),
        Param("head_dim", int, 128, choices=(64, 128, 256)),
        Param("head_dim_ckv", int, 512, choices=(512,)),
        Param("head_dim_kpe", int, 64, choices=(64,)),
        Param("page_size", int, 16, choices=(1, 8, 16, 32, 64, 128)),
        Param("kv_layout", str, "NHD", choices=("NHD", "HND")),
        Param("dtype", str, "bfloat16", choices=DTYPES),
        Param("kv_dtype", str, None, choices=(None, *KV_DTYPES)),
        Param("causal", bool, False, choices=(False, True)),
        Param("use_tensor_cores", bool, False, choices=(False, True)),
        # The batch wrapper's CUDA-graph plan mode (``use_cuda_graph=`` with preallocated index
        # buffers): such a wrapper plans a padded, fixed work partition, which serving engines
        # (they capture decode in CUDA graphs) and flashinfer_benchmark.py both run. Points
        # stored before this parameter existed were measured without it and record false.
        Param("use_cuda_graph", bool, True, choices=(False, True)),
        # The batch wrappers' split-KV controls (plan()): a fixed chunk size in tokens for the
        # partial attention states (0: FlashInfer chooses), or no split at all.
        Param("fixed_split_size", int, 0, min=0, max=1 << 20),
        Param("disable_split_kv", bool, False, choices=(False, True)),
        # Attention variants the wrappers take: a sliding window (keys at most window_left
        # positions left of the query's own; -1: none) and a logits soft cap
        # (cap * tanh(logits / cap), as Gemma-2 and Grok use; 0: none).
        Param("window_left", int, -1, min=-1, max=1 << 20),
        Param("logits_soft_cap", int, 0, min=0, max=10_000),
        # The positional encoding the kernel applies itself: RoPE (Llama's, rotating halves, at
        # FlashInfer's default rope_scale 1 and rope_theta 1e4) to q and k at their positions
        # in the sequence, or ALiBi's per-head linear bias; NONE: the inputs are used as given.
        Param("pos_encoding_mode", str, "NONE", choices=POS_ENCODING_MODES),
        Param("kv_len_distribution", str, "constant", choices=KV_DISTRIBUTIONS),
        Param("seed", int, 0, min=0, max=2**31 - 1),
    )
}

TORCH_BACKENDS = ("torch-sdpa", "torch-math")
FLASHINFER_BACKENDS = ("auto", "fa2", "fa3", "trtllm-gen", "cudnn", "cutlass")
ALL_BACKENDS = (*FLASHINFER_BACKENDS, *TORCH_BACKENDS)


@dataclass(frozen=True)
class Kernel:
    name: str
    params: tuple[str, ...]
    flashinfer_backends: tuple[str, ...]
    description: str

    @property
    def backends(self) -> tuple[str, ...]:
        return (*self.flashinfer_backends, *TORCH_BACKENDS)


_HEADS = ("num_qo_heads", "num_kv_heads", "head_dim")
KERNELS: dict[str, Kernel] = {
    k.name: k
    for k in (
        Kernel(
            "single_decode",
            ("kv_len", *_HEADS, "kv_layout", "dtype", "kv_dtype", "use_tensor_cores",
             "window_left", "logits_soft_cap", "pos_encoding_mode"),
            ("auto", "fa2"),
            "one request, one query token against a contiguous KV",
        ),
        Kernel(
            "batch_decode",
            ("batch_size", "kv_len", *_HEADS, "page_size", "kv_layout", "dtype", "kv_dtype",
             "use_tensor_cores", "use_cuda_graph", "fixed_split_size", "disable_split_kv",
             "window_left", "logits_soft_cap", "pos_encoding_mode", "kv_len_distribution",
             "seed"),
            ("auto", "fa2", "fa3", "trtllm-gen", "cudnn"),
            "BatchDecodeWithPagedKVCacheWrapper: one query token per request, paged KV",
        ),
        Kernel(
            "single_prefill",
            ("qo_len", "kv_len", *_HEADS, "kv_layout", "dtype", "causal", "window_left",
             "logits_soft_cap", "pos_encoding_mode"),
            ("auto", "fa2", "fa3"),
            "one request, qo_len query tokens against a contiguous KV",
        ),
        Kernel(
            "batch_prefill",
            ("batch_size", "qo_len", "kv_len", *_HEADS, "page_size", "kv_layout", "dtype",
             "kv_dtype", "causal", "use_cuda_graph", "fixed_split_size", "disable_split_kv",
             "window_left", "logits_soft_cap", "pos_encoding_mode", "kv_len_distribution",
             "seed"),
            ("auto", "fa2", "fa3", "trtllm-gen", "cudnn"),
            "BatchPrefillWithPagedKVCacheWrapper: qo_len queries per request, paged KV",
        ),
        Kernel(
            "batch_prefill_ragged",
            ("batch_size", "qo_len", "kv_len", *_HEADS, "dtype", "causal", "use_cuda_graph",
             "fixed_split_size", "disable_split_kv", "window_left", "logits_soft_cap",
             "pos_encoding_mode", "kv_len_distribution", "seed"),
            ("auto", "fa2", "fa3", "cutlass", "cudnn"),
            "BatchPrefillWithRaggedKVCacheWrapper: packed variable-length Q/K/V",
        ),
        Kernel(
            "mla_decode",
            ("batch_size", "kv_len", "num_qo_heads", "head_dim_ckv", "head_dim_kpe",
             "page_size", "dtype", "use_cuda_graph", "kv_len_distribution", "seed"),
            ("auto", "fa2", "fa3", "cutlass", "trtllm-gen"),
            "BatchMLAPagedAttentionWrapper: DeepSeek-style latent attention decode",
        ),
    )
}


# What was in effect, before a parameter existed, for points that do not name it: stored points
# and exports are given these values (never the new default), so they keep their meaning.
LEGACY_VALUES: dict[str, Any] = {"use_cuda_graph": False, "fixed_split_size": 0,
                                 "disable_split_kv": False, "window_left": -1,
                                 "logits_soft_cap": 0, "pos_encoding_mode": "NONE"}


def with_legacy_values(kernel: str, params: dict[str, Any],
                       names: Sequence[str] | None = None) -> dict[str, Any]:
    """A stored point's parameters with the ``LEGACY_VALUES`` (of ``names``, default all) its
    kernel takes and it lacks."""
    spec = KERNELS.get(kernel)
    if spec is None:
        return dict(params)
    wanted = LEGACY_VALUES if names is None else {n: LEGACY_VALUES[n] for n in names}
    extra = {k: v for k, v in wanted.items() if k in spec.params and k not in params}
    return {**params, **extra}


def complete_params(kernel: str, params: dict[str, Any]) -> dict[str, Any]:
    """The kernel's full parameter set: given values, defaults for the rest."""
    spec = KERNELS[kernel]
    return {name: params.get(name, PARAMS[name].default) for name in spec.params}
