"""The GDN family's tensors: seeded inputs, the FlashInfer and PyTorch calls, the float32
reference (kernelwatch_harness.families.gdn declares the family).

Tensors are built as flashinfer_benchmark.py builds them: decode and MTP take q, k, v
``[batch, tokens, heads, head_size]``, ``A_log`` and ``dt_bias`` float32 ``[heads]``, ``a`` and
``b`` ``[batch, tokens, heads]`` in the input dtype, a state pool ``[slots, heads, D, D]`` and
an output buffer; the prefill takes packed ``[tokens, heads, head_size]`` q, k, v, float32
``g`` and ``beta`` in (0, 1), ``cu_seqlens`` and output buffers for the output and the final
state. The state pool is ``data`` (each timed copy its own), written by every call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from kernelwatch_harness.families.gdn import (
    CHUNK,
    DECODE,
    MTP,
    heads,
    state_written,
    tokens_per_request,
)
from kernelwatch_harness.family import (
    Operands,
    flashinfer_api,
    module_installed,
    require_keywords,
    require_module,
)
from kernelwatch_harness.prepared import Prepared

SEED = 0

Call = Callable[[dict[str, Any]], tuple[torch.Tensor, ...]]


# ------------------------------------------------------------------------- the recurrence


def delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: torch.Tensor,
               alpha: torch.Tensor, beta: torch.Tensor, scale: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The gated delta rule, token by token, in the dtype of its inputs: q, k ``[B, T, Hq|Hk,
    K]``, v ``[B, T, Hv, V]``, the state ``[B, H, K, V]``, alpha and beta ``[B, T, H]`` with
    ``H = max(Hq, Hv)`` (q, k and v are repeated to H heads, each group of heads sharing one).
    Returns the output ``[B, T, H, V]`` and the final state."""
    h = state.shape[1]
    q, k, v = (x.repeat_interleave(h // x.shape[2], dim=2) for x in (q, k, v))
    outs = []
    for t in range(q.shape[1]):
        state = state * alpha[:, t, :, None, None]
        kt = k[:, t]
        delta = (v[:, t] - torch.einsum("bhk,bhkv->bhv", kt, state)) * beta[:, t, :, None]
        state = state + kt[..., :, None] * delta[..., None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, state))
    return torch.stack(outs, dim=1), state


def gates(d: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode and MTP's decay and update gate, in float32, as FlashInfer's kernels compute
    them: ``alpha = exp(-exp(A_log) * softplus(a + dt_bias))`` (softplus linear beyond 20),
    ``beta = sigmoid(b)``."""
    g = -torch.exp(d["A_log"].float()) * F.softplus(d["a"].float() + d["dt_bias"].float(),
                                                    beta=1.0, threshold=20.0)
    return torch.exp(g), torch.sigmoid(d["b"].float())


def _scale(params: dict[str, Any]) -> float:
    return float(int(params["head_size"]) ** -0.5)


def _k_last(kernel: str, params: dict[str, Any]) -> bool:
    """Whether the kernel's state is ``[V, K]`` (pretranspose, MTP and the prefill's output)."""
    return kernel != DECODE or params["state_layout"] == "pretranspose"


def _slots(params: dict[str, Any]) -> tuple[slice, slice]:
    """The pool slots read and written: the first ``batch_size``, or (split) written to the
    next ``batch_size``."""
    b = int(params["batch_size"])
    split = params.get("pool_mode") == "split"
    return slice(0, b), (slice(b, 2 * b) if split else slice(0, b))


# ------------------------------------------------------------------------------- inputs


def inputs(kernel: str, params: dict[str, Any], backend: str, device: str) -> Operands:
    gen = torch.Generator(device="cpu").manual_seed(SEED)
    dtype = getattr(torch, str(params["dtype"]))
    b, d, h = int(params["batch_size"]), int(params["head_size"]), heads(params)
    hq, hk, hv = (int(params[f"num_{x}_heads"]) for x in "qkv")

    def normal(*shape: int, dt: torch.dtype = dtype) -> torch.Tensor:
        return torch.randn(shape, generator=gen).to(device=device, dtype=dt)

    if kernel == CHUNK:
        tokens = b * int(params["seq_len"])
        data: dict[str, Any] = {
            "q": normal(tokens, hq, d),
            # k normalised by the caller, as the tool does (use_qk_l2norm_in_kernel=False)
            "k": F.normalize(torch.randn((tokens, hk, d), generator=gen), dim=-1).to(
                device=device, dtype=dtype),
            "v": normal(tokens, hv, d),
            "g": torch.rand((tokens, h), generator=gen).to(device),
            "beta": torch.rand((tokens, h), generator=gen).to(device),
            "output": torch.empty((tokens, h, d), dtype=dtype, device=device),
            "output_state": torch.empty((b, h, d, d), dtype=torch.float32, device=device),
        }
        inp = Operands(kernel, params, data)
        inp.kept["cu_seqlens"] = torch.arange(0, tokens + 1, int(params["seq_len"]),
                                              dtype=torch.int64, device=device)
        return inp

    t = tokens_per_request(kernel, params)
    q, k = torch.randn((b, t, hq, d), generator=gen), torch.randn((b, t, hk, d), generator=gen)
    if not params["qk_l2norm"]:
        # The kernel will not normalise them: given normalised, the recurrence stays bounded.
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    read, write = _slots(params)
    pool_slots = max(read.stop, write.stop)
    state_dtype = getattr(torch, str(params["state_dtype"]))
    data = {
        "q": q.to(device=device, dtype=dtype), "k": k.to(device=device, dtype=dtype),
        "v": normal(b, t, hv, d),
        "A_log": normal(h, dt=torch.float32), "a": normal(b, t, h),
        "dt_bias": normal(h, dt=torch.float32), "b": normal(b, t, h),
        "state": normal(pool_slots, h, d, d, dt=state_dtype),
        "output": torch.empty((b, t, h, d), dtype=dtype, device=device),
    }
    if kernel == MTP and params["cache_intermediate_states"]:
        data["intermediate"] = torch.zeros((b, t, h, d, d), dtype=torch.float32, device=device)
    inp = Operands(kernel, params, data)
    inp.kept["read"] = torch.arange(read.start, read.stop, dtype=torch.int32, device=device)
    inp.kept["write"] = torch.arange(write.start, write.stop, dtype=torch.int32, device=device)
    # the state the first call reads, before any call writes the pool
    inp.kept["pristine"] = data["state"][read].clone()
    return inp


# ----------------------------------------------------------------------------- reference


def reference(inp: Operands) -> list[torch.Tensor]:
    """The output (and the new state, where the kernel writes it, in the kernel's layout) in
    float32."""
    params, d, kernel = inp.params, inp.data, inp.kernel
    if kernel == CHUNK:
        out, state = _chunk(d, params, torch.float32)
        return [out, state.transpose(-1, -2)]
    out, state = _recurrent(kernel, d, params, inp.kept["pristine"], torch.float32)
    if not state_written(kernel, params):
        return [out]
    return [out, state.transpose(-1, -2) if _k_last(kernel, params) else state]


def _recurrent(kernel: str, d: dict[str, Any], params: dict[str, Any], state: torch.Tensor,
               dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode and MTP in ``dtype``: the state ``[B, H, K, V]`` from the pool's layout, the
    gates, q and k normalised where the kernel normalises them."""
    q, k, v = (d[n].to(dtype) for n in ("q", "k", "v"))
    if params["qk_l2norm"]:
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    if _k_last(kernel, params):
        state = state.transpose(-1, -2)
    alpha, beta = gates(d)
    return delta_rule(q, k, v, state.to(dtype), alpha.to(dtype), beta.to(dtype),
                      _scale(params))


def _chunk(d: dict[str, Any], params: dict[str, Any],
           dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The prefill in ``dtype``: every sequence from a zero state (sequences are of equal
    length, so the packed tokens are ``[batch, seq_len]``)."""
    b, n = int(params["batch_size"]), int(params["seq_len"])

    def per_seq(x: torch.Tensor) -> torch.Tensor:
        return x.to(dtype).reshape(b, n, *x.shape[1:])

    q, k, v, g, beta = (per_seq(d[name]) for name in ("q", "k", "v", "g", "beta"))
    dim = int(params["head_size"])
    zero = torch.zeros((b, heads(params), dim, dim), dtype=dtype, device=q.device)
    out, state = delta_rule(q, k, v, zero, g, beta, _scale(params))
    return out.reshape(b * n, *out.shape[2:]), state


# ------------------------------------------------------------------------------- backends


def _torch_call(inp: Operands) -> Call:
    """The recurrence in PyTorch in the input dtype, writing the state pool as the kernel
    does."""
    kernel, params = inp.kernel, inp.params
    dtype = getattr(torch, str(params["dtype"]))
    if kernel == CHUNK:
        def chunk(d: dict[str, Any]) -> tuple[torch.Tensor, ...]:
            out, state = _chunk(d, params, dtype)
            d["output"].copy_(out)
            d["output_state"].copy_(state.transpose(-1, -2))
            return d["output"], d["output_state"]
        return chunk

    read, write = _slots(params)
    k_last, written = _k_last(kernel, params), state_written(kernel, params)

    def recurrent(d: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        out, state = _recurrent(kernel, d, params, d["state"][read], dtype)
        d["output"].copy_(out)
        if not written:
            return (d["output"],)
        d["state"][write] = state.transpose(-1, -2) if k_last else state
        return d["output"], d["state"][write]
    return recurrent


# FlashInfer's GDN kernels are CuTe DSL kernels, compiled at the first call by the CUTLASS
# DSL: decode and MTP always (gdn_decode.py imports it, or catches its absence and then has no
# kernel), the prefill from 0.6.14 (its SM90 kernel moved from a CUDA JIT module into
# gdn_kernels/delta_rule_dsl).
CUTE_DSL_MODULE = "cutlass.cute"
CUTE_DSL_PACKAGE = "nvidia-cutlass-dsl"
CHUNK_DSL_MODULE = "flashinfer.gdn_kernels.delta_rule_dsl"


def needs_cute_dsl(kernel: str) -> bool:
    """Whether the installed release runs ``kernel`` through the CUTLASS DSL."""
    return kernel != CHUNK or module_installed(CHUNK_DSL_MODULE)


def _flashinfer_call(inp: Operands, device: str) -> Call:
    """FlashInfer's function for the point, with the tool's arguments; a release without the
    function or a keyword is refused, naming it."""
    kernel, params = inp.kernel, inp.params
    if kernel == CHUNK:
        major, _ = torch.cuda.get_device_capability(torch.device(device))
        if major == 10 and int(params["head_size"]) != 128:
            raise NotImplementedError("FlashInfer's SM100 chunk_gated_delta_rule kernel "
                                      "takes head_size 128 only")
    if needs_cute_dsl(kernel):
        require_module(CUTE_DSL_MODULE, CUTE_DSL_PACKAGE, f"FlashInfer's {kernel}")
    api, kwargs = call_of(kernel, params)
    op, version = flashinfer_api(api)
    require_keywords(op, api, version, [*tensor_names(api, kernel, params), *kwargs])
    kept: dict[str, Any] = {n: inp.kept[n] for n in ("read", "write", "cu_seqlens")
                            if n in inp.kept}
    write = _slots(params)[1]
    written = state_written(kernel, params)

    def call(d: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        op(**tensor_kwargs(api, kernel, params, d, kept), **kwargs)
        if kernel == CHUNK:
            return d["output"], d["output_state"]
        return (d["output"], d["state"][write]) if written else (d["output"],)
    return call


# The FlashInfer functions and the tensors each takes (by name), as the tool calls them.
DECODE_PRETRANSPOSE = "flashinfer.gdn_decode.gated_delta_rule_decode_pretranspose"
DECODE_NONTRANSPOSE = "flashinfer.gdn_decode.gated_delta_rule_decode"
MTP_API = "flashinfer.gdn_decode.gated_delta_rule_mtp"
CHUNK_API = "flashinfer.gdn_prefill.chunk_gated_delta_rule"
_GATES = ("A_log", "a", "dt_bias", "b")
TENSORS: dict[str, tuple[str, ...]] = {
    DECODE_NONTRANSPOSE: ("q", "k", "v", "state", *_GATES, "output"),
    DECODE_PRETRANSPOSE: ("q", "k", "v", "state", *_GATES, "output"),
    MTP_API: ("q", "k", "v", "initial_state", "initial_state_indices", *_GATES, "output",
              "intermediate_states_buffer"),
    CHUNK_API: ("q", "k", "v", "g", "beta", "initial_state", "cu_seqlens", "output",
                "output_state"),
}
# Decode through the pool (initial_state and its indices): bfloat16 state (the tool takes
# that path so that no index tensor is made per call) or a split pool.
POOL_TENSORS = ("initial_state", "initial_state_indices", "output_state_indices")


def _pooled(kernel: str, params: dict[str, Any]) -> bool:
    return kernel != CHUNK and (params["state_dtype"] == "bfloat16"
                                or params["pool_mode"] == "split")


def tensor_names(api: str, kernel: str, params: dict[str, Any]) -> tuple[str, ...]:
    """The tensor keywords ``tensor_kwargs`` passes to ``api`` for the point."""
    pooled = api == DECODE_PRETRANSPOSE and _pooled(kernel, params)
    return (*TENSORS[api], *(POOL_TENSORS if pooled else ()))


def call_of(kernel: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The FlashInfer function the tool calls for the point, and its non-tensor keywords."""
    scale = _scale(params)
    if kernel == CHUNK:
        return CHUNK_API, {"scale": scale, "output_final_state": True,
                           "use_qk_l2norm_in_kernel": False}
    norm = {"scale": scale, "use_qk_l2norm": bool(params["qk_l2norm"])}
    if kernel == DECODE and params["state_layout"] == "nontranspose":
        return DECODE_NONTRANSPOSE, norm
    if kernel == MTP and params["state_dtype"] == "float32":
        return MTP_API, {**norm, "disable_state_update": not params["update_state"]}
    return DECODE_PRETRANSPOSE, norm  # decode, and bfloat16-state MTP (the tool's route)


def tensor_kwargs(api: str, kernel: str, params: dict[str, Any], d: dict[str, Any],
                  kept: dict[str, Any]) -> dict[str, Any]:
    """The tensors of one call, by the function's own names."""
    if api == CHUNK_API:
        return {"q": d["q"], "k": d["k"], "v": d["v"], "g": d["g"], "beta": d["beta"],
                "initial_state": None, "cu_seqlens": kept["cu_seqlens"],
                "output": d["output"], "output_state": d["output_state"]}
    out = {"q": d["q"], "k": d["k"], "v": d["v"], **{n: d[n] for n in _GATES},
           "output": d["output"]}
    if api == MTP_API:
        return {**out, "initial_state": d["state"], "initial_state_indices": kept["read"],
                "intermediate_states_buffer": d.get("intermediate")}
    if api == DECODE_PRETRANSPOSE and _pooled(kernel, params):
        split = params["pool_mode"] == "split"
        return {**out, "state": None, "initial_state": d["state"],
                "initial_state_indices": kept["read"],
                "output_state_indices": kept["write"] if split else None}
    return {**out, "state": d["state"]}


def _outputs(raw: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    return [t.float() for t in raw]


def prepare(backend: str, inp: Operands, device: str) -> Prepared:
    if backend == "torch":
        return Prepared(fn=_torch_call(inp), outputs=_outputs, resolved_backend="torch")
    if backend != "auto":
        raise NotImplementedError(f"backend {backend!r} is not offered for {inp.kernel}")
    if device != "cuda":
        raise NotImplementedError(f"FlashInfer backend {backend!r} needs a CUDA device")
    return Prepared(fn=_flashinfer_call(inp, device), outputs=_outputs,
                    resolved_backend="flashinfer")
