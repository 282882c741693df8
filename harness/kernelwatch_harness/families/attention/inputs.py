"""Input tensors for one grid point, in two layouts.

``flashinfer_inputs`` builds what FlashInfer's APIs take: q ``[H_qo, D]`` (single decode),
``[L_q, H_qo, D]`` packed by ``qo_indptr`` (prefill), contiguous K/V in NHD or HND, a paged
cache ``[pages, 2, page_size, H_kv, D]`` (NHD; ``[pages, 2, H_kv, page_size, D]`` for HND)
with ``kv_indptr``/``kv_indices``/``kv_last_page_len``, ragged K/V, and MLA's compressed
``ckv``/``kpe`` caches. ``torch_inputs`` builds PyTorch's natural layout (``[B, H, L, D]``
when every request has the same lengths, one tensor per request otherwise).

Lengths come from ``formulas.point_work`` so the harness measures exactly the lengths the
service computes bytes and FLOPs for. Tensors a call reads (``data``) are kept apart from the
index tensors (``meta``) because cold-L2 timing rotates through copies of ``data`` only.
Pages are handed out in a seeded random order, as in a serving cache that has been running a
while, so page-table indirection is exercised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from kernelwatch_harness.families.attention.formulas import point_work
from kernelwatch_harness.family import Operands

DECODE_KERNELS = ("single_decode", "batch_decode", "mla_decode")
PAGED_KERNELS = ("batch_decode", "batch_prefill", "mla_decode")

Request = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""One request's (q ``[L_q, H_qo, D_qk]``, k ``[L_kv, H_kv, D_qk]``, v ``[L_kv, H_kv, D_vo]``)."""


def torch_dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


def sm_scale(kernel: str, params: dict[str, Any]) -> float:
    """Softmax scale 1/sqrt(d_qk); for MLA d_qk is ckv + kpe (the absorbed form)."""
    if kernel == "mla_decode":
        return 1.0 / math.sqrt(int(params["head_dim_ckv"]) + int(params["head_dim_kpe"]))
    return 1.0 / math.sqrt(int(params["head_dim"]))


@dataclass
class Inputs(Operands):
    kernel: str
    params: dict[str, Any]
    layout: str  # "flashinfer" or "torch"
    qo_lens: list[int]
    kv_lens: list[int]
    data: dict[str, Any]  # tensors (or lists of tensors) each call reads
    meta: dict[str, torch.Tensor] = field(default_factory=dict)
    pages: list[list[int]] = field(default_factory=list)  # per-request page ids (paged)
    kept: dict[str, Any] = field(default_factory=dict)

    @property
    def dense(self) -> bool:
        """Torch layout with one batched tensor (all requests the same lengths)."""
        return self.layout == "torch" and isinstance(self.data["q"], torch.Tensor)

    def requests(self) -> list[Request]:
        return requests_of(self)


def _randn(
    shape: tuple[int, ...], dtype: torch.dtype, device: str, gen: torch.Generator
) -> torch.Tensor:
    # Random normal data, never zeros: zeros hide unwritten outputs and can run faster.
    # fp8 has no randn: draw in bfloat16 and convert.
    if dtype in (torch.float16, torch.bfloat16, torch.float32):
        return torch.randn(shape, dtype=dtype, device=device, generator=gen)
    return torch.randn(shape, dtype=torch.bfloat16, device=device, generator=gen).to(dtype)


def _generator(device: str, seed: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def _lengths(kernel: str, params: dict[str, Any]) -> tuple[list[int], list[int]]:
    work = point_work(kernel, params)
    return list(work["qo_lens"]), list(work["kv_lens"])


def indptr(lens: list[int], device: str | torch.device, per_token: int = 1,
           dtype: torch.dtype = torch.int32) -> torch.Tensor:
    """Offsets of consecutive requests: ``[0, l0, l0 + l1, ...]`` times ``per_token`` (cuDNN
    counts elements: tokens x heads x head_dim)."""
    out = [0]
    for n in lens:
        out.append(out[-1] + n * per_token)
    return torch.tensor(out, dtype=dtype, device=device)


def _page_table(
    kv_lens: list[int], page_size: int, device: str, seed: int
) -> tuple[list[list[int]], dict[str, torch.Tensor], int]:
    counts = [max(1, -(-n // page_size)) for n in kv_lens]
    total = sum(counts)
    order = torch.randperm(total, generator=_generator("cpu", seed + 1)).tolist()
    pages, start = [], 0
    for c in counts:
        pages.append(order[start : start + c])
        start += c
    meta = {
        "kv_indptr": indptr(counts, device),
        "kv_indices": torch.tensor(order, dtype=torch.int32, device=device),
        "kv_last_page_len": torch.tensor(
            [n - (c - 1) * page_size for n, c in zip(kv_lens, counts, strict=True)],
            dtype=torch.int32,
            device=device,
        ),
        "kv_lens": torch.tensor(kv_lens, dtype=torch.int32, device=device),
    }
    return pages, meta, total


def flashinfer_inputs(kernel: str, params: dict[str, Any], device: str) -> Inputs:
    qo_lens, kv_lens = _lengths(kernel, params)
    seed = int(params.get("seed", 0))
    gen = _generator(device, seed)
    dt = torch_dtype(params["dtype"])
    kv_dt = torch_dtype(params.get("kv_dtype") or params["dtype"])
    h_qo = int(params["num_qo_heads"])
    if kernel == "mla_decode":
        ckv_d, kpe_d = int(params["head_dim_ckv"]), int(params["head_dim_kpe"])
        ps = int(params["page_size"])
        pages, meta, total = _page_table(kv_lens, ps, device, seed)
        meta["qo_indptr"] = indptr(qo_lens, device)
        data = {
            "q_nope": _randn((len(kv_lens), h_qo, ckv_d), dt, device, gen),
            "q_pe": _randn((len(kv_lens), h_qo, kpe_d), dt, device, gen),
            "ckv": _randn((total, ps, ckv_d), kv_dt, device, gen),
            "kpe": _randn((total, ps, kpe_d), kv_dt, device, gen),
        }
        return Inputs(kernel, params, "flashinfer", qo_lens, kv_lens, data, meta, pages)
    h_kv, d = int(params["num_kv_heads"]), int(params["head_dim"])
    layout = str(params.get("kv_layout", "NHD"))
    if kernel in ("single_decode", "single_prefill"):
        lq, lkv = qo_lens[0], kv_lens[0]
        q_shape: tuple[int, ...] = (h_qo, d) if kernel == "single_decode" else (lq, h_qo, d)
        kv_shape = (lkv, h_kv, d) if layout == "NHD" else (h_kv, lkv, d)
        data = {
            "q": _randn(q_shape, dt, device, gen),
            "k": _randn(kv_shape, kv_dt, device, gen),
            "v": _randn(kv_shape, kv_dt, device, gen),
        }
        return Inputs(kernel, params, "flashinfer", qo_lens, kv_lens, data)
    q = _randn((sum(qo_lens), h_qo, d), dt, device, gen)
    if kernel == "batch_prefill_ragged":
        meta = {"qo_indptr": indptr(qo_lens, device), "kv_indptr": indptr(kv_lens, device)}
        data = {
            "q": q,
            "k": _randn((sum(kv_lens), h_kv, d), kv_dt, device, gen),
            "v": _randn((sum(kv_lens), h_kv, d), kv_dt, device, gen),
        }
        return Inputs(kernel, params, "flashinfer", qo_lens, kv_lens, data, meta)
    ps = int(params["page_size"])
    pages, meta, total = _page_table(kv_lens, ps, device, seed)
    meta["qo_indptr"] = indptr(qo_lens, device)
    shape = (total, 2, ps, h_kv, d) if layout == "NHD" else (total, 2, h_kv, ps, d)
    data = {"q": q, "kv_cache": _randn(shape, kv_dt, device, gen)}
    return Inputs(kernel, params, "flashinfer", qo_lens, kv_lens, data, meta, pages)


def torch_inputs(kernel: str, params: dict[str, Any], device: str) -> Inputs:
    """PyTorch's layout: q ``[B, H_qo, L_q, D]``, k/v ``[B, H_kv, L_kv, D]`` (MLA: k is the
    concatenated ``[ckv | kpe]`` with one head and v a view of its ckv part), batched when all
    requests have the same lengths, else one ``[1, H, L, D]`` tensor per request."""
    qo_lens, kv_lens = _lengths(kernel, params)
    gen = _generator(device, int(params.get("seed", 0)))
    dt = torch_dtype(params["dtype"])
    kv_dt = torch_dtype(params.get("kv_dtype") or params["dtype"])
    h_qo = int(params["num_qo_heads"])
    if kernel == "mla_decode":
        h_kv, d_qk = 1, int(params["head_dim_ckv"]) + int(params["head_dim_kpe"])
    else:
        h_kv, d_qk = int(params["num_kv_heads"]), int(params["head_dim"])
    uniform = len(set(qo_lens)) == 1 and len(set(kv_lens)) == 1
    data: dict[str, Any]
    if uniform:
        b, lq, lkv = len(qo_lens), qo_lens[0], kv_lens[0]
        data = {
            "q": _randn((b, h_qo, lq, d_qk), dt, device, gen),
            "k": _randn((b, h_kv, lkv, d_qk), kv_dt, device, gen),
        }
        if kernel != "mla_decode":
            data["v"] = _randn((b, h_kv, lkv, d_qk), kv_dt, device, gen)
    else:
        data = {"q": [], "k": [], "v": []}
        for lq, lkv in zip(qo_lens, kv_lens, strict=True):
            data["q"].append(_randn((1, h_qo, lq, d_qk), dt, device, gen))
            data["k"].append(_randn((1, h_kv, lkv, d_qk), kv_dt, device, gen))
            if kernel != "mla_decode":
                data["v"].append(_randn((1, h_kv, lkv, d_qk), kv_dt, device, gen))
        if kernel == "mla_decode":
            del data["v"]
    return Inputs(kernel, params, "torch", qo_lens, kv_lens, data)


def torch_v(inp: Inputs, k: torch.Tensor) -> torch.Tensor:
    """MLA's value is the ckv part of the shared latent cache (a view, no copy)."""
    return k[..., : int(inp.params["head_dim_ckv"])]


def requests_of(inp: Inputs, data: dict[str, Any] | None = None) -> list[Request]:
    """Each request's q/k/v as ``[L, H, D]`` views (or gathers, for paged caches)."""
    d = inp.data if data is None else data
    if inp.layout == "torch":
        out: list[Request] = []
        for i in range(len(inp.kv_lens)):
            if inp.dense:
                q, k = d["q"][i], d["k"][i]
                v = d["v"][i] if "v" in d else torch_v(inp, k)
            else:
                q, k = d["q"][i][0], d["k"][i][0]
                v = d["v"][i][0] if "v" in d else torch_v(inp, k)
            out.append((q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)))
        return out
    kernel, layout = inp.kernel, str(inp.params.get("kv_layout", "NHD"))
    if kernel in ("single_decode", "single_prefill"):
        q = d["q"][None] if kernel == "single_decode" else d["q"]
        k, v = d["k"], d["v"]
        if layout == "HND":
            k, v = k.transpose(0, 1), v.transpose(0, 1)
        return [(q, k, v)]
    qo_start = [sum(inp.qo_lens[:i]) for i in range(len(inp.qo_lens))]
    if kernel == "batch_prefill_ragged":
        reqs, kv_start = [], 0
        for s, lq, lkv in zip(qo_start, inp.qo_lens, inp.kv_lens, strict=True):
            reqs.append(
                (
                    d["q"][s : s + lq],
                    d["k"][kv_start : kv_start + lkv],
                    d["v"][kv_start : kv_start + lkv],
                )
            )
            kv_start += lkv
        return reqs
    if kernel == "mla_decode":
        reqs = []
        for i, (pages, lkv) in enumerate(zip(inp.pages, inp.kv_lens, strict=True)):
            idx = torch.tensor(pages, device=d["ckv"].device)
            ckv = d["ckv"][idx].reshape(-1, d["ckv"].shape[-1])[:lkv]
            kpe = d["kpe"][idx].reshape(-1, d["kpe"].shape[-1])[:lkv]
            q = torch.cat([d["q_nope"][i], d["q_pe"][i]], dim=-1)[None]
            reqs.append((q, torch.cat([ckv, kpe], dim=-1)[:, None], ckv[:, None]))
        return reqs
    cache = d["kv_cache"]
    reqs = []
    for s, lq, pages, lkv in zip(qo_start, inp.qo_lens, inp.pages, inp.kv_lens, strict=True):
        blocks = cache[torch.tensor(pages, device=cache.device)]  # [p, 2, ...]
        if layout == "HND":
            blocks = blocks.transpose(2, 3)  # -> [p, 2, page_size, H_kv, D]
        k = blocks[:, 0].reshape(-1, *blocks.shape[-2:])[:lkv]
        v = blocks[:, 1].reshape(-1, *blocks.shape[-2:])[:lkv]
        reqs.append((d["q"][s : s + lq], k, v))
    return reqs
