"""FlashInfer adapters: one prepared call per kernel, for 0.5.x, 0.6.x and 0.7.x.

Every FlashInfer argument is passed by keyword (0.3.0 inserted positional parameters into
``single_prefill_with_kv_cache``; 0.6 turned the decode ``plan()`` optional positionals into
deprecated ``*args``). The keyword sets live in the ``*_kwargs`` functions below, which take no
tensors' values into account beyond shapes and dtypes, so tests check them against each
version's real signatures without a GPU (tests/test_adapters.py).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import torch

from kernelwatch_harness.families.attention.inputs import Inputs, indptr, torch_dtype
from kernelwatch_harness.families.attention.reference import variant
from kernelwatch_harness.family import module_installed
from kernelwatch_harness.prepared import Prepared

WORKSPACE_BYTES = 256 * 1024 * 1024
"""Float workspace for the batch wrappers (split-KV partial outputs); FlashInfer's examples use
128 MiB, large prefill batches need more."""


def _dtypes(params: dict[str, Any]) -> tuple[torch.dtype, torch.dtype]:
    dt = torch_dtype(params["dtype"])
    return dt, torch_dtype(params.get("kv_dtype") or params["dtype"])


def single_decode_kwargs(params: dict[str, Any], scale: float) -> dict[str, Any]:
    return {
        **variant_kwargs(params),
        "kv_layout": params["kv_layout"],
        "use_tensor_cores": bool(params["use_tensor_cores"]),
        "sm_scale": scale,
    }


def single_prefill_kwargs(params: dict[str, Any], scale: float, backend: str) -> dict[str, Any]:
    return {
        **variant_kwargs(params),
        "causal": bool(params["causal"]),
        "kv_layout": params["kv_layout"],
        "sm_scale": scale,
        "backend": backend,
    }


def decode_init_kwargs(params: dict[str, Any], backend: str) -> dict[str, Any]:
    return {
        "kv_layout": params["kv_layout"],
        "use_tensor_cores": bool(params["use_tensor_cores"]),
        "use_cuda_graph": bool(params.get("use_cuda_graph", False)),
        "backend": backend,
    }


def variant_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """The attention variant's keywords (sliding window, logits soft cap, positional
    encoding), passed only when set, as the split controls are. RoPE runs at FlashInfer's
    defaults (``rope_scale`` 1, ``rope_theta`` 1e4), which the reference uses too."""
    window_left, soft_cap, pos_encoding = variant(params)
    out: dict[str, Any] = {}
    if window_left >= 0:
        out["window_left"] = window_left
    if soft_cap > 0:
        out["logits_soft_cap"] = soft_cap
    if pos_encoding != "NONE":
        out["pos_encoding_mode"] = pos_encoding
    return out


POS_ENCODING_BACKENDS = ("auto", "fa2")


def check_pos_encoding(backend: str, params: dict[str, Any]) -> None:
    """RoPE and ALiBi are applied by FlashInfer's fa2 kernels only (its FA2 prefill and
    decode templates, the CUDA-core decode); its fa3 (sm90) templates never read the mode,
    and its trtllm-gen, cutlass and cuDNN kernels take none: named explicitly, they would
    time attention without the encoding the point records. ``auto`` is kept: FlashInfer
    resolves it to fa2 when a mode is set (``determine_attention_backend``)."""
    mode = variant(params).pos_encoding
    if mode != "NONE" and backend not in POS_ENCODING_BACKENDS:
        raise NotImplementedError(
            f"backend {backend!r} has no positional encoding: FlashInfer applies "
            f"pos_encoding_mode {mode} in its fa2 kernels only; allowed: pos_encoding_mode "
            f"NONE, or backend {' or '.join(POS_ENCODING_BACKENDS)}"
        )


def plan_options(params: dict[str, Any]) -> dict[str, Any]:
    """Every option a batch wrapper's plan() takes only when set."""
    return {**split_kwargs(params), **variant_kwargs(params)}


def split_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """plan()'s split-KV controls, passed only when set: left out, a version without them
    runs exactly as before they existed."""
    out: dict[str, Any] = {}
    if params.get("fixed_split_size"):
        out["fixed_split_size"] = int(params["fixed_split_size"])
    if params.get("disable_split_kv"):
        out["disable_split_kv"] = True
    return out


def decode_plan_kwargs(inp: Inputs, scale: float) -> dict[str, Any]:
    p, (dt, kv_dt) = inp.params, _dtypes(inp.params)
    return {
        **plan_options(p),
        "indptr": inp.meta["kv_indptr"],
        "indices": inp.meta["kv_indices"],
        "last_page_len": inp.meta["kv_last_page_len"],
        "num_qo_heads": p["num_qo_heads"],
        "num_kv_heads": p["num_kv_heads"],
        "head_dim": p["head_dim"],
        "page_size": p["page_size"],
        "q_data_type": dt,
        "kv_data_type": kv_dt,
        "sm_scale": scale,
    }


def prefill_init_kwargs(params: dict[str, Any], backend: str) -> dict[str, Any]:
    return {"kv_layout": params.get("kv_layout", "NHD"),
            "use_cuda_graph": bool(params.get("use_cuda_graph", False)), "backend": backend}


def ragged_init_kwargs(params: dict[str, Any], backend: str) -> dict[str, Any]:
    return {"kv_layout": "NHD", "use_cuda_graph": bool(params.get("use_cuda_graph", False)),
            "backend": backend}


def mla_init_kwargs(params: dict[str, Any], backend: str) -> dict[str, Any]:
    return {"use_cuda_graph": bool(params.get("use_cuda_graph", False)), "backend": backend}


# The index buffers a wrapper built for CUDA graphs keeps for the life of the wrapper (its
# plan() copies each batch's indices into them, so a captured graph can be replayed with new
# ones), by wrapper keyword: the same tensors the plan receives, as flashinfer_benchmark.py
# passes them. Such a wrapper plans a padded, fixed grid: a different experiment.
CUDA_GRAPH_BUFFERS: dict[str, dict[str, str]] = {
    "batch_decode": {"paged_kv_indptr_buffer": "kv_indptr",
                     "paged_kv_indices_buffer": "kv_indices",
                     "paged_kv_last_page_len_buffer": "kv_last_page_len"},
    "batch_prefill": {"qo_indptr_buf": "qo_indptr", "paged_kv_indptr_buf": "kv_indptr",
                      "paged_kv_indices_buf": "kv_indices",
                      "paged_kv_last_page_len_buf": "kv_last_page_len"},
    "batch_prefill_ragged": {"qo_indptr_buf": "qo_indptr", "kv_indptr_buf": "kv_indptr"},
    "mla_decode": {"qo_indptr": "qo_indptr", "kv_indptr": "kv_indptr",
                   "kv_indices": "kv_indices", "kv_len_arr": "kv_lens"},
}
_INIT_KWARGS = {"batch_decode": decode_init_kwargs, "batch_prefill": prefill_init_kwargs,
                "batch_prefill_ragged": ragged_init_kwargs, "mla_decode": mla_init_kwargs}


def init_kwargs(inp: Inputs, backend: str) -> dict[str, Any]:
    """The batch wrapper's constructor keywords: with ``use_cuda_graph`` its index buffers."""
    kw = _INIT_KWARGS[inp.kernel](inp.params, backend)
    if kw["use_cuda_graph"]:
        kw.update({k: inp.meta[m] for k, m in CUDA_GRAPH_BUFFERS[inp.kernel].items()})
    return kw


def check_accepts(fn: Any, kwargs: dict[str, Any], what: str, version: str) -> None:
    """Refuse, with the reason, an option this FlashInfer version's ``fn`` does not take:
    passing it anyway would fail obscurely, and leaving it out would silently measure
    another experiment than the point records."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    missing = sorted(set(kwargs) - set(params))
    if missing:
        raise NotImplementedError(
            f"FlashInfer {version}'s {what} has no {', '.join(missing)}: "
            "this option cannot be measured with this version"
        )


def prefill_plan_kwargs(inp: Inputs, scale: float) -> dict[str, Any]:
    p, (dt, kv_dt) = inp.params, _dtypes(inp.params)
    return {
        **plan_options(p),
        "qo_indptr": inp.meta["qo_indptr"],
        "paged_kv_indptr": inp.meta["kv_indptr"],
        "paged_kv_indices": inp.meta["kv_indices"],
        "paged_kv_last_page_len": inp.meta["kv_last_page_len"],
        "num_qo_heads": p["num_qo_heads"],
        "num_kv_heads": p["num_kv_heads"],
        "head_dim_qk": p["head_dim"],
        "page_size": p["page_size"],
        "causal": bool(p["causal"]),
        "sm_scale": scale,
        "q_data_type": dt,
        "kv_data_type": kv_dt,
    }


def ragged_plan_kwargs(inp: Inputs, scale: float) -> dict[str, Any]:
    p, (dt, kv_dt) = inp.params, _dtypes(inp.params)
    return {
        **plan_options(p),
        "qo_indptr": inp.meta["qo_indptr"],
        "kv_indptr": inp.meta["kv_indptr"],
        "num_qo_heads": p["num_qo_heads"],
        "num_kv_heads": p["num_kv_heads"],
        "head_dim_qk": p["head_dim"],
        "causal": bool(p["causal"]),
        "sm_scale": scale,
        "q_data_type": dt,
        "kv_data_type": kv_dt,
    }


def cudnn_prefill_kwargs(inp: Inputs, scale: float) -> dict[str, Any]:
    """Keyword arguments of ``flashinfer.cudnn.cudnn_batch_prefill_with_kv_cache`` for the
    paged and ragged prefill, called directly as flashinfer_benchmark.py calls it. Through
    the wrappers it cannot run: cuDNN asserts ``return_lse=True``, and with it
    0.6.18.post1's wrappers allocate the log-sum-exp as (tokens, heads) where cuDNN requires
    (sequences, max tokens, heads). cuDNN counts batch offsets in elements (tokens x heads x
    head_dim) and takes per-request lengths as (batch, 1, 1, 1); a paged cache also takes a
    block table."""
    p, dev = inp.params, inp.meta["qo_indptr"].device
    q_row, kv_row = p["num_qo_heads"] * p["head_dim"], p["num_kv_heads"] * p["head_dim"]
    q_offsets = indptr(inp.qo_lens, dev, q_row, torch.int64)
    kw: dict[str, Any] = {
        "scale": scale,
        "max_token_per_sequence": max(inp.qo_lens),
        "max_sequence_kv": max(inp.kv_lens),
        "actual_seq_lens_q": seq_lens(inp.qo_lens, dev),
        "actual_seq_lens_kv": seq_lens(inp.kv_lens, dev),
        "causal": bool(p["causal"]),
        "return_lse": True,
        "batch_offsets_q": q_offsets,
        "batch_offsets_o": q_offsets,
        "is_cuda_graph_compatible": True,
    }
    if inp.kernel == "batch_prefill":
        kw["block_tables"] = block_tables(inp)
    else:
        kv_offsets = indptr(inp.kv_lens, dev, kv_row, torch.int64)
        kw.update(
            batch_offsets_k=kv_offsets,
            batch_offsets_v=kv_offsets,
            batch_offsets_stats=indptr(inp.qo_lens, dev, p["num_qo_heads"]),
        )
    return kw


def seq_lens(lens: list[int], device: torch.device) -> torch.Tensor:
    """Per-request lengths as cuDNN takes them: int32, shaped (batch, 1, 1, 1)."""
    return torch.tensor(lens, dtype=torch.int32, device=device).view(len(lens), 1, 1, 1)


def block_tables(inp: Inputs) -> torch.Tensor:
    """cuDNN's page table of a paged cache: a row of page indices per request, padded."""
    starts, indices = inp.meta["kv_indptr"].tolist(), inp.meta["kv_indices"].tolist()
    rows = [indices[x:y] for x, y in itertools.pairwise(starts)]
    width = max(len(r) for r in rows)
    return torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.int32,
                        device=inp.meta["kv_indptr"].device)


def cudnn_decode_kwargs(inp: Inputs) -> dict[str, Any]:
    """Keyword arguments of ``flashinfer.cudnn.cudnn_batch_decode_with_kv_cache``, called
    directly as flashinfer_benchmark.py calls it for its cudnn decode backend (0.5.x and
    0.6.x's decode wrapper has no cuDNN path; the query is contiguous, so no offsets)."""
    return {
        "max_sequence_kv": max(inp.kv_lens),
        "actual_seq_lens_kv": seq_lens(inp.kv_lens, inp.meta["kv_indptr"].device),
        "block_tables": block_tables(inp),
        "is_cuda_graph_compatible": True,
    }


def _paged_kv(d: dict[str, torch.Tensor], kv_layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V of a paged cache as cuDNN reads them, (pages, heads, page_size, head_dim):
    an NHD cache as a strided view, no copy."""
    k, v = d["kv_cache"][:, 0], d["kv_cache"][:, 1]
    return (k.transpose(-3, -2), v.transpose(-3, -2)) if kv_layout == "NHD" else (k, v)


def _cudnn_prefill(inp: Inputs, scale: float, workspace: torch.Tensor) -> Prepared:
    from flashinfer.cudnn import cudnn_batch_prefill_with_kv_cache

    kw = cudnn_prefill_kwargs(inp, scale)
    kv_layout = str(inp.params.get("kv_layout", "NHD"))

    def fn(d: dict[str, torch.Tensor]) -> torch.Tensor:
        k, v = (d["k"], d["v"]) if inp.kernel == "batch_prefill_ragged" else _paged_kv(d, kv_layout)
        out = cudnn_batch_prefill_with_kv_cache(d["q"], k, v, workspace_buffer=workspace, **kw)
        return _out(out)

    return Prepared(fn, _split(inp.qo_lens), "cudnn")


def _cudnn_decode(inp: Inputs, scale: float, workspace: torch.Tensor) -> Prepared:
    dt, kv_dt = _dtypes(inp.params)
    if kv_dt != dt:
        raise NotImplementedError(
            "batch_decode backend 'cudnn' takes no KV scales "
            "(cudnn_batch_decode_with_kv_cache): fp8 KV is not measured; allowed kv_dtype: "
            "none (the query's dtype)"
        )
    from flashinfer.cudnn import cudnn_batch_decode_with_kv_cache

    kw = cudnn_decode_kwargs(inp)
    kv_layout = str(inp.params.get("kv_layout", "NHD"))

    def fn(d: dict[str, torch.Tensor]) -> torch.Tensor:
        k, v = _paged_kv(d, kv_layout)
        return _out(cudnn_batch_decode_with_kv_cache(d["q"], k, v, scale, workspace, **kw))

    return Prepared(fn, _split([1] * len(inp.kv_lens)), "cudnn")


def mla_plan_kwargs(inp: Inputs, scale: float) -> dict[str, Any]:
    p, (dt, kv_dt) = inp.params, _dtypes(inp.params)
    return {
        "qo_indptr": inp.meta["qo_indptr"],
        "kv_indptr": inp.meta["kv_indptr"],
        "kv_indices": inp.meta["kv_indices"],
        "kv_len_arr": inp.meta["kv_lens"],
        "num_heads": p["num_qo_heads"],
        "head_dim_ckv": p["head_dim_ckv"],
        "head_dim_kpe": p["head_dim_kpe"],
        "page_size": p["page_size"],
        "causal": False,
        "sm_scale": scale,
        "q_data_type": dt,
        "kv_data_type": kv_dt,
    }


def check_decode_backend(backend: str, tensor_cores: bool, version: str) -> None:
    """Without tensor cores, BatchDecodeWithPagedKVCacheWrapper runs its CUDA-core decode
    kernel whatever ``backend`` says, except for the backends it special-cases: measuring
    ``fa3`` there would time the fa2-family kernel under another name."""
    honoured = {"auto", "fa2", "trtllm-gen"}
    if not tensor_cores and backend not in honoured:
        raise NotImplementedError(
            f"batch_decode backend {backend!r} needs use_tensor_cores=true: without it "
            f"FlashInfer {version} ignores the backend and runs its CUDA-core decode kernel"
        )


def cudnn_frontend_installed() -> bool:
    """Whether ``import cudnn`` (the cuDNN frontend's Python package, nvidia-cudnn-frontend)
    would work: the import FlashInfer's cuDNN paths try before they fall back to cubins."""
    return module_installed("cudnn")


def check_arch(backend: str, capability: tuple[int, int], cudnn_frontend: bool = True) -> None:
    """trtllm-gen is TensorRT-LLM's generated FMHA cubins, built for Blackwell (sm100/sm103)
    only. On other GPUs FlashInfer still tries to download them first (on an offline node:
    ``AssertionError: Failed to get checksums.txt``, after the download's retries), which
    would read as an error of the node rather than a backend this GPU does not have.
    cuDNN goes through the cuDNN frontend; without it FlashInfer falls back to its own cuDNN
    cubins, downloaded the same way and built for sm100 only (``cudnn_sm100_fprop_sdpa_*``;
    off Blackwell without the frontend, the fallback's assertions are what fails)."""
    sm = f"sm{capability[0]}{capability[1]}"
    if backend == "trtllm-gen" and capability[0] != 10:
        raise NotImplementedError(
            f"backend 'trtllm-gen' runs kernels built for Blackwell (sm100/sm103); this GPU "
            f"is {sm}"
        )
    if backend == "cudnn" and not cudnn_frontend and capability[0] != 10:
        raise NotImplementedError(
            "backend 'cudnn' needs the cuDNN frontend (Python package nvidia-cudnn-frontend, "
            "`import cudnn`), which this node lacks; without it FlashInfer runs cuDNN cubins "
            f"built for Blackwell (sm100), and this GPU is {sm}"
        )


def resolved_backend(wrapper: Any, requested: str, tensor_cores: bool = True) -> str:
    """What ``auto`` became. 0.7 exposes ``resolved_backend``; earlier versions overwrite
    ``_backend`` in plan() (prefill) or keep ``auto`` for the CUDA-core decode kernel, which is
    FlashInfer's FA2-family decode kernel."""
    value = getattr(type(wrapper), "resolved_backend", None)
    if isinstance(value, property):
        return str(wrapper.resolved_backend)
    got = str(getattr(wrapper, "_backend", requested))
    if got == "auto" and not tensor_cores:
        return "fa2"
    return got


def _out(result: Any) -> torch.Tensor:
    """The attention output of a run() that may also return the log-sum-exp."""
    return result[0] if isinstance(result, tuple) else result


def _split(lens: list[int]) -> Any:
    def outputs(raw: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(raw, lens, dim=0))

    return outputs


def _auto_single_prefill(fi: Any, inp: Inputs) -> str:
    """single_prefill resolves ``auto`` inside the call; ask the same helper it asks, with
    the same positional encoding (which keeps it off fa3)."""
    from flashinfer.utils import PosEncodingMode, determine_attention_backend

    dt, kv_dt = _dtypes(inp.params)
    dev = inp.data["q"].device
    d = int(inp.params["head_dim"])
    mode = PosEncodingMode[variant(inp.params).pos_encoding].value
    try:
        return str(
            determine_attention_backend(
                dev, mode, False, False, dt, kv_dt, head_dim_qk=d, head_dim_vo=d
            )
        )
    except TypeError:  # 0.5.x: no head-dim arguments
        return str(determine_attention_backend(dev, mode, False, False, dt, kv_dt))


def prepare_flashinfer(backend: str, inp: Inputs, scale: float) -> Prepared:
    import flashinfer as fi

    kernel, p = inp.kernel, inp.params
    check_pos_encoding(backend, p)
    if kernel == "single_decode":
        if backend not in ("auto", "fa2"):
            raise NotImplementedError(f"single_decode has no backend {backend!r} (auto, fa2)")
        kw = single_decode_kwargs(p, scale)
        check_accepts(fi.single_decode_with_kv_cache, variant_kwargs(p),
                      "single_decode_with_kv_cache()", str(fi.__version__))
        return Prepared(
            lambda d: fi.single_decode_with_kv_cache(q=d["q"], k=d["k"], v=d["v"], **kw),
            lambda o: [o[None]],
            "fa2",
        )
    if kernel == "single_prefill":
        kw = single_prefill_kwargs(p, scale, backend)
        check_accepts(fi.single_prefill_with_kv_cache, variant_kwargs(p),
                      "single_prefill_with_kv_cache()", str(fi.__version__))
        resolved = _auto_single_prefill(fi, inp) if backend == "auto" else backend
        return Prepared(
            lambda d: fi.single_prefill_with_kv_cache(q=d["q"], k=d["k"], v=d["v"], **kw),
            lambda o: [o],
            resolved,
        )
    device = next(iter(inp.meta.values())).device
    check_arch(backend, torch.cuda.get_device_capability(device), cudnn_frontend_installed())
    workspace = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=device)
    if backend == "cudnn" and plan_options(p):
        raise NotImplementedError(
            f"backend 'cudnn' is called directly (no wrapper plan()): it has no "
            f"{', '.join(plan_options(p))}; allowed: fixed_split_size 0, disable_split_kv "
            "false, window_left -1, logits_soft_cap 0"
        )
    if backend == "cudnn" and kernel in ("batch_prefill", "batch_prefill_ragged"):
        return _cudnn_prefill(inp, scale, workspace)
    if backend == "cudnn" and kernel == "batch_decode":
        return _cudnn_decode(inp, scale, workspace)
    wrapper: Any
    tensor_cores = True
    version = str(fi.__version__)
    classes = {"batch_decode": "BatchDecodeWithPagedKVCacheWrapper",
               "batch_prefill": "BatchPrefillWithPagedKVCacheWrapper",
               "batch_prefill_ragged": "BatchPrefillWithRaggedKVCacheWrapper",
               "mla_decode": "BatchMLAPagedAttentionWrapper"}
    if kernel not in classes:
        raise NotImplementedError(f"no FlashInfer adapter for kernel {kernel!r}")
    cls = getattr(fi, classes[kernel])
    init_kw = init_kwargs(inp, backend)
    check_accepts(cls.__init__, init_kw, f"{classes[kernel]}()", version)
    if kernel == "batch_decode":
        check_decode_backend(backend, bool(p["use_tensor_cores"]), version)
        wrapper = cls(workspace, **init_kw)
        plan_kw = decode_plan_kwargs(inp, scale)
        tensor_cores = bool(p["use_tensor_cores"])
        fn: Any = lambda d: wrapper.run(d["q"], d["kv_cache"])  # noqa: E731
        outputs: Any = _split([1] * len(inp.kv_lens))
    elif kernel == "batch_prefill":
        wrapper = cls(workspace, **init_kw)
        plan_kw = prefill_plan_kwargs(inp, scale)
        fn = lambda d: wrapper.run(d["q"], d["kv_cache"])  # noqa: E731
        outputs = _split(inp.qo_lens)
    elif kernel == "batch_prefill_ragged":
        wrapper = cls(workspace, **init_kw)
        plan_kw = ragged_plan_kwargs(inp, scale)
        fn = lambda d: wrapper.run(d["q"], d["k"], d["v"])  # noqa: E731
        outputs = _split(inp.qo_lens)
    else:
        wrapper = cls(workspace, **init_kw)
        plan_kw = mla_plan_kwargs(inp, scale)
        fn = lambda d: wrapper.run(d["q_nope"], d["q_pe"], d["ckv"], d["kpe"])  # noqa: E731
        outputs = _split([1] * len(inp.kv_lens))

    if kernel != "mla_decode":
        check_accepts(cls.plan, plan_options(p), f"{classes[kernel]}.plan()", version)

    def plan() -> None:
        try:
            wrapper.plan(**plan_kw)
        except TypeError as exc:  # a plan(**kwargs) forwarding to an impl without the option
            unknown = [k for k in plan_options(p) if k in str(exc)]
            if unknown:
                raise NotImplementedError(
                    f"FlashInfer {version}'s {classes[kernel]}.plan() has no "
                    f"{', '.join(unknown)}: this option cannot be measured with this version"
                ) from exc
            raise

    t0 = time.perf_counter()
    plan()
    torch.cuda.synchronize()
    first_plan = time.perf_counter() - t0
    return Prepared(fn, outputs, resolved_backend(wrapper, backend, tensor_cores), plan, first_plan)
