"""The rope family's FP8 tensors: seeded inputs, the FlashInfer and PyTorch calls, the float32
reference (kernelwatch_harness.families.rope_fp8 declares the kernels; the rotation is the
attention family's, ``families.attention.reference``)."""

from __future__ import annotations

from typing import Any

import torch

from kernelwatch_harness.families.attention.reference import (
    rope_angles,
    rope_frequencies,
    rope_rotate,
)
from kernelwatch_harness.families.rope_fp8 import (
    APPEND,
    APPEND_TENSORS,
    MLA,
    PARTIAL_NOPE_SINCE,
    TENSORS,
    kv_heads,
    partial_nope_refusal,
)
from kernelwatch_harness.families.rope_ops import (
    CACHE_THETA,
    SEED,
    Call,
    flashinfer_op,
    prepare_with,
    rotate_half,
    widen,
)
from kernelwatch_harness.family import Operands, release
from kernelwatch_harness.prepared import Prepared


def _dims(params: dict[str, Any]) -> tuple[int, int]:
    return int(params["rope_dim"]), int(params["no_rope_dim"])


def inputs(kernel: str, params: dict[str, Any], backend: str, device: str) -> Operands:
    """Both parts of q and k (and v) standard normal from one seed, in the input dtype, as the
    tool shapes them (no non-rotated tensors when ``no_rope_dim`` is 0); the float32 table of
    ``seq_len`` rows and int32 positions 0 to ``seq_len - 1`` per request. The append's cache
    starts zeroed, ``batch_size`` requests of whole pages in order; ``kept["slot"]`` is the
    (page, entry) each token is written to. Every backend reads the same tensors."""
    dtype = getattr(torch, str(params["dtype"]))
    batch, seq = int(params["batch_size"]), int(params["seq_len"])
    tokens, (rope, nope) = batch * seq, _dims(params)
    q_heads, k_heads = int(params["num_qo_heads"]), kv_heads(kernel, params)
    gen = torch.Generator(device="cpu").manual_seed(SEED)

    def draw(heads: int | None, dim: int) -> torch.Tensor:
        shape = (tokens, dim) if heads is None else (tokens, heads, dim)
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    shared_k = None if kernel == MLA else k_heads  # MLA's k has no head axis
    data: dict[str, Any] = {"q_rope": draw(q_heads, rope), "k_rope": draw(shared_k, rope)}
    if nope:
        data.update(q_nope=draw(q_heads, nope), k_nope=draw(shared_k, nope))
    positions = torch.arange(seq, dtype=torch.int32, device=device).repeat(batch)
    freq = rope_frequencies(rope, theta=CACHE_THETA, device=device)
    data["cos_sin_cache"] = torch.cat(rope_angles(torch.arange(seq, device=device), freq),
                                      dim=-1)
    data["pos_ids"] = positions
    inp = Operands(kernel, params, data)
    if kernel == APPEND:
        page = int(params["page_size"])
        per_request = -(-seq // page)
        pages, dim = batch * per_request, rope + nope
        data["v"] = draw(k_heads, dim)
        layout = ((pages, page, k_heads, dim) if params["kv_layout"] == "NHD"
                  else (pages, k_heads, page, dim))
        quant = getattr(torch, str(params["quant_dtype"]))
        for name in ("k_cache", "v_cache"):
            data[name] = torch.zeros(layout, dtype=quant, device=device)
        data["kv_indices"] = torch.arange(pages, dtype=torch.int32, device=device)
        data["kv_indptr"] = torch.arange(0, pages + 1, per_request, dtype=torch.int32,
                                         device=device)
        data["batch_indices"] = torch.arange(batch, dtype=torch.int32,
                                             device=device).repeat_interleave(seq)
        data["positions"] = positions.clone()
        first_page = data["kv_indptr"][data["batch_indices"].long()].long()
        inp.kept["slot"] = (data["kv_indices"][first_page + positions // page].long(),
                            (positions % page).long())
    return inp


def _cached(cache: torch.Tensor, slot: tuple[torch.Tensor, torch.Tensor],
            layout: str) -> torch.Tensor:
    """``[tokens, heads, dim]``: each token's entry of the paged cache."""
    page, entry = slot
    return cache[page, entry] if layout == "NHD" else cache[page, :, entry]


def _split(x: torch.Tensor, rope: int, mla_k: bool) -> list[torch.Tensor]:
    """A head's rotated and non-rotated parts (MLA's k without its head axis)."""
    parts = [x[..., :rope], x[..., rope:]]
    return [p.squeeze(1) for p in parts] if mla_k else parts


def reference(inp: Operands) -> list[torch.Tensor]:
    """Float32: q and k rotated on their first ``rope_dim`` dimensions by the table's cos and
    sin at ``pos_ids`` (the rest passed through), in the outputs' order: q and k's rotated
    then non-rotated parts; for the append q's two parts, then each token's k and v."""
    d, (rope, nope) = inp.data, _dims(inp.params)
    cos, sin = d["cos_sin_cache"][d["pos_ids"].long()].float().chunk(2, dim=-1)
    interleave = bool(inp.params["interleave"])

    def head(name: str) -> torch.Tensor:
        parts = [d[f"{name}_rope"]] + ([d[f"{name}_nope"]] if nope else [])
        x = torch.cat([p.float() for p in parts], dim=-1)
        x = x if x.dim() == 3 else x[:, None]  # MLA's shared k head
        return rope_rotate(x, cos[:, None], sin[:, None], interleave)

    q, k = head("q"), head("k")
    if inp.kernel == APPEND:
        return [*_split(q, rope, False), k, d["v"].float()]
    q_rope, q_nope = _split(q, rope, False)
    k_rope, k_nope = _split(k, rope, inp.kernel == MLA)
    return [q_rope, k_rope, q_nope, k_nope]


def _outputs(inp: Operands) -> Any:
    """A call's result (FlashInfer's or PyTorch's, the same form) dequantised, in
    ``reference``'s order: the append's cache read back at each token's slot."""
    def outputs(raw: Any) -> list[torch.Tensor]:
        if inp.kernel != APPEND:
            return [t.float() for t in raw]
        q_rope, q_nope, k_cache, v_cache = raw
        layout = str(inp.params["kv_layout"])
        return [q_rope.float(), q_nope.float(),
                *(_cached(c, inp.kept["slot"], layout).float() for c in (k_cache, v_cache))]
    return outputs


def _empty_nope(x: torch.Tensor, quant: torch.dtype) -> torch.Tensor:
    """The non-rotated output when there is none: zero-wide, as FlashInfer returns it."""
    return torch.empty(*x.shape[:-1], 0, dtype=quant, device=x.device)


def _torch_call(inp: Operands) -> Call:
    """What a PyTorch user writes: the table's rows at the positions, ``x * cos +
    rotate_half(x) * sin`` in float32, ``.to(float8)``; the append's cache written by index
    (through a byte view: PyTorch indexes FP8 tensors as bytes on every device)."""
    params, kernel = inp.params, inp.kernel
    interleave = bool(params["interleave"])
    quant = getattr(torch, str(params["quant_dtype"]))
    slot, layout = inp.kept.get("slot"), str(params.get("kv_layout", "NHD"))

    def call(d: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        cos, sin = d["cos_sin_cache"][d["pos_ids"].long()].chunk(2, dim=-1)
        cos, sin = widen(cos, interleave), widen(sin, interleave)

        def turn(x: torch.Tensor) -> torch.Tensor:
            c, s = (cos, sin) if x.dim() == 2 else (cos[:, None], sin[:, None])
            x = x.float()
            return x * c + rotate_half(x, interleave) * s

        q_rope, k_rope = turn(d["q_rope"]), turn(d["k_rope"])
        q_nope = d["q_nope"].float() if "q_nope" in d else None
        k_nope = d["k_nope"].float() if "k_nope" in d else None
        if kernel != APPEND:
            return (q_rope.to(quant), k_rope.to(quant),
                    *(x.to(quant) if x is not None else _empty_nope(r, quant)
                      for x, r in ((q_nope, q_rope), (k_nope, k_rope))))
        assert slot is not None
        k = k_rope if k_nope is None else torch.cat((k_rope, k_nope), dim=-1)
        for cache, x in ((d["k_cache"], k), (d["v_cache"], d["v"].float())):
            bytes_ = cache.view(torch.uint8)
            page, entry = slot
            value = x.to(quant).view(torch.uint8)
            if layout == "NHD":
                bytes_[page, entry] = value
            else:
                bytes_[page, :, entry] = value
        q_out = q_nope.to(quant) if q_nope is not None else _empty_nope(q_rope, quant)
        return q_rope.to(quant), q_out, d["k_cache"], d["v_cache"]
    return call


def keywords(kernel: str, params: dict[str, Any]) -> dict[str, Any]:
    """The keywords FlashInfer's function is called with, as the tool calls it (no PDL, its
    default; quantisation scales 1, the library's default)."""
    kwargs: dict[str, Any] = {"is_neox": not params["interleave"],
                              "quantize_dtype": getattr(torch, str(params["quant_dtype"])),
                              "enable_pdl": False}
    if kernel == APPEND:
        kwargs.update(page_size=int(params["page_size"]), kv_layout=str(params["kv_layout"]))
    return kwargs


def _flashinfer_call(inp: Operands) -> Call:
    """flashinfer.rope's function of the kernel's name, tensors by position then keywords, as
    the tool calls it; a release whose kernel writes past a narrow non-rotated part is
    refused, naming why."""
    kernel, params = inp.kernel, inp.params
    kwargs = keywords(kernel, params)
    op, version = flashinfer_op(kernel, kwargs)
    why = partial_nope_refusal(kernel, params)
    if why is not None and release(version) < release(PARTIAL_NOPE_SINCE[kernel]):
        raise NotImplementedError(f"FlashInfer {version}: {why}")
    names = APPEND_TENSORS if kernel == APPEND else TENSORS

    def call(d: dict[str, Any]) -> Any:
        args = [(d["k_cache"], d["v_cache"]) if n == "paged_kv_cache" else d.get(n)
                for n in names]
        out = op(*args, **kwargs)
        return (*out, d["k_cache"], d["v_cache"]) if kernel == APPEND else out
    return call


def prepare(backend: str, inp: Operands, device: str) -> Prepared:
    return prepare_with(backend, inp, device, lambda: _torch_call(inp),
                        lambda: _flashinfer_call(inp), _outputs(inp))
