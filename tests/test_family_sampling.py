"""The sampling family (kernelwatch_harness.families.sampling): its declarations, validation,
formulas, inputs, checks and PyTorch path on CPU, its flashinfer_benchmark.py mapping both
ways, and its FlashInfer keywords against each release's signatures; FlashInfer's path is
exercised on the GPU."""

from __future__ import annotations

import json
import re
import shlex
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from kernelwatch.core.benchmark_cli import UnmappedLine, line_specs, repro_command
from kernelwatch.core.series import series_key
from kernelwatch.core.settings import Settings
from kernelwatch.core.spec import SweepSpec
from kernelwatch_harness.catalogue import FAMILIES, KERNELS, PARAMS, _same, complete_params
from kernelwatch_harness.families import sampling_ops
from kernelwatch_harness.families.sampling import FAMILY, SAMPLERS, TAKES_DTYPE
from kernelwatch_harness.family import Family, Operands, max_abs_error
from tests.api_support import auth, make_client, new_token

KERNELS_COVERED = {
    "softmax", "sampling_from_probs", "sampling_from_logits", "top_k_sampling_from_probs",
    "top_p_sampling_from_probs", "top_k_top_p_sampling_from_probs",
    "top_k_top_p_sampling_from_logits", "min_p_sampling_from_probs", "top_k_renorm_probs",
    "top_p_renorm_probs", "top_k_mask_logits", "chain_speculative_sampling", "top_k",
    "top_k_page_table_transform", "top_k_ragged_transform"}
SIGS: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "gpu" / "flashinfer_signatures.json").read_text()
)["versions"]


def point(kernel: str, **over: Any) -> dict[str, Any]:
    width = FAMILY.width(kernel)  # vocab_size, or the transforms' max_len
    return complete_params(kernel, {"batch_size": 8, width: 512, **over}, "torch")


def run_torch(kernel: str, params: dict[str, Any]) -> tuple[Operands, list[torch.Tensor]]:
    inp = FAMILY.inputs(kernel, params, "torch", "cpu")
    prepared = FAMILY.prepare("torch", inp, "cpu")
    return inp, prepared.outputs(prepared.fn(inp.data))


def error(kernel: str, params: dict[str, Any], raw: Any) -> float:
    """The error measured for ``raw`` given as the kernel's result on the point's inputs."""
    inp = FAMILY.inputs(kernel, params, "torch", "cpu")
    return max_abs_error(FAMILY.prepare("torch", inp, "cpu").outputs(raw), FAMILY.reference(inp))


# ------------------------------------------------------------------------- declarations


def test_it_declares_a_whole_family() -> None:
    assert isinstance(FAMILY, Family) and FAMILIES["sampling"] is FAMILY
    assert set(FAMILY.kernels) == {*KERNELS_COVERED, "top_k_varlen"}
    for k in FAMILY.kernels.values():
        assert k.family == "sampling" and k.routine == k.name  # the tool's routine name
        # top_k_varlen: FlashInfer's own backends (tests/test_family_topk_varlen.py)
        assert k.backends == ("cuda", "torch") or k.name == "top_k_varlen"
        assert {"sm80", "sm90"} <= set(k.archs)
        assert k.params[:2] == ("batch_size", FAMILY.width(k.name))
        assert ("logits_dtype" in k.params) == (k.name in TAKES_DTYPE)
        assert KERNELS[k.name] is k  # no other family's kernel of the same name
    assert KERNELS["top_k"].since == KERNELS["top_k_ragged_transform"].since == "0.6.0"
    assert all(p.doc for p in FAMILY.params.values())
    # shared names mean the same everywhere (each family words its doc)
    assert all(_same(PARAMS[n], p) for n, p in FAMILY.params.items())
    assert (PARAMS["batch_size"].default, PARAMS["batch_size"].max) == (1, 16384)


def test_defaults_are_the_tools() -> None:
    p = complete_params("top_k_top_p_sampling_from_logits", {}, "cuda")
    assert p == {"batch_size": 1, "vocab_size": 128256, "logits_dtype": "float32", "top_k": 50,
                 "top_p": 0.9, "filter_apply_order": "top_k_first"}
    assert complete_params("softmax", {}, "torch")["temperature"] == 1.0
    assert complete_params("min_p_sampling_from_probs", {}, "cuda")["min_p"] == 0.1
    assert complete_params("chain_speculative_sampling", {}, "cuda")["num_speculate_tokens"] == 5


def test_top_k_may_not_exceed_the_vocabulary() -> None:
    with pytest.raises(ValueError, match="top_k=600 exceeds vocab_size=512"):
        FAMILY.check_point("top_k", point("top_k", top_k=600))
    FAMILY.check_point("top_k", point("top_k", top_k=512))
    FAMILY.check_point("softmax", point("softmax"))  # no top_k: nothing to check


def _spec(kernel: str, **params: Any) -> dict[str, Any]:
    return {"name": "s", "kernel": kernel, "backends": ["torch"], "targets": ["cpu"],
            "params": {"batch_size": [4], "vocab_size": [512], **params}}


@pytest.mark.parametrize(("kernel", "params", "loc", "words"), [
    ("top_p_sampling_from_probs", {"top_p": [1.5]}, ["params", "top_p"],
     ["params.top_p", "1.5", "out of range", "numbers from 0.01 to 1"]),
    ("top_p_sampling_from_probs", {"top_p": ["high"]}, ["params", "top_p"],
     ["params.top_p", "not a number", "numbers from 0.01 to 1"]),
    ("softmax", {"logits_dtype": ["float64"]}, ["params", "logits_dtype"],
     ["params.logits_dtype", "float64", "allowed: float32, float16, bfloat16"]),
    ("top_k_top_p_sampling_from_probs", {"filter_apply_order": ["top_p_first"]},
     ["params", "filter_apply_order"], ["params.filter_apply_order", "top_k_first, joint"]),
    ("sampling_from_probs", {"logits_dtype": ["float16"]}, ["params"],
     ["logits_dtype", "sampling_from_probs", "allowed"]),
    ("top_k", {"top_k": [1024]}, ["params"],
     ["top_k=1024 exceeds vocab_size=512", "at most vocab_size"]),
    ("sampling_from_probs", {"vocab_size": [8]}, ["params", "vocab_size"],
     ["params.vocab_size", "integers from 16 to 1048576"]),
])
def test_an_invalid_sweep_is_refused_naming_field_and_allowed_values(
        kw_env: Settings, kernel: str, params: dict[str, Any], loc: list[str],
        words: list[str]) -> None:
    client: TestClient = make_client()
    r = client.post("/v1/jobs", json=_spec(kernel, **params), headers=auth(new_token()))
    assert r.status_code == 422, r.text
    err = r.json()["detail"][0]
    assert err["loc"] == ["body", *loc]
    for w in words:
        assert w in err["msg"], (w, err["msg"])


def test_a_valid_sweep_is_accepted() -> None:
    spec = SweepSpec(**_spec("top_k_top_p_sampling_from_probs", top_p=[0.5, 1],
                             filter_apply_order=["top_k_first", "joint"]))
    grid = spec.grid("torch")
    assert len(grid) == 4 and {g["top_p"] for g in grid} == {0.5, 1.0}


# ------------------------------------------------------------------------------ formulas

B, V, N, K = 3, 1000, 4, 20


@pytest.mark.parametrize(("kernel", "dtype", "moved"), [
    ("softmax", "bfloat16", B * V * 2 + B * V * 4),
    ("softmax", "float32", B * V * 4 * 2),
    ("sampling_from_probs", None, B * V * 4 + B * 4),
    ("sampling_from_logits", "float16", B * V * 2 + B * 4),
    ("top_k_sampling_from_probs", None, B * V * 4 + B * 4),
    ("top_p_sampling_from_probs", None, B * V * 4 + B * 4),
    ("top_k_top_p_sampling_from_probs", None, B * V * 4 + B * 4),
    ("top_k_top_p_sampling_from_logits", "bfloat16", B * V * 2 + B * 4),
    ("min_p_sampling_from_probs", None, B * V * 4 + B * 4),
    ("top_k_renorm_probs", "bfloat16", 2 * B * V * 2),
    ("top_p_renorm_probs", None, 2 * B * V * 4),
    ("top_k_mask_logits", "float16", 2 * B * V * 2),
    ("chain_speculative_sampling", None,
     B * N * V * 4 + B * N * 4 + B * (N + 1) * V * 4 + B * (N + 1) * 4 + 2 * B * 4),
    ("top_k", "bfloat16", B * V * 2 + B * K * 2 + B * K * 8),
    ("top_k_page_table_transform", "bfloat16", B * V * 2 + B * V * 4 + B * K * 4),
    ("top_k_ragged_transform", "float32", B * V * 4 + B * K * 4),
])
def test_bytes_count_as_flashinfer_benchmark_does(kernel: str, dtype: str | None,
                                                  moved: int) -> None:
    over: dict[str, Any] = {"batch_size": B, FAMILY.width(kernel): V, "top_k": K,
                            "num_speculate_tokens": N}
    if dtype:
        over["logits_dtype"] = dtype
    p = {k: v for k, v in complete_params(kernel, over, "cuda").items()}
    work = FAMILY.work(kernel, p)
    assert work.bytes == moved and work.flops == 0.0  # the tool counts no FLOPs: memory bound
    assert FAMILY.memory_bytes(kernel, p) > work.bytes


# ------------------------------------------------------------------ the torch path, checks


@pytest.mark.parametrize("kernel", sorted(KERNELS_COVERED))
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_the_torch_path_passes_the_check(kernel: str, dtype: str) -> None:
    over = {"logits_dtype": dtype} if kernel in TAKES_DTYPE else {}
    p = point(kernel, **over)
    inp, outs = run_torch(kernel, p)
    assert max_abs_error(outs, FAMILY.reference(inp)) <= FAMILY.tolerance(kernel, p)
    if kernel in SAMPLERS:
        assert FAMILY.tolerance(kernel, p) == 0.0 and all(not o.any() for o in outs)


@pytest.mark.parametrize("order", ["top_k_first", "joint"])
def test_the_filters_hold_for_sharp_and_flat_settings(order: str) -> None:
    for top_k, top_p in ((1, 0.9), (5, 0.3), (400, 0.99), (50, 0.01)):
        for kernel in ("top_k_top_p_sampling_from_probs", "top_k_top_p_sampling_from_logits"):
            p = point(kernel, top_k=top_k, top_p=top_p, filter_apply_order=order)
            inp, outs = run_torch(kernel, p)
            assert max_abs_error(outs, FAMILY.reference(inp)) == 0.0, (top_k, top_p)


def _probs(kernel: str, p: dict[str, Any]) -> torch.Tensor:
    d = FAMILY.inputs(kernel, p, "torch", "cpu").data
    return d["probs"].float() if "probs" in d else torch.softmax(d["logits"].float(), -1)


@pytest.mark.parametrize("kernel", ["sampling_from_probs", "top_k_sampling_from_probs",
                                    "top_p_sampling_from_probs", "min_p_sampling_from_probs",
                                    "top_k_top_p_sampling_from_probs",
                                    "top_k_top_p_sampling_from_logits"])
def test_a_token_outside_the_support_is_caught(kernel: str) -> None:
    p = point(kernel, top_k=5, top_p=0.5, min_p=0.5)
    probs = _probs(kernel, p)
    if kernel == "sampling_from_probs":
        probs[:, 7] = 0  # a zero-probability token
        inp = FAMILY.inputs(kernel, p, "torch", "cpu")
        inp.kept["pristine"]["probs"][:, 7] = 0
        bad = FAMILY.prepare("torch", inp, "cpu").outputs(torch.full((8,), 7))
        assert max_abs_error(bad, FAMILY.reference(inp)) == 1.0
        return
    least = probs.argmin(-1)  # never in a top-k set, nucleus or min-p set
    assert error(kernel, p, least) == 1.0 > FAMILY.tolerance(kernel, p)
    assert error(kernel, p, probs.argmax(-1)) == 0.0  # always in it
    assert error(kernel, p, torch.full((8,), 512)) == 1.0  # out of the vocabulary


def test_the_top_k_first_order_is_told_from_joint() -> None:
    """With top_p=0.5 of the top-k set's mass, top_k_first keeps fewer tokens than joint
    (0.5 of the whole row's): a joint sampler's token fails the top_k_first check."""
    kernel = "top_k_top_p_sampling_from_probs"
    first = point(kernel, top_k=100, top_p=0.5)
    probs = _probs(kernel, first)
    order = probs.sort(-1, descending=True).indices
    # the 60th most probable token: inside joint's nucleus (well under half the row's mass),
    # outside top_k_first's (over half the top-100's)
    token = order[:, 59]
    assert error(kernel, {**first, "filter_apply_order": "joint"}, token) == 0.0
    assert error(kernel, first, token) == 1.0


def test_a_wrong_speculative_result_is_caught() -> None:
    kernel = "chain_speculative_sampling"
    p = point(kernel)
    inp = FAMILY.inputs(kernel, p, "torch", "cpu")
    prepared = FAMILY.prepare("torch", inp, "cpu")
    tokens, accepted, emitted = prepared.fn(inp.data)
    assert max_abs_error(prepared.outputs((tokens, accepted, emitted)),
                         FAMILY.reference(inp)) == 0.0
    ids = inp.data["draft_token_ids"]
    wrong_prefix = tokens.clone()
    wrong_prefix[:, 0] = (ids[:, 0] + 1) % 512
    everything = torch.full_like(emitted, 5)  # every draft claimed: a prefix that is not theirs
    no_tail = tokens.clone()
    no_tail[:, -1] = 3  # a token after the sampled one
    for raw in ((wrong_prefix, accepted, torch.ones_like(emitted)),
                (tokens, accepted, everything), (no_tail, accepted, torch.zeros_like(emitted))):
        assert max_abs_error(prepared.outputs(raw), FAMILY.reference(inp)) == 1.0


def test_wrong_deterministic_results_are_caught() -> None:
    p = point("softmax", temperature=2.0)
    inp, _ = run_torch("softmax", p)
    cold = torch.softmax(inp.data["logits"].float(), -1)  # temperature ignored
    assert error("softmax", p, cold) > FAMILY.tolerance("softmax", p)

    p = point("top_k_renorm_probs", top_k=10)
    probs = _probs("top_k_renorm_probs", p)
    vals, idx = probs.topk(11, dim=-1)  # one token too many
    eleven = torch.zeros_like(probs).scatter_(-1, idx, vals / vals.sum(-1, keepdim=True))
    assert error("top_k_renorm_probs", p, eleven) == 1.0
    unscaled = torch.zeros_like(probs).scatter_(-1, idx[:, :10], vals[:, :10])  # not renormalised
    assert error("top_k_renorm_probs", p, unscaled) > FAMILY.tolerance("top_k_renorm_probs", p)

    p = point("top_p_renorm_probs")
    assert error("top_p_renorm_probs", p, _probs("top_p_renorm_probs", p)) == 1.0  # no filter

    p = point("top_k_mask_logits")
    logits = FAMILY.inputs("top_k_mask_logits", p, "torch", "cpu").data["logits"]
    bottom = logits.topk(50, dim=-1, largest=False)  # the bottom 50, values kept
    low = torch.full_like(logits, float("-inf")).scatter_(-1, bottom.indices, bottom.values)
    assert error("top_k_mask_logits", p, low) == 1.0

    p = point("top_k")
    values, indices = logits.topk(50, dim=-1)
    assert error("top_k", p, (values, indices)) == 0.0
    assert error("top_k", p, (values, indices.flip(0))) > 0  # another row's indices


@pytest.mark.parametrize("kernel", ["top_k_page_table_transform", "top_k_ragged_transform"])
def test_a_wrong_selection_is_caught(kernel: str) -> None:
    p = point(kernel, top_k=16)
    inp = FAMILY.inputs(kernel, p, "torch", "cpu")
    prepared = FAMILY.prepare("torch", inp, "cpu")
    right = prepared.fn(inp.data)
    assert max_abs_error(prepared.outputs(right), FAMILY.reference(inp)) == 0.0
    d = inp.data
    bottom = d["scores"].topk(16, dim=-1, largest=False).indices  # the 16 smallest
    wrong = (d["src_page_table"].gather(-1, bottom) if "src_page_table" in d
             else bottom + d["offsets"][:, None]).int()
    repeated = right.clone()
    repeated[:, 1] = right[:, 0]
    for raw in (wrong, repeated, right.flip(0), torch.full_like(right, -1)):
        assert max_abs_error(prepared.outputs(raw), FAMILY.reference(inp)) == 1.0


def test_ties_at_the_boundary_may_go_either_way() -> None:
    """Tokens of equal probability at the k-th place: a kernel may keep any of them."""
    p = point("top_k_renorm_probs", top_k=2, batch_size=1, vocab_size=16)
    inp = FAMILY.inputs("top_k_renorm_probs", p, "torch", "cpu")
    probs = torch.tensor([[0.4, 0.2, 0.2, 0.2] + [0.0] * 12])
    inp.kept["pristine"]["probs"] = probs
    prepared = FAMILY.prepare("torch", inp, "cpu")
    for second in (1, 2, 3):
        out = torch.zeros_like(probs)
        out[0, 0], out[0, second] = 0.4 / 0.6, 0.2 / 0.6
        assert max_abs_error(prepared.outputs(out), FAMILY.reference(inp)) < 1e-6
    out = torch.zeros_like(probs)
    out[0, 0] = 1.0  # one token short
    assert max_abs_error(prepared.outputs(out), FAMILY.reference(inp)) == 1.0


def test_inputs_are_seeded_and_follow_the_tool() -> None:
    a = FAMILY.inputs("top_k_renorm_probs", point("top_k_renorm_probs", logits_dtype="bfloat16"),
                      "torch", "cpu")
    b = FAMILY.inputs("top_k_renorm_probs", point("top_k_renorm_probs", logits_dtype="bfloat16"),
                      "cuda", "cpu")
    assert torch.equal(a.data["probs"], b.data["probs"])
    assert a.data["probs"].dtype == torch.bfloat16  # the tool's input_dtype for this one
    probs = FAMILY.inputs("top_p_renorm_probs", point("top_p_renorm_probs"), "torch", "cpu")
    assert probs.data["probs"].dtype == torch.float32  # ... and float32 for the others
    assert torch.allclose(probs.data["probs"].sum(-1), torch.ones(8))
    chain = FAMILY.inputs("chain_speculative_sampling", point("chain_speculative_sampling"),
                          "torch", "cpu").data
    assert chain["draft_probs"].shape == (8, 5, 512)
    assert chain["target_probs"].shape == (8, 6, 512)
    assert chain["draft_token_ids"].dtype == torch.int32


# --------------------------------------------------------------------------------- refusals


def test_flashinfer_needs_a_gpu_and_unknown_backends_are_refused() -> None:
    inp = FAMILY.inputs("softmax", point("softmax"), "cuda", "cpu")
    with pytest.raises(NotImplementedError, match="needs a CUDA device"):
        FAMILY.prepare("cuda", inp, "cpu")
    with pytest.raises(NotImplementedError, match="'auto' is not offered for softmax"):
        FAMILY.prepare("auto", inp, "cpu")


def _fake_flashinfer(monkeypatch: pytest.MonkeyPatch, version: str,
                     **functions: Any) -> None:
    fi = types.ModuleType("flashinfer")
    fi.__version__ = version  # type: ignore[attr-defined]
    sampling = types.ModuleType("flashinfer.sampling")
    for name, fn in functions.items():
        setattr(sampling, name, fn)
    fi.sampling = sampling  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "flashinfer", fi)


def test_the_call_adapts_to_the_installed_release(monkeypatch: pytest.MonkeyPatch) -> None:
    """0.5.3's samplers take a generator, 0.6.18's a seed and offset; a release without the
    function, or without a keyword the point needs, is refused naming both."""
    seen: dict[str, Any] = {}

    def top_p_053(probs: Any, top_p: Any, indices: Any = None, deterministic: bool = True,
                  generator: Any = None, check_nan: bool = False) -> Any:
        seen.update(top_p=top_p, generator=generator)
        return probs.argmax(-1)

    gen = torch.Generator()
    _fake_flashinfer(monkeypatch, "0.5.3", top_p_sampling_from_probs=top_p_053)
    call, drawn = sampling_ops._flashinfer_call("top_p_sampling_from_probs",
                                                point("top_p_sampling_from_probs"), gen)
    call({"probs": torch.ones(2, 4)})
    # the generator it draws from is declared, for the graph to register before capture
    assert seen["top_p"] == 0.9 and seen["generator"] is gen and drawn == (gen,)
    with pytest.raises(NotImplementedError, match=r"FlashInfer 0.5.3 has no flashinfer.top_k"):
        sampling_ops._flashinfer_call("top_k", point("top_k"), gen)

    def top_p_0618(probs: Any, top_p: Any, indices: Any = None, deterministic: bool = True,
                   generator: Any = None, check_nan: bool = False, seed: Any = None,
                   offset: Any = None) -> Any:
        seen.update(seed=seed, generator=generator)
        return probs.argmax(-1)

    _fake_flashinfer(monkeypatch, "0.6.18", top_p_sampling_from_probs=top_p_0618)
    call, drawn = sampling_ops._flashinfer_call("top_p_sampling_from_probs",
                                                point("top_p_sampling_from_probs"), gen)
    call({"probs": torch.ones(2, 4)})
    assert seen["seed"] == sampling_ops.SEED and seen["generator"] is None and drawn == ()

    def old_joint(probs: Any, top_k: Any, top_p: Any, generator: Any = None) -> Any:
        return None

    _fake_flashinfer(monkeypatch, "0.4.0", top_k_top_p_sampling_from_probs=old_joint)
    with pytest.raises(NotImplementedError, match=re.escape(
            "FlashInfer 0.4.0: flashinfer.sampling.top_k_top_p_sampling_from_probs has no "
            "keyword 'filter_apply_order'")):
        sampling_ops._flashinfer_call("top_k_top_p_sampling_from_probs",
                                      point("top_k_top_p_sampling_from_probs"), gen)


def _signature(version: str, kernel: str) -> set[str]:
    """The parameters of the function the adapter calls, in the release's own module."""
    (sig,) = [s for s in SIGS[version].get(kernel, []) if s["file"] == _file(kernel)]
    return {*sig["positional"], *sig["keyword_only"]}


def _file(kernel: str) -> str:
    top = sampling_ops.api_name(kernel) == f"flashinfer.{kernel}"
    return "flashinfer/topk.py" if top else "flashinfer/sampling.py"


@pytest.mark.parametrize("version", sorted(SIGS))
@pytest.mark.parametrize("kernel", sorted(KERNELS_COVERED))
def test_the_keywords_fit_each_releases_signature(version: str, kernel: str) -> None:
    if KERNELS[kernel].since == "0.6.0" and version == "0.5.3":
        assert kernel not in SIGS[version]  # refused by name (above)
        return
    names = _signature(version, kernel)
    kwargs = sampling_ops.flashinfer_kwargs(kernel, point(kernel), names, version, object())
    assert set(kwargs) <= names
    if kernel in sampling_ops.RANDOM:
        # the tool's seed and offset where the release has them (0.6.18 on), else a generator
        pre_seed = version == "0.5.3"
        assert ("generator" in kwargs) == pre_seed and ("seed" in kwargs) != pre_seed
    tensors = {"chain_speculative_sampling": ["draft_probs", "draft_token_ids", "target_probs"],
               "top_k": ["input"],
               "top_k_page_table_transform": ["input", "src_page_table", "lengths"],
               "top_k_ragged_transform": ["input", "offsets", "lengths"],
               }.get(kernel, ["probs" if "probs" in kernel else "logits"])
    (sig,) = [s for s in SIGS[version][kernel] if s["file"] == _file(kernel)]
    assert sig["positional"][:len(tensors)] == tensors  # the tensors go first, by position


# ----------------------------------------------------------- flashinfer_benchmark.py mapping


POINTS = [
    ("softmax", {"batch_size": 64, "vocab_size": 32000, "temperature": 0.7,
                 "logits_dtype": "bfloat16"}),
    ("top_k_top_p_sampling_from_logits", {"batch_size": 16, "top_p": 0.95,
                                          "filter_apply_order": "joint"}),
    ("min_p_sampling_from_probs", {"min_p": 0.05}),
    ("chain_speculative_sampling", {"batch_size": 4, "num_speculate_tokens": 3}),
    ("top_k", {"top_k": 2048, "logits_dtype": "float16"}),
    ("top_k_page_table_transform", {"batch_size": 32, "max_len": 65536, "top_k": 2048}),
    ("top_k_ragged_transform", {"max_len": 8192, "logits_dtype": "bfloat16"}),
]


def _read_back(command: str) -> tuple[str, dict[str, Any], str]:
    (spec,) = line_specs(shlex.join(shlex.split(command)[2:]), 1)
    (backend,) = spec["backends"]
    sweep = SweepSpec(**{**spec, "targets": ["h200"], "flashinfer_versions": ["0.7.4"]})
    (grid,) = sweep.grid(backend)
    return spec["kernel"], grid, backend


@pytest.mark.parametrize(("kernel", "params"),
                         [*POINTS, *[(k, {}) for k in sorted(KERNELS_COVERED)]])
def test_a_points_command_reads_back_as_the_same_series(kernel: str,
                                                        params: dict[str, Any]) -> None:
    completed = complete_params(kernel, params, "cuda")
    repro = repro_command(kernel, completed, "cuda")
    assert repro.command is not None, repro.reason
    assert repro.command.startswith(f"python benchmarks/flashinfer_benchmark.py --routine "
                                    f"{kernel} --backends cuda --batch_size ")
    k, p, b = _read_back(repro.command)
    assert (k, p, b) == (kernel, completed, "cuda")
    assert series_key(k, p, b, "h200") == series_key(kernel, completed, "cuda", "h200")


def test_a_transform_line_takes_the_tools_max_len() -> None:
    (spec,) = line_specs("--routine top_k_page_table_transform --batch_size 8 --top_k 256 "
                         "--num_rows 8 --vocab_size 1000", 1)  # vocab_size: not this one's
    assert spec["params"] == {"batch_size": [8], "max_len": [4096],
                              "logits_dtype": ["float32"], "top_k": [256]}


def test_logits_dtype_is_the_tools_input_dtype() -> None:
    p = complete_params("softmax", {"logits_dtype": "bfloat16"}, "cuda")
    command = repro_command("softmax", p, "cuda").command or ""
    assert "--input_dtype bfloat16" in command and "logits_dtype" not in command


def test_the_torch_backend_has_no_command() -> None:
    repro = repro_command("softmax", complete_params("softmax", {}, "torch"), "torch")
    assert repro.command is None and repro.reason == "backend torch is not FlashInfer's"


def test_a_sampling_line_is_the_same_experiment() -> None:
    (spec,) = line_specs("--routine top_k_sampling_from_probs --batch_size 4 --vocab_size "
                         "151936 --top_k 20 --top_p 0.5 --input_dtype bfloat16 -vv "
                         "--refcheck --no_cuda_graph --random_seed 7", 1)
    # --top_p and --input_dtype change nothing for this routine (it reads float32 probs)
    assert spec == {"name": "testlist line 1", "kernel": "top_k_sampling_from_probs",
                    "backends": ["cuda"], "params": {"batch_size": [4],
                                                     "vocab_size": [151936], "top_k": [20]}}


@pytest.mark.parametrize(("line", "message"), [
    ("--routine top_k_ragged_transform --batch_size 8 --num_rows 4",
     "--num_rows 4: kernelwatch measures one row per request"),
    ("--routine top_k_sampling --batch_size 8 --vocab_size 1024",
     "--routine top_k_sampling: kernelwatch measures"),
    ("--routine softmax --batch_size 8", "--vocab_size is required"),
    ("--routine softmax --batch_size 8 --vocab_size 1024 --backends torch",
     "--backends torch: flashinfer_benchmark.py runs softmax with cuda only"),
    ("--routine softmax --batch_size 8 --vocab_size 1024 --enable_pdl",
     "--enable_pdl cannot be mapped"),
    ("--routine softmax --batch_size 8 --vocab_size 1024 --input_dtype float64",
     "--input_dtype float64 cannot be mapped"),
    ("--routine top_k --batch_size 8 --vocab_size 1024 --top_k many",
     "--top_k many is not a number"),
])
def test_sampling_lines_that_cannot_be_mapped_are_refused(line: str, message: str) -> None:
    with pytest.raises(UnmappedLine, match=re.escape(message)):
        line_specs(line, 3)


def test_a_torch_sampler_hands_its_generator_to_the_graph_timer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A sampler's own generator must be registered with the graph before capture (else the
    capture fails and the point is timed by CUDA events, host launch gaps included). The
    PyTorch samplers declare it; the deterministic kernels declare none; the measurer passes
    it to the graph timer, replaced here at its boundary."""
    from kernelwatch_harness import measure, timing

    sampler = FAMILY.inputs("top_k_top_p_sampling_from_logits",
                            point("top_k_top_p_sampling_from_logits"), "torch", "cpu")
    prepared = FAMILY.prepare("torch", sampler, "cpu")
    (gen,) = prepared.generators
    assert isinstance(gen, torch.Generator)
    mask = FAMILY.inputs("top_k_mask_logits", point("top_k_mask_logits"), "torch", "cpu")
    assert FAMILY.prepare("torch", mask, "cpu").generators == ()

    seen: dict[str, Any] = {}

    def graph(fn: Any, datas: list[dict[str, Any]], *args: Any) -> timing.GraphTiming:
        seen["generators"] = args[-1]
        return timing.GraphTiming([5.0] * 4, 1, [tuple(sampler.data_ptrs(datas[0]))])

    monkeypatch.setattr(timing, "time_cuda_graph", graph)
    monkeypatch.setattr(timing, "estimate_call_us", lambda fn, datas: 5.0)
    monkeypatch.setattr(timing, "boost_reference_mhz", lambda: 1980.0)
    m = measure.Measurer("cpu", {"iterations": 4})
    telemetry: dict[str, Any] = {"rotation": {}}
    assert m._graph(prepared, sampler, [sampler.data], telemetry) == [5.0] * 4
    assert seen["generators"] == (gen,)
