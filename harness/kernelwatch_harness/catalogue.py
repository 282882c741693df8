"""The kernel catalogue: which kernels kernelwatch benchmarks, their parameters with allowed
values and defaults, and which backends may be asked for.

A point's parameters are always completed with the defaults here, for the backend that runs it
(``complete_params``), so two points with the same completed parameters are the same
experiment (see ``kernelwatch.core.series``). Some defaults depend on the backend
(``BACKEND_DEFAULTS``): they follow what FlashInfer's own benchmark does, so that the same shape
in both tools is the same experiment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kernelwatch_harness.formulas import KV_DISTRIBUTIONS


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
        # The single kernels' default: FlashInfer's single_*_with_kv_cache() take NHD unless
        # told otherwise. The paged batch kernels' defaults are per backend (BACKEND_DEFAULTS).
        Param("kv_layout", str, "NHD", choices=("NHD", "HND")),
        Param("dtype", str, "bfloat16", choices=DTYPES),
        Param("kv_dtype", str, None, choices=(None, *KV_DTYPES)),
        Param("causal", bool, False, choices=(False, True)),
        # single_decode_with_kv_cache()'s own default; batch_decode's is per backend.
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
             "window_left", "logits_soft_cap"),
            ("auto", "fa2"),
            "one request, one query token against a contiguous KV",
        ),
        Kernel(
            "batch_decode",
            ("batch_size", "kv_len", *_HEADS, "page_size", "kv_layout", "dtype", "kv_dtype",
             "use_tensor_cores", "use_cuda_graph", "fixed_split_size", "disable_split_kv",
             "window_left", "logits_soft_cap", "kv_len_distribution", "seed"),
            ("auto", "fa2", "fa3", "trtllm-gen", "cudnn"),
            "BatchDecodeWithPagedKVCacheWrapper: one query token per request, paged KV",
        ),
        Kernel(
            "single_prefill",
            ("qo_len", "kv_len", *_HEADS, "kv_layout", "dtype", "causal", "window_left",
             "logits_soft_cap"),
            ("auto", "fa2", "fa3"),
            "one request, qo_len query tokens against a contiguous KV",
        ),
        Kernel(
            "batch_prefill",
            ("batch_size", "qo_len", "kv_len", *_HEADS, "page_size", "kv_layout", "dtype",
             "kv_dtype", "causal", "use_cuda_graph", "fixed_split_size", "disable_split_kv",
             "window_left", "logits_soft_cap", "kv_len_distribution", "seed"),
            ("auto", "fa2", "fa3", "trtllm-gen", "cudnn"),
            "BatchPrefillWithPagedKVCacheWrapper: qo_len queries per request, paged KV",
        ),
        Kernel(
            "batch_prefill_ragged",
            ("batch_size", "qo_len", "kv_len", *_HEADS, "dtype", "causal", "use_cuda_graph",
             "fixed_split_size", "disable_split_kv", "window_left", "logits_soft_cap",
             "kv_len_distribution", "seed"),
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
                                 "logits_soft_cap": 0}


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


# Defaults that depend on the backend: what FlashInfer's benchmarks/flashinfer_benchmark.py
# (0.5 to 0.7) builds each routine's wrapper with, beyond its flags, so that the same shape in
# both tools is the same experiment (kernelwatch.core.benchmark_cli maps between the two):
# - batch decode: kv_layout HND, use_cuda_graph, and use_tensor_cores for every backend but
#   fa2 (its "fa2_tc" is fa2 with tensor cores, use_tensor_cores=true here);
# - paged prefill: HND (NHD for cudnn), use_cuda_graph except for fa2;
# - ragged prefill (always NHD, no kv_layout parameter): use_cuda_graph except for fa2;
# - MLA decode: use_cuda_graph.
# Per kernel, "*" holds every backend's value and a backend's own entry what differs for it.
# The torch backends take DEFAULT_BACKEND's, so that they time the layout and plan mode the
# FlashInfer wrapper runs when no backend is named. single_decode and single_prefill have no
# flashinfer_benchmark.py routine: they keep the static defaults of PARAMS (FlashInfer's own).
# A parameter a spec gives is used as given for every backend.
BACKEND_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "batch_decode": {
        "*": {"kv_layout": "HND", "use_tensor_cores": True, "use_cuda_graph": True},
        "fa2": {"use_tensor_cores": False},
    },
    "batch_prefill": {
        "*": {"kv_layout": "HND", "use_cuda_graph": True},
        "fa2": {"use_cuda_graph": False},
        "cudnn": {"kv_layout": "NHD"},
    },
    "batch_prefill_ragged": {
        "*": {"use_cuda_graph": True},
        "fa2": {"use_cuda_graph": False},
    },
    "mla_decode": {"*": {"use_cuda_graph": True}},
}
# The backend FlashInfer's wrappers and functions run when none is named (backend="auto").
DEFAULT_BACKEND = "auto"


def backend_defaults(kernel: str, backend: str) -> dict[str, Any]:
    """Every parameter's default for ``kernel`` run by ``backend``: the static default, unless
    ``BACKEND_DEFAULTS`` gives the backend another."""
    table = BACKEND_DEFAULTS.get(kernel, {})
    own = table.get(DEFAULT_BACKEND if backend in TORCH_BACKENDS else backend, {})
    by_backend = {**table.get("*", {}), **own}
    return {name: by_backend.get(name, PARAMS[name].default) for name in KERNELS[kernel].params}


def complete_params(kernel: str, params: dict[str, Any], backend: str) -> dict[str, Any]:
    """The kernel's full parameter set for ``backend``: given values, the backend's defaults
    for the rest."""
    return {**backend_defaults(kernel, backend),
            **{k: v for k, v in params.items() if k in KERNELS[kernel].params}}
