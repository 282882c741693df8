"""The GEMM family's tensors: seeded inputs, the FlashInfer and PyTorch calls, the float32
reference (kernelwatch_harness.families.gemm declares the family)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from kernelwatch_harness.families.gemm import (
    API,
    BACKEND_ARCHS,
    BACKEND_SINCE,
    BATCHED,
    FP8,
    GROUPED,
    MEASURED,
    SINCE,
)
from kernelwatch_harness.family import (
    Operands,
    check_backend_arch,
    flashinfer_api,
    release,
    require_module,
)
from kernelwatch_harness.prepared import Prepared

SEED = 0
# Kernels whose second operand is stored [.., k, n] column-major (a [.., n, k] tensor
# transposed), as FlashInfer's bmm/mm APIs take it; the others take the weight [.., n, k].
B_COLUMN_MAJOR = ("bmm_fp8", "mm_bf16", "bmm_bf16")


def to_float8(x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """One scale for the whole tensor, the largest magnitude to the format's largest value
    (flashinfer_benchmark.py's ``to_float8``); returns the FP8 tensor and the scale that
    dequantises it."""
    finfo = torch.finfo(dtype)
    scale = finfo.max / x.abs().max().clamp(min=1e-12)
    q = (x * scale).clamp(min=finfo.min, max=finfo.max).to(dtype)
    return q, scale.float().reciprocal()


def _lead(kernel: str, params: dict[str, Any]) -> tuple[int, ...]:
    if kernel in GROUPED:
        return (int(params["group_size"]),)
    return (int(params["batch_size"]),) if kernel in BATCHED else ()


def inputs(kernel: str, params: dict[str, Any], backend: str, device: str) -> Operands:
    """a [.., m, k] and b [.., n, k] standard normal from one seed (b transposed to
    [.., k, n] for the column-major APIs), a bias of n (std sqrt(k)) where asked; FP8
    kernels quantise both with one scale each. ``kept["math"]`` holds what the reference
    multiplies: the operands as the kernel reads them (FP8 with their scales), b as
    [.., k, n]."""
    m, n, k = (int(params[d]) for d in ("m", "n", "k"))
    lead = _lead(kernel, params)
    gen = torch.Generator(device="cpu").manual_seed(SEED)
    a = torch.randn((*lead, m, k), generator=gen)
    b = torch.randn((*lead, n, k), generator=gen)
    # a bias on the products' scale (sqrt(k)), so that one left out is an error the
    # tolerance, which scales with sqrt(k) too, catches at any k
    bias = torch.randn(n, generator=gen) * k ** 0.5 if params.get("bias") else None
    data: dict[str, Any] = {}
    scale, scales = None, None
    if kernel in FP8:
        a8, sa = to_float8(a, getattr(torch, str(params.get("input_dtype", "float8_e4m3fn"))))
        b8, sb = to_float8(b, getattr(torch, str(params.get("mat2_dtype", "float8_e4m3fn"))))
        scale, scales = sa * sb, (sa, sb)
        data["a"], data["b"] = a8.to(device), b8.to(device)
        if kernel == "bmm_fp8":
            data["a_scale"], data["b_scale"] = sa.to(device), sb.to(device)
        else:
            data["alpha"] = scale.to(device)
    else:
        data["a"] = a.to(device=device, dtype=torch.bfloat16)
        data["b"] = b.to(device=device, dtype=torch.bfloat16)
    if kernel in B_COLUMN_MAJOR:
        data["b"] = data["b"].transpose(-2, -1)
    if bias is not None:
        data["bias"] = bias.to(device=device, dtype=torch.bfloat16)
    inp = Operands(kernel, params, data)
    b_kn = data["b"] if kernel in B_COLUMN_MAJOR else data["b"].transpose(-2, -1)
    inp.kept["math"] = {"a": data["a"], "b_kn": b_kn, "scale": scale, "bias": data.get("bias")}
    inp.kept["scales"] = scales
    if kernel == "tinygemm_bf16":  # it writes a given output
        inp.kept["out"] = torch.empty((m, n), device=device, dtype=torch.bfloat16)
    return inp


def reference(inp: Operands) -> list[torch.Tensor]:
    d = inp.kept["math"]
    out = torch.matmul(d["a"].float(), d["b_kn"].float())
    if d["scale"] is not None:
        out = out * d["scale"].to(out.device)
    if d["bias"] is not None:
        out = out + d["bias"].float()
    return [out]


def _out_dtype(params: dict[str, Any]) -> torch.dtype:
    return getattr(torch, str(params.get("out_dtype", "bfloat16")))


def _torch_call(inp: Operands) -> Callable[[dict[str, Any]], torch.Tensor]:
    """What a PyTorch user writes on the same operands: F.linear for one weight (a bias
    fused), torch.matmul for the batched forms. FP8 operands are dequantised first (upcast
    to the output dtype and times their scale; PyTorch has no batched or CPU FP8 GEMM): the
    raw FP8 values (up to 448, or 57344 for e5m2) would overflow a float16 product."""
    kernel, od = inp.kernel, _out_dtype(inp.params)
    column_major, batched = kernel in B_COLUMN_MAJOR, inp.data["a"].dim() == 3

    def product(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if batched:
            return torch.matmul(a, b if column_major else b.transpose(-2, -1))
        return F.linear(a, b.transpose(0, 1) if column_major else b, bias)

    if kernel in FP8:
        sa, sb = (s.to(device=inp.data["a"].device, dtype=od) for s in inp.kept["scales"])
        return lambda d: product(d["a"].to(od) * sa, d["b"].to(od) * sb, None)
    return lambda d: product(d["a"], d["b"], d.get("bias")).to(od)


def flashinfer_kwargs(kernel: str, backend: str, params: dict[str, Any],
                      data: dict[str, Any], out: torch.Tensor | None = None) -> dict[str, Any]:
    """flashinfer.gemm.<API[kernel]>'s keyword arguments for one call (every argument by
    name; tests/test_adapters.py checks them against each release's signature). PDL stays
    off, as flashinfer_benchmark.py runs without --enable_pdl."""
    od = _out_dtype(params)
    if kernel == "bmm_fp8":
        return {"A": data["a"], "B": data["b"], "A_scale": data["a_scale"],
                "B_scale": data["b_scale"], "dtype": od, "backend": backend}
    if kernel == "mm_fp8":
        return {"a": data["a"], "b": data["b"], "alpha": data["alpha"],
                "out_dtype": torch.bfloat16, "backend": backend}
    if kernel == "mm_bf16":
        return {"a": data["a"], "b": data["b"], "bias": data.get("bias"), "pdl": False,
                "out_dtype": od, "backend": backend}
    if kernel == "bmm_bf16":
        return {"A": data["a"], "B": data["b"], "out_dtype": od, "backend": backend}
    if kernel == "tinygemm_bf16":
        return {"input": data["a"], "weight": data["b"], "out": out,
                "bias": data.get("bias"), "use_pdl": False}
    raise NotImplementedError(f"kernelwatch does not run {kernel}'s FlashInfer call yet")


def check_release(kernel: str, backend: str, version: str) -> None:
    """Refuse, naming the release, what an installed FlashInfer lacks."""
    since = SINCE.get(kernel)
    if since and release(version) < release(since):
        raise NotImplementedError(f"FlashInfer {version} has no flashinfer.gemm."
                                  f"{API[kernel]} (added in {since})")
    since = BACKEND_SINCE.get((kernel, backend))
    if since and release(version) < release(since):
        raise NotImplementedError(f"FlashInfer {version}'s {kernel} has no {backend!r} "
                                  f"backend (added in {since})")


# Backends whose kernels come from a package FlashInfer imports only when they run: without
# it the call fails with an ImportError that would read as a broken kernel.
BACKEND_MODULES = {"cutile": ("cuda.tile", "cuda-tile")}


def check_backend_module(backend: str) -> None:
    """Refuse, naming the package, a backend whose package this node lacks."""
    if backend in BACKEND_MODULES:
        module, dist = BACKEND_MODULES[backend]
        require_module(module, dist, f"FlashInfer's {backend} backend")


def check_arch(kernel: str, backend: str, arch: str) -> None:
    check_backend_arch(kernel, backend, BACKEND_ARCHS[kernel][backend], arch)


def _flashinfer_call(backend: str, inp: Operands, device: str) -> Callable[..., Any]:
    kernel = inp.kernel
    major, minor = torch.cuda.get_device_capability(torch.device(device))
    check_arch(kernel, backend, f"sm{major}{minor}")
    import flashinfer

    check_release(kernel, backend, str(flashinfer.__version__))
    check_backend_module(backend)
    op, _ = flashinfer_api(f"flashinfer.gemm.{API[kernel]}")
    if backend == "trtllm_low_latency":
        # its weight layout: FlashInfer's own shuffle, done once (not timed), as the tool does
        inp.data["b"] = flashinfer.prepare_low_latency_gemm_weights(inp.data["b"], {})
    out = inp.kept.get("out")
    params = inp.params

    def call(d: dict[str, Any]) -> Any:
        result = op(**flashinfer_kwargs(kernel, backend, params, d, out))
        return out if out is not None else result
    return call


def prepare(backend: str, inp: Operands, device: str) -> Prepared:
    def outputs(raw: torch.Tensor) -> list[torch.Tensor]:
        return [raw.float()]

    if backend == "torch":
        return Prepared(fn=_torch_call(inp), outputs=outputs, resolved_backend="torch")
    if backend not in BACKEND_ARCHS[inp.kernel]:
        raise NotImplementedError(f"backend {backend!r} is not offered for {inp.kernel}")
    if device != "cuda":
        raise NotImplementedError(f"FlashInfer backend {backend!r} needs a CUDA device")
    if inp.kernel not in MEASURED:
        raise NotImplementedError(
            f"kernelwatch does not run {inp.kernel}'s FlashInfer call yet (its block-scaled "
            "operands); the torch backend measures the bfloat16 GEMM")
    return Prepared(fn=_flashinfer_call(backend, inp, device), outputs=outputs,
                    resolved_backend=backend)

