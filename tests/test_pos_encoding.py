"""The positional encoding FlashInfer's kernels apply themselves (``pos_encoding_mode``): the
float32 reference rotates (RoPE, Llama's halves) and biases (ALiBi) as FlashInfer does, so
every backend is checked against it; the torch backends measure both through the real harness
on CPU; FlashInfer gets the mode only when set, accepted by each release's signatures, and a
backend whose kernels apply none refuses it with the reason."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch

from kernelwatch_harness.catalogue import KERNELS, LEGACY_VALUES, PARAMS
from kernelwatch_harness.families.attention import flashinfer_backends as fb
from kernelwatch_harness.families.attention.reference import (
    alibi_slopes,
    attend_fp32,
    reference,
    rope_llama,
)
from kernelwatch_harness.measure import Measurer, classify
from tests.test_adapters import VERSIONS, accepts, inputs

MODES = ("ROPE_LLAMA", "ALIBI")
TAKERS = ("single_decode", "batch_decode", "single_prefill", "batch_prefill",
          "batch_prefill_ragged")


def test_the_kernels_flashinfer_encodes_take_the_mode_and_old_points_had_none() -> None:
    assert PARAMS["pos_encoding_mode"].choices == ("NONE", "ROPE_LLAMA", "ALIBI")
    assert PARAMS["pos_encoding_mode"].default == LEGACY_VALUES["pos_encoding_mode"] == "NONE"
    assert [k for k, spec in KERNELS.items() if "pos_encoding_mode" in spec.params] == list(
        TAKERS)  # BatchMLAPagedAttentionWrapper takes none


def test_rope_turns_each_half_dimension_pair_by_its_frequency() -> None:
    # D = 4: dimension 0 pairs with 2 at theta^0 = 1 rad per position, 1 with 3 at
    # theta^(-1/2) = 0.01 rad (FlashInfer's default theta 1e4).
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    out = rope_llama(x, torch.tensor([3]))
    c0, s0, c1, s1 = math.cos(3), math.sin(3), math.cos(0.03), math.sin(0.03)
    expected = [1 * c0 - 3 * s0, 2 * c1 - 4 * s1, 3 * c0 + 1 * s0, 4 * c1 + 2 * s1]
    assert out[0].tolist() == pytest.approx(expected, abs=1e-6)
    assert torch.equal(rope_llama(x, torch.tensor([0])), x)


def _rotated(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """RoPE written independently: each half-pair as a complex number turned by
    ``e^(i pos theta^(-2k/D))``."""
    d = x.shape[-1]
    z = torch.complex(x[..., : d // 2].double(), x[..., d // 2:].double())
    angle = positions.double()[:, None, None] * 1e4 ** (-torch.arange(0, d, 2).double() / d)
    z = z * torch.polar(torch.ones_like(angle), angle)
    return torch.cat((z.real, z.imag), dim=-1).float()


@pytest.mark.parametrize("causal", [False, True])
def test_the_reference_rotates_q_and_k_at_their_positions(causal: bool) -> None:
    """Query i of L_q sits at L_kv - L_q + i (the last query at the last key), key j at j:
    FlashInfer's convention, so a prefill chunk continues the sequence its KV holds."""
    torch.manual_seed(0)
    lq, lkv = 3, 9
    q, k, v = torch.randn(lq, 4, 16), torch.randn(lkv, 2, 16), torch.randn(lkv, 2, 16)
    out = attend_fp32((q, k, v), 0.25, causal, pos_encoding="ROPE_LLAMA")
    rq, rk = _rotated(q, torch.arange(lkv - lq, lkv)), _rotated(k, torch.arange(lkv))
    assert torch.allclose(out, attend_fp32((rq, rk, v), 0.25, causal), atol=1e-5)
    assert not torch.allclose(out, attend_fp32((q, k, v), 0.25, causal), atol=1e-2)


def test_alibi_slopes_are_flashinfers() -> None:
    assert alibi_slopes(8).tolist() == [2.0 ** -i for i in range(1, 9)]
    # 12 heads: the 8-head series, then every other slope of the 16-head series.
    assert alibi_slopes(12).tolist() == pytest.approx(
        [2.0 ** -i for i in range(1, 9)] + [2.0 ** (-i / 2) for i in (1, 3, 5, 7)])


@pytest.mark.parametrize("causal", [False, True])
def test_the_reference_adds_alibis_bias_per_query_head(causal: bool) -> None:
    """softmax(scale q.k + m_h (j - i)) per query head h (reading KV head h // group), where
    FlashInfer's kernels count i within the query chunk: a constant per row, which the
    softmax does not see, so the bottom-right aligned bias gives the same attention."""
    torch.manual_seed(1)
    lq, lkv, scale = 4, 10, 0.3
    q, k, v = torch.randn(lq, 4, 8), torch.randn(lkv, 2, 8) * 3, torch.randn(lkv, 2, 8)
    out = attend_fp32((q, k, v), scale, causal, pos_encoding="ALIBI")
    slopes = alibi_slopes(4)
    for h in range(4):
        logits = q[:, h] @ k[:, h // 2].T * scale
        logits = logits + slopes[h] * (torch.arange(lkv)[None, :] - torch.arange(lq)[:, None])
        if causal:
            logits = logits.masked_fill(
                torch.arange(lkv)[None, :] > torch.arange(lq)[:, None] + lkv - lq, -math.inf)
        expected = torch.softmax(logits, dim=-1) @ v[:, h // 2]
        assert torch.allclose(out[:, h], expected, atol=1e-5), h
    assert not torch.allclose(out, attend_fp32((q, k, v), scale, causal), atol=1e-2)


def test_alibi_goes_before_the_soft_cap() -> None:
    torch.manual_seed(2)
    q, k, v = torch.randn(1, 2, 8), torch.randn(6, 2, 8) * 10, torch.randn(6, 2, 8)
    cap, scale = 4.0, 0.5
    out = attend_fp32((q, k, v), scale, False, soft_cap=cap, pos_encoding="ALIBI")
    for h, m in enumerate(alibi_slopes(2).tolist()):
        x = k[:, h] @ q[0, h] * scale + m * (torch.arange(6) - 5)
        expected = torch.softmax(cap * torch.tanh(x / cap), dim=0) @ v[:, h]
        assert torch.allclose(out[0, h], expected, atol=1e-5)


SHAPES: dict[str, dict[str, Any]] = {
    "single_decode": {"kv_len": 40},
    "batch_decode": {"batch_size": 3, "kv_len": 40, "kv_len_distribution": "uniform"},
    "single_prefill": {"qo_len": 6, "kv_len": 20, "causal": True},
    "batch_prefill": {"batch_size": 2, "qo_len": 6, "kv_len": 20, "causal": True},
    "batch_prefill_ragged": {"batch_size": 2, "qo_len": 5, "kv_len": 20},
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kernel", TAKERS)
def test_the_torch_backends_measure_the_encoding_through_the_harness(kernel: str,
                                                                     mode: str) -> None:
    """Both torch backends apply the encoding inside the timed call (torch-sdpa: RoPE on q
    and k, ALiBi as an additive mask) and pass the check against the reference, which the
    encoding changes."""
    measurer = Measurer("cpu", {"warmup": 1, "iterations": 10, "repeats": 1})
    p = inputs(kernel, num_qo_heads=4, num_kv_heads=2, head_dim=64, pos_encoding_mode=mode,
               **SHAPES[kernel]).params
    for backend in ("torch-math", "torch-sdpa"):
        msg = measurer.measure(kernel, 0, p, backend)
        assert msg["status"] == "ok", (backend, msg["error"])
        assert msg["max_abs_error"] is not None and msg["max_abs_error"] < 1e-2, backend
        assert math.isfinite(msg["samples_us"][0])
    with_mode = reference(inputs(kernel, **p), 0.125)
    without = reference(inputs(kernel, **{**p, "pos_encoding_mode": "NONE"}), 0.125)
    assert not all(torch.allclose(a, b, atol=1e-2) for a, b in zip(with_mode, without,
                                                                    strict=True))


def test_torch_sdpa_keeps_the_soft_cap_refusal_with_an_encoding() -> None:
    measurer = Measurer("cpu", {"warmup": 1, "iterations": 10, "repeats": 1})
    p = inputs("batch_decode", batch_size=2, kv_len=40, num_qo_heads=4, num_kv_heads=2,
               head_dim=64, pos_encoding_mode="ALIBI", logits_soft_cap=30).params
    assert measurer.measure("batch_decode", 0, p, "torch-sdpa")["status"] == "unsupported"
    math_msg = measurer.measure("batch_decode", 0, p, "torch-math")
    assert math_msg["status"] == "ok" and math_msg["max_abs_error"] < 1e-2


PLAN_OF = {"batch_decode": ("BatchDecodeWithPagedKVCacheWrapper.plan", fb.decode_plan_kwargs),
           "batch_prefill": ("BatchPrefillWithPagedKVCacheWrapper.plan", fb.prefill_plan_kwargs),
           "batch_prefill_ragged": ("BatchPrefillWithRaggedKVCacheWrapper.plan",
                                    fb.ragged_plan_kwargs)}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("version", VERSIONS)
def test_flashinfer_gets_the_mode_only_when_set_in_every_release(version: str,
                                                                 mode: str) -> None:
    for kernel, (api, of) in PLAN_OF.items():
        kw = of(inputs(kernel, **SHAPES[kernel], pos_encoding_mode=mode), 0.1)
        assert kw["pos_encoding_mode"] == mode
        accepts(version, api, kw)
        assert "pos_encoding_mode" not in of(inputs(kernel, **SHAPES[kernel]), 0.1)
    single = inputs("single_decode", kv_len=40, pos_encoding_mode=mode).params
    kw = fb.single_decode_kwargs(single, 0.1)
    assert kw["pos_encoding_mode"] == mode
    accepts(version, "single_decode_with_kv_cache", {"q": 0, "k": 0, "v": 0, **kw})
    single = inputs("single_prefill", qo_len=7, kv_len=40, pos_encoding_mode=mode).params
    kw = fb.single_prefill_kwargs(single, 0.1, "fa2")
    assert kw["pos_encoding_mode"] == mode
    accepts(version, "single_prefill_with_kv_cache", {"q": 0, "k": 0, "v": 0, **kw})
    assert "pos_encoding_mode" not in fb.single_decode_kwargs(
        inputs("single_decode", kv_len=40).params, 0.1)


def test_a_release_without_the_keyword_refuses_the_mode_by_name() -> None:
    def plan(indptr: int, indices: int, window_left: int = -1) -> None:  # an older plan()
        pass

    with pytest.raises(NotImplementedError, match=re.escape(
            "FlashInfer 0.1.6's BatchDecode.plan() has no pos_encoding_mode")):
        fb.check_accepts(plan, {"pos_encoding_mode": "ALIBI"}, "BatchDecode.plan()", "0.1.6")


@pytest.mark.parametrize("backend", ["fa3", "trtllm-gen", "cutlass", "cudnn"])
def test_a_backend_whose_kernels_apply_no_encoding_refuses_it(backend: str) -> None:
    """FlashInfer's fa3 templates never read the mode and its trtllm-gen, cutlass and cuDNN
    kernels take none: named explicitly, they would time attention without the encoding."""
    for mode in MODES:
        with pytest.raises(NotImplementedError, match=(
                f"backend '{backend}' has no positional encoding.*pos_encoding_mode {mode}"
                ".*allowed: pos_encoding_mode NONE, or backend auto or fa2")) as e:
            fb.check_pos_encoding(backend, {"pos_encoding_mode": mode})
        assert classify(e.value) == "unsupported"
    fb.check_pos_encoding(backend, {"pos_encoding_mode": "NONE"})
    fb.check_pos_encoding(backend, {})  # mla_decode: no such parameter
    for kept in ("auto", "fa2"):  # auto: FlashInfer resolves to fa2 when a mode is set
        fb.check_pos_encoding(kept, {"pos_encoding_mode": "ROPE_LLAMA"})
