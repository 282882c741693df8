"""The norm family (kernelwatch_harness.families.norm): its declarations, formulas, inputs,
reference and PyTorch path on CPU; FlashInfer's path is exercised on the GPU."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from kernelwatch_harness.families.norm import FAMILY, FUSED
from kernelwatch_harness.family import Family, max_abs_error


def point(**over: Any) -> dict[str, Any]:
    return {"batch_size": 8, "hidden_size": 256, "num_heads": 0, "dtype": "bfloat16", **over}


def test_it_declares_a_whole_family() -> None:
    assert isinstance(FAMILY, Family) and FAMILY.name == "norm"
    assert set(FAMILY.kernels) == {"rmsnorm", "fused_add_rmsnorm", "gemma_rmsnorm",
                                   "gemma_fused_add_rmsnorm", "rmsnorm_quant",
                                   "fused_add_rmsnorm_quant", "layernorm_quant",
                                   "fused_rmsnorm_silu", "fused_dit_layernorm",
                                   "fused_qk_rmsnorm_rope", "rmsnorm_fp4quant",
                                   "add_rmsnorm_fp4quant"}
    for k in FAMILY.kernels.values():
        assert k.family == "norm" and k.routine == k.name  # flashinfer_benchmark.py's name
        assert set(k.params) <= set(FAMILY.params)
        if k.declared:  # the FP4 norms: CuTe-DSL on Blackwell only (test_family_declared)
            assert k.backends == ("cute-dsl",) and k.archs == ("sm100", "sm103", "sm120")
            continue
        assert k.backends == ("auto", "torch") and "sm80" in k.archs and "sm90" in k.archs
    for name in ("rmsnorm", "fused_add_rmsnorm", "gemma_rmsnorm", "gemma_fused_add_rmsnorm"):
        assert FAMILY.kernels[name].params == ("batch_size", "hidden_size", "num_heads", "dtype")
        assert FAMILY.kernels[name].since is None  # every supported release
    assert all(p.doc for p in FAMILY.params.values())


@pytest.mark.parametrize("kernel", ["rmsnorm", "fused_add_rmsnorm"])
def test_bytes_and_flops_count_as_flashinfer_benchmark_does(kernel: str) -> None:
    p = point(batch_size=3, hidden_size=128, num_heads=4, dtype="float16")
    n = 3 * 4 * 128
    work = FAMILY.work(kernel, p)
    streams = 4 if kernel in FUSED else 2
    assert work.bytes == n * 2 * streams + 128 * 2
    assert work.flops == n * (6 if kernel in FUSED else 5)
    assert FAMILY.work(kernel, point(num_heads=0, batch_size=12, hidden_size=128,
                                     dtype="float16")).bytes == work.bytes  # 12 rows either way
    assert FAMILY.memory_bytes(kernel, p) > work.bytes


@pytest.mark.parametrize("kernel", ["rmsnorm", "fused_add_rmsnorm", "gemma_rmsnorm",
                                    "gemma_fused_add_rmsnorm"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_the_torch_path_matches_the_float32_reference(kernel: str, dtype: str) -> None:
    p = point(dtype=dtype, num_heads=2)
    inp = FAMILY.inputs(kernel, p, "torch", "cpu")
    assert inp.data["x"].shape == (8, 2, 256) and inp.data["x"].dtype == getattr(torch, dtype)
    prepared = FAMILY.prepare("torch", inp, "cpu")
    outs = prepared.outputs(prepared.fn(inp.data))
    assert len(outs) == (2 if kernel in FUSED else 1)
    assert max_abs_error(outs, FAMILY.reference(inp)) <= FAMILY.tolerance(kernel, p)


def test_the_reference_is_not_fooled_by_a_kernel_writing_its_inputs() -> None:
    inp = FAMILY.inputs("fused_add_rmsnorm", point(), "auto", "cpu")
    before = FAMILY.reference(inp)
    inp.data["x"].zero_()  # what an in-place kernel does to its operands
    inp.data["r"].add_(1)
    after = FAMILY.reference(inp)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_a_wrong_result_is_caught() -> None:
    p = point()
    inp = FAMILY.inputs("gemma_rmsnorm", p, "torch", "cpu")
    plain = FAMILY.prepare("torch", FAMILY.inputs("rmsnorm", p, "torch", "cpu"), "cpu")
    # rmsnorm's result where Gemma's (1 + w) was asked for: off by x / rms(x), O(1)
    err = max_abs_error(plain.outputs(plain.fn(inp.data)), FAMILY.reference(inp))
    assert err > FAMILY.tolerance("gemma_rmsnorm", p)


def test_inputs_are_seeded() -> None:
    a = FAMILY.inputs("rmsnorm", point(), "torch", "cpu")
    b = FAMILY.inputs("rmsnorm", point(), "auto", "cpu")
    assert torch.equal(a.data["x"], b.data["x"]) and torch.equal(a.data["w"], b.data["w"])
    assert float(a.data["w"].abs().max()) <= 1.0


def test_flashinfer_needs_a_gpu_and_unknown_backends_are_refused() -> None:
    inp = FAMILY.inputs("rmsnorm", point(), "auto", "cpu")
    with pytest.raises(NotImplementedError, match="needs a CUDA device"):
        FAMILY.prepare("auto", inp, "cpu")
    with pytest.raises(NotImplementedError, match="'cudnn' is not offered for rmsnorm"):
        FAMILY.prepare("cudnn", inp, "cpu")
