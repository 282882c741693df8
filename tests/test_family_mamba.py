"""The mamba family (kernelwatch_harness.families.mamba): declarations, validation, formulas,
the float32 reference against a hand-computed step, the PyTorch path, refusals, both
directions with flashinfer_benchmark.py, and the FlashInfer call's keywords against every
supported release's signatures. FlashInfer's path itself runs on the GPU (tests/test_gpu.py)."""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import torch

from kernelwatch.core.benchmark_cli import UnmappedLine, line_specs, repro_command
from kernelwatch.core.spec import SweepSpec
from kernelwatch_harness.catalogue import complete_params
from kernelwatch_harness.families import mamba_ops
from kernelwatch_harness.families.mamba import FAMILY, KERNEL, VARLEN_NOTE, cache_slots
from kernelwatch_harness.family import Family, max_abs_error

SMALL = {"batch_size": 3, "nheads": 16, "ngroups": 2, "dim": 64, "dstate": 64}
SIGS: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "gpu" / "flashinfer_signatures.json").read_text()
)["versions"]


def point(backend: str = "torch", **over: Any) -> dict[str, Any]:
    return complete_params(KERNEL, {**SMALL, **over}, backend)


def test_it_declares_a_whole_family() -> None:
    assert isinstance(FAMILY, Family) and FAMILY.name == "mamba"
    (k,) = FAMILY.kernels.values()
    assert k.name == k.routine == KERNEL and k.backends == ("auto", "torch")
    assert {"sm80", "sm90", "sm100"} <= set(k.archs) and k.since == "0.6.1"
    assert all(p.doc for p in FAMILY.params.values())
    d = complete_params(KERNEL, {}, "auto")
    # the tool's defaults (its --state_dtype is bfloat16), and its sample's Mamba-2 shape
    assert (d["state_dtype"], d["weight_dtype"], d["ngroups"], d["cache_steps"],
            d["algorithm"]) == ("bfloat16", "float32", 8, 0, "auto")
    assert (d["nheads"], d["dim"], d["dstate"]) == (64, 128, 128)


@pytest.mark.parametrize(("over", "message"), [
    ({"dtype": "float16"}, "takes bfloat16 inputs"),
    ({"nheads": 16, "ngroups": 3}, "nheads must be ngroups times 1, 8, 16"),
    ({"nheads": 16, "ngroups": 4}, "nheads must be ngroups times 1, 8, 16"),
    ({"cache_steps": 2, "algorithm": "vertical"}, "multi-token updates take algorithm auto "
                                                  "or simple"),
])
def test_invalid_points_are_refused_naming_the_fields(over: dict[str, Any],
                                                       message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        FAMILY.check_point(KERNEL, point(**over))


def test_a_sweep_names_the_field_and_its_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"dstate.*64, 128, 256"):
        SweepSpec(name="x", kernel=KERNEL, backends=["torch"], targets=["cpu"],
                  params={"dstate": [16]})


def test_bytes_and_flops_count_as_flashinfer_benchmark_does() -> None:
    p = point("auto", batch_size=2, nheads=8, ngroups=1, dim=64, dstate=128, cache_steps=3,
              has_z=True, state_dtype="float32", weight_dtype="bfloat16")
    t = 2 * 3
    # the read and write bytes of benchmarks/routines/mamba.py, written out
    read = (2 * 8 * 64 * 128 * 4 + t * 8 * 64 * 2 + t * 8 * 2 + 8 * 4 + 2 * t * 1 * 128 * 2
            + 8 * 2 * 2 + t * 8 * 64 * 2)
    write = 2 * 8 * 64 * 128 * 4 + t * 8 * 64 * 2
    work = FAMILY.work(KERNEL, p)
    assert work.bytes == read + write and work.flops == t * 8 * 64 * 128 * 5
    assert FAMILY.memory_bytes(KERNEL, p) > cache_slots(2) * 8 * 64 * 128 * 4


def test_one_step_of_the_reference_as_computed_by_hand() -> None:
    p = point(batch_size=1, nheads=1, ngroups=1, dim=64, dstate=64, has_z=True,
              dt_softplus=True, state_dtype="float32")
    inp = FAMILY.inputs(KERNEL, p, "auto", "cpu")
    d, s = inp.data, inp.kept["pristine"][0, 0].double()  # [dim, dstate]
    dt = math.log1p(math.exp(float(d["dt"][0, 0]) + float(d["dt_bias"][0])))  # softplus
    x = d["x"][0, 0].double()
    new = s * math.exp(float(d["A"][0]) * dt) + dt * x[:, None] * d["B"][0, 0].double()[None]
    z = d["z"][0, 0].double()
    out = ((new @ d["C"][0, 0].double()) + float(d["D"][0]) * x) * z * torch.sigmoid(z)
    ref_out, ref_state = FAMILY.reference(inp)
    assert torch.allclose(ref_state[0, 0].double(), new, atol=1e-5)
    assert torch.allclose(ref_out[0, 0].double(), out, atol=1e-4)


def test_mtp_carries_the_state_from_token_to_token() -> None:
    p = point(cache_steps=2, state_dtype="float32")
    inp = FAMILY.inputs(KERNEL, p, "auto", "cpu")
    out, state = FAMILY.reference(inp)
    one = {**p, "cache_steps": 0}
    d = inp.data
    first = {**d, **{n: d[n][:, 0] for n in ("x", "dt", "B", "C")}}
    second = {**d, **{n: d[n][:, 1] for n in ("x", "dt", "B", "C")}}
    o1, s1 = mamba_ops.ssm_update(first, inp.kept["pristine"], one, torch.float32)
    o2, s2 = mamba_ops.ssm_update(second, s1, one, torch.float32)
    assert torch.allclose(out, torch.stack([o1, o2], dim=1)) and torch.allclose(state, s2)


@pytest.mark.parametrize("over", [
    {}, {"state_dtype": "float32"}, {"state_dtype": "float16"}, {"has_z": True},
    {"dt_softplus": True}, {"weight_dtype": "bfloat16"}, {"cache_steps": 3},
    {"cache_steps": 2, "has_z": True, "nheads": 16, "ngroups": 16},
])
def test_the_torch_path_matches_the_float32_reference(over: dict[str, Any]) -> None:
    p = point(**over)
    FAMILY.check_point(KERNEL, p)
    inp = FAMILY.inputs(KERNEL, p, "torch", "cpu")
    prepared = FAMILY.prepare("torch", inp, "cpu")
    outs = prepared.outputs(prepared.fn(inp.data))
    assert max_abs_error(outs, FAMILY.reference(inp)) <= FAMILY.tolerance(KERNEL, p)
    untouched = torch.ones(cache_slots(3), dtype=torch.bool)
    untouched[inp.kept["slots"]] = False  # only the requests' slots are written
    assert torch.equal(inp.data["state"][untouched],
                       FAMILY.inputs(KERNEL, p, "torch", "cpu").data["state"][untouched])


@pytest.mark.parametrize("term", ["D", "z"])
def test_a_wrong_result_is_caught(term: str) -> None:
    p = point(has_z=True)
    inp = FAMILY.inputs(KERNEL, p, "torch", "cpu")
    refs = FAMILY.reference(inp)
    inp.data[term].fill_(0.0 if term == "D" else 30.0)  # no skip term, or no gate (silu=z)
    prepared = FAMILY.prepare("torch", inp, "cpu")
    wrong = prepared.outputs(prepared.fn(inp.data))
    assert max_abs_error(wrong, refs) > FAMILY.tolerance(KERNEL, p)


def test_the_kernel_sees_the_zero_stride_layout_it_checks() -> None:
    p = point(cache_steps=2)
    inp = FAMILY.inputs(KERNEL, p, "auto", "cpu")
    kw = mamba_ops.flashinfer_kwargs(p, inp.data, inp.kept["slots"])
    assert kw["A"].shape == (16, 64, 64) and kw["A"].stride() == (1, 0, 0)
    assert kw["D"].stride() == (1, 0) and kw["dt_bias"].stride() == (1, 0)
    assert kw["dt"].shape == (3, 2, 16, 64) and kw["dt"].stride() == (32, 16, 1, 0)
    assert kw["state"] is inp.data["state"] and kw["state_batch_indices"].dtype == torch.int64
    assert (kw["cache_steps"], kw["algorithm"], kw["z"]) == (2, "auto", None)
    copy = inp.copy_data()  # a timed copy keeps the bases dense; the views are rebuilt
    assert mamba_ops.flashinfer_kwargs(p, copy, inp.kept["slots"])["A"].stride() == (1, 0, 0)


def test_inputs_are_seeded_and_the_cache_is_the_tools() -> None:
    a = FAMILY.inputs(KERNEL, point(), "torch", "cpu")
    b = FAMILY.inputs(KERNEL, point(), "auto", "cpu")
    assert torch.equal(a.kept["slots"], b.kept["slots"]) and torch.equal(a.data["x"],
                                                                          b.data["x"])
    assert a.data["state"].shape == (384, 16, 64, 64) and a.data["state"].dtype == torch.bfloat16
    assert cache_slots(64) == 640 and len(set(a.kept["slots"].tolist())) == 3


def test_flashinfer_needs_a_gpu_and_unknown_backends_are_refused() -> None:
    inp = FAMILY.inputs(KERNEL, point(), "auto", "cpu")
    with pytest.raises(NotImplementedError, match="needs a CUDA device"):
        FAMILY.prepare("auto", inp, "cpu")
    with pytest.raises(NotImplementedError, match="'triton' is not offered"):
        FAMILY.prepare("triton", inp, "cpu")


def test_tma_algorithms_are_refused_before_hopper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: (8, 0))
    inp = FAMILY.inputs(KERNEL, point(algorithm="horizontal"), "auto", "cpu")
    with pytest.raises(NotImplementedError, match="uses TMA: SM90 and newer"):
        mamba_ops._flashinfer_call(inp, "cuda")


@pytest.mark.parametrize("version", sorted(SIGS))
def test_the_keywords_fit_every_releases_signature(version: str) -> None:
    found = [s for s in SIGS[version].get(KERNEL, [])
             if s["file"] == "flashinfer/mamba/selective_state_update.py"]
    if version == "0.5.3":  # before flashinfer.mamba: refused as older than the kernel
        assert not found and FAMILY.kernels[KERNEL].since > version
        return
    (sig,) = found
    p = point("auto", cache_steps=2, has_z=True)
    inp = FAMILY.inputs(KERNEL, p, "auto", "cpu")
    names = set(mamba_ops.flashinfer_kwargs(p, inp.data, inp.kept["slots"]))
    assert names <= {*sig["positional"], *sig["keyword_only"]}


@pytest.mark.parametrize("params", [
    {}, {"cache_steps": 2, "has_z": True, "dt_softplus": True, "state_dtype": "float32"},
    {"weight_dtype": "bfloat16", "algorithm": "horizontal", "nheads": 128, "ngroups": 8},
])
def test_a_points_command_reads_back_as_the_same_point(params: dict[str, Any]) -> None:
    completed = complete_params(KERNEL, {"batch_size": 64, **params}, "auto")
    repro = repro_command(KERNEL, completed, "auto")
    assert repro.command is not None and "--backends flashinfer" in repro.command
    (spec,) = line_specs(shlex.join(shlex.split(repro.command)[2:]), 1)
    sweep = SweepSpec(**{**spec, "targets": ["h200"], "flashinfer_versions": ["0.7.4"]})
    (grid,) = sweep.grid("auto")
    assert grid == completed


def test_flashinfers_sample_line_maps() -> None:
    # benchmarks/samples/sample_testlist.txt at v0.6.18rc7, "mamba2_stp_perf"
    (spec,) = line_specs('--routine selective_state_update --batch_size 128 --nheads 64 '
                         '--dim 128 --dstate 128 --ngroups 8 --backends flashinfer -vv '
                         '--generate_repro_command --case_tag "mamba2_stp_perf"', 1)
    assert spec["kernel"] == KERNEL and spec["backends"] == ["auto"]
    assert spec["params"]["batch_size"] == [128] and spec["params"]["state_dtype"] == [
        "bfloat16"]


@pytest.mark.parametrize(("line", "message"), [
    ("--routine selective_state_update --batch_size 8 --nheads 64 --dim 128 --dstate 128 "
     "--backends flashinfer triton", "--backends triton: the tool's Triton kernel comes from "
                                     "FlashInfer's tests/"),
    ("--routine selective_state_update --batch_size 8 --nheads 64 --dim 128 --dstate 128 "
     "--cache_steps 2 --varlen", VARLEN_NOTE),
    ("--routine selective_state_update --batch_size 8 --nheads 64 --dim 96 --dstate 128",
     "--dim 96: FlashInfer's kernel takes 64, 128, 256"),
    ("--routine selective_state_update --batch_size 8 --dim 128 --dstate 128",
     "--nheads is required"),
])
def test_lines_that_cannot_be_mapped_are_refused(line: str, message: str) -> None:
    with pytest.raises(UnmappedLine, match=re.escape(message)):
        line_specs(line, 3)
