"""The norm family's tensors: seeded inputs, the FlashInfer and PyTorch calls, the float32
reference (kernelwatch_harness.families.norm declares the family)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from kernelwatch_harness.families.norm import EPS, FUSED, GEMMA
from kernelwatch_harness.family import Operands
from kernelwatch_harness.prepared import Prepared

SEED = 0


def _shape(params: dict[str, Any]) -> tuple[int, ...]:
    heads = int(params.get("num_heads", 0))
    rows = (int(params["batch_size"]), heads) if heads else (int(params["batch_size"]),)
    return (*rows, int(params["hidden_size"]))


def inputs(kernel: str, params: dict[str, Any], backend: str, device: str) -> Operands:
    """x (and r) standard normal, w uniform in [-1, 1), from one seed; a pristine copy of the
    data is kept for the reference, because the fused kernels write their inputs."""
    dtype = getattr(torch, str(params["dtype"]))
    gen = torch.Generator(device="cpu").manual_seed(SEED)
    shape = _shape(params)
    data: dict[str, Any] = {
        "x": torch.randn(shape, generator=gen).to(device=device, dtype=dtype),
        "w": (torch.rand(shape[-1], generator=gen) * 2 - 1).to(device=device, dtype=dtype),
    }
    if kernel in FUSED:
        data["r"] = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    inp = Operands(kernel, params, data)
    inp.kept["pristine"] = {k: v.clone() for k, v in data.items()}
    return inp


def reference(inp: Operands) -> list[torch.Tensor]:
    d = inp.kept["pristine"]
    x, w = d["x"].float(), d["w"].float()
    if inp.kernel in GEMMA:
        w = 1 + w
    if inp.kernel in FUSED:
        r = x + d["r"].float()
        return [_rms(r) * w, r]
    return [_rms(x) * w]


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + EPS)


def _torch_call(kernel: str) -> Any:
    """What a PyTorch user writes: F.rms_norm, the residual add before it, Gemma's offset."""
    gemma = kernel in GEMMA

    def weight(w: torch.Tensor) -> torch.Tensor:
        return 1 + w if gemma else w

    if kernel in FUSED:
        def fused(d: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            r = d["x"] + d["r"]
            return F.rms_norm(r, (r.shape[-1],), weight(d["w"]), EPS), r
        return fused

    def plain(d: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.rms_norm(d["x"], (d["x"].shape[-1],), weight(d["w"]), EPS)
    return plain


def _flashinfer_call(kernel: str) -> Any:
    """flashinfer.norm's function of the same name; the fused forms write x and r in place
    and return nothing, so the call hands those back."""
    import flashinfer.norm as fn

    op = getattr(fn, kernel, None)
    if op is None:
        raise NotImplementedError(f"this FlashInfer has no flashinfer.norm.{kernel}")
    if kernel in FUSED:
        def fused(d: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            op(d["x"], d["r"], d["w"], eps=EPS)
            return d["x"], d["r"]
        return fused

    def plain(d: dict[str, torch.Tensor]) -> torch.Tensor:
        return op(d["x"], d["w"], eps=EPS)
    return plain


def resolved(device: str) -> str:
    """Which of FlashInfer's norm kernels its dispatch picks on this GPU: its CuTe-DSL kernels
    where the release has them and they support the architecture, else its CUDA kernel."""
    try:
        from flashinfer import norm as fn

        use_cuda = getattr(fn, "_use_cuda_norm", None)
        if use_cuda is not None and not use_cuda(torch.device(device)):
            return "cute-dsl"
    except Exception:  # an older release: one CUDA kernel
        pass
    return "cuda"


def _outputs(raw: Any) -> list[torch.Tensor]:
    return [t.float() for t in raw] if isinstance(raw, tuple) else [raw.float()]


def prepare(backend: str, inp: Operands, device: str) -> Prepared:
    if backend == "torch":
        return Prepared(fn=_torch_call(inp.kernel), outputs=_outputs, resolved_backend="torch")
    if backend != "auto":
        raise NotImplementedError(f"backend {backend!r} is not offered for {inp.kernel}")
    if device != "cuda":
        raise NotImplementedError(f"FlashInfer backend {backend!r} needs a CUDA device")
    return Prepared(fn=_flashinfer_call(inp.kernel), outputs=_outputs,
                    resolved_backend=resolved(device))
