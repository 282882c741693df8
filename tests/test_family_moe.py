"""The MoE family (kernelwatch_harness.families.moe): declarations, formulas, inputs, reference
and PyTorch path on CPU, refusals, flashinfer_benchmark.py both ways, and the adapter's
arguments against each release's signature; FlashInfer's path runs on the GPU."""

from __future__ import annotations

import json
import math
import re
import shlex
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from kernelwatch.core.benchmark_cli import UnmappedLine, line_specs, read_testlist, repro_command
from kernelwatch.core.spec import SweepSpec
from kernelwatch_harness import catalogue, measure
from kernelwatch_harness.catalogue import KERNELS, complete_params
from kernelwatch_harness.families import moe_ops
from kernelwatch_harness.families.moe import (
    BGMV_SINCE,
    DECLARED,
    FAMILY,
    MEASURED,
    expected_distinct,
)
from kernelwatch_harness.family import Family, max_abs_error, release
from tests.api_support import auth, make_client, new_token

FIXTURES = Path(__file__).parent / "fixtures"
SIGS: dict[str, dict[str, Any]] = json.loads(
    (FIXTURES / "gpu" / "flashinfer_signatures.json").read_text())["versions"]
SMALL = {"num_tokens": 12, "hidden_size": 384, "intermediate_size": 256, "num_experts": 6,
         "experts_per_token": 2, "rank": 16, "num_loras": 3, "num_slices": 2}


def point(kernel: str, backend: str = "torch", **over: Any) -> dict[str, Any]:
    return complete_params(kernel, {**SMALL, **over}, backend)


def run_torch(kernel: str, p: dict[str, Any]) -> tuple[moe_ops.Operands, list[torch.Tensor]]:
    inp = FAMILY.inputs(kernel, p, "torch", "cpu")
    prepared = FAMILY.prepare("torch", inp, "cpu")
    return inp, prepared.outputs(prepared.fn(inp.data))


def test_it_declares_a_whole_family() -> None:
    assert isinstance(FAMILY, Family) and FAMILY.name == "moe"
    assert catalogue.FAMILIES["moe"] is FAMILY
    assert set(FAMILY.kernels) == {*MEASURED, *DECLARED} and len(FAMILY.kernels) == 8
    for k in FAMILY.kernels.values():
        assert k.family == "moe" and k.routine == k.name and KERNELS[k.name] is k
    assert all(p.doc for p in FAMILY.params.values())
    cutlass, bgmv = KERNELS["cutlass_fused_moe"], KERNELS["bgmv_moe"]
    assert cutlass.backends == ("cutlass", "torch") and bgmv.backends == ("cuda", "torch")
    # FlashInfer builds cutlass_fused_moe for SM89/SM90/Blackwell, bgmv_moe for SM90+
    assert "sm90" in cutlass.archs and "sm89" in cutlass.archs and "sm80" not in cutlass.archs
    assert bgmv.archs[0] == "sm90" and "sm89" not in bgmv.archs and bgmv.since == "0.6.13"
    for name in DECLARED:
        assert not set(KERNELS[name].archs) & {"sm80", "sm86", "sm89", "sm90"}, name
        assert KERNELS[name].torch_backends == ()


def test_the_tools_top_k_is_not_the_samplers() -> None:
    # one name, one meaning on every page: the sampling family owns top_k
    assert "top_k" not in FAMILY.params
    assert catalogue.PARAMS["hidden_size"].default == FAMILY.params["hidden_size"].default


def test_bytes_and_flops_count_the_gemms_and_the_active_experts_weights() -> None:
    p = point("cutlass_fused_moe", num_tokens=3, hidden_size=128, intermediate_size=64,
              num_experts=4, experts_per_token=2, dtype="float16")
    work = FAMILY.work("cutlass_fused_moe", p)
    assert work.flops == 3 * 2 * (2 * 128 * 128 + 2 * 64 * 128)
    active = 4 * (1 - (1 - 2 / 4) ** 3)  # 3.5 of 4 experts, expected
    assert work.extra["active_experts"] == pytest.approx(active)
    assert work.bytes == pytest.approx(3 * 128 * 2 * 2 + 6 * 8 + active * 3 * 64 * 128 * 2)
    # a single token reads exactly its k experts' weights
    one = FAMILY.work("cutlass_fused_moe", {**p, "num_tokens": 1})
    assert one.extra["active_experts"] == pytest.approx(2)
    # block-scaled kernels read fewer bytes per weight
    fp4 = FAMILY.work("trtllm_fp4_block_scale_moe", p)
    assert fp4.flops == work.flops and fp4.bytes < work.bytes


def test_bgmv_bytes_and_flops() -> None:
    p = point("bgmv_moe", num_tokens=4, hidden_size=384, experts_per_token=2, rank=8,
              num_slices=2, num_loras=3, num_experts=6)
    work = FAMILY.work("bgmv_moe", p)
    assert work.flops == 2 * 8 * 4 * 384 * 8  # slices * pairs * (shrink + expand) * h * r
    cells = expected_distinct(18, 8)
    assert work.extra["active_cells"] == pytest.approx(cells)
    expected = (4 * 384 * 2 + 2 * cells * 2 * 8 * 384 * 2 + 8 * 20 + 4 * 8
                + 2 * 2 * 8 * 8 * 2 + 4 * 2 * 384 * 4)
    assert work.bytes == pytest.approx(expected)
    assert FAMILY.memory_bytes("bgmv_moe", p) > 0


def test_expected_distinct_experts() -> None:
    assert expected_distinct(8, 1, 2) == pytest.approx(2)
    assert expected_distinct(8, 10_000, 2) == pytest.approx(8)
    assert expected_distinct(100, 3) == pytest.approx(100 * (1 - 0.99 ** 3))


@pytest.mark.parametrize("kernel", MEASURED)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_the_torch_path_matches_the_float32_reference(kernel: str, dtype: str) -> None:
    p = point(kernel, dtype=dtype)
    inp, outs = run_torch(kernel, p)
    assert inp.data["x"].dtype == getattr(torch, dtype)
    (ref,) = FAMILY.reference(inp)
    width = 384 * (2 if kernel == "bgmv_moe" else 1)
    assert outs[0].shape == ref.shape == (12, width) and ref.dtype == torch.float32
    assert max_abs_error(outs, [ref]) <= FAMILY.tolerance(kernel, p)


def _naive_moe(d: dict[str, Any]) -> torch.Tensor:
    """Token by token, expert by expert: what the kernel computes, written plainly."""
    x, out = d["x"].double(), torch.zeros(d["x"].shape, dtype=torch.float64)
    for t in range(x.shape[0]):
        for e, w in zip(d["experts"][t].tolist(), d["weights"][t].tolist(), strict=True):
            fc1, fc2 = d["fc1"][e].double(), d["fc2"][e].double()
            half = fc1.shape[0] // 2
            up, gate = x[t] @ fc1[:half].T, x[t] @ fc1[half:].T
            out[t] += w * (fc2 @ (F.silu(gate) * up))
    return out


def test_the_reference_is_the_routed_swiglu_moe() -> None:
    p = point("cutlass_fused_moe", experts_per_token=3)
    inp = FAMILY.inputs("cutlass_fused_moe", p, "cutlass", "cpu")
    (ref,) = FAMILY.reference(inp)
    assert torch.allclose(ref.double(), _naive_moe(inp.data), rtol=1e-4, atol=1e-3)


def test_routing_is_the_tools_softmax_top_k_renormalised() -> None:
    inp = FAMILY.inputs("cutlass_fused_moe", point("cutlass_fused_moe"), "cutlass", "cpu")
    experts, weights = inp.data["experts"], inp.data["weights"]
    assert experts.dtype == torch.int32 and weights.dtype == torch.float32
    assert experts.shape == weights.shape == (12, 2)
    assert torch.allclose(weights.sum(-1), torch.ones(12))
    assert all(len(set(row)) == 2 for row in experts.tolist())  # distinct experts
    logits = torch.tensor([[0.0, 2.0, 1.0, -1.0]])
    e, w = moe_ops.route(logits, 2)
    p = torch.softmax(logits, -1)[0]
    assert e.tolist() == [[1, 2]]
    assert w[0].tolist() == pytest.approx([float(p[1] / (p[1] + p[2])),
                                           float(p[2] / (p[1] + p[2]))])


def _naive_lora(d: dict[str, Any]) -> torch.Tensor:
    x = d["x"].double()
    n, h = x.shape
    y = torch.zeros(n, len(d["lora_a"]) * h, dtype=torch.float64)
    for p, (t, e) in enumerate(zip(d["token_ids"].tolist(), d["expert_ids"].tolist(),
                                   strict=True)):
        lora = int(d["lora_indices"][t])
        for s, (a, b) in enumerate(zip(d["lora_a"], d["lora_b"], strict=True)):
            delta = b[lora, e].double() @ (a[lora, e].double() @ x[t])
            y[t, s * h:(s + 1) * h] += float(d["weights"][p]) * delta
    return y


def test_the_bgmv_reference_is_each_pairs_weighted_lora_delta() -> None:
    inp = FAMILY.inputs("bgmv_moe", point("bgmv_moe"), "cuda", "cpu")
    d = inp.data
    assert d["token_ids"].tolist() == [t for t in range(12) for _ in range(2)]
    assert d["expert_ids"].dtype == d["lora_indices"].dtype == torch.int64
    assert int(d["lora_indices"].max()) < 3 and int(d["expert_ids"].max()) < 6
    (ref,) = FAMILY.reference(inp)
    assert torch.allclose(ref.double(), _naive_lora(d), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("wrong", ["gate_up_swapped", "weights_ignored", "other_expert"])
def test_a_wrong_moe_is_caught(wrong: str) -> None:
    p = point("cutlass_fused_moe")
    inp = FAMILY.inputs("cutlass_fused_moe", p, "torch", "cpu")
    d = dict(inp.data)
    if wrong == "gate_up_swapped":
        d["fc1"] = torch.cat(d["fc1"].chunk(2, dim=1)[::-1], dim=1)
    elif wrong == "weights_ignored":
        d["weights"] = torch.full_like(d["weights"], 0.5)
    else:
        d["experts"] = (d["experts"] + 1) % p["num_experts"]
    bad = moe_ops.moe_layer(d, torch.bfloat16)
    assert max_abs_error([bad], FAMILY.reference(inp)) > FAMILY.tolerance("cutlass_fused_moe", p)


@pytest.mark.parametrize("wrong", ["other_adapter", "unweighted"])
def test_a_wrong_lora_delta_is_caught(wrong: str) -> None:
    p = point("bgmv_moe")
    inp = FAMILY.inputs("bgmv_moe", p, "torch", "cpu")
    d = dict(inp.data)
    if wrong == "other_adapter":
        d["lora_indices"] = (d["lora_indices"] + 1) % p["num_loras"]
    else:
        d["weights"] = torch.ones_like(d["weights"])
    bad = moe_ops.lora_delta(d, torch.bfloat16)
    assert max_abs_error([bad], FAMILY.reference(inp)) > FAMILY.tolerance("bgmv_moe", p)


@pytest.mark.parametrize("kernel", MEASURED)
def test_inputs_are_seeded(kernel: str) -> None:
    a = FAMILY.inputs(kernel, point(kernel), "torch", "cpu")
    b = FAMILY.inputs(kernel, point(kernel), "torch", "cpu")
    assert all(torch.equal(x, y) for x, y in zip(measure_tensors(a.data),
                                                 measure_tensors(b.data), strict=True))


def measure_tensors(data: dict[str, Any]) -> list[torch.Tensor]:
    from kernelwatch_harness.family import tensors

    return tensors(data)


def _fill_w_ptr(w_ptr: torch.Tensor, weights: torch.Tensor, num_experts: int,
                slice_id: int) -> int:
    """FlashInfer's fill_w_ptr (fused_moe/bgmv_moe.py, 0.6.13 to 0.7.4), for the CPU."""
    step = weights.stride(1) * weights.element_size()
    w_ptr[slice_id, :num_experts] = torch.arange(num_experts) * step + weights.data_ptr()
    return weights.stride(0)


def test_a_rotated_copy_points_at_its_own_lora_weights() -> None:
    inp = FAMILY.inputs("bgmv_moe", point("bgmv_moe"), "cuda", "cpu")
    strides = moe_ops.lora_tables(inp.data, _fill_w_ptr)
    inp.kept["point_at"] = lambda d: moe_ops.lora_tables(d, _fill_w_ptr)
    copy = inp.copy_data()
    for side in ("a", "b"):
        for s in range(2):
            for d in (inp.data, copy):
                assert int(d[f"w_ptr_{side}"][s, 0]) == d[f"lora_{side}"][s].data_ptr()
    assert copy["lora_a"][0].data_ptr() != inp.data["lora_a"][0].data_ptr()
    assert strides == {"a": 6 * 16 * 384, "b": 6 * 384 * 16}  # one adapter's elements
    assert copy["y"].shape == (12, 2 * 384) and copy["y"].dtype == torch.float32
    assert copy["shrink"].shape == (2, 24, 16) and copy["slice_start"].tolist() == [0, 384]


def test_the_bgmv_call_takes_fill_w_ptr_from_the_module_not_the_reexported_function(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """flashinfer/fused_moe/__init__.py re-exports the module's ``bgmv_moe`` function under
    the module's name, so ``from flashinfer.fused_moe import bgmv_moe`` is the function: the
    adapter takes the shrink, the expand and fill_w_ptr from the module in sys.modules (as a
    GPU run of 0.6.18.post1 and 0.7.4 showed, the function has no fill_w_ptr)."""
    calls: list[str] = []

    def shrink(**kw: Any) -> None:
        calls.append("shrink")

    def expand(**kw: Any) -> None:
        calls.append("expand")
        kw["y"].add_(1.0)

    module = ModuleType(moe_ops.BGMV_MODULE)
    module.fill_w_ptr = _fill_w_ptr  # type: ignore[attr-defined]
    module.bgmv_moe_shrink = shrink  # type: ignore[attr-defined]
    module.bgmv_moe_expand = expand  # type: ignore[attr-defined]
    package = ModuleType("flashinfer.fused_moe")
    package.bgmv_moe = lambda *a, **k: None  # type: ignore[attr-defined]  # the function
    fi = ModuleType("flashinfer")
    fi.__version__ = "0.7.4"  # type: ignore[attr-defined]
    fi.fused_moe = package  # type: ignore[attr-defined]
    for name, m in (("flashinfer", fi), ("flashinfer.fused_moe", package),
                    (moe_ops.BGMV_MODULE, module)):
        monkeypatch.setitem(sys.modules, name, m)
    inp = FAMILY.inputs("bgmv_moe", point("bgmv_moe"), "cuda", "cpu")
    y = moe_ops._flashinfer_bgmv(inp)(inp.data)
    assert calls == ["shrink", "expand"] and bool((y == 1.0).all())
    assert int(inp.data["w_ptr_a"][0, 0]) == inp.data["lora_a"][0].data_ptr()


# ---------------------------------------------------------------------------- refusals


def _on_gpu(monkeypatch: pytest.MonkeyPatch, major: int, minor: int) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: (major, minor))


def test_flashinfer_needs_a_gpu_and_unknown_backends_are_refused() -> None:
    inp = FAMILY.inputs("cutlass_fused_moe", point("cutlass_fused_moe"), "cutlass", "cpu")
    with pytest.raises(NotImplementedError, match="needs a CUDA device"):
        FAMILY.prepare("cutlass", inp, "cpu")
    with pytest.raises(NotImplementedError, match="'cuda' is not offered for cutlass_fused"):
        FAMILY.prepare("cuda", inp, "cpu")


@pytest.mark.parametrize("kernel", list(DECLARED))
def test_a_blackwell_only_moe_is_refused_on_hopper_with_the_reason(
        kernel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _on_gpu(monkeypatch, 9, 0)
    (backend,) = KERNELS[kernel].flashinfer_backends
    inp = FAMILY.inputs(kernel, point(kernel, backend), backend, "cpu")
    with pytest.raises(measure.Unsupported, match=f"FlashInfer runs {kernel} on "
                                                   f"{', '.join(DECLARED[kernel][1])}; "
                                                   "this GPU is sm90"):
        measure._prepare(backend, inp, "cuda")
    # and on Blackwell kernelwatch says it does not run the call
    with pytest.raises(NotImplementedError, match=r"does not run .* block-scaled"):
        FAMILY.prepare(backend, inp, "cuda")


@pytest.mark.parametrize(("kernel", "arch"), [
    ("cutlass_fused_moe", (8, 0)), ("cutlass_fused_moe", (8, 6)), ("bgmv_moe", (8, 9)),
    ("bgmv_moe", (8, 0))])
def test_ampere_is_refused_naming_the_archs(kernel: str, arch: tuple[int, int],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _on_gpu(monkeypatch, *arch)
    backend = KERNELS[kernel].flashinfer_backends[0]
    inp = FAMILY.inputs(kernel, point(kernel, backend), backend, "cpu")
    with pytest.raises(measure.Unsupported, match=f"this GPU is sm{arch[0]}{arch[1]}"):
        measure._prepare(backend, inp, "cuda")
    assert measure.classify(measure.Unsupported("x")) == "unsupported"


def test_a_release_without_bgmv_moe_is_refused_naming_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    monkeypatch.setitem(sys.modules, "flashinfer", types.SimpleNamespace(__version__="0.5.3"))
    inp = FAMILY.inputs("bgmv_moe", point("bgmv_moe", "cuda"), "cuda", "cpu")
    with pytest.raises(NotImplementedError, match=r"FlashInfer 0\.5\.3 has no flashinfer\."
                                                  r"fused_moe\.bgmv_moe \(added in 0\.6\.13\)"):
        FAMILY.prepare("cuda", inp, "cuda")


# ----------------------------------------------------------- the signatures of each release


def _names(sig: dict[str, Any]) -> set[str]:
    return set(sig["positional"]) | set(sig["keyword_only"])


@pytest.mark.parametrize("version", sorted(SIGS))
def test_the_cutlass_arguments_fit_each_release(version: str) -> None:
    inp = FAMILY.inputs("cutlass_fused_moe", point("cutlass_fused_moe"), "cutlass", "cpu")
    kwargs = moe_ops.cutlass_kwargs(inp.data, torch.bfloat16, torch.empty(0))
    (sig,) = SIGS[version]["cutlass_fused_moe"]
    assert sig["file"] == "flashinfer/fused_moe/core.py"
    assert not set(kwargs) - _names(sig), (version, sorted(set(kwargs) - _names(sig)))
    # every required argument is given (those before the first with a default)
    assert set(sig["positional"][:7]) <= set(kwargs)


@pytest.mark.parametrize("version", sorted(SIGS))
def test_the_bgmv_arguments_fit_each_release_that_has_it(version: str) -> None:
    fns = ("bgmv_moe_shrink", "bgmv_moe_expand", "fill_w_ptr")
    if release(version) < release(BGMV_SINCE):
        assert not any(SIGS[version].get(f) for f in fns), f"{version} has bgmv_moe"
        return
    inp = FAMILY.inputs("bgmv_moe", point("bgmv_moe"), "cuda", "cpu")
    strides = moe_ops.lora_tables(inp.data, _fill_w_ptr)
    shrink, expand = moe_ops.bgmv_kwargs(inp.data, strides)
    for fn, kwargs in (("bgmv_moe_shrink", shrink), ("bgmv_moe_expand", expand)):
        (sig,) = SIGS[version][fn]
        assert set(sig["positional"]) == set(kwargs), (version, fn)
    (fill,) = SIGS[version]["fill_w_ptr"]
    assert fill["positional"] == ["w_ptr", "weights", "num_experts", "slice_id"]


# ------------------------------------------------------------- flashinfer_benchmark.py


@pytest.mark.parametrize(("kernel", "params", "backend"), [
    ("cutlass_fused_moe", {"num_tokens": 32, "hidden_size": 128, "intermediate_size": 128,
                           "num_experts": 2, "experts_per_token": 2, "dtype": "float16"},
     "cutlass"),
    ("cutlass_fused_moe", {}, "cutlass"),
    ("bgmv_moe", {"num_tokens": 64, "rank": 16, "num_slices": 2}, "cuda"),
])
def test_a_points_command_reads_back_as_the_same_point(kernel: str, params: dict[str, Any],
                                                      backend: str) -> None:
    completed = complete_params(kernel, params, backend)
    repro = repro_command(kernel, completed, backend)
    assert repro.command is not None, repro.reason
    assert repro.command.startswith(f"python benchmarks/flashinfer_benchmark.py --routine "
                                    f"{kernel} --num_tokens ")
    (spec,) = line_specs(shlex.join(shlex.split(repro.command)[2:]), 1)
    (b,) = spec["backends"]
    sweep = SweepSpec(**{**spec, "targets": ["h200"], "flashinfer_versions": ["0.7.4"]})
    (grid,) = sweep.grid(str(b))
    assert (spec["kernel"], grid, b) == (kernel, completed, backend)


def test_a_declared_or_torch_point_has_no_command_and_says_why() -> None:
    p = complete_params("b12x_fused_moe", {}, "b12x")
    assert "does not run b12x_fused_moe" in str(repro_command("b12x_fused_moe", p, "b12x").reason)
    p = complete_params("bgmv_moe", {}, "torch")
    assert "not FlashInfer's" in str(repro_command("bgmv_moe", p, "torch").reason)


def test_the_tools_sample_moe_lines() -> None:
    lines = (FIXTURES / "testlist" / "moe.txt").read_text().splitlines()
    specs, refused = read_testlist(lines)
    (spec,) = specs  # the base cutlass line
    assert spec == {"name": "cutlass_moe_base", "kernel": "cutlass_fused_moe",
                    "backends": ["cutlass"],
                    "params": {"num_tokens": [32], "hidden_size": [128], "num_experts": [2],
                               "experts_per_token": [2], "dtype": ["float16"],
                               "intermediate_size": [128]}}
    reasons = {r.line: str(r) for r in refused}
    assert len(reasons) == len(lines) - 1
    by_routine = {shlex.split(lines[n - 1])[1]: why for n, why in reasons.items()}
    for name in ("trtllm_fp4_block_scale_moe", "trtllm_fp8_per_tensor_scale_moe",
                 "cute_dsl_fp4_block_scale_moe"):
        assert "on sm100, sm103 only" in by_routine[name], by_routine[name]
    assert "on sm120 only" in by_routine["b12x_fused_moe"]
    texts = [reasons[n] for n in sorted(reasons)]
    assert any("--cutlass_variant fp8: kernelwatch measures" in t for t in texts)
    assert any("--quantized_input" in t for t in texts)
    assert any("--tp_size 2: kernelwatch measures cutlass_fused_moe with --tp_size 1" in t
               for t in texts)


@pytest.mark.parametrize(("line", "message"), [
    ("--routine cutlass_fused_moe --num_tokens 8 --hidden_size 128 --intermediate_size 128 "
     "--num_experts 4 --top_k 2 --autotune", "--autotune: kernelwatch times"),
    ("--routine cutlass_fused_moe --num_tokens 8 --hidden_size 128 --intermediate_size 128 "
     "--num_experts 4 --top_k 2 --activation-type Geglu", "--activation-type Geglu"),
    ("--routine cutlass_fused_moe --num_tokens 8 --hidden_size 128 --intermediate_size 128 "
     "--num_experts 4 --top_k 2 --input_dtype float32", "--input_dtype float32"),
    ("--routine cutlass_fused_moe --num_tokens 8 --hidden_size 128 --num_experts 4 --top_k 2",
     "--intermediate_size is required"),
    ("--routine cutlass_fused_moe --num_tokens 8 --hidden_size 128 --intermediate_size 128 "
     "--num_experts 2 --top_k 4", "experts_per_token must be at most num_experts"),
    ("--routine bgmv_moe --num_tokens 8 --hidden_size 128 --intermediate_size 1 "
     "--num_experts 4 --top_k 2", "hidden_size of bgmv_moe must be one"),
    ("--routine bgmv_moe --num_tokens 8 --hidden_size 4096 --intermediate_size 1 "
     "--num_experts 4 --top_k 2 --rank 48", "rank"),
    ("--routine moe_a2a_dispatch_combine --num_tokens 8", "--routine moe_a2a_dispatch_combine"),
    ("--routine cutlass_fused_moe --num_tokens 8 --hidden_size 128 --intermediate_size 128 "
     "--num_experts 4 --top_k 2 --backends cutlass", "--backends cannot be mapped"),
])
def test_moe_lines_that_cannot_be_mapped_are_refused(line: str, message: str) -> None:
    with pytest.raises((UnmappedLine, ValueError), match=re.escape(message)):
        for spec in line_specs(line, 3):  # a cross-parameter rule is the spec's
            SweepSpec(**{**spec, "targets": ["h200"], "flashinfer_versions": ["0.7.4"]})


def test_a_bgmv_line_maps_its_lora_flags() -> None:
    (spec,) = line_specs("--routine bgmv_moe --num_tokens 64 --hidden_size 4096 "
                         "--intermediate_size 14336 --num_experts 8 --top_k 2 --rank 16 "
                         "--num_loras 4 --num_slices 2 --weight_dtype bfloat16", 1)
    assert spec["backends"] == ["cuda"]
    assert spec["params"] == {"num_tokens": [64], "hidden_size": [4096], "num_experts": [8],
                              "experts_per_token": [2], "dtype": ["bfloat16"], "rank": [16],
                              "num_loras": [4], "num_slices": [2]}


# ------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("kernel", "params", "field", "allowed"), [
    ("bgmv_moe", {"rank": [48]}, "rank", "allowed: 8, 16, 32, 64"),
    ("cutlass_fused_moe", {"dtype": ["float32"]}, "dtype", "allowed: float16, bfloat16"),
    ("cutlass_fused_moe", {"experts_per_token": [0]}, "experts_per_token",
     "integers from 1 to 64"),
    ("cutlass_fused_moe", {"num_experts": [2], "experts_per_token": [4]}, "experts_per_token",
     "at most num_experts"),
    ("bgmv_moe", {"hidden_size": [1000]}, "hidden_size", "384, 736"),
])
def test_a_bad_value_is_a_422_naming_the_field_and_the_allowed_values(
        kw_env: Any, kernel: str, params: dict[str, Any], field: str, allowed: str) -> None:
    client = make_client()
    spec = {"name": "m", "kernel": kernel, "backends": ["torch"], "targets": ["cpu"],
            "params": {"num_tokens": [4], "hidden_size": [384], **params}}
    r = client.post("/v1/jobs", json=spec, headers=auth(new_token()))
    assert r.status_code == 422, r.text
    assert field in r.text and allowed in r.text, r.text


def test_tolerance_is_finite_and_follows_the_shape() -> None:
    for kernel in FAMILY.kernels:
        assert math.isfinite(FAMILY.tolerance(kernel, point(kernel)))
    small = FAMILY.tolerance("cutlass_fused_moe", point("cutlass_fused_moe"))
    wide = FAMILY.tolerance("cutlass_fused_moe", point("cutlass_fused_moe", hidden_size=4096))
    assert wide > small
