"""Attention variants the wrappers take: a sliding window and a logits soft cap. The float32
reference implements them as FlashInfer defines them; the torch backends measure them
(torch-sdpa refuses the soft cap with the reason) through the real harness on CPU; FlashInfer's
keywords match each release's signatures and are passed only when set."""

from __future__ import annotations

import math

import pytest
import torch

from kernelwatch_harness.families.attention import flashinfer_backends as fb
from kernelwatch_harness.families.attention.reference import attend_fp32, attention_mask
from kernelwatch_harness.measure import Measurer
from tests.test_adapters import VERSIONS, accepts, inputs


def test_the_window_hides_keys_left_of_the_diagonal_causal_or_not() -> None:
    # Decode (one query at the last position): the last window_left + 1 keys.
    decode = attention_mask(1, 8, causal=False, window_left=2, device=torch.device("cpu"))
    assert decode is not None and decode.tolist() == [[False] * 5 + [True] * 3]
    # Causal prefill, 3 queries over 5 keys (bottom-right aligned), window 1.
    m = attention_mask(3, 5, causal=True, window_left=1, device=torch.device("cpu"))
    assert m is not None and m.int().tolist() == [[0, 1, 1, 0, 0], [0, 0, 1, 1, 0],
                                                   [0, 0, 0, 1, 1]]
    # Non-causal: only the left bound.
    n = attention_mask(3, 5, causal=False, window_left=1, device=torch.device("cpu"))
    assert n is not None and n.int().tolist()[0] == [0, 1, 1, 1, 1]
    assert attention_mask(3, 5, causal=False, window_left=-1, device=torch.device("cpu")) is None


def test_the_soft_cap_bounds_the_logits_as_flashinfer_defines_it() -> None:
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 4), torch.randn(6, 2, 4) * 20, torch.randn(6, 2, 4)
    scale, cap = 0.5, 5.0
    out = attend_fp32((q, k, v), scale, causal=False, soft_cap=cap)
    logits = torch.einsum("qhd,khd->hqk", q, k) * scale
    p = torch.softmax(cap * torch.tanh(logits / cap), dim=-1)
    expected = torch.einsum("hqk,khd->qhd", p, v)
    assert torch.allclose(out, expected, atol=1e-6)
    assert not torch.allclose(out, attend_fp32((q, k, v), scale, causal=False), atol=1e-3)


@pytest.mark.parametrize("kernel", ["batch_decode", "batch_prefill", "single_prefill"])
def test_the_torch_backends_measure_the_variants_through_the_harness(kernel: str) -> None:
    """torch-math computes both (checked against the reference before it is timed);
    torch-sdpa takes the window as a mask and refuses the soft cap, saying why."""
    measurer = Measurer("cpu", {"warmup": 1, "iterations": 10, "repeats": 1})
    shape = {"qo_len": 6, "causal": True} if "prefill" in kernel else {}
    p = inputs(kernel, batch_size=2, kv_len=40, num_qo_heads=4, num_kv_heads=2, head_dim=64,
               window_left=7, logits_soft_cap=30, **shape).params
    math_msg = measurer.measure(kernel, 0, p, "torch-math")
    assert math_msg["status"] == "ok" and math_msg["max_abs_error"] is not None
    assert math_msg["max_abs_error"] < 1e-2
    sdpa = measurer.measure(kernel, 0, p, "torch-sdpa")
    assert sdpa["status"] == "unsupported" and "no logits soft cap" in str(sdpa["error"])
    windowed = measurer.measure(kernel, 0, {**p, "logits_soft_cap": 0}, "torch-sdpa")
    assert windowed["status"] == "ok" and windowed["max_abs_error"] < 1e-2
    assert math.isfinite(windowed["samples_us"][0])


@pytest.mark.parametrize("version", VERSIONS)
def test_flashinfers_keywords_for_the_variants_match_each_release(version: str) -> None:
    for kernel, api, of in (
        ("batch_decode", "BatchDecodeWithPagedKVCacheWrapper.plan", fb.decode_plan_kwargs),
        ("batch_prefill", "BatchPrefillWithPagedKVCacheWrapper.plan", fb.prefill_plan_kwargs),
        ("batch_prefill_ragged", "BatchPrefillWithRaggedKVCacheWrapper.plan",
         fb.ragged_plan_kwargs),
    ):
        shape = {"qo_len": 7} if "prefill" in kernel else {}
        kw = of(inputs(kernel, batch_size=2, kv_len=40, window_left=16, logits_soft_cap=50,
                       **shape), 0.1)
        assert kw["window_left"] == 16 and kw["logits_soft_cap"] == 50.0
        accepts(version, api, kw)
        plain = of(inputs(kernel, batch_size=2, kv_len=40, **shape), 0.1)
        assert "window_left" not in plain and "logits_soft_cap" not in plain
    single = inputs("single_decode", kv_len=40, window_left=16, logits_soft_cap=50).params
    accepts(version, "single_decode_with_kv_cache",
            {"q": 0, "k": 0, "v": 0, **fb.single_decode_kwargs(single, 0.1)})
    single = inputs("single_prefill", qo_len=7, kv_len=40, window_left=16).params
    accepts(version, "single_prefill_with_kv_cache",
            {"q": 0, "k": 0, "v": 0, **fb.single_prefill_kwargs(single, 0.1, "fa2")})
