"""The declared kernels: every routine of flashinfer_benchmark.py is in the catalogue, and the
ones kernelwatch does not run (the FP4 norms, the quantisers, MSA, the several-GPU comm
routines) are declared with their parameters, architectures and formulas, and refused with
the reason wherever a point or a testlist line names them."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from kernelwatch.api.main import create_app
from kernelwatch.core.benchmark_cli import UnmappedLine, line_specs, repro_command
from kernelwatch.core.settings import Settings
from kernelwatch.core.spec import SweepSpec
from kernelwatch_harness import catalogue, measure
from kernelwatch_harness.catalogue import FAMILIES, KERNELS, complete_params, family_of
from kernelwatch_harness.family import DeclaredFamily

# flashinfer_benchmark.py's routines at release-v0.6.18
# (benchmarks/routines/flashinfer_benchmark_utils.py, benchmark_apis), category by category.
ROUTINES = {
    "attention": ["BatchDecodeWithPagedKVCacheWrapper", "BatchPrefillWithPagedKVCacheWrapper",
                  "BatchPrefillWithRaggedKVCacheWrapper", "BatchMLAPagedAttentionWrapper"],
    "gemm": ["gemm_fp8_nt_groupwise", "group_gemm_fp8_nt_groupwise", "bmm_fp8", "mm_fp8",
             "bmm_mxfp8", "mm_fp4", "mm_bf16_fp4", "mm_mxfp8", "mm_bf16", "bmm_bf16",
             "tinygemm_bf16"],
    "moe": ["trtllm_fp4_block_scale_moe", "trtllm_fp8_block_scale_moe",
            "trtllm_fp8_per_tensor_scale_moe", "cutlass_fused_moe",
            "cute_dsl_fp4_block_scale_moe", "b12x_fused_moe", "unified_nvfp4_moe", "bgmv_moe"],
    "moe_comm": ["moe_a2a_dispatch_combine"],
    "allreduce_comm": ["allreduce_fusion"],
    "mixed_comm": ["mixed_comm"],
    "norm": ["rmsnorm", "fused_add_rmsnorm", "gemma_rmsnorm", "gemma_fused_add_rmsnorm",
             "rmsnorm_quant", "fused_add_rmsnorm_quant", "layernorm_quant", "rmsnorm_fp4quant",
             "add_rmsnorm_fp4quant", "fused_rmsnorm_silu", "fused_dit_layernorm",
             "fused_qk_rmsnorm_rope"],
    "quantization": ["mxfp8_quantize", "mxfp4_quantize", "nvfp4_quantize",
                     "nvfp4_batched_quantize"],
    "sampling": ["softmax", "sampling_from_probs", "sampling_from_logits",
                 "top_k_sampling_from_probs", "top_p_sampling_from_probs",
                 "top_k_top_p_sampling_from_probs", "top_k_top_p_sampling_from_logits",
                 "min_p_sampling_from_probs", "top_k_renorm_probs", "top_p_renorm_probs",
                 "top_k_mask_logits", "chain_speculative_sampling", "top_k",
                 "top_k_page_table_transform", "top_k_ragged_transform"],
    "topk_varlen": ["top_k_varlen"],
    "rope": ["apply_rope", "apply_rope_pos_ids", "apply_llama31_rope",
             "apply_llama31_rope_pos_ids", "apply_rope_with_cos_sin_cache",
             "mla_rope_quantize_fp8", "rope_quantize_fp8",
             "rope_quantize_fp8_append_paged_kv_cache"],
    "mamba": ["selective_state_update"],
    "gdn": ["gated_delta_rule_decode", "gated_delta_rule_mtp", "chunk_gated_delta_rule"],
    "sparse_attention": ["MSAProxyScore", "MSASparseAttention", "MSASparseDecode",
                         "MSAPipeline"],
}
BLACKWELL = ("sm100", "sm103", "sm120")
# Each newly declared routine: its family, FlashInfer backends and architectures.
DECLARED: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "rmsnorm_fp4quant": ("norm", ("cute-dsl",), BLACKWELL),
    "add_rmsnorm_fp4quant": ("norm", ("cute-dsl",), BLACKWELL),
    "mxfp8_quantize": ("quantization", ("cuda", "cute-dsl"), BLACKWELL),
    "mxfp4_quantize": ("quantization", ("cuda", "cute-dsl"), BLACKWELL),
    "nvfp4_quantize": ("quantization", ("cuda", "cute-dsl"), BLACKWELL),
    "nvfp4_batched_quantize": ("quantization", ("cuda",), BLACKWELL),
    "MSAProxyScore": ("sparse_attention", ("cudsl",), ("sm120",)),
    "MSASparseAttention": ("sparse_attention", ("cudsl",), ("sm120",)),
    "MSASparseDecode": ("sparse_attention", ("cudsl",), ("sm120",)),
    "MSAPipeline": ("sparse_attention", ("cudsl",), ("sm120",)),
    # several GPUs: no architecture singled out (every one kernelwatch names)
    "moe_a2a_dispatch_combine": ("comm", ("mnnvl",), ()),
    "allreduce_fusion": ("comm", ("auto", "trtllm", "mnnvl"), ()),
    "mixed_comm": ("comm", ("auto",), ()),
}
COMM = ("moe_a2a_dispatch_combine", "allreduce_fusion", "mixed_comm")
SEVERAL_GPUS = "needs several GPUs of one node"


def test_the_catalogue_lists_every_routine_of_the_tool() -> None:
    routines = [r for names in ROUTINES.values() for r in names]
    assert len(routines) == len(set(routines)) == 74
    listed = {k.routine for k in KERNELS.values() if k.routine}
    assert listed == set(routines), set(routines) ^ listed


@pytest.mark.parametrize("kernel", list(DECLARED))
def test_each_declared_routine_names_its_family_backends_and_archs(kernel: str) -> None:
    family, backends, archs = DECLARED[kernel]
    spec = KERNELS[kernel]
    assert spec.family == family and spec.routine == kernel and spec.declared
    assert spec.flashinfer_backends == backends and spec.torch_backends == ()
    if family == "comm":  # one GPU is never enough, whatever its architecture
        assert "sm80" in spec.archs and "sm90" in spec.archs and "sm100" in spec.archs
    else:
        assert spec.archs == archs
    assert all(p.doc for p in catalogue.params_of(kernel).values())


@pytest.mark.parametrize(("kernel", "defaults"), [
    ("rmsnorm_fp4quant", {"batch_size": 1, "hidden_size": 4096, "fp4_format": "nvfp4",
                          "dtype": "bfloat16"}),
    ("mxfp8_quantize", {"m": 1024, "k": 4096, "dtype": "bfloat16"}),
    ("mxfp4_quantize", {"m": 1024, "k": 4096, "sf_layout": "128x4", "dtype": "bfloat16"}),
    ("nvfp4_quantize", {"m": 1024, "k": 4096, "sf_layout": "128x4", "sf_vec_size": 16,
                        "dtype": "bfloat16"}),
    ("nvfp4_batched_quantize", {"batch_size": 1, "m": 1024, "k": 4096, "sf_vec_size": 16,
                                "dtype": "bfloat16"}),
    # the tool's MSA defaults: 4096 query and KV tokens, 64 over 4 heads, 16 blocks, causal
    ("MSAProxyScore", {"batch_size": 1, "qo_len": 4096, "kv_len": 4096, "num_qo_heads": 64,
                       "num_kv_heads": 4, "causal": True, "dtype": "bfloat16"}),
    ("MSASparseDecode", {"batch_size": 1, "kv_len": 4096, "num_qo_heads": 64,
                         "num_kv_heads": 4, "topk_blocks": 16, "dtype": "bfloat16",
                         "kv_dtype": None}),
    ("MSAPipeline", {"batch_size": 1, "qo_len": 4096, "kv_len": 4096, "num_qo_heads": 64,
                     "num_kv_heads": 4, "topk_blocks": 16, "causal": True,
                     "dtype": "bfloat16", "kv_dtype": None}),
    ("allreduce_fusion", {"num_tokens": 256, "hidden_size": 4096,
                          "fusion_pattern": "allreduce", "world_size": 8,
                          "dtype": "bfloat16"}),
    ("moe_a2a_dispatch_combine", {"num_tokens": 256, "hidden_size": 4096, "num_experts": 8,
                                  "experts_per_token": 2, "world_size": 8,
                                  "dtype": "bfloat16"}),
    ("mixed_comm", {"num_tokens": 256, "hidden_size": 4096, "comm_op": "allreduce",
                    "world_size": 8, "dtype": "bfloat16"}),
])
def test_parameters_and_defaults(kernel: str, defaults: dict[str, Any]) -> None:
    backend = KERNELS[kernel].flashinfer_backends[0]
    assert complete_params(kernel, {}, backend) == defaults
    assert catalogue.shared_defaults(kernel) == defaults


def work(kernel: str, **params: Any) -> tuple[float, float]:
    point = complete_params(kernel, params, KERNELS[kernel].flashinfer_backends[0])
    catalogue.check_point(kernel, point)
    w = catalogue.work(kernel, point)
    return w["flops"], w["bytes"]


def test_quantiser_bytes_are_the_input_the_output_and_its_scales() -> None:
    n = 128 * 1024
    # bfloat16 in; 1 byte (MXFP8) or half (FP4) an element out; a byte a scale of 32 or 16
    assert work("mxfp8_quantize", m=128, k=1024) == (3 * n, n * 2 + n + n / 32)
    assert work("mxfp4_quantize", m=128, k=1024) == (3 * n, n * 2 + n / 2 + n / 32)
    # NVFP4 reads its float32 global scale too
    assert work("nvfp4_quantize", m=128, k=1024, dtype="float16") == (
        3 * n, n * 2 + 4 + n / 2 + n / 16)
    assert work("nvfp4_batched_quantize", batch_size=2, m=128, k=1024, sf_vec_size=32) == (
        3 * 2 * n, 2 * n * 2 + 4 + n + 2 * n / 32)


def test_fp4_norm_bytes_count_the_packed_output_and_scales() -> None:
    n = 8 * 256
    assert work("rmsnorm_fp4quant", batch_size=8, hidden_size=256) == (
        6 * n, n * 2 + n / 2 + n / 16 + 256 * 2)
    assert work("add_rmsnorm_fp4quant", batch_size=8, hidden_size=256, fp4_format="mxfp4") == (
        7 * n, 3 * n * 2 + n / 2 + n / 32 + 256 * 2)


def test_msa_flops_are_the_tools_and_bytes_the_blocks_read() -> None:
    # the proxy: q [256, 8, 128] and k [1024, 2, 128] read, float32 scores [8, 8, 256] written
    assert work("MSAProxyScore", qo_len=256, kv_len=1024, num_qo_heads=8, num_kv_heads=2) == (
        2 * 256 * 1024 * 8 * 128, 256 * 8 * 128 * 2 + 1024 * 2 * 128 * 2 + 8 * 8 * 256 * 4)
    # decode: one query per request, its 4 of 8 blocks of K and V (the tool's KV bytes), q
    # and the output, the int32 selection
    flops, size = work("MSASparseDecode", batch_size=2, kv_len=1024, num_qo_heads=8,
                       num_kv_heads=2, topk_blocks=4)
    assert flops == 4 * 2 * 8 * 4 * 128 * 128
    assert size == 2 * (2 * 8 * 128 * 2) + 2 * 2 * 4 * 4 + 2 * 2 * 2 * 4 * 128 * 128 * 2
    # prefill: many queries reach every block, each read once (fp8 K/V: a byte)
    point = complete_params("MSASparseAttention", {"qo_len": 4096, "kv_len": 1024,
                                                   "kv_dtype": "float8_e4m3fn"}, "cudsl")
    w = catalogue.work("MSASparseAttention", point)
    assert w["distinct_blocks"] == pytest.approx(8)
    assert w["bytes"] == pytest.approx(2 * 4096 * 64 * 128 * 2 + 4 * 4096 * 8 * 4
                                       + 2 * 4 * 8 * 128 * 128 * 1)
    # the pipeline: the proxy, the scores read back and the selection written, the prefill
    pipe = catalogue.work("MSAPipeline", point)
    proxy = catalogue.work("MSAProxyScore", complete_params("MSAProxyScore", point, "cudsl"))
    assert pipe["flops"] == proxy["flops"] + w["flops"]
    assert pipe["bytes"] == pytest.approx(proxy["bytes"] + 64 * 8 * 4096 * 4
                                          + 4 * 4096 * 8 * 4 + w["bytes"])


def test_comm_bytes_are_one_ranks_link_traffic() -> None:
    elements = 64 * 4096
    message = elements * 2
    assert work("allreduce_fusion", num_tokens=64, world_size=2) == (elements / 2, message)
    assert work("allreduce_fusion", num_tokens=64, world_size=2,
                fusion_pattern="ar_residual_rmsnorm") == (elements * 6.5, message)
    assert work("mixed_comm", num_tokens=64, world_size=4, comm_op="allgather") == (
        0, 3 * message)
    assert work("mixed_comm", num_tokens=64, world_size=4, comm_op="reducescatter_allreduce") == (
        elements * 1.5, message * 2.25)
    assert work("moe_a2a_dispatch_combine", num_tokens=64) == (2 * elements, 2 * 2 * message)


@pytest.mark.parametrize(("kernel", "params", "message"), [
    ("mxfp4_quantize", {"k": 48}, "k=48: mxfp4_quantize quantises blocks of 32"),
    ("nvfp4_quantize", {"k": 48, "sf_vec_size": 32}, "must be a multiple of 32"),
    ("rmsnorm_fp4quant", {"hidden_size": 40}, "nvfp4 quantises blocks of 16"),
    ("MSASparseAttention", {"num_qo_heads": 6, "num_kv_heads": 4}, "a multiple of"),
    ("MSASparseDecode", {"kv_dtype": "float8_e5m2"}, "kv_dtype=float8_e5m2"),
    ("moe_a2a_dispatch_combine", {"experts_per_token": 9}, "at most num_experts"),
])
def test_invalid_points_are_refused_naming_the_parameter(kernel: str, params: dict[str, Any],
                                                         message: str) -> None:
    point = complete_params(kernel, params, KERNELS[kernel].flashinfer_backends[0])
    with pytest.raises(ValueError, match=re.escape(message)):
        catalogue.check_point(kernel, point)


# ------------------------------------------------------------------------- the refusals


def _on_gpu(monkeypatch: pytest.MonkeyPatch, major: int, minor: int) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: (major, minor))


def _prepare(kernel: str, backend: str | None = None) -> Any:
    backend = backend or KERNELS[kernel].flashinfer_backends[0]
    point = complete_params(kernel, {}, backend)
    inp = family_of(kernel).inputs(kernel, point, backend, "cuda")
    return measure._prepare(backend, inp, "cuda")


@pytest.mark.parametrize("kernel", [k for k in DECLARED if k not in COMM])
@pytest.mark.parametrize("arch", [(8, 0), (9, 0)])
def test_off_its_archs_a_declared_kernel_is_refused_naming_them(
        kernel: str, arch: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    _on_gpu(monkeypatch, *arch)
    archs = ", ".join(DECLARED[kernel][2])
    with pytest.raises(measure.Unsupported, match=f"FlashInfer runs {kernel} on {archs}; "
                                                   f"this GPU is sm{arch[0]}{arch[1]}"):
        _prepare(kernel)


@pytest.mark.parametrize("kernel", [k for k in DECLARED if k not in COMM])
def test_on_its_archs_kernelwatch_says_it_does_not_run_it_yet(
        kernel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    arch = (12, 0) if DECLARED[kernel][2] == ("sm120",) else (10, 0)
    _on_gpu(monkeypatch, *arch)
    for backend in KERNELS[kernel].flashinfer_backends:
        with pytest.raises(NotImplementedError, match=f"kernelwatch does not run {kernel}'s "
                                                      "FlashInfer call yet"):
            _prepare(kernel, backend)
    assert measure.classify(NotImplementedError("x")) == "unsupported"


@pytest.mark.parametrize("kernel", COMM)
@pytest.mark.parametrize("arch", [(8, 0), (9, 0), (10, 0)])
def test_a_comm_routine_is_refused_on_any_one_gpu(kernel: str, arch: tuple[int, int],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _on_gpu(monkeypatch, *arch)
    with pytest.raises(NotImplementedError, match=f"{kernel} {SEVERAL_GPUS}.*kernelwatch "
                                                  "measures one GPU per point"):
        _prepare(kernel)


def test_a_backend_the_kernel_lacks_is_refused() -> None:
    family = family_of("MSAPipeline")
    inp = family.inputs("MSAPipeline", {}, "cudsl", "cuda")
    with pytest.raises(NotImplementedError, match="'cuda' is not offered for MSAPipeline"):
        family.prepare("cuda", inp, "cuda")
    norm = family_of("rmsnorm_fp4quant")
    inp = norm.inputs("rmsnorm_fp4quant", {}, "cute-dsl", "cuda")
    with pytest.raises(NotImplementedError, match="'auto' is not offered for rmsnorm_fp4"):
        norm.prepare("auto", inp, "cuda")


@pytest.mark.parametrize("kernel", list(DECLARED))
def test_a_declared_point_has_no_command_and_says_why(kernel: str) -> None:
    backend = KERNELS[kernel].flashinfer_backends[0]
    repro = repro_command(kernel, complete_params(kernel, {}, backend), backend)
    assert repro.command is None
    reason = str(repro.reason)
    assert (SEVERAL_GPUS in reason) if kernel in COMM else ("does not run" in reason)


@pytest.mark.parametrize(("line", "message"), [
    ("--routine rmsnorm_fp4quant --batch_size 8 --hidden_size 4096 --out_dtype mxfp4",
     "--routine rmsnorm_fp4quant: kernelwatch does not run rmsnorm_fp4quant's FlashInfer "
     "call yet (its FP4 block-scaled output; FlashInfer runs it on sm100, sm103, sm120)"),
    ("--routine add_rmsnorm_fp4quant --batch_size 8 --hidden_size 4096 --use_global_scale "
     "--is_sf_swizzled_layout", "--routine add_rmsnorm_fp4quant: kernelwatch does not run"),
    ("--routine rmsnorm --batch_size 8 --hidden_size 4096 --output_both_sf_layouts",
     "--output_both_sf_layouts: only the FP4 norm routines"),
    ("--routine nvfp4_quantize --m 1024 --k 4096 --sf_layout 8x4 --global_scale 2",
     "--routine nvfp4_quantize: kernelwatch does not run nvfp4_quantize's FlashInfer call "
     "yet (its block-scaled output; FlashInfer runs it on sm100, sm103, sm120)"),
    ("--routine MSASparseDecode --batch_size 4 --s_kv 8192 --kv_dtype nvfp4",
     "--routine MSASparseDecode: kernelwatch does not run MSASparseDecode's FlashInfer call "
     "yet (its CuTe-DSL MSA call; FlashInfer runs it on sm120)"),
    ("--routine allreduce_fusion --num_tokens 64 --pattern ar_residual_rmsnorm",
     f"--routine allreduce_fusion: allreduce_fusion {SEVERAL_GPUS}"),
    ("--routine mixed_comm --local_bs_list 1 4 --hidden_size 4096 --dtype bfloat16 "
     "--local_tp_size 4 --local_dp_size 2", f"--routine mixed_comm: mixed_comm {SEVERAL_GPUS}"),
])
def test_a_testlist_line_naming_one_is_refused_with_the_reason(line: str, message: str) -> None:
    with pytest.raises(UnmappedLine, match=re.escape(message)):
        line_specs(line, 3)


def test_declared_only_families_run_nothing() -> None:
    for name in ("quantization", "sparse_attention", "comm"):
        family = FAMILIES[name]
        assert isinstance(family, DeclaredFamily) and family.ops == ""
        assert all(k.declared for k in family.kernels.values())


@pytest.mark.parametrize(("kernel", "backend", "target"), [
    ("nvfp4_quantize", "cuda", "h100"), ("MSAPipeline", "cudsl", "b200"),
    ("allreduce_fusion", "trtllm", "h100"), ("rmsnorm_fp4quant", "cute-dsl", "h100"),
    ("b12x_fused_moe", "b12x", "h100")])
def test_a_sweep_naming_one_on_a_gpu_is_accepted_as_a_declared_moe_one_is(
        kernel: str, backend: str, target: str) -> None:
    """The spec is valid (the GPU's harness refuses each point with the reason, as it does
    the declared MoE and GEMM kernels); a FlashInfer backend needs its versions."""
    spec = {"name": "x", "kernel": kernel, "backends": [backend], "targets": [target]}
    with pytest.raises(ValueError, match="flashinfer_versions: required"):
        SweepSpec.model_validate(spec)
    sweep = SweepSpec.model_validate({**spec, "flashinfer_versions": ["0.6.18.post1"]})
    assert sweep.grid(backend) == [complete_params(kernel, {}, backend)]
    with pytest.raises(ValueError, match="backends"):
        SweepSpec.model_validate({**spec, "backends": ["torch"],
                                  "flashinfer_versions": ["0.6.18.post1"]})


def test_the_api_lists_them_with_their_archs(kw_env: Settings) -> None:
    body = TestClient(create_app()).get("/v1/catalogue").json()
    kernels = {k["name"]: k for k in body["kernels"]}
    for name, (family, backends, archs) in DECLARED.items():
        k = kernels[name]
        assert k["family"] == family and k["routine"] == name
        assert k["flashinfer_backends"] == list(backends) and k["torch_backends"] == []
        if family != "comm":
            assert k["archs"] == list(archs)
    assert kernels["MSAPipeline"]["archs"] == ["sm120"]
    topk = next(p for p in kernels["MSASparseDecode"]["params"] if p["name"] == "topk_blocks")
    assert topk["default"] == 16 and topk["kind"] == "int"
    # declared ones say so (the MoE and GEMM ones kernelwatch only lists, too); measured not
    assert all(kernels[name]["declared"] for name in DECLARED)
    assert kernels["b12x_fused_moe"]["declared"] and kernels["mm_fp4"]["declared"]
    assert not kernels["rmsnorm"]["declared"] and not kernels["cutlass_fused_moe"]["declared"]


def test_the_cli_says_a_kernel_is_only_declared() -> None:
    from click.testing import CliRunner

    from kernelwatch.cli.main import cli

    out = CliRunner().invoke(cli, ["catalogue", "mxfp8_quantize"])
    assert out.exit_code == 0, out.output
    assert "declared only: kernelwatch does not run its FlashInfer call" in out.output
    assert "declared only" not in CliRunner().invoke(cli, ["catalogue", "rmsnorm"]).output
