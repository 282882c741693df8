"""The RoPE family's tensors: seeded inputs, the FlashInfer and PyTorch calls, the float32
reference (kernelwatch_harness.families.rope declares the family; the rotation itself is the
attention family's, ``families.attention.reference``)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import torch

from kernelwatch_harness.families.attention.reference import (
    Llama31,
    rope_angles,
    rope_frequencies,
    rope_rotate,
)
from kernelwatch_harness.families.rope import (
    CACHED,
    INDPTR,
    LLAMA31,
    POS_IDS,
    call_kwargs,
    tensor_args,
)
from kernelwatch_harness.family import Operands, flashinfer_api, require_keywords
from kernelwatch_harness.prepared import Prepared

SEED = 0
# The cos/sin table's base: FlashInfer's default theta, what a user's table is built from
# (flashinfer_benchmark.py fills it with random numbers; the kernel's work is the same).
CACHE_THETA = 1e4


def _rotary_dim(params: dict[str, Any]) -> int:
    return int(params.get("rotary_dim", 0)) or int(params["head_dim"])


def frequencies(kernel: str, params: dict[str, Any], device: str) -> torch.Tensor:
    """Float32 ``[rotary_dim / 2]``: the kernel's frequency per rotated pair."""
    if kernel == CACHED:
        return rope_frequencies(_rotary_dim(params), theta=CACHE_THETA, device=device)
    llama31 = None
    if kernel in LLAMA31:
        llama31 = Llama31(float(params["low_freq_factor"]), float(params["high_freq_factor"]),
                          float(params["old_context_len"]))
    return rope_frequencies(_rotary_dim(params), theta=float(params["rope_theta"]),
                            scale=float(params["rope_scale"]), llama31=llama31, device=device)


def inputs(kernel: str, params: dict[str, Any], backend: str, device: str) -> Operands:
    """q and k standard normal from one seed, ``batch_size`` requests of ``seq_len`` tokens at
    positions 0 to ``seq_len - 1``, in the form the kernel reads them: indptr and zero offsets,
    int32 pos_ids, or int64 positions and a float32 cos/sin table. The torch backend reads
    int64 positions (and the frequencies a model keeps) whatever the FlashInfer form."""
    dtype = getattr(torch, str(params["dtype"]))
    batch, seq = int(params["batch_size"]), int(params["seq_len"])
    tokens, dim = batch * seq, int(params["head_dim"])
    gen = torch.Generator(device="cpu").manual_seed(SEED)
    q, k = (torch.randn(tokens, int(params[h]), dim, generator=gen).to(device=device,
                                                                          dtype=dtype)
            for h in ("num_qo_heads", "num_kv_heads"))
    positions = torch.arange(seq, device=device).repeat(batch)
    freq = frequencies(kernel, params, device)
    data: dict[str, Any] = {"q": q, "k": k}
    if kernel == CACHED:
        data = {"q": q.flatten(1), "k": k.flatten(1), "positions": positions,
                "cos_sin_cache": torch.cat(rope_angles(torch.arange(seq, device=device), freq),
                                           dim=-1)}
    elif backend == "torch":
        data.update(positions=positions, inv_freq=freq)
    elif kernel in INDPTR:
        data.update(indptr=torch.arange(0, tokens + 1, seq, dtype=torch.int32, device=device),
                    offsets=torch.zeros(batch, dtype=torch.int32, device=device))
    elif kernel in POS_IDS:
        data["pos_ids"] = positions.to(torch.int32)
    inp = Operands(kernel, params, data)
    inp.kept.update(positions=positions, freq=freq)
    return inp


def reference(inp: Operands) -> list[torch.Tensor]:
    d, interleave = inp.data, bool(inp.params.get("interleave", False))
    if inp.kernel == CACHED:  # the table's own values, as the kernel reads them
        cos, sin = d["cos_sin_cache"][inp.kept["positions"]].float().chunk(2, dim=-1)
    else:
        cos, sin = rope_angles(inp.kept["positions"], inp.kept["freq"])
    dim = int(inp.params["head_dim"])
    outs = []
    for x in (d["q"], d["k"]):
        heads = x.reshape(x.shape[0], -1, dim)
        outs.append(rope_rotate(heads, cos[:, None], sin[:, None], interleave).reshape(x.shape))
    return outs


def rotate_half(x: torch.Tensor, interleave: bool) -> torch.Tensor:
    """The partner of each rotated dimension, negated for the first of a pair (PyTorch's
    idiom: ``x * cos + rotate_half(x) * sin`` turns every pair)."""
    if interleave:
        return torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def widen(c: torch.Tensor, interleave: bool) -> torch.Tensor:
    """One cos (or sin) per pair -> one per rotated dimension."""
    return c.repeat_interleave(2, dim=-1) if interleave else torch.cat((c, c), dim=-1)


def _torch_call(kernel: str, params: dict[str, Any]) -> Any:
    """What a PyTorch user writes: angles in float32 from the positions (or the rows of their
    cos/sin table), cos and sin in the input dtype, ``x * cos + rotate_half(x) * sin`` on the
    rotary dimensions, the rest passed through."""
    rotary, interleave = _rotary_dim(params), bool(params.get("interleave", False))

    def call(d: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        dtype, dim = d["q"].dtype, int(params["head_dim"])
        if kernel == CACHED:
            cos, sin = d["cos_sin_cache"][d["positions"]].chunk(2, dim=-1)
        else:
            angle = d["positions"][:, None].float() * d["inv_freq"]
            cos, sin = angle.cos(), angle.sin()
        cos = widen(cos, interleave).to(dtype)[:, None]
        sin = widen(sin, interleave).to(dtype)[:, None]
        outs = []
        for x in (d["q"], d["k"]):
            heads = x.view(x.shape[0], -1, dim)
            rot, rest = heads[..., :rotary], heads[..., rotary:]
            out = torch.cat((rot * cos + rotate_half(rot, interleave) * sin, rest), dim=-1)
            outs.append(out.view(x.shape))
        return outs[0], outs[1]
    return call


def flashinfer_op(kernel: str, names: Collection[str]) -> tuple[Any, str]:
    """flashinfer.rope's function of the kernel's name and the installed release's version;
    a release without the function, or whose function takes none of ``names``, is refused,
    naming it."""
    op, version = flashinfer_api(f"flashinfer.rope.{kernel}")
    require_keywords(op, f"flashinfer.rope.{kernel}", version, names)
    return op, version


def _flashinfer_call(kernel: str, params: dict[str, Any]) -> Any:
    """flashinfer.rope's function of the kernel's name, with the tool's keywords."""
    kwargs, tensors = call_kwargs(kernel, params), tensor_args(kernel)
    op, _ = flashinfer_op(kernel, (*tensors, *kwargs))

    def call(d: dict[str, torch.Tensor]) -> Any:
        return op(**{arg: d[key] for arg, key in tensors.items()}, **kwargs)
    return call


def _outputs(raw: Any) -> list[torch.Tensor]:
    return [t.float() for t in raw]


Call = Callable[[dict[str, Any]], Any]


def prepare_with(backend: str, inp: Operands, device: str, torch_call: Callable[[], Call],
                 flashinfer_call: Callable[[], Call],
                 outputs: Callable[[Any], list[torch.Tensor]] = _outputs) -> Prepared:
    """The family's backends: ``torch``, or FlashInfer's call (``auto``, the tool's cuda) on a
    CUDA device; anything else is refused."""
    if backend == "torch":
        return Prepared(fn=torch_call(), outputs=outputs, resolved_backend="torch")
    if backend != "auto":
        raise NotImplementedError(f"backend {backend!r} is not offered for {inp.kernel}")
    if device != "cuda":
        raise NotImplementedError(f"FlashInfer backend {backend!r} needs a CUDA device")
    return Prepared(fn=flashinfer_call(), outputs=outputs, resolved_backend="cuda")


def prepare(backend: str, inp: Operands, device: str) -> Prepared:
    return prepare_with(backend, inp, device, lambda: _torch_call(inp.kernel, inp.params),
                        lambda: _flashinfer_call(inp.kernel, inp.params))
