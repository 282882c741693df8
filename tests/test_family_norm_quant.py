"""The norm family's quantising and fused kernels (rmsnorm_quant, fused_add_rmsnorm_quant,
layernorm_quant, fused_rmsnorm_silu, fused_dit_layernorm, fused_qk_rmsnorm_rope): declarations,
validation, formulas, the FP8 tolerance, the PyTorch path against the float32 reference, the
FlashInfer call against each release's signatures (and refused where a release lacks it), and
both directions with flashinfer_benchmark.py. FlashInfer's path itself runs on the GPU."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import torch

from kernelwatch.core.benchmark_cli import UnmappedLine, line_specs, read_testlist, repro_command
from kernelwatch.core.spec import SweepSpec
from kernelwatch_harness.catalogue import complete_params
from kernelwatch_harness.families import norm_dit_ops, norm_quant_ops
from kernelwatch_harness.families.norm import DIT, DIT_MODES, FAMILY, QK_ROPE, SILU, fp8_step
from kernelwatch_harness.family import Operands, max_abs_error
from tests.family_support import fake_flashinfer
from tests.family_support import run_torch as family_run_torch

QUANT = ["rmsnorm_quant", "fused_add_rmsnorm_quant", "layernorm_quant"]
NEW = [*QUANT, SILU, DIT, QK_ROPE]
SMALL: dict[str, dict[str, Any]] = {
    **{k: {"batch_size": 8, "hidden_size": 256} for k in (*QUANT, SILU)},
    DIT: {"batch_size": 2, "seq_len": 8},
    QK_ROPE: {"batch_size": 2, "ppf": 2, "pph": 3, "ppw": 4},
}
SIGS: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "gpu" / "flashinfer_signatures.json").read_text()
)["versions"]
SAMPLE = Path(__file__).parent / "fixtures" / "testlist" / "norm.txt"


def point(kernel: str, backend: str = "torch", **over: Any) -> dict[str, Any]:
    return complete_params(kernel, {**SMALL[kernel], **over}, backend)


def run_torch(kernel: str, p: dict[str, Any]) -> tuple[list[torch.Tensor], Operands]:
    return family_run_torch(FAMILY, kernel, p)


# ------------------------------------------------------------------ declarations

def test_the_new_kernels_name_their_release_and_parameters() -> None:
    since = {k: FAMILY.kernels[k].since for k in NEW}
    assert since == {"rmsnorm_quant": "0.6.0", "fused_add_rmsnorm_quant": "0.6.0",
                     "layernorm_quant": "0.6.16", SILU: "0.6.8", DIT: "0.6.11",
                     QK_ROPE: "0.6.12"}
    assert FAMILY.kernels["rmsnorm_quant"].params == (
        "batch_size", "hidden_size", "dtype", "quant_dtype", "quant_scale")
    assert FAMILY.kernels[DIT].params == ("batch_size", "seq_len", "hidden_size", "dit_mode",
                                          "dtype")
    # the tool's defaults: --out_dtype fp8_e4m3 --scale 1.0, --dit_mode, --ppf/pph/ppw
    assert point("rmsnorm_quant")["quant_dtype"] == "float8_e4m3fn"
    assert point("rmsnorm_quant")["quant_scale"] == 1.0
    assert complete_params(DIT, {}, "auto")["hidden_size"] == 3072
    assert complete_params(DIT, {}, "auto")["dit_mode"] == "gate_residual_gamma_beta"
    qk = complete_params(QK_ROPE, {}, "auto")
    assert (qk["ppf"], qk["pph"], qk["ppw"], qk["hidden_size"], qk["num_heads"]) == \
        (5, 12, 32, 3072, 24)


@pytest.mark.parametrize(("kernel", "over", "message"), [
    ("layernorm_quant", {"dtype": "float16"},
     "dtype=float16: FlashInfer runs layernorm_quant in bfloat16 only (allowed: bfloat16)"),
    (SILU, {"dtype": "float16"}, "runs fused_rmsnorm_silu in bfloat16 only"),
    (SILU, {"hidden_size": 40001}, "hidden_size=40001: fused_rmsnorm_silu takes an even"),
    (DIT, {"hidden_size": 4096}, "hidden_size=4096: FlashInfer's fused_dit_layernorm takes "
                                 "hidden_size 3072 only (allowed: 3072)"),
    (QK_ROPE, {"num_heads": 0}, "num_heads=0: fused_qk_rmsnorm_rope takes 1 to 32 heads"),
    (QK_ROPE, {"num_heads": 48, "hidden_size": 6144}, "num_heads=48"),
    (QK_ROPE, {"num_heads": 32, "hidden_size": 3072},
     "hidden_size=3072, num_heads=32: fused_qk_rmsnorm_rope needs hidden_size = num_heads * "
     "head_dim with head_dim one of 64, 128, 256"),
])
def test_invalid_points_are_refused_naming_the_parameter(kernel: str, over: dict[str, Any],
                                                          message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        FAMILY.check_point(kernel, point(kernel, **over))


def test_a_sweep_with_a_refused_value_is_a_validation_error() -> None:
    with pytest.raises(ValueError, match="bfloat16 only"):
        SweepSpec(name="x", kernel="layernorm_quant", backends=["torch"],
                  params={"dtype": ["float16"]}, targets=["h200"]).grid("torch")
    with pytest.raises(ValueError, match="quant_dtype"):
        SweepSpec(name="x", kernel="rmsnorm_quant", backends=["torch"],
                  params={"quant_dtype": ["nvfp4"]}, targets=["h200"])


# ------------------------------------------------------------------ formulas

def test_bytes_and_flops() -> None:
    n, h = 3 * 128, 128
    q = point("rmsnorm_quant", batch_size=3, hidden_size=h, dtype="float16")
    assert FAMILY.work("rmsnorm_quant", q).bytes == n * 2 + h * 2 + n * 1  # x, w in; fp8 out
    assert FAMILY.work("rmsnorm_quant", q).flops == n * 6
    f = FAMILY.work("fused_add_rmsnorm_quant", q)
    assert f.bytes == n * 2 * 3 + n + h * 2 and f.flops == n * 7  # x, r in, r out, fp8 out
    ln = FAMILY.work("layernorm_quant", {**q, "dtype": "bfloat16"})
    assert ln.bytes == n * 2 + n + 2 * h * 4 and ln.flops == n * 8  # float32 gamma, beta
    s = FAMILY.work(SILU, {**q, "dtype": "bfloat16"})
    assert s.bytes == n * 2 * 2 + h * 2 and s.flops == n * 7
    rows = 2 * 8 * 3072
    for mode, slices, vectors, flops in (("gate_residual_gamma_beta", 1, 3, 10),
                                         ("gate_residual_scale_shift", 3, 3, 13),
                                         ("residual_scale_shift", 2, 2, 11)):
        w = FAMILY.work(DIT, point(DIT, dit_mode=mode))
        assert w.bytes == rows * 2 * (4 + slices) + vectors * 3072 * 4, mode
        assert w.flops == rows * flops, mode
    qk = FAMILY.work(QK_ROPE, point(QK_ROPE))
    tokens = 2 * 2 * 3 * 4
    assert qk.bytes == 6 * tokens * 3072 * 2 + 2 * 3072 * 2
    assert qk.flops == 2 * tokens * 3072 * 8
    for kernel in NEW:
        assert FAMILY.memory_bytes(kernel, point(kernel)) > FAMILY.work(kernel, point(kernel)).bytes


def test_the_fp8_step_is_the_widest_spacing_below_the_bound() -> None:
    assert fp8_step("float8_e4m3fn", 4.0) == 0.25  # [2, 4): 3 mantissa bits
    assert fp8_step("float8_e4m3fn", 3.0) == 0.25
    assert fp8_step("float8_e5m2", 4.0) == 0.5
    assert fp8_step("float8_e4m3fn", 1e6) == 32.0  # saturated at 448: [256, 448]
    assert fp8_step("float8_e4m3fn", 1e-6) == 2.0 ** -9  # the subnormals' spacing
    tol = FAMILY.tolerance("rmsnorm_quant", point("rmsnorm_quant", quant_scale=2.0))
    assert tol == 2.0 * 0.125  # outputs below 4 are below 2 in FP8 units
    assert FAMILY.tolerance("rmsnorm_quant", point("rmsnorm_quant",
                                                   quant_dtype="float8_e5m2")) == 0.5


# ------------------------------------------------------------------ reference and torch

TORCH_CASES = [
    ("rmsnorm_quant", {}),
    ("rmsnorm_quant", {"quant_dtype": "float8_e5m2", "dtype": "float16", "quant_scale": 0.05}),
    ("rmsnorm_quant", {"quant_scale": 0.001}),  # saturates: both sides clamp
    ("fused_add_rmsnorm_quant", {"quant_scale": 3.0}),
    ("fused_add_rmsnorm_quant", {"dtype": "float16", "quant_dtype": "float8_e5m2"}),
    ("layernorm_quant", {}),
    ("layernorm_quant", {"quant_scale": 0.25}),
    (SILU, {}),
    *((DIT, {"dit_mode": m}) for m in DIT_MODES),
    (QK_ROPE, {}),
    (QK_ROPE, {"hidden_size": 512, "num_heads": 2, "ppw": 5}),  # head_dim 256
    (QK_ROPE, {"hidden_size": 256, "num_heads": 4}),  # head_dim 64
]


@pytest.mark.parametrize(("kernel", "over"), TORCH_CASES)
def test_the_torch_path_matches_the_float32_reference(kernel: str, over: dict[str, Any]) -> None:
    p = point(kernel, **over)
    FAMILY.check_point(kernel, p)
    outs, inp = run_torch(kernel, p)
    refs = FAMILY.reference(inp)
    assert all(r.dtype == torch.float32 for r in refs)
    assert max_abs_error(outs, refs) <= FAMILY.tolerance(kernel, p)


def test_quantised_outputs_are_fp8_and_compared_dequantised() -> None:
    p = point("rmsnorm_quant", quant_scale=2.0)
    inp = FAMILY.inputs("rmsnorm_quant", p, "torch", "cpu")
    prepared = FAMILY.prepare("torch", inp, "cpu")
    raw = prepared.fn(inp.data)
    assert raw.dtype == torch.float8_e4m3fn
    (out,) = prepared.outputs(raw)
    assert torch.equal(out, raw.float() * 2.0)
    assert inp.kept["out"].dtype == torch.float8_e4m3fn  # FlashInfer's output buffer


def test_wrong_results_are_caught() -> None:
    # the weight left out of the quantised norm: off by |x| (1 - |w|), O(1)
    p = point("rmsnorm_quant")
    inp = FAMILY.inputs("rmsnorm_quant", p, "torch", "cpu")
    inp.data["w"] = torch.ones_like(inp.data["w"])
    prepared = FAMILY.prepare("torch", inp, "cpu")
    err = max_abs_error(prepared.outputs(prepared.fn(inp.data)), FAMILY.reference(inp))
    assert err > FAMILY.tolerance("rmsnorm_quant", p)
    # a scale applied the wrong way round
    p = point("layernorm_quant", quant_scale=0.25)
    inp = FAMILY.inputs("layernorm_quant", p, "torch", "cpu")
    wrong = FAMILY.prepare("torch", FAMILY.inputs("layernorm_quant", point(
        "layernorm_quant", quant_scale=4.0), "torch", "cpu"), "cpu")
    out = wrong.fn(inp.data).float() * 0.25
    assert max_abs_error([out], FAMILY.reference(inp)) > FAMILY.tolerance("layernorm_quant", p)
    # one DiT mode's result where another was asked for
    a = point(DIT, dit_mode="gate_residual_gamma_beta")
    inp = FAMILY.inputs(DIT, a, "torch", "cpu")
    other = FAMILY.prepare("torch", FAMILY.inputs(DIT, point(
        DIT, dit_mode="gate_residual_scale_shift"), "torch", "cpu"), "cpu")
    err = max_abs_error(other.outputs(other.fn(inp.data)), FAMILY.reference(inp))
    assert err > FAMILY.tolerance(DIT, a)
    # the rotation left out: q and k normalised only
    p = point(QK_ROPE)
    inp = FAMILY.inputs(QK_ROPE, p, "torch", "cpu")
    inp.kept["angles"] = torch.zeros_like(inp.kept["angles"])
    prepared = FAMILY.prepare("torch", inp, "cpu")
    outs = prepared.outputs(prepared.fn(inp.data))
    inp.kept["angles"] = norm_dit_ops.qk_angles(p, "cpu")
    assert max_abs_error(outs, FAMILY.reference(inp)) > FAMILY.tolerance(QK_ROPE, p)


def test_the_3d_positions_and_frequencies_are_the_tools() -> None:
    p = point(QK_ROPE, ppf=2, pph=3, ppw=4)
    assert norm_dit_ops.qk_dims(p) == (128, 44, 42, 42)  # 2 * (128 // 6) each for h, w
    angles = norm_dit_ops.qk_angles(p, "cpu")
    assert angles.shape == (24, 64)
    token = 1 * 12 + 2 * 4 + 3  # frame 1, row 2, column 3
    # each section's first pair turns by its own position (frequency 1)
    assert angles[token, 0] == 1 and angles[token, 22] == 2 and angles[token, 43] == 3
    assert angles[token, 1] == pytest.approx(1 * 10000 ** (-2 / 44))
    assert angles[token, 23] == pytest.approx(2 * 10000 ** (-2 / 42))


def test_the_reference_is_not_fooled_by_a_kernel_writing_its_inputs() -> None:
    inp = FAMILY.inputs("fused_add_rmsnorm_quant", point("fused_add_rmsnorm_quant"), "auto",
                        "cpu")
    before = FAMILY.reference(inp)
    inp.data["r"].add_(inp.data["x"])  # what the kernel does to r, call after call
    assert all(torch.equal(a, b) for a, b in
               zip(before, FAMILY.reference(inp), strict=True))


def test_inputs_are_seeded_and_bounded() -> None:
    for kernel in NEW:
        a = FAMILY.inputs(kernel, point(kernel), "torch", "cpu")
        b = FAMILY.inputs(kernel, point(kernel), "auto", "cpu")
        assert all(torch.equal(a.data[k], b.data[k]) for k in a.data), kernel
    w = FAMILY.inputs("rmsnorm_quant", point("rmsnorm_quant"), "torch", "cpu").data["w"]
    assert float(w.abs().max()) <= norm_quant_ops.QUANT_WEIGHT
    dit = FAMILY.inputs(DIT, point(DIT), "torch", "cpu").data
    gate, _ = norm_dit_ops._slot(dit, 2)
    assert gate.shape == (2, 8, 3072) and gate.stride(1) == 6 * 3072  # FlashInfer's stride


# ------------------------------------------------------------------ FlashInfer's call

def _fake_flashinfer(monkeypatch: pytest.MonkeyPatch, version: str = "0.6.18",
                     **functions: Any) -> None:
    fake_flashinfer(monkeypatch, "norm", version, **functions)


def test_a_release_without_the_function_is_refused_naming_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_flashinfer(monkeypatch, "0.5.3")
    for kernel, function in (("rmsnorm_quant", "rmsnorm_quant"),
                             (DIT, DIT_MODES["residual_scale_shift"]), (QK_ROPE, QK_ROPE)):
        p = point(kernel, "auto", **({"dit_mode": "residual_scale_shift"} if kernel == DIT
                                     else {}))
        inp = FAMILY.inputs(kernel, p, "auto", "cpu")
        since = FAMILY.kernels[kernel].since
        with pytest.raises(NotImplementedError, match=re.escape(
                f"FlashInfer 0.5.3 has no flashinfer.norm.{function} (FlashInfer {since} and "
                "later have it)")):
            FAMILY._ops()._module(kernel).prepare("auto", inp, "cuda")


def test_the_quantising_call_passes_the_tools_arguments(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fused_add_rmsnorm_quant(out: Any, input: Any, residual: Any, weight: Any, scale: Any,
                                eps: float = 1e-6, enable_pdl: Any = None) -> None:
        seen.update(out=out, input=input, residual=residual, weight=weight, scale=scale,
                    eps=eps)

    _fake_flashinfer(monkeypatch, fused_add_rmsnorm_quant=fused_add_rmsnorm_quant,
                     _normalize_scale_tensor=lambda s, t: s)
    p = point("fused_add_rmsnorm_quant", "auto", quant_scale=0.5)
    inp = FAMILY.inputs("fused_add_rmsnorm_quant", p, "auto", "cpu")
    prepared = norm_quant_ops.prepare("auto", inp, "cpu")
    out, r = prepared.fn(inp.data)
    assert seen["out"] is inp.kept["out"] is out and r is inp.data["r"]
    assert seen["input"] is inp.data["x"] and seen["residual"] is inp.data["r"]
    assert seen["weight"] is inp.data["w"] and seen["eps"] == 1e-6
    # a release that normalises the scale takes a float32 tensor of one element
    assert isinstance(seen["scale"], torch.Tensor) and seen["scale"].tolist() == [0.5]
    assert prepared.resolved_backend == "cuda"  # no CuTe-DSL form in this release


def test_a_release_before_tensor_scales_is_given_a_float(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def rmsnorm_quant(out: Any, input: Any, weight: Any, scale: float, eps: float = 1e-6,
                      enable_pdl: Any = None) -> None:
        seen["scale"] = scale

    _fake_flashinfer(monkeypatch, "0.6.0", rmsnorm_quant=rmsnorm_quant)
    inp = FAMILY.inputs("rmsnorm_quant", point("rmsnorm_quant", "auto", quant_scale=2.0),
                        "auto", "cpu")
    norm_quant_ops.prepare("auto", inp, "cpu").fn(inp.data)
    assert seen["scale"] == 2.0


def test_the_dit_call_passes_each_modes_slices() -> None:
    d = FAMILY.inputs(DIT, point(DIT), "auto", "cpu").data
    args, kwargs = norm_dit_ops.dit_call("gate_residual_gamma_beta", d)
    assert args[:2] == (d["x"], d["r"]) and args[3] is d["gamma"] and args[4] is d["beta"]
    assert torch.equal(args[2], d["temb"][:, :, 2])
    assert torch.equal(kwargs["gate_bias"], d["table"][:, 2]) and kwargs["epsilon"] == 1e-6
    args, kwargs = norm_dit_ops.dit_call("residual_scale_shift", d)
    assert args[0] is d["x"] and kwargs["residual"] is d["r"]
    assert torch.equal(args[1], d["temb"][:, :, 4]) and torch.equal(args[2], d["temb"][:, :, 3])
    assert set(kwargs) == {"residual", "scale_bias", "shift_bias", "epsilon"}


@pytest.mark.parametrize("version", sorted(SIGS))
def test_the_calls_fit_every_releases_signature(version: str) -> None:
    """The positional tensors and keywords each call passes are the parameters of
    flashinfer.norm's function in each release that has it
    (tests/fixtures/gpu/flashinfer_signatures.json, read from the wheels); a release without
    it predates the kernel's ``since``."""
    sigs = SIGS[version]
    calls: dict[str, tuple[list[str], set[str]]] = {}
    for kernel, pairs in norm_quant_ops.POSITIONAL.items():
        calls[kernel] = ([name for name, _ in pairs], set(norm_quant_ops.keywords(kernel)))
    d = FAMILY.inputs(DIT, point(DIT), "auto", "cpu").data
    for mode, function in DIT_MODES.items():
        args, kwargs = norm_dit_ops.dit_call(mode, d)
        calls[function] = (["input"] + ["residual"] * (len(args) == 5), set(kwargs))
    calls[QK_ROPE] = (["qkv", "q_weight", "k_weight"],
                      set(norm_dit_ops.qk_kwargs(point(QK_ROPE))))
    since = {**{k: FAMILY.kernels[k].since for k in norm_quant_ops.POSITIONAL},
             **dict.fromkeys(DIT_MODES.values(), FAMILY.kernels[DIT].since),
             QK_ROPE: FAMILY.kernels[QK_ROPE].since}
    for function, (positional, keywords) in calls.items():
        if function not in sigs:
            assert version < str(since[function]), (version, function)
            continue
        (sig,) = sigs[function]
        assert sig["file"] == "flashinfer/norm/__init__.py"
        assert sig["positional"][:len(positional)] == positional, (version, function)
        assert keywords <= {*sig["positional"], *sig["keyword_only"]}, (version, function)


# ------------------------------------------------------------ flashinfer_benchmark.py

ROUND_TRIP = [
    ("rmsnorm_quant", {}),
    ("rmsnorm_quant", {"quant_dtype": "float8_e5m2", "quant_scale": 0.123456789,
                       "dtype": "float16", "batch_size": 64, "hidden_size": 8192}),
    ("fused_add_rmsnorm_quant", {"quant_scale": 2.0}),
    ("layernorm_quant", {}),
    (SILU, {"batch_size": 1560, "hidden_size": 160}),
    (DIT, {"seq_len": 4096, "dit_mode": "residual_scale_shift"}),
    (QK_ROPE, {"hidden_size": 1536, "num_heads": 12, "ppf": 10}),
]


@pytest.mark.parametrize(("kernel", "params"), ROUND_TRIP)
def test_a_points_command_reads_back_as_the_same_series(kernel: str,
                                                        params: dict[str, Any]) -> None:
    completed = complete_params(kernel, params, "auto")
    repro = repro_command(kernel, completed, "auto")
    assert repro.command is not None
    assert (repro.reason is not None) == (kernel == DIT)  # the tool's --hidden_size is rows
    (spec,) = line_specs(shlex.join(shlex.split(repro.command)[2:]), 1)
    sweep = SweepSpec(**{**spec, "targets": ["h200"], "flashinfer_versions": ["0.7.4"]})
    (grid,) = sweep.grid("auto")
    assert grid == completed


def test_the_dit_routine_reads_hidden_size_as_rows() -> None:
    (spec,) = line_specs("--routine fused_dit_layernorm --batch_size 1 --hidden_size 1024 "
                         "--dit_mode gate_residual_scale_shift --input_dtype float16", 1)
    assert spec["params"] == {"batch_size": [1], "seq_len": [1024], "hidden_size": [3072],
                              "dit_mode": ["gate_residual_scale_shift"],
                              "dtype": ["bfloat16"]}  # the tool builds it in bfloat16
    repro = repro_command(DIT, {"seq_len": 1024}, "auto")
    assert repro.command is not None and "--hidden_size 1024" in repro.command


@pytest.mark.parametrize(("line", "message"), [
    ("--routine rmsnorm_quant --batch_size 8 --hidden_size 4096 --out_dtype nvfp4",
     "--out_dtype nvfp4: rmsnorm_quant quantises to fp8_e4m3 or fp8_e5m2"),
    ("--routine layernorm_quant --batch_size 8 --hidden_size 4096 --input_dtype float16",
     "--input_dtype float16: flashinfer_benchmark.py runs layernorm_quant in bfloat16 only"),
    ("--routine layernorm_quant --backends cute-dsl --batch_size 8 --hidden_size 4096",
     "--backends cute-dsl: kernelwatch runs layernorm_quant with FlashInfer's own dispatch "
     "(cuda)"),
    ("--routine fused_qk_rmsnorm_rope --batch_size 1 --hidden_size 3072",
     "--num_heads is required for fused_qk_rmsnorm_rope"),
    ("--routine fused_dit_layernorm --batch_size 1 --hidden_size 64 --dit_mode x",
     "--dit_mode x cannot be mapped"),
    ("--routine rmsnorm_quant --batch_size 8 --hidden_size 4096 --eps 1e-5",
     "--eps 1e-5: kernelwatch measures eps=1e-06"),
    ("--routine add_rmsnorm_fp4quant --batch_size 8 --hidden_size 4096 --use_global_scale",
     "--routine add_rmsnorm_fp4quant: kernelwatch does not run add_rmsnorm_fp4quant's "
     "FlashInfer call yet"),
    ("--routine rmsnorm --batch_size 8 --hidden_size 4096 --use_global_scale",
     "--use_global_scale: only the FP4 norm routines"),
])
def test_lines_that_cannot_be_mapped_are_refused(line: str, message: str) -> None:
    with pytest.raises(UnmappedLine, match=re.escape(message)):
        line_specs(line, 3)


def test_the_tools_sample_norm_lines() -> None:
    """FlashInfer's sample testlist (v0.6.18rc7): its quantising lines are read; the FP4 ones
    (Blackwell only) and --enable_pdl are refused with the reason."""
    specs, refused = read_testlist(SAMPLE.read_text().splitlines())
    kernels = [s["kernel"] for s in specs]
    assert kernels.count("rmsnorm_quant") == 2 and kernels.count("fused_add_rmsnorm_quant") == 2
    quant = next(s for s in specs if s["name"] == "rmsnorm_quant_large")
    assert quant["params"] == {"batch_size": [64], "hidden_size": [8192],
                               "dtype": ["bfloat16"], "quant_dtype": ["float8_e4m3fn"],
                               "quant_scale": [1.0]}
    reasons = [str(e) for e in refused]
    assert sum("rmsnorm_fp4quant: kernelwatch does not run" in r for r in reasons) == 16
    assert sum("--enable_pdl cannot be mapped" in r for r in reasons) == 4
    assert len(refused) == 20
