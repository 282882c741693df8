"""The rope family (kernelwatch_harness.families.rope): declarations, validation, formulas, the
float32 reference against hand-computed values, the PyTorch path, refusals, both directions
with flashinfer_benchmark.py, and the FlashInfer call's keywords against every supported
release's signatures. FlashInfer's path itself runs on the GPU (tests/test_gpu.py)."""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from kernelwatch.core.benchmark_cli import UnmappedLine, line_specs, read_testlist, repro_command
from kernelwatch.core.series import series_key
from kernelwatch.core.spec import SweepSpec
from kernelwatch_harness import catalogue
from kernelwatch_harness.catalogue import complete_params
from kernelwatch_harness.families import rope_ops
from kernelwatch_harness.families.attention.reference import Llama31, rope_frequencies
from kernelwatch_harness.families.rope import (
    CACHE_NOTE,
    CACHED,
    FAMILY,
    FP8,
    call_kwargs,
    tensor_args,
)
from kernelwatch_harness.family import Family, Operands, max_abs_error
from tests.family_support import fake_flashinfer
from tests.family_support import run_torch as family_run_torch

MEASURED = ["apply_rope", "apply_rope_pos_ids", "apply_llama31_rope",
            "apply_llama31_rope_pos_ids", "apply_rope_with_cos_sin_cache"]
SMALL = {"batch_size": 2, "seq_len": 48, "num_qo_heads": 4, "num_kv_heads": 2}
SIGS: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "gpu" / "flashinfer_signatures.json").read_text()
)["versions"]
SAMPLE = Path(__file__).parent / "fixtures" / "testlist" / "rope.txt"


def point(kernel: str, backend: str = "torch", **over: Any) -> dict[str, Any]:
    return complete_params(kernel, {**SMALL, **over}, backend)


def run_torch(kernel: str, p: dict[str, Any]) -> tuple[list[torch.Tensor], Operands]:
    return family_run_torch(FAMILY, kernel, p)


# ------------------------------------------------------------------ declarations

def test_it_declares_a_whole_family() -> None:
    assert isinstance(FAMILY, Family) and FAMILY.name == "rope"
    assert set(FAMILY.kernels) == {*MEASURED, *FP8}
    for name in MEASURED:
        k = FAMILY.kernels[name]
        assert k.routine == name and k.backends == ("auto", "torch")
        assert {"sm80", "sm86", "sm89", "sm90"} <= set(k.archs)
    for name in FP8:  # FP8 conversions: Ada and newer (SM89+), Hopper yes, Ampere no
        k = FAMILY.kernels[name]
        assert k.routine == name and k.backends == ("auto", "torch")
        assert not {"sm80", "sm86"} & set(k.archs) and {"sm89", "sm90"} <= set(k.archs)
    assert all(p.doc for p in FAMILY.params.values())
    assert "rope_scale" not in FAMILY.kernels[CACHED].params  # the table fixes the angles
    assert "old_context_len" in FAMILY.kernels["apply_llama31_rope"].params


def test_shared_parameters_are_declared_as_the_other_families_declare_them() -> None:
    others = {n: p for f in catalogue.FAMILIES.values() if f is not FAMILY
              for n, p in f.params.items()}
    shared = set(FAMILY.params) & set(others)
    assert shared == {"batch_size", "seq_len", "num_qo_heads", "num_kv_heads", "head_dim",
                      "dtype", "page_size", "kv_layout", "quant_dtype"}
    for name in shared:
        assert catalogue._same(FAMILY.params[name], others[name]), name


def test_defaults_are_the_tools() -> None:
    p = complete_params("apply_llama31_rope", {}, "auto")
    assert p["dtype"] == "float16" and p == complete_params("apply_llama31_rope", {}, "torch")
    assert (p["rope_scale"], p["rope_theta"], p["interleave"], p["rotary_dim"]) == (
        1.0, 10000.0, False, 0)
    assert (p["low_freq_factor"], p["high_freq_factor"], p["old_context_len"]) == (1.0, 4.0,
                                                                                   8192)


@pytest.mark.parametrize(("params", "message"), [
    ({"dtype": ["float32"]}, "params.dtype: 'float32' is not allowed; allowed: float16, "
                             "bfloat16"),
    ({"head_dim": [96]}, "params.head_dim: 96 is not allowed; allowed: 64, 128, 256"),
    ({"rope_theta": [0.5]}, "params.rope_theta: 0.5 is out of range; allowed: numbers from 1 "
                            "to 1e+09"),
    ({"rotary_dim": [40]}, "rotary_dim=40 with head_dim=128: rotary_dim is 0 (every "
                           "dimension) or a multiple of 16 below head_dim"),
    ({"rotary_dim": [128]}, "a multiple of 16 below head_dim"),
    ({"num_qo_heads": [6], "num_kv_heads": [4]}, "num_qo_heads must be a multiple of "
                                                 "num_kv_heads"),
    ({"low_freq_factor": [4.0]}, "high_freq_factor must exceed low_freq_factor"),
])
def test_invalid_points_are_refused_naming_the_field(params: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        SweepSpec(name="r", kernel="apply_llama31_rope", backends=["torch"], params=params)


# ------------------------------------------------------------------------- formulas

@pytest.mark.parametrize("kernel", MEASURED)
def test_bytes_and_flops_count_as_flashinfer_benchmark_does(kernel: str) -> None:
    p = point(kernel, batch_size=3, seq_len=10, num_qo_heads=8, num_kv_heads=2, head_dim=64,
              rotary_dim=32, dtype="bfloat16")
    tokens, qk = 30, 30 * (8 + 2) * 64
    extra = {"apply_rope_pos_ids": tokens * 4, "apply_llama31_rope_pos_ids": tokens * 4,
             CACHED: tokens * 8 + 10 * 32 * 4}.get(kernel, 0)
    work = FAMILY.work(kernel, p)
    assert work.bytes == qk * 2 * 2 + extra  # q, k read and written, bf16
    assert work.flops == 30 * (8 + 2) * 32 * 3  # only the rotary dimensions turn
    assert FAMILY.work(kernel, {**p, "rotary_dim": 0}).flops == qk * 3
    assert FAMILY.memory_bytes(kernel, p) > work.bytes


# ------------------------------------------------------------------------ reference

def _hand(kernel: str, interleave: bool, **over: Any) -> Operands:
    """One token at position 1 of a 4-dimensional head, q = k = [1, 2, 3, 4]."""
    params = {"batch_size": 1, "seq_len": 2, "num_qo_heads": 1, "num_kv_heads": 1,
              "head_dim": 4, "rotary_dim": 0, "interleave": interleave, "rope_scale": 1.0,
              "rope_theta": 1e4, "dtype": "float16", **over}
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    inp = Operands(kernel, params, {"q": x, "k": x.clone()})
    inp.kept.update(positions=torch.tensor([1]),
                    freq=rope_ops.frequencies(kernel, params, "cpu"))
    return inp


def test_the_reference_rotates_the_halves_as_computed_by_hand() -> None:
    # frequencies 1e4^(-0/4) = 1 and 1e4^(-2/4) = 0.01; pairs (1, 3) and (2, 4)
    c1, s1, c2, s2 = math.cos(1), math.sin(1), math.cos(0.01), math.sin(0.01)
    want = [1 * c1 - 3 * s1, 2 * c2 - 4 * s2, 3 * c1 + 1 * s1, 4 * c2 + 2 * s2]
    q, k = FAMILY.reference(_hand("apply_rope", False))
    assert q.flatten().tolist() == pytest.approx(want, abs=1e-6) and torch.equal(q, k)
    # interleaved: pairs (1, 2) and (3, 4)
    want = [1 * c1 - 2 * s1, 2 * c1 + 1 * s1, 3 * c2 - 4 * s2, 4 * c2 + 3 * s2]
    q, _ = FAMILY.reference(_hand("apply_rope", True))
    assert q.flatten().tolist() == pytest.approx(want, abs=1e-6)
    # rope_scale divides the angle
    q, _ = FAMILY.reference(_hand("apply_rope_pos_ids", False, rope_scale=2.0))
    assert q.flatten()[0] == pytest.approx(math.cos(0.5) - 3 * math.sin(0.5), abs=1e-6)


def test_partial_rotary_dim_leaves_the_rest() -> None:
    p = point("apply_rope", head_dim=64, rotary_dim=32)
    inp = FAMILY.inputs("apply_rope", p, "torch", "cpu")
    q, _ = FAMILY.reference(inp)
    assert torch.equal(q[..., 32:], inp.data["q"][..., 32:].float())
    assert not torch.allclose(q[1:, :, :32], inp.data["q"][1:, :, :32].float())


def test_llama31_frequencies_as_computed_by_hand() -> None:
    """Meta's scaling (FlashInfer's tests/test_helpers/rope_reference.py apply_scaling):
    wavelengths under old_context_len / high_freq_factor keep their frequency, those over
    old_context_len / low_freq_factor are divided by the scale, between them a blend."""
    llama = Llama31(1.0, 4.0, 8192)
    for f2, want in ((1e-5, 1e-5 / 8),  # wavelength 628,000 > 8192: scaled
                     (2.5 * 2 * math.pi / 8192, 2.5 * 2 * math.pi / 8192 * (0.5 / 8 + 0.5))):
        theta = f2 ** -2  # head_dim 4: the second frequency is theta^(-1/2)
        freq = rope_frequencies(4, theta=theta, scale=8.0, llama31=llama)
        assert freq[0] == 1.0  # wavelength 2 pi: kept
        assert float(freq[1]) == pytest.approx(want, rel=1e-4)
    # at the tool's rope_scale 1, Llama 3.1's RoPE is the plain one
    plain = rope_frequencies(128, theta=5e5)
    assert torch.allclose(rope_frequencies(128, theta=5e5, llama31=llama), plain)


def test_the_cached_reference_reads_the_table() -> None:
    p = point(CACHED, interleave=True)
    inp = FAMILY.inputs(CACHED, p, "auto", "cpu")
    assert inp.data["cos_sin_cache"].dtype == torch.float32  # what FlashInfer accepts
    assert inp.data["cos_sin_cache"].shape == (48, 128) and inp.data["q"].shape == (96, 512)
    assert inp.data["positions"].dtype == torch.int64
    before = FAMILY.reference(inp)[0]
    inp.data["cos_sin_cache"][:, 64:] = 0  # no sin: no rotation but the cos scaling
    assert not torch.allclose(before, FAMILY.reference(inp)[0])


# ------------------------------------------------------------------------ torch path

@pytest.mark.parametrize("kernel", MEASURED)
@pytest.mark.parametrize("over", [
    {"dtype": "float16"},
    {"dtype": "bfloat16", "interleave": True},
    {"dtype": "float16", "head_dim": 64, "rotary_dim": 32, "interleave": True},
    {"dtype": "bfloat16", "rope_scale": 8.0, "rope_theta": 5e5},
])
def test_the_torch_path_matches_the_float32_reference(kernel: str, over: dict[str, Any]) -> None:
    p = point(kernel, **over)
    outs, inp = run_torch(kernel, p)
    refs = FAMILY.reference(inp)
    assert [o.shape for o in outs] == [r.shape for r in refs]
    assert max_abs_error(outs, refs) <= FAMILY.tolerance(kernel, p)


def test_a_wrong_result_is_caught() -> None:
    # halves where interleaved pairs were asked for, Llama 3.1 scaling left out: O(1) off
    p = point("apply_rope")
    outs, _ = run_torch("apply_rope", p)
    wrong = FAMILY.inputs("apply_rope", point("apply_rope", interleave=True), "torch", "cpu")
    assert max_abs_error(outs, FAMILY.reference(wrong)) > FAMILY.tolerance("apply_rope", p)
    p = point("apply_llama31_rope", rope_scale=8.0, rope_theta=5e5)
    outs, _ = run_torch("apply_rope", point("apply_rope", rope_scale=8.0, rope_theta=5e5))
    inp = FAMILY.inputs("apply_llama31_rope", p, "torch", "cpu")
    assert max_abs_error(outs, FAMILY.reference(inp)) > FAMILY.tolerance("apply_llama31_rope", p)


def test_inputs_are_seeded_and_in_the_form_each_call_reads() -> None:
    a = FAMILY.inputs("apply_rope", point("apply_rope"), "auto", "cpu")
    b = FAMILY.inputs("apply_rope", point("apply_rope"), "torch", "cpu")
    assert torch.equal(a.data["q"], b.data["q"]) and torch.equal(a.data["k"], b.data["k"])
    assert a.data["indptr"].tolist() == [0, 48, 96] and a.data["offsets"].tolist() == [0, 0]
    ids = FAMILY.inputs("apply_rope_pos_ids", point("apply_rope_pos_ids"), "auto", "cpu")
    assert ids.data["pos_ids"].dtype == torch.int32
    assert ids.data["pos_ids"].tolist() == [*range(48), *range(48)]
    assert set(b.data) == {"q", "k", "positions", "inv_freq"}


# ------------------------------------------------------------------------- refusals

def test_flashinfer_needs_a_gpu_and_unknown_backends_are_refused() -> None:
    inp = FAMILY.inputs("apply_rope", point("apply_rope"), "auto", "cpu")
    with pytest.raises(NotImplementedError, match="needs a CUDA device"):
        FAMILY.prepare("auto", inp, "cpu")
    with pytest.raises(NotImplementedError, match="'fa2' is not offered for apply_rope"):
        FAMILY.prepare("fa2", inp, "cpu")


def _fake_flashinfer(monkeypatch: pytest.MonkeyPatch, **functions: Any) -> None:
    fake_flashinfer(monkeypatch, "rope", "0.1.0", **functions)


def test_a_release_without_the_function_or_a_keyword_is_refused_naming_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def old_llama(q: Any, k: Any, indptr: Any, offsets: Any, rotary_dim: Any = None,
                  interleave: bool = False, rope_scale: float = 8,
                  rope_theta: float = 5e5) -> Any:
        return q, k

    _fake_flashinfer(monkeypatch, apply_llama31_rope=old_llama)
    p = point("apply_llama31_rope", "auto")
    with pytest.raises(NotImplementedError, match=r"FlashInfer 0\.1\.0 has no "
                                                  r"flashinfer\.rope\.apply_rope_pos_ids"):
        rope_ops._flashinfer_call("apply_rope_pos_ids", point("apply_rope_pos_ids", "auto"))
    with pytest.raises(NotImplementedError, match=r"FlashInfer 0\.1\.0 flashinfer\.rope\."
                       r"apply_llama31_rope takes no low_freq_factor, high_freq_factor, "
                       r"old_context_len"):
        rope_ops._flashinfer_call("apply_llama31_rope", p)


def test_the_flashinfer_call_passes_the_tools_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def apply_rope_with_cos_sin_cache(positions: Any, query: Any, key: Any, head_size: Any,
                                      cos_sin_cache: Any, is_neox: bool = True) -> Any:
        seen.update(positions=positions, query=query, key=key, head_size=head_size,
                    cos_sin_cache=cos_sin_cache, is_neox=is_neox)
        return query, key

    _fake_flashinfer(monkeypatch, apply_rope_with_cos_sin_cache=apply_rope_with_cos_sin_cache)
    p = point(CACHED, "auto", interleave=True)
    inp = FAMILY.inputs(CACHED, p, "auto", "cpu")
    rope_ops._flashinfer_call(CACHED, p)(inp.data)
    assert seen["query"] is inp.data["q"] and seen["cos_sin_cache"] is inp.data["cos_sin_cache"]
    assert seen["head_size"] == 128 and seen["is_neox"] is False


@pytest.mark.parametrize("version", sorted(SIGS))
@pytest.mark.parametrize("kernel", MEASURED)
def test_the_keywords_fit_every_releases_signature(version: str, kernel: str) -> None:
    """Every keyword the adapter passes is a parameter of flashinfer.rope's function in each
    supported release (tests/fixtures/gpu/flashinfer_signatures.json, read from the wheels)."""
    p = point(kernel, "auto", rotary_dim=64, interleave=True)
    names = {*tensor_args(kernel), *call_kwargs(kernel, p)}
    (sig,) = SIGS[version][kernel]
    assert sig["file"] == "flashinfer/rope.py"
    assert names <= {*sig["positional"], *sig["keyword_only"]}, (version, kernel)


# ------------------------------------------------------------ flashinfer_benchmark.py

ROUND_TRIP = [
    ("apply_rope", {}),
    ("apply_rope", {"batch_size": 16, "seq_len": 1024, "dtype": "bfloat16", "interleave": True}),
    ("apply_rope_pos_ids", {"head_dim": 64, "rotary_dim": 32, "rope_theta": 1234567.5}),
    ("apply_llama31_rope", {"rope_scale": 8.0, "rope_theta": 5e5, "low_freq_factor": 1.5,
                            "high_freq_factor": 4.5, "old_context_len": 4096}),
    ("apply_llama31_rope_pos_ids", {"num_qo_heads": 64, "num_kv_heads": 8}),
    (CACHED, {"interleave": True, "rotary_dim": 64}),
]


@pytest.mark.parametrize(("kernel", "params"), ROUND_TRIP)
def test_a_points_command_reads_back_as_the_same_series(kernel: str,
                                                        params: dict[str, Any]) -> None:
    completed = complete_params(kernel, params, "auto")
    repro = repro_command(kernel, completed, "auto")
    assert repro.command is not None
    assert repro.reason == (CACHE_NOTE if kernel == CACHED else None)
    (spec,) = line_specs(shlex.join(shlex.split(repro.command)[2:]), 1)
    sweep = SweepSpec(**{**spec, "targets": ["h200"], "flashinfer_versions": ["0.7.4"]})
    (grid,) = sweep.grid("auto")
    assert grid == completed
    assert series_key(kernel, grid, "auto", "h200") == series_key(kernel, completed, "auto",
                                                                  "h200")


def test_flashinfers_sample_rope_lines_all_map() -> None:
    lines = SAMPLE.read_text().splitlines()
    specs, refused = read_testlist(lines)
    assert refused == []
    assert [s["kernel"] for s in specs] == [
        "apply_rope", "apply_rope", "apply_rope_pos_ids", "apply_rope_pos_ids",
        "apply_llama31_rope", "apply_llama31_rope_pos_ids", CACHED, CACHED,
        "mla_rope_quantize_fp8", "rope_quantize_fp8", "rope_quantize_fp8",
        "rope_quantize_fp8_append_paged_kv_cache", "rope_quantize_fp8_append_paged_kv_cache"]
    by_tag = {s["name"]: s["params"] for s in specs}
    assert by_tag["apply_rope_pos_ids_interleave"]["interleave"] == [True]
    assert by_tag["apply_llama31_rope"]["rope_theta"] == [5e5]
    assert by_tag["apply_rope_llama"]["dtype"] == ["float16"]
    assert all(s["backends"] == ["auto"] for s in specs)


@pytest.mark.parametrize(("line", "message"), [
    ("--routine apply_rope --batch_size 1 --seq_len 8 --num_qo_heads 8 --num_kv_heads 8 "
     "--head_dim 128 --no_rope_dim 64", "--no_rope_dim: only the FP8 rope routines read it"),
    ("--routine apply_rope --batch_size 1 --seq_len 8 --num_qo_heads 8 --num_kv_heads 8 "
     "--head_dim 128 --page_size 16", "--page_size: only the FP8 rope routines read it"),
    ("--routine apply_rope --batch_size 1 --seq_len 8 --num_qo_heads 8 --num_kv_heads 8 "
     "--head_dim 128 --input_dtype float32", "--input_dtype float32 cannot be mapped"),
    ("--routine apply_rope --batch_size 1 --seq_len 8 --num_qo_heads 8 --num_kv_heads 8 "
     "--head_dim 128 --backends triton", "--backends triton: flashinfer_benchmark.py runs "
                                         "apply_rope with cuda only"),
    ("--routine apply_rope --batch_size 1 --seq_len 8 --num_qo_heads 8 --num_kv_heads 8 "
     "--head_dim 128 --enable_pdl", "--enable_pdl cannot be mapped"),
    ("--routine apply_rope --seq_len 8 --num_qo_heads 8 --num_kv_heads 8 --head_dim 128",
     "--batch_size is required"),
])
def test_rope_lines_that_cannot_be_mapped_are_refused(line: str, message: str) -> None:
    with pytest.raises(UnmappedLine, match=re.escape(message)):
        line_specs(line, 3)


def test_a_full_rotary_dim_is_the_default_experiment() -> None:
    (spec,) = line_specs("--routine apply_rope --batch_size 1 --seq_len 8 --num_qo_heads 8 "
                         "--num_kv_heads 8 --head_dim 128 --rotary_dim 128", 1)
    assert spec["params"]["rotary_dim"] == [0]
    (spec,) = line_specs("--routine apply_rope_with_cos_sin_cache --batch_size 1 --seq_len 8 "
                         "--num_qo_heads 8 --num_kv_heads 8 --head_dim 128 --rope_theta 5e5", 1)
    assert "rope_theta" not in spec["params"]  # the cached routine ignores it, as the tool does
