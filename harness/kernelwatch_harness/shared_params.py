"""The parameters several families declare, each declared here once.

The catalogue keeps one parameter per name across families (``catalogue.PARAMS``): one column,
one axis and one filter on every page, so it refuses at import two families whose parameters
of one name differ in kind, default, allowed values or range. Each function below holds that
shared part; the family passes only ``doc``, what the parameter means for its kernels (the
catalogue API and CLI show it per kernel). A name that only one family uses stays in that
family's module.

Like ``family``, this module imports no torch.
"""

from __future__ import annotations

from kernelwatch_harness.family import Param

# The activation dtypes every family takes (FP8 and FP4 are outputs or K/V formats, named by
# their own parameters).
_DTYPES = ("float16", "bfloat16")
# The FP8 formats a quantising kernel writes: the families' per-format tables (norm.FP8,
# rope_fp8.QUANT_FLAG) are keyed by these.
_FP8 = ("float8_e4m3fn", "float8_e5m2")
_OFF_ON = (False, True)


# ----------------------------------------------------------------- batch and sequence shape

def batch_size(*, doc: str) -> Param:
    return Param("batch_size", int, 1, min=1, max=16384, doc=doc)


def seq_len(*, doc: str) -> Param:
    return Param("seq_len", int, 1024, min=1, max=131072, doc=doc)


def num_tokens(*, doc: str) -> Param:
    return Param("num_tokens", int, 256, min=1, max=65536, doc=doc)


def hidden_size(*, doc: str) -> Param:
    return Param("hidden_size", int, 4096, min=16, max=65536, doc=doc)


# ----------------------------------------------------------------- attention and its KV cache

def qo_len(*, doc: str) -> Param:
    return Param("qo_len", int, 1, min=1, max=1 << 17, doc=doc)


def kv_len(*, doc: str) -> Param:
    return Param("kv_len", int, 1024, min=1, max=1 << 20, doc=doc)


def num_qo_heads(*, doc: str) -> Param:
    return Param("num_qo_heads", int, 32, min=1, max=256, doc=doc)


def num_kv_heads(*, doc: str) -> Param:
    return Param("num_kv_heads", int, 8, min=1, max=256, doc=doc)


def head_dim(*, doc: str) -> Param:
    return Param("head_dim", int, 128, choices=(64, 128, 256), doc=doc)


def page_size(*, doc: str) -> Param:
    return Param("page_size", int, 16, choices=(1, 8, 16, 32, 64, 128), doc=doc)


def kv_layout(*, doc: str) -> Param:
    # The single attention kernels' default: FlashInfer's single_*_with_kv_cache() take NHD
    # unless told otherwise. The paged batch kernels' defaults are per backend (attention's
    # BACKEND_DEFAULTS).
    return Param("kv_layout", str, "NHD", choices=("NHD", "HND"), doc=doc)


def causal(*, doc: str) -> Param:
    return Param("causal", bool, False, choices=_OFF_ON, doc=doc)


# ----------------------------------------------------------------- MoE routing

def num_experts(*, doc: str) -> Param:
    return Param("num_experts", int, 8, min=1, max=1024, doc=doc)


def experts_per_token(*, doc: str) -> Param:
    return Param("experts_per_token", int, 2, min=1, max=64, doc=doc)


# ----------------------------------------------------------------- GEMM-shaped operands

def m(*, doc: str) -> Param:
    return Param("m", int, 1024, min=1, max=131072, doc=doc)


def k(*, doc: str) -> Param:
    return Param("k", int, 4096, min=16, max=131072, doc=doc)


# ----------------------------------------------------------------- dtypes

def dtype(*, doc: str) -> Param:
    return Param("dtype", str, "bfloat16", choices=_DTYPES, doc=doc)


def kv_dtype(*, doc: str) -> Param:
    # None: K/V take dtype's. A family whose kernels lack a format refuses it in check_point
    # (sparse_attention: float8_e5m2), so the parameter stays one filter on every page.
    return Param("kv_dtype", str, None, choices=(None, *_DTYPES, *_FP8), doc=doc)


def quant_dtype(*, doc: str) -> Param:
    return Param("quant_dtype", str, "float8_e4m3fn", choices=_FP8, doc=doc)


def state_dtype(*, doc: str) -> Param:
    return Param("state_dtype", str, "float32", choices=("float32", "bfloat16", "float16"),
                 doc=doc)
