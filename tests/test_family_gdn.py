"""The GDN family (kernelwatch_harness.families.gdn): declarations, validation, formulas, the
float32 reference against hand-computed steps, the PyTorch path, refusals, both directions
with flashinfer_benchmark.py, and the FlashInfer calls' keywords against every supported
release's signatures. FlashInfer's path itself runs on the GPU (tests/test_gpu.py)."""

from __future__ import annotations

import importlib.machinery
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

from kernelwatch.core.benchmark_cli import UnmappedLine, line_specs, repro_command
from kernelwatch.core.spec import SweepSpec
from kernelwatch_harness import catalogue
from kernelwatch_harness.catalogue import complete_params
from kernelwatch_harness.families import gdn_ops
from kernelwatch_harness.families.gdn import CHUNK, DECODE, FAMILY, MTP
from kernelwatch_harness.family import Family, max_abs_error
from tests.family_support import run_torch as family_run_torch

KERNELS = [DECODE, MTP, CHUNK]
SMALL = {"batch_size": 3, "num_q_heads": 2, "num_k_heads": 2, "num_v_heads": 4}
SIGS: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "gpu" / "flashinfer_signatures.json").read_text()
)["versions"]
# Each torch path against the reference: every layout, pool mode, state dtype and switch.
VARIANTS = [
    (DECODE, {}), (DECODE, {"state_layout": "nontranspose"}),
    (DECODE, {"state_dtype": "bfloat16"}), (DECODE, {"state_dtype": "bfloat16",
                                                     "pool_mode": "split"}),
    (DECODE, {"pool_mode": "split"}), (DECODE, {"qk_l2norm": False}),
    (MTP, {"seq_len": 3}), (MTP, {"seq_len": 3, "update_state": True}),
    (MTP, {"seq_len": 3, "cache_intermediate_states": True}),
    (MTP, {"seq_len": 3, "state_dtype": "bfloat16", "pool_mode": "split"}),
    (CHUNK, {"seq_len": 40}), (CHUNK, {"seq_len": 40, "num_q_heads": 4, "num_k_heads": 2,
                                       "num_v_heads": 2}),
]


def point(kernel: str, backend: str = "torch", **over: Any) -> dict[str, Any]:
    return complete_params(kernel, {**SMALL, **over}, backend)


def run_torch(kernel: str, p: dict[str, Any]) -> tuple[list[torch.Tensor], Any]:
    return family_run_torch(FAMILY, kernel, p)


# ------------------------------------------------------------------ declarations


def test_it_declares_a_whole_family() -> None:
    assert isinstance(FAMILY, Family) and FAMILY.name == "gdn"
    assert set(FAMILY.kernels) == set(KERNELS)
    for k in FAMILY.kernels.values():
        assert k.routine == k.name and k.backends == ("auto", "torch")
        assert k.archs == ("sm90", "sm100", "sm103")  # the tool's table: not on Ampere
    assert FAMILY.kernels[CHUNK].since == "0.6.0" and FAMILY.kernels[DECODE].since == "0.6.2"
    assert all(p.doc for p in FAMILY.params.values())
    assert catalogue.FAMILIES["gdn"] is FAMILY


def test_shared_parameters_are_declared_as_the_other_families_declare_them() -> None:
    for name in ("batch_size", "seq_len", "dtype", "state_dtype"):
        mine, shared = FAMILY.params[name], catalogue.PARAMS[name]
        assert (mine.kind, mine.default, mine.choices, mine.min, mine.max) == (
            shared.kind, shared.default, shared.choices, shared.min, shared.max)


def test_defaults_are_the_tools() -> None:
    assert complete_params(MTP, {}, "auto")["seq_len"] == 2
    assert complete_params(CHUNK, {}, "torch")["seq_len"] == 2048
    d = complete_params(DECODE, {}, "auto")
    assert (d["num_q_heads"], d["num_k_heads"], d["num_v_heads"], d["head_size"]) == (
        16, 16, 32, 128)
    assert (d["dtype"], d["state_dtype"], d["state_layout"], d["pool_mode"], d["qk_l2norm"]) \
        == ("bfloat16", "float32", "pretranspose", "single", True)


@pytest.mark.parametrize(("kernel", "over", "message"), [
    (MTP, {"seq_len": 1}, "gated_delta_rule_mtp takes seq_len >= 2"),
    (DECODE, {"num_v_heads": 3}, "num_v_heads a multiple of it"),
    (DECODE, {"num_q_heads": 4, "num_k_heads": 2, "num_v_heads": 2}, "num_k_heads == "),
    (CHUNK, {"num_q_heads": 4, "num_k_heads": 2, "num_v_heads": 4}, "num_q_heads a multiple"),
    (DECODE, {"state_dtype": "float16"}, "keeps its state in float32 or bfloat16"),
    (DECODE, {"state_dtype": "bfloat16", "head_size": 256}, "take head_size 128"),
    (DECODE, {"state_dtype": "bfloat16", "state_layout": "nontranspose"},
     "takes state_layout pretranspose"),
    (DECODE, {"pool_mode": "split", "state_layout": "nontranspose"},
     "pool_mode=split takes state_layout pretranspose"),
    (MTP, {"pool_mode": "split"}, "has no output_state_indices"),
    (MTP, {"state_dtype": "bfloat16", "cache_intermediate_states": True},
     "cache_intermediate_states takes state_dtype float32"),
])
def test_invalid_points_are_refused_naming_the_fields(kernel: str, over: dict[str, Any],
                                                       message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        FAMILY.check_point(kernel, point(kernel, **over))


def test_a_sweep_names_the_field_and_its_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"head_size.*128, 256"):
        SweepSpec(name="x", kernel=DECODE, backends=["torch"], targets=["cpu"],
                  params={"head_size": [64]})


# ---------------------------------------------------------------------- formulas


def test_decode_bytes_and_flops_count_as_flashinfer_benchmark_does() -> None:
    p = point(DECODE, "auto", batch_size=2, head_size=128, dtype="float16")
    # gdn_decode_bytes of benchmarks/routines/gdn.py, written out: q (2 heads), k (2), v (4),
    # output (4), the float32 state read and written, A_log and dt_bias, a and b
    expected = (2 * (2 + 2 + 4 + 4) * 128 * 2 + 2 * 4 * 128 * 128 * 4 * 2
                + 4 * 4 * 2 + 2 * 2 * 4 * 2)
    work = FAMILY.work(DECODE, p)
    assert work.bytes == expected and work.flops == 6 * 2 * 4 * 128 * 128


def test_mtp_counts_its_tokens_the_write_back_and_the_intermediate_states() -> None:
    p = point(MTP, "auto", seq_len=4)
    kept = FAMILY.work(MTP, p)
    written = FAMILY.work(MTP, {**p, "update_state": True})
    states = 3 * 4 * 128 * 128 * 4
    assert written.bytes - kept.bytes == states  # the state written back
    cached = FAMILY.work(MTP, {**p, "cache_intermediate_states": True})
    assert cached.bytes - kept.bytes == states * 4  # each of 4 tokens' states
    assert kept.flops == 4 * FAMILY.work(DECODE, point(DECODE, "auto")).flops
    # bfloat16 state is always written back: read and written at 2 bytes, as many bytes as
    # a float32 state read only
    bf16 = FAMILY.work(MTP, {**p, "state_dtype": "bfloat16"})
    assert bf16.bytes == kept.bytes and bf16.bytes < written.bytes


def test_prefill_bytes_and_flops_count_as_flashinfer_benchmark_does() -> None:
    p = point(CHUNK, "auto", batch_size=2, seq_len=64)
    tokens = 128
    expected = (tokens * (2 + 2 + 4) * 128 * 2 + tokens * 4 * 2 * 4 + tokens * 4 * 128 * 2
                + 2 * 4 * 128 * 128 * 4)
    work = FAMILY.work(CHUNK, p)
    assert work.bytes == expected and work.flops == 4 * tokens * 4 * 128 * 128
    assert work.extra["tokens"] == tokens
    assert FAMILY.memory_bytes(CHUNK, p) > work.bytes


# -------------------------------------------------------------------- reference


def test_one_step_of_the_reference_as_computed_by_hand() -> None:
    k = torch.tensor([[[[1.0, 0.0]]]])  # [B=1, T=1, H=1, K=2]
    q = torch.tensor([[[[0.0, 2.0]]]])
    v = torch.tensor([[[[3.0, 5.0]]]])
    state = torch.tensor([[[[1.0, 2.0], [4.0, 8.0]]]])  # [B, H, K, V]
    alpha, beta = torch.tensor([[[0.5]]]), torch.tensor([[[0.25]]])
    out, new = gdn_ops.delta_rule(q, k, v, state, alpha, beta, scale=0.5)
    decayed = state * 0.5  # [[0.5, 1], [2, 4]]
    delta = (torch.tensor([3.0, 5.0]) - decayed[0, 0, 0]) * 0.25  # v - S^T k, gated
    expect = decayed.clone()
    expect[0, 0, 0] += delta  # k = e0: only row 0 changes
    assert torch.allclose(new, expect)
    assert torch.allclose(out[0, 0, 0], 0.5 * 2.0 * expect[0, 0, 1])  # q = 2 e1, scaled


def test_gates_are_flashinfers() -> None:
    d = {"A_log": torch.tensor([0.0]), "dt_bias": torch.tensor([1.0]),
         "a": torch.tensor([[[-1.0]]]), "b": torch.tensor([[[0.0]]])}
    alpha, beta = gdn_ops.gates(d)
    assert math.isclose(float(alpha), math.exp(-math.log(2.0)), rel_tol=1e-6)  # softplus(0)
    assert float(beta) == 0.5


def test_grouped_value_heads_share_their_query_head() -> None:
    p = point(DECODE, num_q_heads=1, num_k_heads=1, num_v_heads=2)
    inp = FAMILY.inputs(DECODE, p, "auto", "cpu")
    inp.data["v"][:, :, 1] = inp.data["v"][:, :, 0]  # both value heads see the same stream
    inp.data["A_log"][1] = inp.data["A_log"][0]
    inp.data["dt_bias"][1] = inp.data["dt_bias"][0]
    inp.data["a"][..., 1] = inp.data["a"][..., 0]
    inp.data["b"][..., 1] = inp.data["b"][..., 0]
    inp.kept["pristine"][:, 1] = inp.kept["pristine"][:, 0]
    out, state = FAMILY.reference(inp)
    assert torch.allclose(out[:, :, 0], out[:, :, 1]) and torch.allclose(state[:, 0],
                                                                         state[:, 1])


def test_mtp_is_decode_step_after_step() -> None:
    p = point(MTP, seq_len=2, update_state=True, state_dtype="float32")
    inp = FAMILY.inputs(MTP, p, "auto", "cpu")
    out, state = FAMILY.reference(inp)
    d = inp.data
    first = {n: d[n][:, :1] for n in ("q", "k", "v", "a", "b")}
    second = {n: d[n][:, 1:] for n in ("q", "k", "v", "a", "b")}
    s0 = inp.kept["pristine"].transpose(-1, -2)
    o1, s1 = gdn_ops._recurrent(DECODE, {**d, **first}, {**p, "state_layout": "nontranspose"},
                                s0, torch.float32)
    o2, s2 = gdn_ops._recurrent(DECODE, {**d, **second}, {**p, "state_layout": "nontranspose"},
                                s1, torch.float32)
    assert torch.allclose(out, torch.cat([o1, o2], dim=1), atol=1e-6)
    assert torch.allclose(state, s2.transpose(-1, -2), atol=1e-6)  # written K-last


def test_prefill_is_each_sequence_from_a_zero_state() -> None:
    p = point(CHUNK, batch_size=2, seq_len=5)
    inp = FAMILY.inputs(CHUNK, p, "auto", "cpu")
    out, state = FAMILY.reference(inp)
    d = inp.data
    one = {n: d[n][5:] for n in ("q", "k", "v", "g", "beta")}  # the second sequence alone
    o, s = gdn_ops._chunk(one, {**p, "batch_size": 1}, torch.float32)
    assert torch.allclose(out[5:], o, atol=1e-6) and torch.allclose(state[1], s[0].mT)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize(("kernel", "over"), VARIANTS)
def test_the_torch_path_matches_the_float32_reference(kernel: str, over: dict[str, Any],
                                                      dtype: str) -> None:
    p = point(kernel, dtype=dtype, **over)
    FAMILY.check_point(kernel, p)
    outs, inp = run_torch(kernel, p)
    refs = FAMILY.reference(inp)
    written = not (kernel == MTP and p["state_dtype"] == "float32" and not p["update_state"])
    assert len(outs) == len(refs) == (2 if written else 1)
    assert max_abs_error(outs, refs) <= FAMILY.tolerance(kernel, p)


def test_the_torch_path_writes_the_pool_as_the_kernel_does() -> None:
    p = point(DECODE, pool_mode="split")
    outs, inp = run_torch(DECODE, p)
    before = inp.kept["pristine"]
    assert torch.equal(inp.data["state"][:3], before)  # read slots untouched
    assert torch.equal(inp.data["state"][3:], outs[1])  # written to the second half


@pytest.mark.parametrize(("kernel", "over"), [(DECODE, {}), (CHUNK, {"seq_len": 16}),
                                              (MTP, {"seq_len": 2, "update_state": True})])
def test_a_wrong_result_is_caught(kernel: str, over: dict[str, Any]) -> None:
    p = point(kernel, **over)
    inp = FAMILY.inputs(kernel, p, "torch", "cpu")
    refs = FAMILY.reference(inp)
    # a kernel that forgets the decay (alpha = 1)
    if kernel == CHUNK:
        inp.data["g"].fill_(1.0)
    else:
        inp.data["A_log"].fill_(-30.0)
    prepared = FAMILY.prepare("torch", inp, "cpu")
    wrong = prepared.outputs(prepared.fn(inp.data))
    assert max_abs_error(wrong, refs) > FAMILY.tolerance(kernel, p)


def test_inputs_are_seeded_and_unnormalised_q_k_come_normalised() -> None:
    a = FAMILY.inputs(DECODE, point(DECODE), "torch", "cpu")
    b = FAMILY.inputs(DECODE, point(DECODE), "auto", "cpu")
    assert all(torch.equal(a.data[n], b.data[n]) for n in ("q", "k", "v", "state", "a"))
    raw = FAMILY.inputs(DECODE, point(DECODE, qk_l2norm=False, dtype="float16"), "auto", "cpu")
    norms = raw.data["k"].float().norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=2e-3)
    chunk = FAMILY.inputs(CHUNK, point(CHUNK, seq_len=8), "auto", "cpu")
    assert chunk.kept["cu_seqlens"].tolist() == [0, 8, 16, 24]
    assert float(chunk.data["g"].min()) >= 0 and float(chunk.data["g"].max()) < 1


def test_flashinfer_needs_a_gpu_and_unknown_backends_are_refused() -> None:
    inp = FAMILY.inputs(DECODE, point(DECODE), "auto", "cpu")
    with pytest.raises(NotImplementedError, match="needs a CUDA device"):
        FAMILY.prepare("auto", inp, "cpu")
    with pytest.raises(NotImplementedError, match="'triton' is not offered"):
        FAMILY.prepare("triton", inp, "cpu")


# ------------------------------------------------------------ the FlashInfer calls


@pytest.mark.parametrize(("kernel", "over", "api"), [
    (DECODE, {}, gdn_ops.DECODE_PRETRANSPOSE),
    (DECODE, {"state_layout": "nontranspose"}, gdn_ops.DECODE_NONTRANSPOSE),
    (DECODE, {"state_dtype": "bfloat16"}, gdn_ops.DECODE_PRETRANSPOSE),
    (DECODE, {"pool_mode": "split"}, gdn_ops.DECODE_PRETRANSPOSE),
    (MTP, {}, gdn_ops.MTP_API),
    (MTP, {"state_dtype": "bfloat16", "pool_mode": "split"}, gdn_ops.DECODE_PRETRANSPOSE),
    (CHUNK, {}, gdn_ops.CHUNK_API),
])
def test_each_point_calls_what_the_tool_calls(kernel: str, over: dict[str, Any],
                                              api: str) -> None:
    p = point(kernel, "auto", **over)
    assert gdn_ops.call_of(kernel, p)[0] == api
    names = gdn_ops.tensor_names(api, kernel, p)
    pooled = "initial_state_indices" in names
    # the tool goes through the pool for bfloat16 state and a split pool (decode) and MTP
    assert pooled == (kernel == MTP or (kernel == DECODE and (
        p["state_dtype"] == "bfloat16" or p["pool_mode"] == "split")))


def test_the_call_passes_the_tools_arguments() -> None:
    p = point(MTP, "auto", seq_len=3)
    inp = FAMILY.inputs(MTP, p, "auto", "cpu")
    api, kwargs = gdn_ops.call_of(MTP, p)
    assert kwargs == {"scale": 128 ** -0.5, "use_qk_l2norm": True,
                      "disable_state_update": True}
    t = gdn_ops.tensor_kwargs(api, MTP, p, inp.data, inp.kept)
    assert t["initial_state"] is inp.data["state"] and t["intermediate_states_buffer"] is None
    assert t["initial_state_indices"].dtype == torch.int32
    split = point(DECODE, "auto", pool_mode="split")
    s_inp = FAMILY.inputs(DECODE, split, "auto", "cpu")
    t = gdn_ops.tensor_kwargs(gdn_ops.DECODE_PRETRANSPOSE, DECODE, split, s_inp.data,
                              s_inp.kept)
    assert t["state"] is None and t["output_state_indices"].tolist() == [3, 4, 5]
    _, chunk_kwargs = gdn_ops.call_of(CHUNK, point(CHUNK, "auto"))
    assert chunk_kwargs["use_qk_l2norm_in_kernel"] is False  # k normalised by the caller


def _installed(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Stand-in modules that importlib finds (find_spec reads a loaded module's spec)."""
    for name in names:
        module = ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, module)


def _fake_flashinfer(monkeypatch: pytest.MonkeyPatch, version: str, dsl: bool = True,
                     **fns: Any) -> None:
    if dsl:
        _installed(monkeypatch, "cutlass", "cutlass.cute")
    fi = ModuleType("flashinfer")
    fi.__version__ = version  # type: ignore[attr-defined]
    decode = ModuleType("flashinfer.gdn_decode")
    for name, fn in fns.items():
        setattr(decode, name, fn)
    monkeypatch.setitem(sys.modules, "flashinfer", fi)
    monkeypatch.setitem(sys.modules, "flashinfer.gdn_decode", decode)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: (9, 0))


def test_a_release_without_the_function_or_a_keyword_is_refused_naming_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def old_mtp(q: Any, k: Any, v: Any, initial_state: Any, initial_state_indices: Any,
                A_log: Any, a: Any, dt_bias: Any, b: Any, scale: Any, output: Any,
                intermediate_states_buffer: Any = None, disable_state_update: bool = True) -> Any:
        return output, initial_state

    _fake_flashinfer(monkeypatch, "0.6.2", gated_delta_rule_mtp=old_mtp)
    inp = FAMILY.inputs(DECODE, point(DECODE, "auto"), "auto", "cpu")
    with pytest.raises(NotImplementedError, match=r"FlashInfer 0\.6\.2 has no flashinfer\."
                                                  r"gdn_decode\.gated_delta_rule_decode_pre"):
        gdn_ops._flashinfer_call(inp, "cuda")
    inp = FAMILY.inputs(MTP, point(MTP, "auto"), "auto", "cpu")
    with pytest.raises(NotImplementedError, match=r"gated_delta_rule_mtp takes no "
                                                  r"use_qk_l2norm"):
        gdn_ops._flashinfer_call(inp, "cuda")


def test_a_node_without_the_cutlass_dsl_refuses_the_dsl_kernels_naming_the_package(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Decode and MTP are CuTe DSL kernels in every release; without nvidia-cutlass-dsl
    FlashInfer catches the failed import and has no kernel to run. The point is refused
    naming the package, before any FlashInfer call. The prefill needs it from the release
    whose SM90 kernel moved into gdn_kernels/delta_rule_dsl (0.6.14)."""
    monkeypatch.setitem(sys.modules, "cutlass", None)  # importing it fails: not installed
    _fake_flashinfer(monkeypatch, "0.6.18.post1", dsl=False)
    for kernel in (DECODE, MTP):
        inp = FAMILY.inputs(kernel, point(kernel, "auto"), "auto", "cpu")
        with pytest.raises(NotImplementedError,
                           match=rf"FlashInfer's {kernel} needs the nvidia-cutlass-dsl package "
                                 r"\(import cutlass\.cute\), which this node lacks"):
            gdn_ops._flashinfer_call(inp, "cuda")
    assert not gdn_ops.needs_cute_dsl(CHUNK)  # no delta_rule_dsl: the CUDA JIT prefill
    _installed(monkeypatch, "flashinfer.gdn_kernels", gdn_ops.CHUNK_DSL_MODULE)
    assert gdn_ops.needs_cute_dsl(CHUNK)


def test_the_fake_release_is_called_with_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def gated_delta_rule_decode_pretranspose(q: Any, k: Any, v: Any, state: Any, A_log: Any,
                                             a: Any, dt_bias: Any, b: Any, scale: Any = None,
                                             output: Any = None, use_qk_l2norm: bool = True,
                                             initial_state: Any = None,
                                             initial_state_indices: Any = None,
                                             output_state_indices: Any = None) -> Any:
        seen.update(state=state, initial_state=initial_state, out=output_state_indices)
        return output, initial_state

    _fake_flashinfer(monkeypatch, "0.6.18.post1", gated_delta_rule_decode_pretranspose=(
        gated_delta_rule_decode_pretranspose))
    p = point(DECODE, "auto", state_dtype="bfloat16")
    inp = FAMILY.inputs(DECODE, p, "auto", "cpu")
    out = gdn_ops._flashinfer_call(inp, "cuda")(inp.data)
    assert seen["state"] is None and seen["initial_state"] is inp.data["state"]
    assert seen["out"] is None and out[0] is inp.data["output"]


def _signature(version: str, name: str, file: str) -> dict[str, Any] | None:
    found = [s for s in SIGS[version].get(name, []) if s["file"] == file]
    return found[0] if found else None


@pytest.mark.parametrize("version", sorted(SIGS))
@pytest.mark.parametrize(("kernel", "over"), VARIANTS)
def test_the_keywords_fit_every_releases_signature(version: str, kernel: str,
                                                   over: dict[str, Any]) -> None:
    """Every keyword passed is a parameter of the function in each supported release that
    has it (tests/fixtures/gpu/flashinfer_signatures.json, read from the wheels); 0.5.3 has
    none of them, and its points are refused as older than the kernel."""
    p = point(kernel, "auto", **over)
    api, kwargs = gdn_ops.call_of(kernel, p)
    module, name = api.rsplit(".", 1)
    sig = _signature(version, name, module.replace(".", "/") + ".py")
    if version == "0.5.3":
        assert sig is None and FAMILY.kernels[kernel].since > version
        return
    assert sig is not None, (version, api)
    names = {*gdn_ops.tensor_names(api, kernel, p), *kwargs}
    assert names <= {*sig["positional"], *sig["keyword_only"]}, (version, api)


# ------------------------------------------------------------ flashinfer_benchmark.py

ROUND_TRIP = [
    (DECODE, {}), (DECODE, {"state_layout": "nontranspose", "dtype": "float16"}),
    (DECODE, {"state_dtype": "bfloat16", "pool_mode": "split", "qk_l2norm": False}),
    (MTP, {"seq_len": 4, "update_state": True, "cache_intermediate_states": True}),
    (MTP, {"seq_len": 4, "state_dtype": "bfloat16"}),
    (CHUNK, {"batch_size": 4, "seq_len": 1024, "num_q_heads": 32, "num_k_heads": 8,
             "num_v_heads": 8}),
]


@pytest.mark.parametrize(("kernel", "params"), ROUND_TRIP)
def test_a_points_command_reads_back_as_the_same_point(kernel: str,
                                                       params: dict[str, Any]) -> None:
    completed = complete_params(kernel, {"batch_size": 8, **params}, "auto")
    repro = repro_command(kernel, completed, "auto")
    assert repro.command is not None and "--backends flashinfer" in repro.command
    (spec,) = line_specs(shlex.join(shlex.split(repro.command)[2:]), 1)
    sweep = SweepSpec(**{**spec, "targets": ["h200"], "flashinfer_versions": ["0.7.4"]})
    (grid,) = sweep.grid("auto")
    assert grid == completed


SAMPLE_LINES = [  # FlashInfer's benchmarks/samples/sample_testlist.txt at v0.6.18rc7
    ('--routine gated_delta_rule_decode --batch_size 128 --num_q_heads 16 --num_k_heads 16 '
     '--num_v_heads 32 --head_size 128 --state_dtype bfloat16 --pool_mode split --backends '
     'flashinfer -vv --generate_repro_command --case_tag "gdn_decode_bf16_split"'),
    ('--routine gated_delta_rule_mtp --batch_size 128 --seq_len 4 --num_q_heads 16 '
     '--num_k_heads 16 --num_v_heads 32 --head_size 128 --state_dtype bfloat16 --backends '
     'flashinfer --refcheck -vv --generate_repro_command --case_tag "gdn_mtp4_bf16"'),
    ('--routine chunk_gated_delta_rule --batch_size 4 --s_qo 2048 --num_q_heads 16 '
     '--num_k_heads 16 --num_v_heads 32 --head_size 128 --backends flashinfer --refcheck -vv '
     '--generate_repro_command --case_tag "gdn_prefill_4x2048"'),
]


def test_flashinfers_sample_lines_map() -> None:
    specs = [s for line in SAMPLE_LINES for s in line_specs(line, 1)]
    assert [s["kernel"] for s in specs] == [DECODE, MTP, CHUNK]
    assert specs[0]["params"]["pool_mode"] == ["split"]
    assert specs[1]["params"]["seq_len"] == [4]
    assert specs[2]["params"] == {"batch_size": [4], "num_q_heads": [16], "num_k_heads": [16],
                                  "num_v_heads": [32], "head_size": [128],
                                  "dtype": ["bfloat16"], "seq_len": [2048]}
    assert all(s["backends"] == ["auto"] for s in specs)


@pytest.mark.parametrize(("line", "message"), [
    ("--routine gated_delta_rule_decode --batch_size 8 --backends flashinfer triton",
     "--backends triton: the tool's Triton GDN kernels come from FlashInfer's tests/"),
    ("--routine chunk_gated_delta_rule --batch_size 8 --backends fla",
     "--backends fla: flash-linear-attention is another library"),
    ("--routine gated_delta_rule_decode --batch_size 8 --update_state",
     "only gated_delta_rule_mtp reads them"),
    ("--routine gated_delta_rule_decode --batch_size 8 --seq_len 4",
     "--seq_len 4: only gated_delta_rule_mtp reads it"),
    ("--routine gated_delta_rule_decode --batch_size 8 --input_dtype float32",
     "--input_dtype float32 cannot be mapped"),
    ("--routine gated_delta_rule_mtp --num_q_heads 8", "--batch_size is required"),
])
def test_lines_that_cannot_be_mapped_are_refused(line: str, message: str) -> None:
    with pytest.raises(UnmappedLine, match=re.escape(message)):
        line_specs(line, 3)


def test_the_prefill_ignores_the_state_flags_as_the_tool_does() -> None:
    (spec,) = line_specs("--routine chunk_gated_delta_rule --batch_size 2 --state_dtype "
                         "bfloat16 --no_qk_l2norm", 1)
    assert "state_dtype" not in spec["params"] and "qk_l2norm" not in spec["params"]


def test_the_reference_sees_normalised_keys_as_the_kernel_does() -> None:
    p = point(DECODE, qk_l2norm=True)
    inp = FAMILY.inputs(DECODE, p, "auto", "cpu")
    out = FAMILY.reference(inp)[0]
    inp.data["k"].mul_(4.0)  # normalisation makes the length irrelevant (powers of 2: exact)
    inp.data["q"].mul_(2.0)
    assert torch.allclose(FAMILY.reference(inp)[0], out, atol=1e-5)
