"""FLOPs, bytes and request lengths against values worked out by hand from FlashInfer's
conventions (kernelwatch_harness.families.attention.formulas, docs/measurement.md)."""

from __future__ import annotations

import pytest

from kernelwatch_harness.families.attention.formulas import (
    attention_bytes,
    attention_flops,
    point_work,
    query_lengths,
    request_lengths,
)


def test_non_causal_flops_is_two_h_d_sum_lq_lkv() -> None:
    # 2 * 32 heads * (128 + 128) * (1*512 + 1*1024)
    assert attention_flops([1, 1], [512, 1024], 32, 128, 128, causal=False) == 2 * 32 * 256 * 1536


def test_causal_flops_counts_the_triangle() -> None:
    # lq = lkv = 4: sum lq*(2*lkv - lq) = 4*4 = 16 -> H*(d_qk+d_vo)*16
    assert attention_flops([4], [4], 2, 8, 8, causal=True) == 2 * 16 * 16
    # Causal work is about half of non-causal for square prefill.
    full = attention_flops([1024], [1024], 1, 64, 64, causal=False)
    tri = attention_flops([1024], [1024], 1, 64, 64, causal=True)
    assert tri / full == pytest.approx(0.5, rel=1e-3)


def test_bytes_reads_q_kv_and_writes_o() -> None:
    # q: 2 tokens * 4 heads * 16 dims * 2 B; kv: 100 tokens * 2 heads * (16+16) * 2 B; o like q
    got = attention_bytes([1, 1], [40, 60], 4, 2, 16, 16, 2, 2, 2)
    assert got == 2 * 4 * 16 * 2 + 100 * 2 * 32 * 2 + 2 * 4 * 16 * 2


def test_batch_decode_point_work_matches_formula() -> None:
    params = {"batch_size": 16, "kv_len": 2048, "num_qo_heads": 32, "num_kv_heads": 8,
              "head_dim": 128, "dtype": "bfloat16"}
    work = point_work("batch_decode", params)
    assert work["kv_lens"] == [2048] * 16 and work["qo_lens"] == [1] * 16
    assert work["flops"] == 2 * 32 * 256 * 16 * 2048
    kv_bytes = 16 * 2048 * 8 * 256 * 2
    q_and_o = 2 * 16 * 32 * 128 * 2
    assert work["bytes"] == kv_bytes + q_and_o


def test_fp8_kv_halves_the_kv_bytes() -> None:
    base = {"batch_size": 4, "kv_len": 4096, "num_qo_heads": 32, "num_kv_heads": 8,
            "head_dim": 128, "dtype": "float16"}
    b16 = point_work("batch_decode", base)["bytes"]
    b8 = point_work("batch_decode", {**base, "kv_dtype": "float8_e4m3fn"})["bytes"]
    q_and_o = 2 * 4 * 32 * 128 * 2
    assert (b8 - q_and_o) * 2 == pytest.approx(b16 - q_and_o)


def test_mla_reads_the_compressed_kv_once() -> None:
    params = {"batch_size": 2, "kv_len": 1000, "num_qo_heads": 16, "head_dim_ckv": 512,
              "head_dim_kpe": 64, "dtype": "bfloat16"}
    work = point_work("mla_decode", params)
    q = 2 * 16 * 576 * 2
    kv = 2000 * 576 * 2
    o = 2 * 16 * 512 * 2
    assert work["bytes"] == q + kv + o
    assert work["flops"] == 2 * 16 * (576 + 512) * 2000


@pytest.mark.parametrize("dist", ["constant", "uniform", "zipf"])
def test_lengths_are_seeded_positive_and_keep_the_mean(dist: str) -> None:
    a = request_lengths(2048, 256, dist, seed=7)
    assert a == request_lengths(2048, 256, dist, seed=7)
    assert len(a) == 256 and min(a) >= 1
    assert sum(a) / len(a) == pytest.approx(2048, rel=0.15)


def test_zipf_is_heavy_tailed_and_uniform_varies() -> None:
    z = sorted(request_lengths(1000, 512, "zipf", seed=1))
    assert z[-1] > 5 * z[len(z) // 2]  # a few long requests dominate
    u = request_lengths(1000, 512, "uniform", seed=1)
    assert len(set(u)) > 100


def test_unknown_distribution_is_rejected() -> None:
    with pytest.raises(ValueError, match="constant, uniform, zipf"):
        request_lengths(10, 2, "normal", seed=0)


def test_causal_query_lengths_are_capped_by_kv() -> None:
    assert query_lengths("batch_prefill", {"qo_len": 512, "causal": True}, [100, 800]) == [100, 512]
    assert query_lengths("batch_decode", {}, [100, 800]) == [1, 1]
