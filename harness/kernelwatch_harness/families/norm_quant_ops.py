"""The quantising norms' and the fused RMSNorm + SiLU's tensors (``rmsnorm_quant``,
``fused_add_rmsnorm_quant``, ``layernorm_quant``, ``fused_rmsnorm_silu``): seeded inputs, the
FlashInfer and PyTorch calls, the float32 reference. A quantised output is handed to the check
dequantised (times the scale), beside the float32 norm it approximates."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from kernelwatch_harness.families.norm import EPS, FP8, RESIDUAL, SILU
from kernelwatch_harness.families.norm_ops import flashinfer_op, resolved, rms, seeded, uniform
from kernelwatch_harness.family import Operands
from kernelwatch_harness.prepared import Prepared

# Weights, gamma and beta of the quantising norms stay within this bound, so their outputs
# stay below norm.QUANT_PEAK (the tolerance's one FP8 step is taken there).
QUANT_WEIGHT = 0.5
LAYERNORM = "layernorm_quant"


def inputs(kernel: str, params: dict[str, Any], backend: str, device: str) -> Operands:
    """x (and r) standard normal; w (RMSNorm, in x's dtype) or gamma and beta (LayerNorm,
    float32) uniform, from one seed. The FP8 (or SiLU's bfloat16) output is written into one
    buffer; a pristine copy of the data is kept, because the fused kernel writes r."""
    dtype = getattr(torch, str(params["dtype"]))
    gen = seeded()
    shape = (int(params["batch_size"]), int(params["hidden_size"]))
    data: dict[str, Any] = {"x": torch.randn(shape, generator=gen).to(device=device,
                                                                      dtype=dtype)}
    bound = 1.0 if kernel == SILU else QUANT_WEIGHT
    if kernel == LAYERNORM:
        data["gamma"] = uniform(shape[-1:], gen, bound).to(device)
        data["beta"] = uniform(shape[-1:], gen, bound).to(device)
    else:
        data["w"] = uniform(shape[-1:], gen, bound).to(device=device, dtype=dtype)
    if kernel in RESIDUAL:
        data["r"] = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    inp = Operands(kernel, params, data)
    inp.kept["pristine"] = {k: v.clone() for k, v in data.items()}
    out_dtype = dtype if kernel == SILU else getattr(torch, str(params["quant_dtype"]))
    inp.kept["out"] = torch.empty(shape, device=device, dtype=out_dtype)
    return inp


def _fp8_range(params: dict[str, Any]) -> float:
    return FP8[str(params["quant_dtype"])][1]


def reference(inp: Operands) -> list[torch.Tensor]:
    """The float32 norm; a quantising kernel's clamped to the range its FP8 output (times the
    scale) can hold, as FlashInfer's kernels clamp."""
    d, kernel = inp.kept["pristine"], inp.kernel
    x = d["x"].float()
    if kernel == SILU:
        return [F.silu(rms(x) * d["w"].float())]
    if kernel == LAYERNORM:
        y = F.layer_norm(x, x.shape[-1:], d["gamma"].float(), d["beta"].float(), EPS)
    else:
        if kernel in RESIDUAL:
            x = x + d["r"].float()
        y = rms(x) * d["w"].float()
    bound = _fp8_range(inp.params) * float(inp.params["quant_scale"])
    clamped = y.clamp(-bound, bound)
    return [clamped, x] if kernel in RESIDUAL else [clamped]


def _torch_call(inp: Operands) -> Any:
    """What a PyTorch user writes: F.rms_norm (the residual add before it) or F.layer_norm in
    float32 (gamma and beta are float32), divided by the scale, clamped and cast to FP8; or
    F.silu of F.rms_norm."""
    kernel, params = inp.kernel, inp.params
    if kernel == SILU:
        def silu(d: dict[str, torch.Tensor]) -> torch.Tensor:
            return F.silu(F.rms_norm(d["x"], d["x"].shape[-1:], d["w"], EPS))
        return silu
    scale, bound = float(params["quant_scale"]), _fp8_range(params)
    fp8 = getattr(torch, str(params["quant_dtype"]))

    def quantise(y: torch.Tensor) -> torch.Tensor:
        return (y / scale).clamp(-bound, bound).to(fp8)

    if kernel == LAYERNORM:
        def layernorm(d: dict[str, torch.Tensor]) -> torch.Tensor:
            x = d["x"].float()
            return quantise(F.layer_norm(x, x.shape[-1:], d["gamma"], d["beta"], EPS))
        return layernorm
    if kernel in RESIDUAL:
        def fused(d: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            r = d["x"] + d["r"]
            return quantise(F.rms_norm(r, r.shape[-1:], d["w"], EPS)), r
        return fused

    def plain(d: dict[str, torch.Tensor]) -> torch.Tensor:
        return quantise(F.rms_norm(d["x"], d["x"].shape[-1:], d["w"], EPS))
    return plain


# flashinfer.norm's parameters each kernel fills, in its positional order, and the data (or
# kept) tensor passed for each; scale and eps (and SiLU's out) go by keyword, as the tool
# passes them.
POSITIONAL: dict[str, tuple[tuple[str, str], ...]] = {
    "rmsnorm_quant": (("out", "out"), ("input", "x"), ("weight", "w")),
    "fused_add_rmsnorm_quant": (("out", "out"), ("input", "x"), ("residual", "r"),
                                ("weight", "w")),
    LAYERNORM: (("out", "out"), ("input", "x"), ("gemma", "gamma"), ("beta", "beta")),
    SILU: (("input", "x"), ("weight", "w")),
}


def keywords(kernel: str) -> tuple[str, ...]:
    """The keywords the call passes (the signature test checks them against each release)."""
    return ("eps", "out") if kernel == SILU else ("scale", "eps")


def scale_argument(scale: float, device: str) -> Any:
    """The quantisation scale as this release takes it: a float32 tensor of one element on
    the device where the library normalises tensors (0.6.10 and later: a float there is
    deprecated and copied to the device on every call), the float before that."""
    import flashinfer.norm as fn

    if hasattr(fn, "_normalize_scale_tensor"):
        return torch.tensor([scale], dtype=torch.float32, device=device)
    return scale


def _flashinfer_call(inp: Operands, device: str) -> Any:
    kernel = inp.kernel
    op = flashinfer_op(kernel, kernel)
    out = inp.kept["out"]
    names = [source for _, source in POSITIONAL[kernel]]

    def tensors(d: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [out if n == "out" else d[n] for n in names]

    if kernel == SILU:
        def silu(d: dict[str, torch.Tensor]) -> torch.Tensor:
            return op(*tensors(d), eps=EPS, out=out)  # type: ignore[no-any-return]
        return silu
    scale = scale_argument(float(inp.params["quant_scale"]), device)

    def quant(d: dict[str, torch.Tensor]) -> Any:
        op(*tensors(d), scale=scale, eps=EPS)  # writes out (and r), returns nothing
        return (out, d["r"]) if kernel in RESIDUAL else out
    return quant


def _resolved(kernel: str, device: str) -> str:
    """The kernel FlashInfer's dispatch ran: its CuTe-DSL one where this release has one for
    the function (``<name>_cute``) and the node takes it, else its CUDA kernel."""
    import flashinfer.norm as fn

    return resolved(device) if hasattr(fn, f"{kernel}_cute") else "cuda"


def prepare(backend: str, inp: Operands, device: str) -> Prepared:
    if inp.kernel == SILU:
        def outputs(raw: Any) -> list[torch.Tensor]:
            return [raw.float()]
    else:
        scale = float(inp.params["quant_scale"])

        def outputs(raw: Any) -> list[torch.Tensor]:
            out, *rest = raw if isinstance(raw, tuple) else (raw,)
            return [out.float() * scale, *(t.float() for t in rest)]

    if backend == "torch":
        return Prepared(fn=_torch_call(inp), outputs=outputs, resolved_backend="torch")
    return Prepared(fn=_flashinfer_call(inp, device), outputs=outputs,
                    resolved_backend=_resolved(inp.kernel, device))
