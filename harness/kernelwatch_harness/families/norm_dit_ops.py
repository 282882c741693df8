"""The diffusion transformers' fused norms' tensors (``fused_dit_layernorm``,
``fused_qk_rmsnorm_rope``): seeded inputs, the FlashInfer and PyTorch calls, the float32
reference. Both take bfloat16 only and write fresh outputs (their inputs are left as they
were), so the reference reads the data itself."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from kernelwatch_harness.families.attention.reference import rope_frequencies, rope_rotate
from kernelwatch_harness.families.norm import DIT, DIT_HIDDEN, DIT_MODES, EPS, QK_ROPE
from kernelwatch_harness.families.norm_ops import flashinfer_op, rms, seeded, uniform
from kernelwatch_harness.family import Operands
from kernelwatch_harness.prepared import Prepared

# The tool's slices of the [.., 6, hidden] embedding (WAN's temb.chunk(6, dim=2)) and of the
# [1, 6, hidden] float32 table whose rows are their biases: the gate of each gated mode, the
# scale and shift of each modulated one.
GATE = {"gate_residual_gamma_beta": 2, "gate_residual_scale_shift": 5}
SCALE_SHIFT = {"gate_residual_scale_shift": (1, 0), "residual_scale_shift": (4, 3)}
ROPE_BASE = 10000.0  # the tool's base (FlashInfer's default)


# ------------------------------------------------------------------ fused_dit_layernorm

def _dit_inputs(params: dict[str, Any], device: str) -> dict[str, torch.Tensor]:
    """x and r standard normal; the embedding uniform in [-0.5, 0.5) and its bias table in
    [-0.25, 0.25) (so the modulated norm stays below 16); gamma and beta in [-1, 1)."""
    gen = seeded()
    rows = (int(params["batch_size"]), int(params["seq_len"]))
    bf16 = torch.bfloat16
    return {
        "x": torch.randn((*rows, DIT_HIDDEN), generator=gen).to(device=device, dtype=bf16),
        "r": torch.randn((*rows, DIT_HIDDEN), generator=gen).to(device=device, dtype=bf16),
        "temb": uniform((*rows, 6, DIT_HIDDEN), gen, 0.5).to(device=device, dtype=bf16),
        "table": uniform((1, 6, DIT_HIDDEN), gen, 0.25).to(device),
        "gamma": uniform((DIT_HIDDEN,), gen, 1.0).to(device),
        "beta": uniform((DIT_HIDDEN,), gen, 1.0).to(device),
    }


def _slot(d: dict[str, torch.Tensor], i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Slice ``i`` of the embedding (``[batch, rows, hidden]`` with the row stride of six
    slices, as FlashInfer requires) and its float32 bias ``[1, hidden]``."""
    return d["temb"][:, :, i], d["table"][:, i]


def _dit_math(d: dict[str, torch.Tensor], mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual and the norm in float32, as the tool's eager form computes them."""
    x, r = d["x"].float(), d["r"].float()
    if mode in GATE:
        gate, bias = _slot(d, GATE[mode])
        r = r + x * (gate.float() + bias)
    else:
        r = r + x
    if mode in SCALE_SHIFT:
        (scale, scale_bias), (shift, shift_bias) = (_slot(d, i) for i in SCALE_SHIFT[mode])
        n = F.layer_norm(r, r.shape[-1:], eps=EPS)
        return r, n * (1 + scale.float() + scale_bias) + (shift.float() + shift_bias)
    return r, F.layer_norm(r, r.shape[-1:], d["gamma"], d["beta"], EPS)


def dit_call(mode: str, d: dict[str, torch.Tensor]) -> tuple[tuple[torch.Tensor, ...],
                                                             dict[str, Any]]:
    """flashinfer.norm's positional tensors and keywords for the mode (the tool's call)."""
    kwargs: dict[str, Any] = {"epsilon": EPS}
    if mode == "gate_residual_gamma_beta":
        gate, kwargs["gate_bias"] = _slot(d, GATE[mode])
        return (d["x"], d["r"], gate, d["gamma"], d["beta"]), kwargs
    (scale, kwargs["scale_bias"]), (shift, kwargs["shift_bias"]) = (
        _slot(d, i) for i in SCALE_SHIFT[mode])
    if mode == "gate_residual_scale_shift":
        gate, kwargs["gate_bias"] = _slot(d, GATE[mode])
        return (d["x"], d["r"], gate, scale, shift), kwargs
    kwargs["residual"] = d["r"]
    return (d["x"], scale, shift), kwargs


def _dit_prepare(backend: str, inp: Operands) -> Prepared:
    mode = str(inp.params["dit_mode"])
    if backend == "torch":
        def eager(d: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
            return tuple(t.to(torch.bfloat16) for t in _dit_math(d, mode))
        return Prepared(fn=eager, outputs=_floats, resolved_backend="torch")
    op = flashinfer_op(DIT_MODES[mode], DIT)

    def fused(d: dict[str, torch.Tensor]) -> Any:
        args, kwargs = dit_call(mode, d)
        return op(*args, **kwargs)  # (residual_out, norm_out)
    return Prepared(fn=fused, outputs=_floats, resolved_backend="cuda")


# ---------------------------------------------------------------- fused_qk_rmsnorm_rope

def qk_dims(params: dict[str, Any]) -> tuple[int, int, int, int]:
    """head_dim and its frame, height and width channels, as the tool splits them."""
    head_dim = int(params["hidden_size"]) // int(params["num_heads"])
    spatial = 2 * (head_dim // 6)
    return head_dim, head_dim - 2 * spatial, spatial, spatial


def qk_angles(params: dict[str, Any], device: str) -> torch.Tensor:
    """Float32 ``[ppf * pph * ppw, head_dim / 2]``: each token's angle for each interleaved
    pair, the frame's pairs first, then the height's and the width's, each section turning by
    its own position at ``base^(-2i / section)``."""
    ppf, pph, ppw = (int(params[n]) for n in ("ppf", "pph", "ppw"))
    token = torch.arange(ppf * pph * ppw, device=device)
    positions = (token // (pph * ppw), token // ppw % pph, token % ppw)
    _, *sections = qk_dims(params)
    return torch.cat([p.float()[:, None] * rope_frequencies(dim, ROPE_BASE, device=device)
                      for p, dim in zip(positions, sections, strict=True)], dim=-1)


def _qk_inputs(params: dict[str, Any], device: str) -> dict[str, torch.Tensor]:
    """qkv standard normal, the q and k weights uniform in [-1, 1)."""
    gen = seeded()
    hidden = int(params["hidden_size"])
    tokens = (int(params["batch_size"]), int(params["ppf"]) * int(params["pph"])
              * int(params["ppw"]))
    bf16 = torch.bfloat16
    return {
        "qkv": torch.randn((*tokens, 3 * hidden), generator=gen).to(device=device, dtype=bf16),
        "q_weight": uniform((hidden,), gen, 1.0).to(device=device, dtype=bf16),
        "k_weight": uniform((hidden,), gen, 1.0).to(device=device, dtype=bf16),
    }


def _qk_math(d: dict[str, torch.Tensor], params: dict[str, Any], angles: torch.Tensor,
             norm: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q and k normalised across all heads by ``norm`` then rotated (in float32), and v, each
    ``[batch, tokens, heads, head_dim]``."""
    heads, (head_dim, *_) = int(params["num_heads"]), qk_dims(params)
    q, k, v = d["qkv"].chunk(3, dim=-1)
    cos, sin = angles.cos()[:, None], angles.sin()[:, None]

    def turn(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return rope_rotate(norm(x, w).unflatten(-1, (heads, head_dim)), cos, sin,
                           interleave=True)
    return (turn(q, d["q_weight"]), turn(k, d["k_weight"]),
            v.unflatten(-1, (heads, head_dim)))


def qk_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """flashinfer.norm.fused_qk_rmsnorm_rope's keywords, as the tool passes them."""
    heads = int(params["num_heads"])
    head_dim, frame, height, width = qk_dims(params)
    return {"ppf": int(params["ppf"]), "pph": int(params["pph"]), "ppw": int(params["ppw"]),
            "num_frame_channels": frame, "num_height_channels": height,
            "num_width_channels": width, "num_heads_q": heads, "num_heads_k": heads,
            "num_heads_v": heads, "head_dim": head_dim, "eps": EPS, "base": ROPE_BASE,
            "interleave": True, "is_qk_norm": True}


def _qk_prepare(backend: str, inp: Operands, device: str) -> Prepared:
    params, angles = inp.params, inp.kept["angles"]
    if backend == "torch":
        def rms_norm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return F.rms_norm(x, x.shape[-1:], w, EPS)

        def eager(d: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
            q, k, v = _qk_math(d, params, angles, rms_norm)
            return q.to(torch.bfloat16), k.to(torch.bfloat16), v.contiguous()
        return Prepared(fn=eager, outputs=_floats, resolved_backend="torch")
    op = flashinfer_op(QK_ROPE, QK_ROPE)
    kwargs = qk_kwargs(params)

    def fused(d: dict[str, torch.Tensor]) -> Any:
        return op(d["qkv"], d["q_weight"], d["k_weight"], **kwargs)  # (q, k, v)
    return Prepared(fn=fused, outputs=_floats, resolved_backend="cuda")


# ------------------------------------------------------------------------------ shared

def _floats(raw: Any) -> list[torch.Tensor]:
    return [t.float() for t in raw]


def inputs(kernel: str, params: dict[str, Any], backend: str, device: str) -> Operands:
    if kernel == DIT:
        return Operands(kernel, params, _dit_inputs(params, device))
    inp = Operands(kernel, params, _qk_inputs(params, device))
    inp.kept["angles"] = qk_angles(params, device)
    return inp


def reference(inp: Operands) -> list[torch.Tensor]:
    d = inp.data  # neither kernel writes its inputs
    if inp.kernel == DIT:
        return list(_dit_math(d, str(inp.params["dit_mode"])))

    def rms_fp32(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return rms(x.float()) * w.float()
    q, k, v = _qk_math(d, inp.params, inp.kept["angles"], rms_fp32)
    return [q, k, v.float()]


def prepare(backend: str, inp: Operands, device: str) -> Prepared:
    if inp.kernel == DIT:
        return _dit_prepare(backend, inp)
    return _qk_prepare(backend, inp, device)
