"""The norm family's tensors: seeded inputs, the FlashInfer and PyTorch calls, the float32
reference (kernelwatch_harness.families.norm declares the family). The quantising and SiLU
norms live in ``norm_quant_ops``, the DiT and fused QK ones in ``norm_dit_ops``; this module
holds what they share and sends each kernel to its module."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F

from kernelwatch_harness.families.norm import (
    DIT,
    EPS,
    FP4,
    FUSED,
    GEMMA,
    QK_ROPE,
    QUANT,
    SILU,
    SINCE,
    fp4_refusal,
)
from kernelwatch_harness.family import Operands, flashinfer_api
from kernelwatch_harness.prepared import Prepared

SEED = 0


def _module(kernel: str) -> ModuleType | None:
    """The helper module holding a kernel's tensors (None: this one)."""
    if kernel in (*QUANT, SILU):
        return importlib.import_module("kernelwatch_harness.families.norm_quant_ops")
    if kernel in (DIT, QK_ROPE):
        return importlib.import_module("kernelwatch_harness.families.norm_dit_ops")
    return None


def seeded() -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(SEED)


def uniform(shape: tuple[int, ...], gen: torch.Generator, bound: float) -> torch.Tensor:
    """float32 values uniform in [-bound, bound)."""
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound


def flashinfer_op(name: str, kernel: str) -> Any:
    """flashinfer.norm's function ``name``, or the reason this release has none."""
    since = f" (FlashInfer {SINCE[kernel]} and later have it)" if kernel in SINCE else ""
    return flashinfer_api(f"flashinfer.norm.{name}", since)[0]


def _shape(params: dict[str, Any]) -> tuple[int, ...]:
    heads = int(params.get("num_heads", 0))
    rows = (int(params["batch_size"]), heads) if heads else (int(params["batch_size"]),)
    return (*rows, int(params["hidden_size"]))


def inputs(kernel: str, params: dict[str, Any], backend: str, device: str) -> Operands:
    """x (and r) standard normal, w uniform in [-1, 1), from one seed; a pristine copy of the
    data is kept for the reference, because the fused kernels write their inputs."""
    if kernel in FP4:
        return Operands(kernel, params, {})  # declared: prepare refuses it
    if (helper := _module(kernel)) is not None:
        return helper.inputs(kernel, params, backend, device)  # type: ignore[no-any-return]
    dtype = getattr(torch, str(params["dtype"]))
    gen = seeded()
    shape = _shape(params)
    data: dict[str, Any] = {
        "x": torch.randn(shape, generator=gen).to(device=device, dtype=dtype),
        "w": uniform(shape[-1:], gen, 1.0).to(device=device, dtype=dtype),
    }
    if kernel in FUSED:
        data["r"] = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    inp = Operands(kernel, params, data)
    inp.kept["pristine"] = {k: v.clone() for k, v in data.items()}
    return inp


def reference(inp: Operands) -> list[torch.Tensor]:
    if (helper := _module(inp.kernel)) is not None:
        return helper.reference(inp)  # type: ignore[no-any-return]
    d = inp.kept["pristine"]
    x, w = d["x"].float(), d["w"].float()
    if inp.kernel in GEMMA:
        w = 1 + w
    if inp.kernel in FUSED:
        r = x + d["r"].float()
        return [rms(r) * w, r]
    return [rms(x) * w]


def rms(x: torch.Tensor) -> torch.Tensor:
    """x / rms(x) along the last dimension, in x's dtype (float32 for a reference)."""
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
    op = flashinfer_op(kernel, kernel)
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


def outputs(raw: Any) -> list[torch.Tensor]:
    return [t.float() for t in raw] if isinstance(raw, tuple) else [raw.float()]


def check_backend(backend: str, inp: Operands, device: str) -> None:
    """Refuse, with the reason, what no norm kernel runs: another backend, or FlashInfer
    without a GPU."""
    if backend not in ("auto", "torch"):
        raise NotImplementedError(f"backend {backend!r} is not offered for {inp.kernel}")
    if backend == "auto" and device != "cuda":
        raise NotImplementedError(f"FlashInfer backend {backend!r} needs a CUDA device")


def prepare(backend: str, inp: Operands, device: str) -> Prepared:
    if inp.kernel in FP4:  # declared: the harness refused it off Blackwell already
        if backend != "cute-dsl":
            raise NotImplementedError(f"backend {backend!r} is not offered for {inp.kernel}")
        raise NotImplementedError(fp4_refusal(inp.kernel))
    check_backend(backend, inp, device)
    if (helper := _module(inp.kernel)) is not None:
        return helper.prepare(backend, inp, device)  # type: ignore[no-any-return]
    if backend == "torch":
        return Prepared(fn=_torch_call(inp.kernel), outputs=outputs, resolved_backend="torch")
    return Prepared(fn=_flashinfer_call(inp.kernel), outputs=outputs,
                    resolved_backend=resolved(device))
