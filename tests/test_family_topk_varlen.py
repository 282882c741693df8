"""top_k_varlen in the sampling family (flashinfer.top_k_varlen): declarations, counts, the
torch path and the check on full and shorter rows, where each FlashInfer backend runs and what
gvr takes, the call against every release's signature, and the tool's lines both ways.
FlashInfer's path itself runs on the GPU (tests/test_gpu.py)."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from kernelwatch.core.benchmark_cli import UnmappedLine, line_specs, repro_command
from kernelwatch.core.spec import SweepSpec
from kernelwatch_harness.catalogue import KERNELS, complete_params
from kernelwatch_harness.families import sampling_ops
from kernelwatch_harness.families.sampling import FAMILY, VARLEN, VARLEN_ARCHS
from kernelwatch_harness.family import Operands, max_abs_error

SIGS: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "gpu" / "flashinfer_signatures.json").read_text()
)["versions"]
BACKENDS = ("radix_cutlass", "radix", "gvr")


def point(backend: str = "torch", **over: Any) -> dict[str, Any]:
    return complete_params(VARLEN, {"batch_size": 4, "max_len": 1024, **over}, backend)


def prepared_torch(p: dict[str, Any]) -> tuple[Operands, Any]:
    inp = FAMILY.inputs(VARLEN, p, "torch", "cpu")
    return inp, FAMILY.prepare("torch", inp, "cpu")


def shorten(inp: Operands, lengths: list[int]) -> None:
    """Rows of the given lengths (the tool's are full; the kernel takes any)."""
    for d in (inp.data, inp.kept["pristine"]):
        d["seq_lens"][:] = torch.tensor(lengths, dtype=torch.int32)


# ------------------------------------------------------------------------- declarations

def test_it_is_declared_with_flashinfers_own_backends() -> None:
    k = KERNELS[VARLEN]
    assert k.family == "sampling" and k.routine == "top_k_varlen" and k.since == "0.6.18"
    assert k.flashinfer_backends == BACKENDS and k.torch_backends == ("torch",)
    assert k.params == ("batch_size", "max_len", "logits_dtype", "top_k")
    # Ampere and Hopper run radix_cutlass only; radix and gvr are Blackwell's
    for arch in ("sm80", "sm90"):
        assert arch in k.archs
        assert [b for b, archs in VARLEN_ARCHS.items() if arch in archs] == ["radix_cutlass"]
    assert VARLEN_ARCHS["gvr"] == ("sm100", "sm103")


def test_defaults_are_the_tools() -> None:
    p = complete_params(VARLEN, {}, "gvr")
    assert p == complete_params(VARLEN, {}, "torch")
    assert (p["top_k"], p["logits_dtype"]) == (512, "float32")
    assert complete_params("top_k", {}, "cuda")["top_k"] == 50  # the other kernels keep 50


def test_top_k_may_not_exceed_the_row() -> None:
    with pytest.raises(ValidationError, match=re.escape("top_k=512 exceeds max_len=256; top_k "
                                                        "is at most max_len")):
        SweepSpec(name="v", kernel=VARLEN, backends=["torch"], params={"max_len": [256]})


def test_bytes_count_the_scores_lengths_and_indices() -> None:
    p = point(batch_size=8, max_len=1000, logits_dtype="bfloat16", top_k=64)
    work = FAMILY.work(VARLEN, p)
    assert work.bytes == 8 * 1000 * 2 + 8 * 4 + 8 * 64 * 4 and work.flops == 0.0
    assert FAMILY.memory_bytes(VARLEN, p) > work.bytes


# ------------------------------------------------------------------ the torch path, checks

@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_the_torch_path_passes_the_check(dtype: str) -> None:
    inp, prepared = prepared_torch(point(logits_dtype=dtype))
    assert inp.data["seq_lens"].tolist() == [1024] * 4  # full rows, as the tool builds them
    raw = prepared.fn(inp.data)
    assert raw[0].dtype == torch.int32 and raw[0].shape == (4, 512) and raw[1] is None
    assert max_abs_error(prepared.outputs(raw), FAMILY.reference(inp)) == 0.0
    assert FAMILY.tolerance(VARLEN, point()) == 0.0


def test_rows_of_their_own_length_are_selected_within_it() -> None:
    inp, prepared = prepared_torch(point(top_k=16))
    shorten(inp, [1024, 300, 16, 5])
    indices, _ = prepared.fn(inp.data)
    assert int(indices[1].max()) < 300 and indices[3, 5:].tolist() == [-1] * 11
    assert sorted(indices[3, :5].tolist()) == list(range(5))
    assert max_abs_error(prepared.outputs((indices, None)), FAMILY.reference(inp)) == 0.0


def test_a_wrong_selection_is_caught() -> None:
    inp, prepared = prepared_torch(point(top_k=16))
    shorten(inp, [1024, 300, 16, 5])
    right, _ = prepared.fn(inp.data)
    x = inp.data["logits"].masked_fill(torch.arange(1024) >= inp.data["seq_lens"][:, None],
                                       float("inf"))
    bottom = x.topk(16, dim=-1, largest=False).indices.int()  # the 16 smallest in each row
    past = right.clone()
    past[1, 0] = 700  # beyond row 1's 300
    repeated = right.clone()
    repeated[0, 1] = right[0, 0]
    unpadded = right.clone()
    unpadded[3, 7] = 0  # a slot past a 5-long row must be -1
    missing = right.clone()
    missing[0, 3] = -1  # a full row has no padding
    for wrong in (bottom, past, repeated, unpadded, missing, right.flip(0)):
        assert max_abs_error(prepared.outputs((wrong, None)), FAMILY.reference(inp)) == 1.0


# ------------------------------------------------------------------------- FlashInfer

@pytest.mark.parametrize(("backend", "arch", "over", "why"), [
    ("radix_cutlass", "sm80", {}, None),
    ("radix_cutlass", "sm90", {}, None),
    ("radix", "sm90", {}, "FlashInfer's radix backend of top_k_varlen runs on sm100, sm103, "
                          "sm120; this GPU is sm90"),
    ("radix", "sm120", {}, None),
    ("gvr", "sm90", {}, "runs on sm100, sm103; this GPU is sm90"),
    ("gvr", "sm100", {}, None),
    ("gvr", "sm103", {"top_k": 100}, "gvr selects top_k 512, 1024, 2048 only, not 100"),
    ("gvr", "sm100", {"max_len": 1020, "logits_dtype": "bfloat16"},
     "max_len is a multiple of 8 for bfloat16"),
    ("gvr", "sm100", {"max_len": 1020}, None),  # float32: 4 a vector
    ("gvr", "sm100", {"batch_size": 2048}, "at most 1024 rows, not 2048"),
])
def test_each_backend_runs_where_flashinfer_runs_it(backend: str, arch: str,
                                                    over: dict[str, Any],
                                                    why: str | None) -> None:
    got = sampling_ops.varlen_refusal(backend, point(backend, **over), arch)
    assert got == why if why is None else why in (got or "")


def test_gvr_gets_the_tools_hint_and_the_others_none() -> None:
    inp = FAMILY.inputs(VARLEN, point("gvr"), "gvr", "cpu")
    hint = inp.data["pre_idx"]
    assert hint.dtype == torch.int32 and hint.shape == (4, 512)
    assert torch.equal(hint[:, 0], inp.data["logits"].argmax(dim=-1).int())
    assert hint[:, 1:].tolist() == [list(range(1, 512))] * 4
    assert "pre_idx" not in FAMILY.inputs(VARLEN, point("radix"), "radix", "cpu").data


def _fake_flashinfer(monkeypatch: pytest.MonkeyPatch, version: str, arch: tuple[int, int],
                     op: Any = None) -> None:
    fi = ModuleType("flashinfer")
    fi.__version__ = version  # type: ignore[attr-defined]
    if op is not None:
        fi.top_k_varlen = op  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "flashinfer", fi)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: arch)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_call_passes_the_tools_arguments(monkeypatch: pytest.MonkeyPatch,
                                             backend: str) -> None:
    seen: dict[str, Any] = {}

    def top_k_varlen(logits: Any, seq_lens: Any, top_k: int, *, pre_idx: Any = None,
                     backend: str = "auto", **rest: Any) -> Any:
        seen.update(logits=logits, seq_lens=seq_lens, top_k=top_k, pre_idx=pre_idx,
                    backend=backend)
        return "indices", None

    _fake_flashinfer(monkeypatch, "0.7.4", (10, 0), top_k_varlen)
    p = point(backend)
    inp = FAMILY.inputs(VARLEN, p, backend, "cpu")
    assert sampling_ops._varlen_call(backend, p, "cuda")(inp.data) == ("indices", None)
    assert seen["logits"] is inp.data["logits"] and seen["seq_lens"] is inp.data["seq_lens"]
    assert seen["top_k"] == 512 and seen["backend"] == backend
    assert (seen["pre_idx"] is inp.data["pre_idx"]) if backend == "gvr" else \
        seen["pre_idx"] is None


def test_a_release_or_gpu_without_it_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_flashinfer(monkeypatch, "0.5.3", (9, 0))
    refusal = r"FlashInfer 0\.5\.3 has no flashinfer\.top_k_varlen \(added in 0\.6\.18\)"
    for backend in BACKENDS:  # the release named before the GPU (as tests/test_gpu.py reads)
        with pytest.raises(NotImplementedError, match=refusal):
            sampling_ops._varlen_call(backend, point(backend), "cuda")
    _fake_flashinfer(monkeypatch, "0.6.18.post1", (9, 0), lambda *a, **k: None)
    with pytest.raises(NotImplementedError, match="this GPU is sm90"):
        sampling_ops._varlen_call("radix", point("radix"), "cuda")


def test_flashinfer_needs_a_gpu_and_its_named_backends() -> None:
    inp = FAMILY.inputs(VARLEN, point("radix_cutlass"), "radix_cutlass", "cpu")
    with pytest.raises(NotImplementedError, match="needs a CUDA device"):
        FAMILY.prepare("radix_cutlass", inp, "cpu")
    with pytest.raises(NotImplementedError, match="'cuda' is not offered for top_k_varlen"):
        FAMILY.prepare("cuda", inp, "cpu")


@pytest.mark.parametrize("version", sorted(SIGS))
def test_the_arguments_fit_every_releases_signature(version: str) -> None:
    """0.5.3 has no top_k_varlen; from 0.6.18 its tensors and k go first, by position, and
    pre_idx and backend (taking the three the tool runs) are among its parameters."""
    if version == "0.5.3":
        assert VARLEN not in SIGS[version]
        return
    (sig,) = SIGS[version][VARLEN]
    assert sig["file"] == "flashinfer/topk_varlen/topk_varlen.py"
    assert sig["positional"][:3] == ["logits", "seq_lens", "top_k"]
    assert {"pre_idx", "backend"} <= {*sig["positional"], *sig["keyword_only"]}
    assert set(BACKENDS) <= set(sig["literals"]["backend"])


# ----------------------------------------------------------- flashinfer_benchmark.py mapping

@pytest.mark.parametrize("backend", BACKENDS)
def test_a_points_command_reads_back_as_the_same_point(backend: str) -> None:
    completed = point(backend, logits_dtype="bfloat16", top_k=1024)
    repro = repro_command(VARLEN, completed, backend)
    assert repro.command is not None
    assert f"--routine top_k_varlen --backends {backend} --batch_size 4 --max_seq_len 1024" \
        in repro.command
    (spec,) = line_specs(shlex.join(shlex.split(repro.command)[2:]), 1)
    assert spec["backends"] == [backend]
    sweep = SweepSpec(**{**spec, "targets": ["h200"], "flashinfer_versions": ["0.7.4"]})
    assert sweep.grid(backend) == [completed]


def test_a_line_without_backends_runs_every_one() -> None:
    (spec,) = line_specs("--routine top_k_varlen --batch_size 8 --max_seq_len 4096", 1)
    assert spec["backends"] == list(BACKENDS)
    assert spec["params"] == {"batch_size": [8], "max_len": [4096],
                              "logits_dtype": ["float32"], "top_k": [512]}


@pytest.mark.parametrize(("line", "message"), [
    ("--routine top_k_varlen --batch_size 8", "--max_seq_len is required"),
    ("--routine top_k_varlen --batch_size 8 --max_seq_len 64 --backends cuda",
     "--backends cuda: flashinfer_benchmark.py runs top_k_varlen with radix_cutlass, radix, "
     "gvr only"),
    ("--routine top_k_varlen --batch_size 8 --max_seq_len 64 --input_dtype float8",
     "--input_dtype float8 cannot be mapped"),
])
def test_lines_that_cannot_be_mapped_are_refused(line: str, message: str) -> None:
    with pytest.raises(UnmappedLine, match=re.escape(message)):
        line_specs(line, 1)
