"""The mamba family's tensors: seeded inputs, the FlashInfer and PyTorch calls, the float32
reference (kernelwatch_harness.families.mamba declares the family).

``data`` holds the state cache (written by every call, each timed copy its own) and the
per-head weights as their ``[nheads]`` (``dt``: ``[batch, (tokens,) nheads]``) bases: the call
views them with the zero strides FlashInfer's kernel checks (a copy of a zero-stride view
would be made dense).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from kernelwatch_harness.families.mamba import KERNEL, TMA_ALGORITHMS, cache_slots
from kernelwatch_harness.family import Operands, flashinfer_api, require_keywords
from kernelwatch_harness.prepared import Prepared

SEED = 0
API = "flashinfer.mamba.selective_state_update"


def inputs(kernel: str, params: dict[str, Any], backend: str, device: str) -> Operands:
    gen = torch.Generator(device="cpu").manual_seed(SEED)
    b, h, dim, n, g = (int(params[k]) for k in ("batch_size", "nheads", "dim", "dstate",
                                                  "ngroups"))
    steps = int(params["cache_steps"])
    tok = (b, steps) if steps else (b,)  # MTP inputs have a tokens dimension
    dtype = getattr(torch, str(params["dtype"]))
    weight = getattr(torch, str(params["weight_dtype"]))

    def put(t: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
        return t.to(device=device, dtype=dt)

    slots = cache_slots(b)
    data: dict[str, Any] = {
        "state": put(torch.randn((slots, h, dim, n), generator=gen),
                     getattr(torch, str(params["state_dtype"]))),
        "x": put(torch.randn((*tok, h, dim), generator=gen), dtype),
        # dt + dt_bias in (0, 0.6): a decay exp(A dt) in (0.3, 1), the state bounded
        "dt": put(torch.rand((*tok, h), generator=gen) * 0.5, weight),
        "dt_bias": put(torch.rand(h, generator=gen) * 0.1, weight),
        "A": put(-torch.rand(h, generator=gen) - 1.0, torch.float32),
        "B": put(torch.randn((*tok, g, n), generator=gen) * n ** -0.5, dtype),
        "C": put(torch.randn((*tok, g, n), generator=gen) * n ** -0.5, dtype),
        "D": put(torch.randn(h, generator=gen), weight),
    }
    if params["has_z"]:
        data["z"] = put(torch.randn((*tok, h, dim), generator=gen), dtype)
    inp = Operands(kernel, params, data)
    index = torch.randperm(slots, generator=gen)[:b]
    inp.kept["slots"] = index.to(device)
    inp.kept["pristine"] = data["state"][index.to(device)].clone()
    return inp


def broadcast(d: dict[str, Any], dim: int, dstate: int) -> dict[str, torch.Tensor]:
    """dt, A, D and dt_bias as the kernel reads them: one value a head, broadcast over dim
    (and dstate) by zero strides."""
    dt = d["dt"]
    return {
        "dt": dt.as_strided((*dt.shape, dim), (*dt.stride(), 0)),
        "A": d["A"].as_strided((d["A"].shape[0], dim, dstate), (1, 0, 0)),
        "D": d["D"].as_strided((d["D"].shape[0], dim), (1, 0)),
        "dt_bias": d["dt_bias"].as_strided((d["dt_bias"].shape[0], dim), (1, 0)),
    }


def ssm_update(d: dict[str, Any], state: torch.Tensor, params: dict[str, Any],
               dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The selective state update in ``dtype``, token by token: the requests' states
    ``[batch, nheads, dim, dstate]``; returns the output (``x``'s shape) and the new states."""
    steps = int(params["cache_steps"])
    per_group = int(params["nheads"]) // int(params["ngroups"])

    def tokens(name: str) -> torch.Tensor:  # [batch, tokens, ...]
        t = d[name].to(dtype)
        return t if steps else t.unsqueeze(1)

    x, B, C = tokens("x"), tokens("B"), tokens("C")
    z = tokens("z") if params["has_z"] else None
    dt = tokens("dt") + d["dt_bias"].to(dtype)
    if params["dt_softplus"]:
        dt = F.softplus(dt)
    A, D = d["A"].to(dtype), d["D"].to(dtype)
    state = state.to(dtype)
    outs = []
    for t in range(x.shape[1]):
        step = dt[:, t, :, None, None]  # [batch, nheads, 1, 1]
        bt = B[:, t].repeat_interleave(per_group, dim=1)[:, :, None, :]
        ct = C[:, t].repeat_interleave(per_group, dim=1)[:, :, None, :]
        xt = x[:, t]
        state = state * torch.exp(A[None, :, None, None] * step) + step * bt * xt[..., None]
        out = (state * ct).sum(-1) + D[None, :, None] * xt
        if z is not None:
            out = out * F.silu(z[:, t])
        outs.append(out)
    out = torch.stack(outs, dim=1)
    return (out if steps else out.squeeze(1)), state


def reference(inp: Operands) -> list[torch.Tensor]:
    """The output and the requests' new states, in float32."""
    out, state = ssm_update(inp.data, inp.kept["pristine"], inp.params, torch.float32)
    return [out, state]


def _torch_call(inp: Operands) -> Any:
    """The update in PyTorch in the input dtype, gathering and scattering the cache's slots."""
    params, slots = inp.params, inp.kept["slots"]
    dtype = getattr(torch, str(params["dtype"]))

    def call(d: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        out, state = ssm_update(d, d["state"][slots], params, dtype)
        d["state"][slots] = state.to(d["state"].dtype)
        return out, d["state"]
    return call


def flashinfer_kwargs(params: dict[str, Any], d: dict[str, Any],
                      slots: torch.Tensor) -> dict[str, Any]:
    """selective_state_update's arguments for one call, as the tool passes them (every one by
    name; tests check them against each release's signature)."""
    return {"state": d["state"], "x": d["x"], "B": d["B"], "C": d["C"],
            **broadcast(d, int(params["dim"]), int(params["dstate"])),
            "z": d.get("z"), "dt_softplus": bool(params["dt_softplus"]),
            "state_batch_indices": slots, "cache_steps": int(params["cache_steps"]),
            "algorithm": str(params["algorithm"])}


def _flashinfer_call(inp: Operands, device: str) -> Any:
    params = inp.params
    major, _ = torch.cuda.get_device_capability(torch.device(device))
    if params["algorithm"] in TMA_ALGORITHMS and major < 9:
        raise NotImplementedError(f"algorithm {params['algorithm']!r} of FlashInfer's "
                                  f"{KERNEL} uses TMA: SM90 and newer")
    op, version = flashinfer_api(API)
    slots = inp.kept["slots"]
    require_keywords(op, API, version, flashinfer_kwargs(params, inp.data, slots))

    def call(d: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return op(**flashinfer_kwargs(params, d, slots)), d["state"]
    return call


def prepare(backend: str, inp: Operands, device: str) -> Prepared:
    slots = inp.kept["slots"]

    def outputs(raw: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        # the requests' states gathered here, outside the timed call
        return [raw[0].float(), raw[1][slots].float()]

    if backend == "torch":
        return Prepared(fn=_torch_call(inp), outputs=outputs, resolved_backend="torch")
    if backend != "auto":
        raise NotImplementedError(f"backend {backend!r} is not offered for {inp.kernel}")
    if device != "cuda":
        raise NotImplementedError(f"FlashInfer backend {backend!r} needs a CUDA device")
    return Prepared(fn=_flashinfer_call(inp, device), outputs=outputs,
                    resolved_backend="flashinfer")
