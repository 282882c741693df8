"""The rope family's FP8 kernels (kernelwatch_harness.families.rope_fp8 and rope_fp8_ops):
validation, the tool's byte counts, the float32 reference and the quantised torch path, the
paged cache written where each token belongs, the FlashInfer call (positional tensors and
keywords against every release's signature, the releases refused), and the tool's lines both
ways. FlashInfer's path itself runs on the GPU (tests/test_gpu.py)."""

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

from kernelwatch.core.benchmark_cli import UnmappedLine, line_specs, repro_command
from kernelwatch.core.spec import SweepSpec
from kernelwatch_harness.catalogue import complete_params
from kernelwatch_harness.families import rope_fp8_ops
from kernelwatch_harness.families.rope import FAMILY
from kernelwatch_harness.families.rope_fp8 import (
    APPEND,
    APPEND_TENSORS,
    FP8,
    MLA,
    QUANT,
    TENSORS,
)
from kernelwatch_harness.family import Operands, max_abs_error
from tests.family_support import fake_flashinfer
from tests.family_support import run_torch as family_run_torch

SMALL = {"batch_size": 2, "seq_len": 40, "num_qo_heads": 4, "num_kv_heads": 2}
SIGS: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "gpu" / "flashinfer_signatures.json").read_text()
)["versions"]


def point(kernel: str, backend: str = "torch", **over: Any) -> dict[str, Any]:
    return complete_params(kernel, {**SMALL, **over}, backend)


def run_torch(kernel: str, p: dict[str, Any]) -> tuple[list[torch.Tensor], Operands]:
    return family_run_torch(FAMILY, kernel, p)


# ------------------------------------------------------------------ declarations

def test_defaults_are_the_tools() -> None:
    p = complete_params(APPEND, {}, "auto")
    assert p == complete_params(APPEND, {}, "torch")
    assert (p["dtype"], p["quant_dtype"], p["interleave"]) == ("float16", "float8_e4m3fn", False)
    assert (p["rope_dim"], p["no_rope_dim"], p["page_size"], p["kv_layout"]) == (128, 0, 16,
                                                                                 "NHD")
    assert "num_kv_heads" not in complete_params(MLA, {}, "auto")  # one shared k head


@pytest.mark.parametrize(("kernel", "params", "message"), [
    (QUANT, {"rope_dim": [48]}, "rope_dim=48: FlashInfer rotates 16-element vectors of each "
                                "half; rope_dim is a multiple of 32"),
    (QUANT, {"no_rope_dim": [40]}, "no_rope_dim=40: FlashInfer moves 16-element vectors; "
                                   "no_rope_dim is a multiple of 16"),
    (QUANT, {"quant_dtype": ["float8_e8m0"]}, "params.quant_dtype: 'float8_e8m0' is not "
                                              "allowed; allowed: float8_e4m3fn, float8_e5m2"),
    (APPEND, {"page_size": [12]}, "params.page_size: 12 is not allowed; allowed: 1, 8, 16, "
                                  "32, 64, 128"),
    (APPEND, {"num_qo_heads": [6], "num_kv_heads": [4]}, "num_qo_heads must be a multiple of "
                                                         "num_kv_heads"),
    (MLA, {"rope_dim": [16]}, "params.rope_dim: 16 is out of range; allowed: integers from 32 "
                              "to 512"),
])
def test_invalid_points_are_refused_naming_the_field(kernel: str, params: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        SweepSpec(name="r", kernel=kernel, backends=["torch"], params=params)


# ------------------------------------------------------------------------- formulas

def _tools_bytes(kernel: str, b: int, s: int, hq: int, hk: int, rope: int, nope: int,
                 size: int) -> int:
    """flashinfer_benchmark.py's problem_bytes (routines/rope.py at v0.6.18rc7), transcribed;
    fp8 one byte, MLA's k one head."""
    t = b * s
    if kernel == MLA:
        hk = 1
    nope_bytes = t * hq * nope * size + t * hk * nope * size + t * hq * nope
    if kernel != APPEND:
        nope_bytes += t * hk * nope
    out = (t * hq * rope * size + t * hk * rope * size + nope_bytes + s * rope * 4 + t * 4
           + t * hq * rope)
    if kernel == APPEND:
        return out + t * hk * (rope + nope) * size + t * hk * (rope + nope) * 2
    return out + t * hk * rope


@pytest.mark.parametrize("kernel", FP8)
@pytest.mark.parametrize("over", [{}, {"no_rope_dim": 64, "dtype": "bfloat16"},
                                  {"rope_dim": 64, "no_rope_dim": 512}])
def test_bytes_count_as_flashinfer_benchmark_does(kernel: str, over: dict[str, Any]) -> None:
    p = point(kernel, batch_size=3, seq_len=10, num_qo_heads=8, num_kv_heads=2, **over)
    size = 2
    work = FAMILY.work(kernel, p)
    assert work.bytes == _tools_bytes(kernel, 3, 10, 8, 2, int(p["rope_dim"]),
                                      int(p["no_rope_dim"]), size)
    heads = 8 + (1 if kernel == MLA else 2)
    assert work.flops == 30 * heads * int(p["rope_dim"]) * 3  # only the rotated part turns
    assert FAMILY.memory_bytes(kernel, p) > work.bytes


# ------------------------------------------------------------------------ reference

def test_the_reference_rotates_by_the_table_and_passes_the_rest() -> None:
    """One token at position 1, a 4-dimensional rotated part [1, 2, 3, 4] turned by a table
    of angles 1 and 0.01 (the halves pair 1 with 3, 2 with 4), and a non-rotated [5, 6]."""
    c1, s1, c2, s2 = math.cos(1), math.sin(1), math.cos(0.01), math.sin(0.01)
    table = torch.tensor([[1.0, 1.0, 0.0, 0.0], [c1, c2, s1, s2]])
    x, rest = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]]), torch.tensor([[[5.0, 6.0]]])
    data = {"q_rope": x, "k_rope": x[:, 0].clone(), "q_nope": rest, "k_nope": rest[:, 0],
            "cos_sin_cache": table, "pos_ids": torch.tensor([1], dtype=torch.int32)}
    inp = Operands(MLA, {"rope_dim": 4, "no_rope_dim": 2, "interleave": False}, data)
    q_rope, k_rope, q_nope, k_nope = FAMILY.reference(inp)
    want = [1 * c1 - 3 * s1, 2 * c2 - 4 * s2, 3 * c1 + 1 * s1, 4 * c2 + 2 * s2]
    assert q_rope.flatten().tolist() == pytest.approx(want, abs=1e-6)
    assert k_rope.shape == (1, 4) and torch.equal(k_rope.flatten(), q_rope.flatten())
    assert q_nope.flatten().tolist() == [5.0, 6.0] and k_nope.shape == (1, 2)
    inp.params["interleave"] = True  # pairs (1, 2) and (3, 4), the first half of the table
    want = [1 * c1 - 2 * s1, 2 * c1 + 1 * s1, 3 * c2 - 4 * s2, 4 * c2 + 3 * s2]
    assert FAMILY.reference(inp)[0].flatten().tolist() == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("kernel", FP8)
@pytest.mark.parametrize("over", [
    {},
    {"dtype": "bfloat16", "interleave": True, "no_rope_dim": 64},
    {"quant_dtype": "float8_e5m2", "rope_dim": 64, "no_rope_dim": 48},
    {"seq_len": 13, "page_size": 8, "kv_layout": "HND", "no_rope_dim": 16},
])
def test_the_torch_path_matches_the_float32_reference(kernel: str, over: dict[str, Any]) -> None:
    p = point(kernel, **over)
    outs, inp = run_torch(kernel, p)
    refs = FAMILY.reference(inp)
    assert [o.shape for o in outs] == [r.shape for r in refs]
    err = max_abs_error(outs, refs)
    # rounding to the format: at most half a step of values below 8 (e4m3 0.25, e5m2 0.5)
    assert 0 < err <= FAMILY.tolerance(kernel, p) / 2
    assert FAMILY.tolerance(kernel, p) == (0.5 if p["quant_dtype"] == "float8_e4m3fn" else 1.0)


def test_outputs_have_flashinfers_shapes() -> None:
    outs, _ = run_torch(QUANT, point(QUANT))
    assert [tuple(o.shape) for o in outs] == [(80, 4, 128), (80, 2, 128), (80, 4, 0), (80, 2, 0)]
    outs, _ = run_torch(MLA, point(MLA, no_rope_dim=64))
    assert [tuple(o.shape) for o in outs] == [(80, 4, 128), (80, 128), (80, 4, 64), (80, 64)]
    inp = FAMILY.inputs(QUANT, point(QUANT), "auto", "cpu")
    assert "q_nope" not in inp.data  # the tool passes None without a non-rotated part
    assert inp.data["cos_sin_cache"].dtype == torch.float32
    assert inp.data["cos_sin_cache"].shape == (40, 128)
    assert inp.data["pos_ids"].dtype == torch.int32


def test_a_wrong_result_is_caught() -> None:
    p = point(QUANT, no_rope_dim=32)
    outs, _ = run_torch(QUANT, p)
    wrong = FAMILY.inputs(QUANT, {**p, "interleave": True}, "torch", "cpu")
    assert max_abs_error(outs, FAMILY.reference(wrong)) > FAMILY.tolerance(QUANT, p)


@pytest.mark.parametrize("layout", ["NHD", "HND"])
def test_the_append_writes_each_token_to_its_slot(layout: str) -> None:
    """Pages are each request's in order: token t of request r at page r * pages_per_request
    + t // page_size, entry t % page_size; the rest of the last page stays zero."""
    p = point(APPEND, seq_len=13, page_size=8, kv_layout=layout, no_rope_dim=16)
    inp = FAMILY.inputs(APPEND, p, "torch", "cpu")
    assert inp.data["kv_indptr"].tolist() == [0, 2, 4]
    assert inp.data["batch_indices"].tolist() == [0] * 13 + [1] * 13
    page, entry = inp.kept["slot"]
    assert page.tolist() == [0] * 8 + [1] * 5 + [2] * 8 + [3] * 5
    assert entry.tolist() == [*range(8), *range(5), *range(8), *range(5)]
    prepared = FAMILY.prepare("torch", inp, "cpu")
    raw = prepared.fn(inp.data)
    k_cache = raw[2].float()
    assert k_cache.shape == ((4, 8, 2, 144) if layout == "NHD" else (4, 2, 8, 144))
    token14 = k_cache[2, 1] if layout == "NHD" else k_cache[2, :, 1]  # request 1, position 1
    assert torch.equal(token14, prepared.outputs(raw)[2][14])
    unwritten = k_cache[1, 5:] if layout == "NHD" else k_cache[1, :, 5:]
    assert not unwritten.any()
    # a cache written one entry off is caught
    inp.kept["slot"] = (page, (entry + 1) % 8)
    assert max_abs_error(prepared.outputs(raw), FAMILY.reference(inp)) > \
        FAMILY.tolerance(APPEND, p)


# ------------------------------------------------------------------------- FlashInfer

def test_flashinfer_needs_a_gpu_and_unknown_backends_are_refused() -> None:
    inp = FAMILY.inputs(QUANT, point(QUANT), "auto", "cpu")
    with pytest.raises(NotImplementedError, match="needs a CUDA device"):
        FAMILY.prepare("auto", inp, "cpu")
    with pytest.raises(NotImplementedError, match="'cuda' is not offered for rope_quantize"):
        FAMILY.prepare("cuda", inp, "cpu")


def _fake_flashinfer(monkeypatch: pytest.MonkeyPatch, version: str, **functions: Any) -> None:
    fake_flashinfer(monkeypatch, "rope", version, **functions)


def test_the_call_passes_the_tools_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def rope_quantize_fp8_append_paged_kv_cache(*args: Any, **kwargs: Any) -> Any:
        seen.update(args=args, kwargs=kwargs)
        return "q_rope_out", "q_nope_out"

    _fake_flashinfer(monkeypatch, "0.7.4", rope_quantize_fp8_append_paged_kv_cache=
                     rope_quantize_fp8_append_paged_kv_cache)
    p = point(APPEND, "auto", interleave=True, kv_layout="HND", page_size=32,
              quant_dtype="float8_e5m2")
    inp = FAMILY.inputs(APPEND, p, "auto", "cpu")
    out = rope_fp8_ops._flashinfer_call(inp)(inp.data)
    d = inp.data
    assert out == ("q_rope_out", "q_nope_out", d["k_cache"], d["v_cache"])
    args = seen["args"]
    assert args[0] is d["q_rope"] and args[2] is None and args[4] is d["v"]
    assert args[7] == (d["k_cache"], d["v_cache"]) and args[11] is d["positions"]
    assert seen["kwargs"] == {"is_neox": False, "quantize_dtype": torch.float8_e5m2,
                              "enable_pdl": False, "page_size": 32, "kv_layout": "HND"}


@pytest.mark.parametrize(("kernel", "version", "refused"), [
    (QUANT, "0.5.3", True), (MLA, "0.5.3", True), (QUANT, "0.6.18.post1", False),
    (APPEND, "0.6.18.post1", True), (APPEND, "0.7.2.post1", True), (APPEND, "0.7.4", False),
])
def test_a_narrow_non_rotated_part_is_refused_where_the_release_writes_past_it(
        monkeypatch: pytest.MonkeyPatch, kernel: str, version: str, refused: bool) -> None:
    def op(*args: Any, is_neox: bool = True, quantize_dtype: Any = None, page_size: int = 16,
           kv_layout: str = "NHD", enable_pdl: bool = False) -> Any:
        return ()

    _fake_flashinfer(monkeypatch, version, **{kernel: op})
    narrow = FAMILY.inputs(kernel, point(kernel, "auto", rope_dim=64, no_rope_dim=48), "auto",
                           "cpu")
    if refused:
        with pytest.raises(NotImplementedError, match=rf"FlashInfer {re.escape(version)}: "
                           r"no_rope_dim=48 is not a multiple of rope_dim=64"):
            rope_fp8_ops._flashinfer_call(narrow)
    else:
        rope_fp8_ops._flashinfer_call(narrow)
    whole = FAMILY.inputs(kernel, point(kernel, "auto", rope_dim=64, no_rope_dim=128), "auto",
                          "cpu")
    rope_fp8_ops._flashinfer_call(whole)  # whole chunks: every release


def test_a_release_without_the_function_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_flashinfer(monkeypatch, "0.4.0")
    inp = FAMILY.inputs(MLA, point(MLA, "auto"), "auto", "cpu")
    with pytest.raises(NotImplementedError, match=r"FlashInfer 0\.4\.0 has no "
                                                  r"flashinfer\.rope\.mla_rope_quantize_fp8"):
        rope_fp8_ops._flashinfer_call(inp)


@pytest.mark.parametrize("version", sorted(SIGS))
@pytest.mark.parametrize("kernel", FP8)
def test_the_arguments_fit_every_releases_signature(version: str, kernel: str) -> None:
    """Tensors by position in the release's order, keywords among its parameters
    (tests/fixtures/gpu/flashinfer_signatures.json, read from the wheels)."""
    (sig,) = SIGS[version][kernel]
    assert sig["file"] == "flashinfer/rope.py"
    names = APPEND_TENSORS if kernel == APPEND else TENSORS
    assert tuple(sig["positional"][:len(names)]) == names, (version, kernel)
    kwargs = rope_fp8_ops.keywords(kernel, point(kernel, "auto"))
    assert set(kwargs) <= {*sig["positional"], *sig["keyword_only"]}, (version, kernel)


# ------------------------------------------------------------ flashinfer_benchmark.py

ROUND_TRIP = [
    (MLA, {"no_rope_dim": 64, "dtype": "bfloat16"}),
    (QUANT, {}),
    (QUANT, {"rope_dim": 64, "no_rope_dim": 64, "interleave": True,
             "quant_dtype": "float8_e5m2"}),
    (APPEND, {"page_size": 32, "kv_layout": "HND", "no_rope_dim": 32}),
]


@pytest.mark.parametrize(("kernel", "params"), ROUND_TRIP)
def test_a_points_command_reads_back_as_the_same_point(kernel: str,
                                                       params: dict[str, Any]) -> None:
    completed = complete_params(kernel, {**SMALL, **params}, "auto")
    repro = repro_command(kernel, completed, "auto")
    assert repro.command is not None and repro.reason is None
    (spec,) = line_specs(shlex.join(shlex.split(repro.command)[2:]), 1)
    sweep = SweepSpec(**{**spec, "targets": ["h200"], "flashinfer_versions": ["0.7.4"]})
    (grid,) = sweep.grid("auto")
    assert grid == completed


def _line(routine: str, extra: str) -> dict[str, Any]:
    (spec,) = line_specs(f"--routine {routine} --batch_size 2 --seq_len 64 --num_qo_heads 8 "
                         f"--num_kv_heads 2 {extra}", 1)
    return {k: v[0] for k, v in spec["params"].items()}


def test_the_tools_head_dim_is_split_as_each_routine_splits_it() -> None:
    # MLA rotates head_dim - no_rope_dim and reads no k heads
    p = _line(MLA, "--head_dim 192 --no_rope_dim 64 --rotary_dim 32")
    assert (p["rope_dim"], p["no_rope_dim"]) == (128, 64) and "num_kv_heads" not in p
    # rope_quantize_fp8 takes both parts as given, the rotated one head_dim by default
    p = _line(QUANT, "--head_dim 128 --no_rope_dim 32")
    assert (p["rope_dim"], p["no_rope_dim"]) == (128, 32)
    assert _line(QUANT, "--head_dim 128 --rotary_dim 64")["no_rope_dim"] == 0
    # the append leaves head_dim - rotary_dim unrotated and ignores --no_rope_dim
    p = _line(APPEND, "--head_dim 128 --rotary_dim 64 --no_rope_dim 16 --page_size 64")
    assert (p["rope_dim"], p["no_rope_dim"], p["page_size"], p["kv_layout"]) == (64, 64, 64,
                                                                                 "NHD")
    p = _line(QUANT, "--head_dim 64 --quant_dtype fp8_e5m2 --input_dtype bfloat16")
    assert (p["quant_dtype"], p["dtype"], p["interleave"]) == ("float8_e5m2", "bfloat16", False)


@pytest.mark.parametrize(("extra", "message"), [
    ("--head_dim 64 --quant_dtype int8", "--quant_dtype int8 cannot be mapped; allowed: "
                                         "fp8_e4m3, fp8_e5m2"),
    ("--head_dim 64 --no_rope_dim 64", "--head_dim 64: the rotated part would be 0"),
    ("--head_dim 64 --backends triton", "--backends triton: flashinfer_benchmark.py runs "
                                        "mla_rope_quantize_fp8 with cuda only"),
])
def test_lines_that_cannot_be_mapped_are_refused(extra: str, message: str) -> None:
    with pytest.raises(UnmappedLine, match=re.escape(message)):
        _line(MLA, extra)
