"""The GEMM family (kernelwatch_harness.families.gemm): declarations, formulas, inputs,
reference and PyTorch path on CPU, refusals, flashinfer_benchmark.py both ways, and the
adapter's keywords against each release's signature; FlashInfer's path runs on the GPU."""

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
from kernelwatch.core.series import series_key
from kernelwatch.core.spec import SweepSpec
from kernelwatch_harness import catalogue, measure
from kernelwatch_harness.catalogue import KERNELS, complete_params
from kernelwatch_harness.families import gemm_ops
from kernelwatch_harness.families.gemm import (
    API,
    BACKEND_ARCHS,
    BACKEND_SINCE,
    FAMILY,
    MEASURED,
    SINCE,
)
from kernelwatch_harness.family import Family, max_abs_error, release
from tests.api_support import auth, make_client, new_token

SIGS: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "gpu" / "flashinfer_signatures.json").read_text()
)["versions"]
BLACKWELL_ONLY = [k for k in FAMILY.kernels if k not in MEASURED]


def point(kernel: str, backend: str = "torch", **over: Any) -> dict[str, Any]:
    small = {"m": 16, "n": 64, "k": 256, "batch_size": 3, "group_size": 2}
    return complete_params(kernel, {**small, **over}, backend)


def test_it_declares_a_whole_family() -> None:
    assert isinstance(FAMILY, Family) and FAMILY.name == "gemm"
    assert set(MEASURED) == {"bmm_fp8", "mm_fp8", "mm_bf16", "bmm_bf16", "tinygemm_bf16"}
    assert set(BLACKWELL_ONLY) == {"mm_fp4", "mm_mxfp8", "bmm_mxfp8", "mm_bf16_fp4",
                                   "gemm_fp8_nt_groupwise", "group_gemm_fp8_nt_groupwise"}
    for k in FAMILY.kernels.values():
        assert k.family == "gemm" and k.routine == k.name  # flashinfer_benchmark.py's name
        assert k.torch_backends == ("torch",) and KERNELS[k.name] is k
    assert all(p.doc for p in FAMILY.params.values())
    assert "sm80" in KERNELS["mm_bf16"].archs and "sm80" in KERNELS["bmm_bf16"].archs
    assert "sm80" not in KERNELS["bmm_fp8"].archs and "sm89" in KERNELS["bmm_fp8"].archs
    assert KERNELS["tinygemm_bf16"].archs[0] == "sm90"
    for name in BLACKWELL_ONLY:
        assert not set(KERNELS[name].archs) & {"sm80", "sm86", "sm89", "sm90"}, name


def test_shared_parameters_are_declared_as_every_family_does() -> None:
    for name, p in FAMILY.params.items():
        assert catalogue._same(catalogue.PARAMS[name], p), name


@pytest.mark.parametrize(("kernel", "extra"), [("bmm_fp8", {"out_dtype": "float16"}),
                                               ("bmm_bf16", {}), ("mm_bf16", {"bias": True})])
def test_bytes_and_flops_count_every_matrix_of_the_batch(kernel: str,
                                                         extra: dict[str, Any]) -> None:
    p = point(kernel, m=8, n=32, k=64, batch_size=5, **extra)
    batch = 5 if "batch_size" in KERNELS[kernel].params else 1
    size = 1 if kernel == "bmm_fp8" else 2
    bias = 1 if p.get("bias") else 0
    work = FAMILY.work(kernel, p)
    assert work.flops == batch * (2 * 8 * 32 * 64 + bias * 8 * 32)
    assert work.bytes == batch * ((8 * 64 + 32 * 64) * size + 8 * 32 * 2 + bias * 32 * 2)
    if kernel == "bmm_fp8":  # flashinfer_benchmark.py's formula counts one matrix only
        assert work.bytes == 5 * (8 * 64 + 32 * 64 + 8 * 32 * 2)
    assert FAMILY.memory_bytes(kernel, p) > work.bytes


def test_grouped_and_quantised_operands_are_counted_as_read() -> None:
    g = FAMILY.work("group_gemm_fp8_nt_groupwise", point("group_gemm_fp8_nt_groupwise",
                                                         m=8, n=16, k=128, group_size=4))
    assert g.flops == 4 * 2 * 8 * 16 * 128 and g.bytes == 4 * (8 * 128 + 16 * 128 + 8 * 16 * 2)
    fp4 = FAMILY.work("mm_fp4", point("mm_fp4", m=8, n=16, k=128))
    assert fp4.bytes == (8 * 128 + 16 * 128) * (0.5 + 1 / 32) + 8 * 16 * 2
    # bfloat16 activations, NVFP4 weights with a scale per 16: the tool's own formula
    w4 = FAMILY.work("mm_bf16_fp4", point("mm_bf16_fp4", m=8, n=16, k=128))
    assert w4.bytes == 8 * 128 * 2 + (128 // 2) * 16 + (128 // 16) * 16 + 8 * 16 * 2


@pytest.mark.parametrize("kernel", list(FAMILY.kernels))
def test_the_torch_path_matches_the_float32_reference(kernel: str) -> None:
    p = point(kernel, bias="bias" in KERNELS[kernel].params)
    inp = FAMILY.inputs(kernel, p, "torch", "cpu")
    prepared = FAMILY.prepare("torch", inp, "cpu")
    (out,) = prepared.outputs(prepared.fn(inp.data))
    lead = {"bmm_fp8": (3,), "bmm_bf16": (3,), "bmm_mxfp8": (3,),
            "group_gemm_fp8_nt_groupwise": (2,)}.get(kernel, ())
    assert out.shape == (*lead, 16, 64)
    err = max_abs_error([out], FAMILY.reference(inp))
    assert 0 < err <= FAMILY.tolerance(kernel, p) / 2, err  # room left, and not trivially 0


@pytest.mark.parametrize("out_dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("dtypes", [("float8_e4m3fn", "float8_e4m3fn"),
                                    ("float8_e5m2", "float8_e4m3fn")])
def test_fp8_operands_are_quantised_per_tensor_and_the_reference_dequantises(
        dtypes: tuple[str, str], out_dtype: str) -> None:
    p = point("bmm_fp8", input_dtype=dtypes[0], mat2_dtype=dtypes[1], out_dtype=out_dtype)
    inp = FAMILY.inputs("bmm_fp8", p, "cudnn", "cpu")
    a, b = inp.data["a"], inp.data["b"]
    assert a.dtype == getattr(torch, dtypes[0]) and b.dtype == getattr(torch, dtypes[1])
    assert b.shape == (3, 256, 64) and b.stride(-2) == 1  # [b, k, n] column-major
    # the largest magnitude maps to the format's largest value
    assert float(a.float().abs().max()) == torch.finfo(a.dtype).max
    ref = FAMILY.reference(inp)[0]
    scale = inp.data["a_scale"] * inp.data["b_scale"]
    assert torch.allclose(ref, torch.matmul(a.float(), b.float()) * scale)
    prepared = FAMILY.prepare("torch", inp, "cpu")
    out = prepared.fn(inp.data)
    assert out.dtype == getattr(torch, out_dtype)
    assert max_abs_error([out], [ref]) <= FAMILY.tolerance("bmm_fp8", p)


def test_tolerance_grows_with_k() -> None:
    assert FAMILY.tolerance("mm_bf16", point("mm_bf16", k=4096)) == pytest.approx(
        4 * FAMILY.tolerance("mm_bf16", point("mm_bf16", k=256)))
    assert FAMILY.tolerance("mm_bf16", point("mm_bf16", k=4096)) == 16 * 64 / 256


@pytest.mark.parametrize("wrong", ["transposed", "unscaled", "no_bias"])
def test_a_wrong_result_is_caught(wrong: str) -> None:
    kernel = "bmm_fp8" if wrong == "unscaled" else "mm_bf16"
    p = point(kernel, m=64, n=64, bias=wrong == "no_bias")
    inp = FAMILY.inputs(kernel, p, "torch", "cpu")
    d = inp.data
    if wrong == "transposed":  # b's memory read as [k, n] row-major where it is column-major
        out = torch.matmul(d["a"].float(), d["b"].transpose(0, 1).contiguous().view(256, 64)
                           .float())
    else:  # the scales, or the bias, left out
        out = torch.matmul(d["a"].float(), d["b"].float())
    err = max_abs_error([out], FAMILY.reference(inp))
    assert err > 2 * FAMILY.tolerance(kernel, p), (wrong, err)


def test_inputs_are_seeded() -> None:
    p = point("mm_bf16", bias=True)
    a = FAMILY.inputs("mm_bf16", p, "torch", "cpu")
    b = FAMILY.inputs("mm_bf16", p, "cudnn", "cpu")
    assert all(torch.equal(a.data[n], b.data[n]) for n in ("a", "b", "bias"))


def test_flashinfer_needs_a_gpu_and_unknown_backends_are_refused() -> None:
    inp = FAMILY.inputs("mm_bf16", point("mm_bf16"), "cudnn", "cpu")
    with pytest.raises(NotImplementedError, match="needs a CUDA device"):
        FAMILY.prepare("cudnn", inp, "cpu")
    with pytest.raises(NotImplementedError, match="'cublas' is not offered for mm_bf16"):
        FAMILY.prepare("cublas", inp, "cpu")


def _on_gpu(monkeypatch: pytest.MonkeyPatch, major: int, minor: int) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: (major, minor))


@pytest.mark.parametrize("kernel", BLACKWELL_ONLY)
def test_a_blackwell_only_kernel_is_refused_on_hopper_with_the_reason(
        kernel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _on_gpu(monkeypatch, 9, 0)
    backend = KERNELS[kernel].flashinfer_backends[0]
    inp = FAMILY.inputs(kernel, point(kernel, backend), backend, "cpu")
    with pytest.raises(measure.Unsupported, match=f"FlashInfer runs {kernel} on sm100, "
                                                   "sm103, sm120; this GPU is sm90"):
        measure._prepare(backend, inp, "cuda")
    assert measure.classify(measure.Unsupported("x")) == "unsupported"


@pytest.mark.parametrize(("kernel", "backend", "arch"), [
    ("bmm_fp8", "cublas", (8, 0)), ("mm_bf16", "tinygemm", (8, 0)),
    ("tinygemm_bf16", "tinygemm", (8, 6))])
def test_a_kernel_refused_on_ampere_says_so(kernel: str, backend: str,
                                            arch: tuple[int, int],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _on_gpu(monkeypatch, *arch)
    inp = FAMILY.inputs(kernel, point(kernel, backend), backend, "cpu")
    with pytest.raises((measure.Unsupported, NotImplementedError),
                       match=f"this GPU is sm{arch[0]}{arch[1]}"):
        measure._prepare(backend, inp, "cuda")


def test_a_backend_outside_its_own_archs_is_refused() -> None:
    gemm_ops.check_arch("mm_bf16", "cudnn", "sm80")
    gemm_ops.check_arch("bmm_fp8", "cublas", "sm90")
    with pytest.raises(NotImplementedError, match="cutlass backend of bmm_fp8 runs on sm100"):
        gemm_ops.check_arch("bmm_fp8", "cutlass", "sm90")
    with pytest.raises(NotImplementedError, match="this GPU is sm90"):
        gemm_ops.check_arch("mm_bf16", "tgv", "sm90")


def test_a_release_lacking_a_kernel_or_backend_is_refused_naming_it() -> None:
    with pytest.raises(NotImplementedError, match=r"FlashInfer 0\.5\.3 has no "
                                                  r"flashinfer\.gemm\.mm_bf16 \(added in 0\.6\.1"):
        gemm_ops.check_release("mm_bf16", "cudnn", "0.5.3")
    with pytest.raises(NotImplementedError, match=r"FlashInfer 0\.6\.18\.post1's mm_fp8 has "
                                                  r"no 'cublas' backend \(added in 0\.7\.2\)"):
        gemm_ops.check_release("mm_fp8", "cublas", "0.6.18.post1")
    gemm_ops.check_release("mm_fp8", "cublas", "0.7.2.post1")
    gemm_ops.check_release("mm_fp8", "trtllm_low_latency", "0.5.3")


# ----------------------------------------------------------- the signatures of each release


def _since(version: str, first: str | None) -> bool:
    return first is None or release(version) >= release(first)


@pytest.mark.parametrize("version", sorted(SIGS))
@pytest.mark.parametrize("kernel", MEASURED)
def test_the_adapters_keywords_fit_each_release(kernel: str, version: str) -> None:
    """Each release either has the function, taking every keyword the adapter passes and
    every backend kernelwatch offers there, or lacks it and the adapter refuses it."""
    sigs = SIGS[version].get(API[kernel], [])
    if not _since(version, SINCE.get(kernel)):
        assert not sigs, f"{version} has {kernel}: SINCE is wrong"
        return
    assert sigs, f"{version} lacks {kernel}: SINCE should say so"
    backend = KERNELS[kernel].flashinfer_backends[0]
    p = point(kernel, backend, bias="bias" in KERNELS[kernel].params)
    inp = FAMILY.inputs(kernel, p, backend, "cpu")
    kwargs = gemm_ops.flashinfer_kwargs(kernel, backend, p, inp.data, inp.kept.get("out"))
    for sig in sigs:
        names = set(sig["positional"]) | set(sig["keyword_only"])
        assert not set(kwargs) - names, (version, kernel, sorted(set(kwargs) - names))
        offered = sig.get("literals", {}).get("backend")
        if offered is None:  # tinygemm_bf16: one kernel, no backend argument
            assert "backend" not in kwargs
            continue
        for b in KERNELS[kernel].flashinfer_backends:
            has = b in offered
            assert has == _since(version, BACKEND_SINCE.get((kernel, b))), (version, kernel, b)


# ------------------------------------------------------------- flashinfer_benchmark.py


def _point_of(spec: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    (backend,) = spec["backends"]
    sweep = SweepSpec(**{**spec, "targets": ["h200"], "flashinfer_versions": ["0.7.4"]})
    (grid,) = sweep.grid(str(backend))
    return str(spec["kernel"]), grid, str(backend)


@pytest.mark.parametrize(("kernel", "params", "backend"), [
    ("bmm_fp8", {"batch_size": 16, "m": 128, "n": 1024, "k": 512,
                 "input_dtype": "float8_e5m2", "out_dtype": "float16"}, "cublas"),
    ("bmm_fp8", {}, "auto"),
    ("mm_fp8", {"m": 4, "n": 2560, "k": 8192}, "trtllm_low_latency"),
    ("mm_bf16", {"m": 1, "n": 4096, "k": 4096, "bias": True}, "cublaslt"),
    ("bmm_bf16", {"batch_size": 8}, "cudnn"),
    ("tinygemm_bf16", {"m": 8, "n": 256, "k": 7168, "bias": True}, "tinygemm"),
    ("group_gemm_fp8_nt_groupwise", {"group_size": 4}, "cutlass"),
    ("mm_fp4", {}, "cudnn"),
])
def test_a_points_command_reads_back_as_the_same_series(kernel: str, params: dict[str, Any],
                                                        backend: str) -> None:
    completed = complete_params(kernel, params, backend)
    repro = repro_command(kernel, completed, backend)
    assert repro.command is not None, repro.reason
    assert repro.command.startswith(f"python benchmarks/flashinfer_benchmark.py --routine "
                                    f"{kernel} --backends {backend} ")
    (spec,) = line_specs(shlex.join(shlex.split(repro.command)[2:]), 1)
    k, p, b = _point_of(spec)
    assert (k, p, b) == (kernel, completed, backend)
    assert series_key(k, p, b, "h200") == series_key(kernel, completed, backend, "h200")


@pytest.mark.parametrize(("kernel", "backend", "reason"), [
    ("mm_fp8", "cublas", "mm_fp8 routine runs trtllm_low_latency only"),
    ("bmm_bf16", "cutile", "bmm_bf16 routine runs cudnn, cutlass, auto only"),
    ("mm_bf16", "torch", "backend torch is not FlashInfer's"),
])
def test_a_point_with_no_equal_command_says_why(kernel: str, backend: str, reason: str) -> None:
    repro = repro_command(kernel, complete_params(kernel, {}, backend), backend)
    assert repro.command is None and repro.reason is not None and reason in repro.reason


@pytest.mark.parametrize(("line", "message"), [
    ("--routine mm_bf16 --m 8 --n 64 --k 64 --autotune", "--autotune: kernelwatch times"),
    ("--routine mm_fp4 --m 8 --n 64 --k 64 --use_nvfp4", "--use_nvfp4: kernelwatch does not"),
    ("--routine bmm_fp8 --m 8 --n 64 --k 64 --input_dtype fp8_e5m2 --mat2_dtype fp8_e5m2",
     "input_dtype and mat2_dtype cannot both be float8_e5m2"),
    ("--routine bmm_fp8 --m 8 --n 64 --k 64 --out_dtype float32",
     "--out_dtype float32 cannot be mapped"),
    ("--routine mm_bf16 --m 8 --n 64 --k 64 --backends cublas",
     "--backends cublas: kernelwatch runs mm_bf16 with cudnn, cublaslt"),
    ("--routine mm_fp8 --m 8 --n 64 --k 64 --out_dtype float16",
     "--out_dtype float16: flashinfer_benchmark.py runs mm_fp8 with bfloat16 only"),
    ("--routine tinygemm_bf16 --m 8 --n 64 --k 64 --input_dtype fp8_e4m3",
     "--input_dtype fp8_e4m3: flashinfer_benchmark.py runs tinygemm_bf16 with bfloat16"),
    ("--routine mm_bf16 --m 8 --n 64 --k 64 --batch_size 4",
     "--batch_size 4: mm_bf16 is one GEMM"),
    ("--routine bmm_bf16 --m 8 --n 64 --k 64 --bias", "--bias: bmm_bf16 takes no bias"),
    ("--routine gemm_fp8_nt_groupwise --m 8 --n 64 --k 128 --backends cutlass --mma_sm 2",
     "--mma_sm 2: kernelwatch measures --mma_sm 1"),
    ("--routine gemm_fp8_nt_groupwise --m 8 --n 64 --k 128 --backends cutlass "
     "--scale_major_mode K", "--scale_major_mode K: kernelwatch measures"),
    ("--routine bmm_fp8 --m 8 --n 64", "--k is required"),
])
def test_gemm_lines_that_cannot_be_mapped_are_refused(line: str, message: str) -> None:
    with pytest.raises((UnmappedLine, ValueError), match=re.escape(message)):
        specs = line_specs(line, 3)
        for spec in specs:  # a cross-parameter rule is the spec's, as for a submitted sweep
            SweepSpec(**{**spec, "targets": ["h200"], "flashinfer_versions": ["0.7.4"]})


@pytest.mark.parametrize("line", [
    "--routine tinygemm_bf16 --m 8 --n 64 --k 64 --input_dtype bfloat16 --bias",
    "--routine mm_bf16 --backends cudnn --m 8 --n 64 --k 64 --input_dtype bfloat16",
])
def test_a_dtype_flag_the_routine_fixes_or_ignores_maps(line: str) -> None:
    (spec,) = line_specs(line, 1)
    assert "input_dtype" not in spec["params"] and spec["params"]["m"] == [8]


def test_a_gemm_line_is_the_same_experiment() -> None:
    (spec,) = line_specs("--routine bmm_fp8 --backends cudnn cublas --batch_size 4 --m 128 "
                         "--n 512 --k 256 --out_dtype float16 -vv --refcheck", 1)
    assert spec == {"name": "testlist line 1", "kernel": "bmm_fp8",
                    "backends": ["cudnn", "cublas"],
                    "params": {"m": [128], "n": [512], "k": [256],
                               "input_dtype": ["float8_e4m3fn"],
                               "mat2_dtype": ["float8_e4m3fn"], "out_dtype": ["float16"],
                               "batch_size": [4]}}


# ------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("params", "field", "allowed"), [
    ({"out_dtype": ["float32"]}, "params.out_dtype", "allowed: bfloat16, float16"),
    ({"input_dtype": ["float8_e4m3"]}, "params.input_dtype",
     "allowed: float8_e4m3fn, float8_e5m2"),
    ({"k": [8]}, "params.k", "integers from 16 to 131072"),
])
def test_a_bad_value_is_a_422_naming_the_field_and_the_allowed_values(
        kw_env: Any, params: dict[str, Any], field: str, allowed: str) -> None:
    client = make_client()
    spec = {"name": "g", "kernel": "bmm_fp8", "backends": ["torch"], "targets": ["cpu"],
            "params": {"m": [16], "n": [64], "k": [256], **params}}
    r = client.post("/v1/jobs", json=spec, headers=auth(new_token()))
    assert r.status_code == 422, r.text
    assert field.split(".")[-1] in r.text and allowed in r.text, r.text


def test_tolerance_is_finite_for_every_kernel() -> None:
    for kernel in FAMILY.kernels:
        assert math.isfinite(FAMILY.tolerance(kernel, point(kernel)))
    assert set(BACKEND_ARCHS) == set(FAMILY.kernels)


def test_a_backend_whose_package_is_missing_is_refused_naming_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """cutile's kernels come from cuda-tile, which FlashInfer imports only when the backend
    runs: a node without it reports the point unsupported, naming the package (seen on an
    H100 whose image lacks it), not a ModuleNotFoundError."""
    import importlib.util

    def missing(name: str, *args: object) -> None:
        if name == "cuda.tile":
            raise ModuleNotFoundError("No module named 'cuda'")
        return None

    monkeypatch.setattr(importlib.util, "find_spec", missing)
    with pytest.raises(NotImplementedError, match=r"needs the cuda-tile package \(import "
                                                  r"cuda\.tile\)"):
        gemm_ops.check_backend_module("cutile")
    gemm_ops.check_backend_module("cublaslt")  # no package of its own
