"""The attention family: FlashInfer's single and batch decode/prefill wrappers and MLA decode,
with PyTorch's SDPA and a naive float32 attention beside them.

Its declarations (parameters, kernels, the values stored points had before a parameter
existed) are here; its formulas (``formulas``), inputs (``inputs``), calls (``flashinfer_backends``,
``torch_backends``), reference (``reference``) and flashinfer_benchmark.py mapping are the
modules beside this one. A point's parameters are always completed with the defaults here,
so two points with the same completed parameters are the same experiment
(``kernelwatch.core.series``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kernelwatch_harness import shared_params as shared
from kernelwatch_harness.families.attention import benchmark
from kernelwatch_harness.families.attention.benchmark import ROUTINES
from kernelwatch_harness.families.attention.formulas import (
    DTYPE_BYTES,
    KV_DISTRIBUTIONS,
    point_work,
)
from kernelwatch_harness.family import (
    Family,
    Flags,
    Kernel,
    LineGroup,
    Operands,
    Param,
    Repro,
    Work,
)

if TYPE_CHECKING:
    import torch

    from kernelwatch_harness.prepared import Prepared

# FlashInfer's PosEncodingMode names, in its order.
POS_ENCODING_MODES = ("NONE", "ROPE_LLAMA", "ALIBI")

PARAMS: dict[str, Param] = {
    p.name: p
    for p in (
        # Shared with other families: declared once in shared_params, with attention's doc.
        shared.batch_size(doc="requests in the batch"),
        shared.kv_len(doc="KV length per request (the mean under kv_len_distribution)"),
        shared.qo_len(doc="query tokens per request (prefill)"),
        shared.num_qo_heads(doc="query heads"),
        shared.num_kv_heads(doc="KV heads (num_qo_heads a multiple of it: grouped heads)"),
        shared.head_dim(doc="head dimension of q, k and v"),
        Param("head_dim_ckv", int, 512, choices=(512,),
              doc="MLA's compressed KV dimension"),
        Param("head_dim_kpe", int, 64, choices=(64,),
              doc="MLA's rotary key dimension"),
        shared.page_size(doc="tokens per page of the paged KV cache"),
        shared.kv_layout(
            doc="K/V memory layout: tokens then heads (NHD) or heads then tokens (HND)"),
        shared.dtype(doc="q and output dtype (and K/V unless kv_dtype)"),
        shared.kv_dtype(doc="K/V dtype when it differs from dtype (fp8 KV)"),
        shared.causal(doc="bottom-right causal mask (prefill)"),
        # single_decode_with_kv_cache()'s own default; batch_decode's is per backend.
        Param("use_tensor_cores", bool, False, choices=(False, True),
              doc="decode with the tensor-core (prefill) kernels"),
        # The batch wrapper's CUDA-graph plan mode (``use_cuda_graph=`` with preallocated index
        # buffers): such a wrapper plans a padded, fixed work partition, which serving engines
        # (they capture decode in CUDA graphs) and flashinfer_benchmark.py both run. Points
        # stored before this parameter existed were measured without it and record false.
        Param("use_cuda_graph", bool, True, choices=(False, True),
              doc="the wrapper's CUDA-graph plan mode (fixed, padded work partition)"),
        # The batch wrappers' split-KV controls (plan()): a fixed chunk size in tokens for the
        # partial attention states (0: FlashInfer chooses), or no split at all.
        Param("fixed_split_size", int, 0, min=0, max=1 << 20,
              doc="split-KV chunk size in tokens (0: FlashInfer chooses)"),
        Param("disable_split_kv", bool, False, choices=(False, True),
              doc="no split-KV at all"),
        # Attention variants the wrappers take: a sliding window (keys at most window_left
        # positions left of the query's own; -1: none) and a logits soft cap
        # (cap * tanh(logits / cap), as Gemma-2 and Grok use; 0: none).
        Param("window_left", int, -1, min=-1, max=1 << 20,
              doc="sliding window: keys at most this far left of the query (-1: none)"),
        Param("logits_soft_cap", int, 0, min=0, max=10_000,
              doc="cap * tanh(logits / cap) (0: none)"),
        # The positional encoding the kernel applies itself: RoPE (Llama's, rotating halves, at
        # FlashInfer's default rope_scale 1 and rope_theta 1e4) to q and k at their positions
        # in the sequence, or ALiBi's per-head linear bias; NONE: the inputs are used as given.
        Param("pos_encoding_mode", str, "NONE", choices=POS_ENCODING_MODES,
              doc="positional encoding applied in the kernel"),
        Param("kv_len_distribution", str, "constant", choices=KV_DISTRIBUTIONS,
              doc="how KV lengths vary across requests (seeded)"),
        Param("seed", int, 0, min=0, max=2**31 - 1,
              doc="seed of the length distribution"),
    )
}

TORCH_BACKENDS = ("torch-sdpa", "torch-math")
FLASHINFER_BACKENDS = ("auto", "fa2", "fa3", "trtllm-gen", "cudnn", "cutlass")


def _kernel(name: str, params: tuple[str, ...], flashinfer_backends: tuple[str, ...],
            description: str) -> Kernel:
    return Kernel(name, "attention", params, flashinfer_backends, TORCH_BACKENDS, description,
                  routine=ROUTINES.get(name))



_HEADS = ("num_qo_heads", "num_kv_heads", "head_dim")
KERNELS: dict[str, Kernel] = {
    k.name: k
    for k in (
        _kernel(
            "single_decode",
            ("kv_len", *_HEADS, "kv_layout", "dtype", "kv_dtype", "use_tensor_cores",
             "window_left", "logits_soft_cap", "pos_encoding_mode"),
            ("auto", "fa2"),
            "one request, one query token against a contiguous KV",
        ),
        _kernel(
            "batch_decode",
            ("batch_size", "kv_len", *_HEADS, "page_size", "kv_layout", "dtype", "kv_dtype",
             "use_tensor_cores", "use_cuda_graph", "fixed_split_size", "disable_split_kv",
             "window_left", "logits_soft_cap", "pos_encoding_mode", "kv_len_distribution",
             "seed"),
            ("auto", "fa2", "fa3", "trtllm-gen", "cudnn"),
            "BatchDecodeWithPagedKVCacheWrapper: one query token per request, paged KV",
        ),
        _kernel(
            "single_prefill",
            ("qo_len", "kv_len", *_HEADS, "kv_layout", "dtype", "causal", "window_left",
             "logits_soft_cap", "pos_encoding_mode"),
            ("auto", "fa2", "fa3"),
            "one request, qo_len query tokens against a contiguous KV",
        ),
        _kernel(
            "batch_prefill",
            ("batch_size", "qo_len", "kv_len", *_HEADS, "page_size", "kv_layout", "dtype",
             "kv_dtype", "causal", "use_cuda_graph", "fixed_split_size", "disable_split_kv",
             "window_left", "logits_soft_cap", "pos_encoding_mode", "kv_len_distribution",
             "seed"),
            ("auto", "fa2", "fa3", "trtllm-gen", "cudnn"),
            "BatchPrefillWithPagedKVCacheWrapper: qo_len queries per request, paged KV",
        ),
        _kernel(
            "batch_prefill_ragged",
            ("batch_size", "qo_len", "kv_len", *_HEADS, "dtype", "causal", "use_cuda_graph",
             "fixed_split_size", "disable_split_kv", "window_left", "logits_soft_cap",
             "pos_encoding_mode", "kv_len_distribution", "seed"),
            ("auto", "fa2", "fa3", "cutlass", "cudnn"),
            "BatchPrefillWithRaggedKVCacheWrapper: packed variable-length Q/K/V",
        ),
        _kernel(
            "mla_decode",
            ("batch_size", "kv_len", "num_qo_heads", "head_dim_ckv", "head_dim_kpe",
             "page_size", "dtype", "use_cuda_graph", "kv_len_distribution", "seed"),
            ("auto", "fa2", "fa3", "cutlass", "trtllm-gen"),
            "BatchMLAPagedAttentionWrapper: DeepSeek-style latent attention decode",
        ),
    )
}


LEGACY_VALUES: dict[str, Any] = {"use_cuda_graph": False, "fixed_split_size": 0,
                                 "disable_split_kv": False, "window_left": -1,
                                 "logits_soft_cap": 0, "pos_encoding_mode": "NONE"}


# Defaults that depend on the backend: what FlashInfer's benchmarks/flashinfer_benchmark.py
# (0.5 to 0.7) builds each routine's wrapper with, beyond its flags, so that the same shape in
# both tools is the same experiment (benchmark.py maps between the two):
# - batch decode: kv_layout HND, use_cuda_graph, and use_tensor_cores for every backend but
#   fa2 (its "fa2_tc" is fa2 with tensor cores, use_tensor_cores=true here);
# - paged prefill: HND (NHD for cudnn), use_cuda_graph except for fa2;
# - ragged prefill (always NHD, no kv_layout parameter): use_cuda_graph except for fa2;
# - MLA decode: use_cuda_graph.
# Per kernel, "*" holds every backend's value and a backend's own entry what differs for it.
# The torch backends take "auto"'s, so that they time the layout and plan mode the FlashInfer
# wrapper runs when no backend is named. single_decode and single_prefill have no
# flashinfer_benchmark.py routine: they keep the static defaults of PARAMS (FlashInfer's own).
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


class AttentionFamily(Family):
    name = "attention"
    params = PARAMS
    kernels = KERNELS
    legacy = LEGACY_VALUES
    backend_defaults = BACKEND_DEFAULTS
    routine_flags = benchmark.ROUTINE_FLAGS
    refused_flags = benchmark.REFUSED_FLAGS
    axes = ("kv_len", "batch_size", "qo_len", "num_qo_heads", "num_kv_heads", "head_dim",
            "page_size", "head_dim_ckv")
    groups = {"head_config": ("num_qo_heads", "num_kv_heads", "head_dim")}
    shape = ("batch_size", "qo_len", "kv_len", "num_qo_heads", "num_kv_heads", "head_dim",
             "head_dim_ckv")

    def repro(self, kernel: str, params: dict[str, Any], backend: str) -> Repro:
        return benchmark.repro(kernel, params, backend)

    def from_flags(self, kernel: str, flags: Flags) -> list[LineGroup]:
        return benchmark.from_flags(kernel, flags, KERNELS[kernel].flashinfer_backends)

    def check_point(self, kernel: str, point: dict[str, Any]) -> None:
        if "num_kv_heads" in point and point["num_qo_heads"] % point["num_kv_heads"] != 0:
            raise ValueError(
                f"params: num_qo_heads ({point['num_qo_heads']}) must be a multiple of "
                f"num_kv_heads ({point['num_kv_heads']})"
            )

    def work(self, kernel: str, point: dict[str, Any]) -> Work:
        w = point_work(kernel, point)
        return Work(flops=w["flops"], bytes=w["bytes"],
                    extra={"qo_lens": w["qo_lens"], "kv_lens": w["kv_lens"]})

    def memory_bytes(self, kernel: str, point: dict[str, Any]) -> float:
        """Inputs and output at their dtype, the float32 reference (which the correctness
        check builds), and the score matrix torch-math materialises. Cold-L2 input copies
        are not counted: the harness caps them to the memory it has."""
        w = point_work(kernel, point)
        io = float(w["bytes"])
        reference = io / DTYPE_BYTES[point.get("dtype", "bfloat16")] * 4
        # torch-math and the reference check are naive attention: float32 scores and their
        # softmax for the largest request (the reference runs one request at a time).
        h = int(point.get("num_qo_heads", 32))
        largest = max(lq * lkv for lq, lkv in zip(w["qo_lens"], w["kv_lens"], strict=True))
        return io + reference + largest * h * 4 * 2

    def inputs(self, kernel: str, params: dict[str, Any], backend: str,
               device: str) -> Operands:
        from kernelwatch_harness.families.attention.inputs import (
            flashinfer_inputs,
            torch_inputs,
        )

        build = torch_inputs if backend in TORCH_BACKENDS else flashinfer_inputs
        return build(kernel, params, device)

    def prepare(self, backend: str, inp: Operands, device: str) -> Prepared:
        from kernelwatch_harness.families.attention.inputs import Inputs, sm_scale

        assert isinstance(inp, Inputs)
        scale = sm_scale(inp.kernel, inp.params)
        if backend in TORCH_BACKENDS:
            kv = inp.params.get("kv_dtype")
            if kv and str(kv).startswith("float8"):
                raise NotImplementedError(f"{backend} has no fp8 KV path (kv_dtype={kv})")
            from kernelwatch_harness.families.attention.torch_backends import prepare_torch

            return prepare_torch(backend, inp, scale)
        if device != "cuda":
            raise NotImplementedError(f"FlashInfer backend {backend!r} needs a CUDA device")
        from kernelwatch_harness.families.attention.flashinfer_backends import (
            prepare_flashinfer,  # lazy: imports flashinfer
        )

        return prepare_flashinfer(backend, inp, scale)

    def reference(self, inp: Operands) -> list[torch.Tensor]:
        from kernelwatch_harness.families.attention.inputs import Inputs, sm_scale
        from kernelwatch_harness.families.attention.reference import reference

        assert isinstance(inp, Inputs)
        return reference(inp, sm_scale(inp.kernel, inp.params))

    def tolerance(self, kernel: str, params: dict[str, Any]) -> float:
        from kernelwatch_harness.families.attention.reference import tolerance

        return tolerance(params)


FAMILY = AttentionFamily()
