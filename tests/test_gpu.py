"""The harness on a real GPU with FlashInfer (run on the GPU machine; CI has no CUDA device and
skips this module, and only then). FlashInfer must be importable in this interpreter there.

    python -m pytest --noconftest -p no:cacheprovider tests/test_gpu.py -v
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

from kernelwatch.worker.runner import HarnessRequest, HarnessRunner  # noqa: E402
from kernelwatch_harness.catalogue import KERNELS, complete_params  # noqa: E402
from kernelwatch_harness.families.sampling_ops import RANDOM as SAMPLERS  # noqa: E402
from kernelwatch_harness.timing import cupti_module  # noqa: E402

pytestmark = pytest.mark.gpu

SMALL: dict[str, Any] = {"batch_size": 4, "kv_len": 1000, "qo_len": 64, "num_qo_heads": 32,
                         "num_kv_heads": 8, "head_dim": 128, "page_size": 16,
                         "kv_len_distribution": "uniform", "causal": True}
TIMING = {"warmup": 3, "iterations": 30, "repeats": 1, "cold_l2": True,
          "check_correctness": True}


def harness(kernel: str, backends: list[str], points: list[dict[str, Any]],
            timing: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    req = HarnessRequest(kernel, "cuda", backends, timing or TIMING,
                         [(i, {b: complete_params(kernel, p, b) for b in backends})
                          for i, p in enumerate(points)])
    msgs = list(HarnessRunner(sys.executable, req).messages())
    env = next(m for m in msgs if m["type"] == "env")
    return env, [m for m in msgs if m["type"] == "point"]


@pytest.mark.parametrize("method", ["auto", "cuda_graph"])
def test_batch_decode_gpu_timing_with_verified_cold_l2(method: str) -> None:
    timing = {**TIMING, "method": method}
    backends = ["fa2", "auto", "torch-sdpa", "torch-math"]
    env, points = harness("batch_decode", backends, [SMALL], timing)
    e = env["environment"]
    assert e["gpu_name"] and e["sm_count"] > 0 and e["l2_cache_bytes"] > 0 and e["flashinfer"]
    expected = env["timing_method"]
    # "auto" is CUPTI wherever cupti-python >= 13 is installed, graph replay elsewhere.
    cupti = method == "auto" and cupti_module() is not None
    assert expected == ("cupti" if cupti else "cuda_graph")
    by = {p["backend"]: p for p in points}
    assert set(by) == set(backends)
    for backend, p in by.items():
        assert p["status"] == "ok", (backend, p["error"])
        assert p["timing_method"] == expected, p["telemetry"]
        assert len(p["samples_us"]) == 30 and min(p["samples_us"]) > 0
        assert p["jit_seconds"] is not None and p["peak_memory_bytes"] > 0
        rot = p["telemetry"]["rotation"]
        assert rot["verified"] and rot["distinct_copies"] == rot["copies"]
        assert rot["rotation_bytes"] >= 5 * e["l2_cache_bytes"] or rot["capped_by_memory"]
        assert p["telemetry"]["nvml_before"] is not None
    assert by["fa2"]["resolved_backend"] == "fa2"
    assert by["fa2"]["plan_seconds"] is not None and by["torch-sdpa"]["plan_seconds"] is None
    assert by["auto"]["resolved_backend"] not in (None, "auto")


def test_repeats_rebuild_inputs_and_pool_samples_on_the_gpu() -> None:
    timing = {**TIMING, "repeats": 3}
    points = [SMALL, {**SMALL, "batch_size": 8}]
    _, msgs = harness("batch_decode", ["fa2", "torch-sdpa"], points, timing)
    assert len(msgs) == 4
    for p in msgs:
        assert p["status"] == "ok", p["error"]
        assert p["repeat_sizes"] == [10, 10, 10] and len(p["samples_us"]) == 30
        reps = p["telemetry"]["repeats"]
        assert len(reps) == 3 and all(r["rotation_verified"] for r in reps)
        assert all(r["nvml_before"] and r["nvml_after"] for r in reps)
        # the repeats of one point measure the same kernel: within 20% of each other
        meds = [r["median_us"] for r in reps]
        assert max(meds) < 1.2 * min(meds)


def test_heavy_calls_warm_up_for_warmup_ms_of_gpu_time_light_ones_by_count() -> None:
    timing = {**TIMING, "warmup": 5, "warmup_ms": 150.0}
    heavy = {**SMALL, "batch_size": 64, "kv_len": 8192, "kv_len_distribution": "constant"}
    light = {**SMALL, "batch_size": 1, "kv_len": 512, "kv_len_distribution": "constant"}
    _, msgs = harness("batch_decode", ["fa2"], [heavy, light], timing)
    by = {m["point_index"]: m for m in msgs}
    assert by[0]["status"] == by[1]["status"] == "ok"
    heavy_warm, light_warm = by[0]["telemetry"]["warmup"], by[1]["telemetry"]["warmup"]
    assert heavy_warm["replays"] > 5 and heavy_warm["gpu_ms"] >= 140, heavy_warm
    assert light_warm["replays"] == 5, light_warm


def test_samples_are_kept_only_at_the_boost_clock_the_probe_reads() -> None:
    # A heavy causal prefill (5.7 ms a call on the H200) draws enough power for the limiter
    # to act within a burst; a light decode does not.
    heavy = {**SMALL, "batch_size": 8, "qo_len": 2048, "kv_len": 8192,
             "kv_len_distribution": "constant"}
    _, msgs = harness("batch_prefill", ["fa2"], [heavy], {**TIMING, "repeats": 3})
    _, light = harness("batch_decode", ["fa2"], [SMALL], {**TIMING, "repeats": 3})
    for m in (*msgs, *light):
        assert m["status"] == "ok", m["error"]
        for r in m["telemetry"]["repeats"]:
            c = r["clock"]
            assert 500 < c["boost_mhz"] < 4000 and len(c["samples_mhz"]) == 10, c
            assert c["floor_mhz"] == pytest.approx(0.985 * c["boost_mhz"], rel=1e-3)
            if c["floor_met"]:
                assert min(c["samples_mhz"]) >= c["floor_mhz"], c
            else:
                assert m["throttled"]
        print(m["point_index"], [(r["clock"]["bursts"], r["clock"]["discarded"],
                                  r["clock"]["median_mhz"]) for r in m["telemetry"]["repeats"]])
    # With the floor off every sample of one burst is kept, whatever the clock.
    _, off = harness("batch_prefill", ["fa2"], [heavy], {**TIMING, "clock_floor": 0.0})
    assert off[0]["telemetry"]["clock"]["bursts"] == 1
    assert off[0]["telemetry"]["clock"]["floor_mhz"] is None


def test_cold_l2_is_slower_than_warm_for_an_l2_resident_point() -> None:
    # 4 x 1024 tokens x 8 heads x 128 x 2 (K, V) x 2 bytes = 16 MiB: fits in an H100/H200 L2.
    point = {**SMALL, "kv_len": 1024, "kv_len_distribution": "constant"}
    _, cold = harness("batch_decode", ["fa2"], [point])
    _, warm = harness("batch_decode", ["fa2"], [point], {**TIMING, "cold_l2": False})
    assert warm[0]["telemetry"]["rotation"]["copies"] == 1
    assert cold[0]["telemetry"]["rotation"]["copies"] > 1
    cold_med = sorted(cold[0]["samples_us"])[15]
    warm_med = sorted(warm[0]["samples_us"])[15]
    assert cold_med > warm_med, (cold_med, warm_med)


@pytest.mark.skipif(cupti_module() is None, reason="cupti-python >= 13 is not installed")
def test_cupti_cold_l2_methods_are_recorded_and_the_dirty_flush_costs_the_call() -> None:
    """CUPTI timing with each cold-L2 method (timing.cold_l2_method): rotation, FlashInfer's
    written flush, the read one. On an L2-sized point the written flush leaves dirty lines the
    call writes back (docs/measurement.md, "Other timing methods"), the read one none."""
    point = {**SMALL, "kv_len": 2048, "kv_len_distribution": "constant"}  # 32 MiB of KV
    med = {}
    for how in ("rotate", "flush", "flush_clean"):
        _, (p,) = harness("batch_decode", ["fa2"], [point],
                          {**TIMING, "method": "cupti", "cold_l2_method": how})
        assert p["status"] == "ok" and p["timing_method"] == "cupti", p["telemetry"]
        cold = p["telemetry"].get("cold_l2") or {}
        if how == "rotate":
            assert p["telemetry"]["rotation"]["verified"]
        else:
            assert cold["method"] == how and cold["flush_writes"] == (how == "flush")
        med[how] = sorted(p["samples_us"])[15]
    assert med["flush"] > med["flush_clean"], med


# A small point of each family's kernels (the attention ones take what they name of SMALL).
FAMILY_POINTS: dict[str, dict[str, Any]] = {
    "attention": SMALL,
    # the quantising norms with a scale other than 1 (a kernel multiplying by it shows); the
    # DiT LayerNorm over its one hidden dimension (3072), 4096 rows; the fused QK norm at
    # WAN 2.2 5B's 24 heads of 128 (its defaults) over 5 x 12 x 32 patches
    "norm": {"batch_size": 512, "hidden_size": 4096, "quant_scale": 0.5},
    "gemm": {"batch_size": 2, "group_size": 2, "m": 128, "n": 1024, "k": 1024},
    # the FP8 kernels with a non-rotated part of whole rope_dim chunks: every release runs it
    "rope": {"batch_size": 4, "seq_len": 1024, "num_qo_heads": 32, "num_kv_heads": 8,
             "no_rope_dim": 128},
    "sampling": {"batch_size": 64, "vocab_size": 128256, "max_len": 8192},
    "moe": {"num_tokens": 128, "hidden_size": 4096, "intermediate_size": 2048,
            "num_experts": 8, "experts_per_token": 2, "rank": 32, "num_loras": 4,
            "num_slices": 2},
    # MTP's and the prefill's tokens per request (4-token sequences are legal varlen)
    "gdn": {"batch_size": 8, "seq_len": 4},
    "mamba": {"batch_size": 16},
    # declared only: refused with the reason (their defaults would do; small shapes anyway)
    "quantization": {"batch_size": 2, "m": 128, "k": 1024},
    "sparse_attention": {"batch_size": 1, "qo_len": 256, "kv_len": 1024},
    "comm": {"num_tokens": 64, "world_size": 2},
}

# Kernels whose shape the family's point does not fit (their parameters replace its values).
KERNEL_POINTS: dict[str, dict[str, Any]] = {
    "fused_dit_layernorm": {"batch_size": 1, "seq_len": 4096, "hidden_size": 3072},
    "fused_qk_rmsnorm_rope": {"batch_size": 1, "hidden_size": 3072},
}


def refused_here(kernel: str, backend: str) -> str | None:
    """Why this GPU (or FlashInfer release) cannot run a FlashInfer backend of the kernel, as
    the harness words it, or None: Blackwell-only GEMMs on Hopper, a GEMM backend outside
    its own architectures or newer than the installed release, a kernel newer than it,
    top_k_varlen's Blackwell backends (radix, gvr) elsewhere, GDN's CuTe DSL kernels on a
    node without nvidia-cutlass-dsl, a kernel kernelwatch only declares (the several-GPU comm
    routines on any GPU)."""
    from kernelwatch_harness.families import gemm, gemm_ops, sampling

    spec = KERNELS[kernel]
    if backend not in spec.flashinfer_backends:
        return None
    major, minor = torch.cuda.get_device_capability()
    arch = f"sm{major}{minor}"
    if arch not in spec.archs:
        return f"this GPU is {arch}"
    if spec.since is not None:
        from importlib.metadata import version

        from packaging.version import Version

        if Version(version("flashinfer-python")) < Version(spec.since):
            return "has no"  # the adapter's refusal names the release and the function
    if kernel == sampling.VARLEN and arch not in sampling.VARLEN_ARCHS[backend]:
        return f"this GPU is {arch}"
    if spec.family == "gdn":  # CuTe DSL kernels: refused naming nvidia-cutlass-dsl without it
        from kernelwatch_harness.families import gdn_ops
        from kernelwatch_harness.family import module_installed

        if (gdn_ops.needs_cute_dsl(kernel)
                and not module_installed(gdn_ops.CUTE_DSL_MODULE)):
            return "which this node lacks"
    if spec.family == "comm":  # declared: one GPU per point, wherever it is
        return "GPUs of one node"
    if spec.declared and spec.family != "gemm":  # on Blackwell: declared, not run yet
        return "does not run"
    if spec.family != "gemm":
        return None
    if arch not in gemm.BACKEND_ARCHS[kernel][backend]:
        return f"this GPU is {arch}"
    if kernel not in gemm.MEASURED:
        return "does not run"
    import flashinfer

    try:
        gemm_ops.check_release(kernel, backend, flashinfer.__version__)
    except NotImplementedError:
        return "added in"
    try:
        gemm_ops.check_backend_module(backend)  # cutile without cuda-tile on the node
    except NotImplementedError:
        return "which this node lacks"
    return None


# Kernels declared without a backend (the catalogue lists them; nothing measures them yet).
@pytest.mark.parametrize("kernel", [k for k, spec in KERNELS.items() if spec.backends])
def test_every_kernel_runs_and_is_checked(kernel: str) -> None:
    spec = KERNELS[kernel]
    params = {k: v for k, v in FAMILY_POINTS[spec.family].items() if k in spec.params}
    params.update(KERNEL_POINTS.get(kernel, {}))
    if kernel == "mla_decode":
        params = {"batch_size": 4, "kv_len": 1000, "num_qo_heads": 16, "page_size": 64}
    backends = (["fa2", "torch-sdpa"] if spec.family == "attention"
                else [*spec.flashinfer_backends, *spec.torch_backends])
    _, points = harness(kernel, backends, [params])
    assert {p["backend"] for p in points} == set(backends)
    for p in points:
        # fa2 exists for every attention kernel on sm80+, every other family's FlashInfer
        # backend on Ampere and Hopper unless the family says where it runs (the GEMMs);
        # the outputs must match the float32 reference.
        why = refused_here(kernel, p["backend"])
        if why is not None:
            assert p["status"] == "unsupported" and why in p["error"], (p["backend"], p)
            continue
        assert p["status"] == "ok", (p["backend"], p["error"])
        assert p["max_abs_error"] is not None and p["max_abs_error"] <= p["telemetry"]["tolerance"]
        if kernel in SAMPLERS:  # its own generator is registered with the graph: replayed
            assert p["timing_method"] == "cuda_graph", p["telemetry"].get("cuda_graph_error")


def test_a_built_bgmv_moe_module_is_found_by_the_next_process() -> None:
    """0.6's bgmv_moe generator copied its sources with fresh times, so every process rebuilt
    the module (354 s each on an H100); the harness gives the copies their sources' times: a
    second harness process finds the first one's module built."""
    import flashinfer

    from kernelwatch_harness.families.moe import BGMV_SINCE
    from kernelwatch_harness.family import release

    if release(flashinfer.__version__) < release(BGMV_SINCE):
        pytest.skip(f"FlashInfer {flashinfer.__version__} has no bgmv_moe")
    params = {k: v for k, v in FAMILY_POINTS["moe"].items() if k in KERNELS["bgmv_moe"].params}
    for _ in range(2):  # the first process builds if nothing has yet
        _, points = harness("bgmv_moe", ["cuda"], [params])
        assert points[0]["status"] == "ok", points[0]["error"]
    assert points[0]["jit_seconds"] < 30, points[0]


NORM_VARIANTS = [
    ("fused_dit_layernorm", {"batch_size": 2, "seq_len": 1024, "dit_mode": mode})
    for mode in ("gate_residual_gamma_beta", "gate_residual_scale_shift", "residual_scale_shift")
] + [
    ("rmsnorm_quant", {"batch_size": 64, "hidden_size": 8192, "quant_dtype": "float8_e5m2",
                       "dtype": "float16", "quant_scale": 4.0}),
    ("fused_add_rmsnorm_quant", {"batch_size": 32, "hidden_size": 4096, "dtype": "float16"}),
    ("layernorm_quant", {"batch_size": 32, "hidden_size": 768, "quant_dtype": "float8_e5m2"}),
    ("fused_rmsnorm_silu", {"batch_size": 1560, "hidden_size": 160}),
    ("fused_qk_rmsnorm_rope", {"batch_size": 2, "hidden_size": 1536, "num_heads": 24,
                               "ppf": 5, "pph": 6, "ppw": 4}),  # head_dim 64
    ("fused_qk_rmsnorm_rope", {"batch_size": 1, "hidden_size": 2048, "num_heads": 8,
                               "ppf": 1, "pph": 12, "ppw": 32}),  # head_dim 256
]


@pytest.mark.parametrize(("kernel", "params"), NORM_VARIANTS)
def test_the_norm_variants_match_the_reference(kernel: str, params: dict[str, Any]) -> None:
    """Each DiT mode, the FP8 formats and scales of the quantising norms, the fused QK norm at
    head dims 64 and 256: FlashInfer's result against the float32 reference (or the release's
    refusal), and the torch backend's."""
    _, points = harness(kernel, ["auto", "torch"], [params])
    for p in points:
        why = refused_here(kernel, p["backend"])
        if why is not None:
            assert p["status"] == "unsupported" and why in p["error"], (p["backend"], p)
            continue
        assert p["status"] == "ok", (p["backend"], p["error"])
        assert p["max_abs_error"] <= p["telemetry"]["tolerance"], p


@pytest.mark.parametrize("mode", ["ROPE_LLAMA", "ALIBI"])
@pytest.mark.parametrize("kernel", [k for k, spec in KERNELS.items()
                                    if "pos_encoding_mode" in spec.params])
def test_positional_encoding_matches_the_reference_or_is_refused(kernel: str, mode: str) -> None:
    """FlashInfer's fa2 kernels (CUDA-core and tensor-core decode alike), auto (which
    FlashInfer resolves off fa3 for a mode) and both torch backends apply RoPE and ALiBi as
    the float32 reference does; fa3, whose templates never read the mode, refuses it."""
    params = {k: v for k, v in {**SMALL, "pos_encoding_mode": mode}.items()
              if k in KERNELS[kernel].params}
    points_in = [params]
    if "use_tensor_cores" in KERNELS[kernel].params:
        points_in.append({**params, "use_tensor_cores": True})
    backends = ["fa2", "auto", "torch-sdpa", "torch-math"]
    if "fa3" in KERNELS[kernel].flashinfer_backends:
        backends.append("fa3")
    _, points = harness(kernel, backends, points_in)
    assert len(points) == len(points_in) * len(backends)
    for p in points:
        if p["backend"] == "fa3":
            assert p["status"] == "unsupported" and "fa2 kernels only" in p["error"]
            continue
        assert p["status"] == "ok", (p["backend"], p["point_index"], p["error"])
        assert p["max_abs_error"] <= p["telemetry"]["tolerance"], p["backend"]
        assert p["resolved_backend"] != "fa3"


@pytest.mark.parametrize("kernel, layout", [("batch_prefill", "NHD"),
                                            ("batch_prefill_ragged", "NHD"),
                                            ("batch_decode", "NHD"), ("batch_decode", "HND")])
def test_cudnn_is_measured_correct_or_refused_with_a_reason(kernel: str, layout: str) -> None:
    """cuDNN's prefill and decode, called as flashinfer_benchmark.py calls them (through the
    wrappers prefill errored on the H200 with 0.6.18.post1 and 0.5.3; their decode wrapper
    has no cuDNN path): correct against the float32 reference, or, on a node without the
    cuDNN frontend off Blackwell, refused as unsupported with the reason; never an error of
    the adapter's making. Variable lengths (SMALL's uniform distribution) pad the block table."""
    params = {k: v for k, v in {**SMALL, "kv_layout": layout}.items()
              if k in KERNELS[kernel].params}
    _, points = harness(kernel, ["cudnn"], [params])
    (p,) = points
    assert p["status"] in ("ok", "unsupported"), p["error"]
    if p["status"] == "ok":
        assert p["resolved_backend"] == "cudnn"
        assert p["max_abs_error"] <= p["telemetry"]["tolerance"]
    else:
        from kernelwatch_harness.families.attention.flashinfer_backends import (
            cudnn_frontend_installed,
        )

        assert not cudnn_frontend_installed() and "nvidia-cudnn-frontend" in p["error"]


def test_fp8_kv_decode_and_refusals_do_not_stop_the_harness() -> None:
    fp8 = {**SMALL, "kv_dtype": "float8_e4m3fn"}
    backends = ["fa2", "no-such-backend", "fa3", "torch-sdpa"]
    # point 1 explicitly without tensor cores (fa3's default has them), for every backend
    _, points = harness("batch_decode", backends, [fp8, {**SMALL, "use_tensor_cores": False}])
    by = {(p["point_index"], p["backend"]): p for p in points}
    assert len(by) == 8  # every pair reported: none ended the harness
    assert by[(0, "fa2")]["status"] == "ok", by[(0, "fa2")]["error"]
    assert by[(0, "torch-sdpa")]["status"] == "unsupported"
    # FlashInfer's decode wrapper silently ignores unknown backends and, without tensor
    # cores, fa3: the harness refuses both rather than time the fa2 kernel under their name.
    assert by[(1, "no-such-backend")]["status"] == "unsupported"
    assert "use_tensor_cores" in by[(1, "fa3")]["error"]
    assert by[(1, "fa2")]["status"] == "ok"


def _benchmarks_dir() -> str | None:
    """The installed version's flashinfer_benchmark.py, from the wheelhouse the GPU check
    uses (KERNELWATCH_WHEELHOUSE, default .whl/): the cross-check's script."""
    import os
    from pathlib import Path

    import flashinfer

    from kernelwatch.worker.benchmark_scripts import NoBenchmarkScript, script_dir

    wheelhouse = os.environ.get("KERNELWATCH_WHEELHOUSE", ".whl")
    try:
        return str(script_dir(flashinfer.__version__, Path("/tmp/kw-benchmarks"), wheelhouse))
    except NoBenchmarkScript:
        return None


def test_the_crosscheck_runs_flashinfers_own_benchmark_beside_each_point() -> None:
    """The harness runs the version's flashinfer_benchmark.py right after each unit, on the
    same GPU, and reports its median, timer, plan mode and clock."""
    from kernelwatch.core.benchmark_cli import repro_command

    where = _benchmarks_dir()
    if where is None:
        pytest.skip("no flashinfer-benchmarks-<version>.tar.gz in the wheelhouse")
    point = complete_params("batch_decode", {**SMALL, "kv_len_distribution": "constant"}, "fa2")
    repro = repro_command("batch_decode", point, "fa2")
    assert repro.args is not None, repro.reason
    req = HarnessRequest("batch_decode", "cuda", ["fa2"], TIMING, [(0, {"fa2": point})],
                         crosscheck={"script_dir": where, "lines": [
                             {"point_index": 0, "backend": "fa2", "args": repro.args,
                              "reason": None}]})
    msgs = list(HarnessRunner(sys.executable, req).messages())
    (p,) = [m for m in msgs if m["type"] == "point"]
    (c,) = [m for m in msgs if m["type"] == "crosscheck"]
    assert p["status"] == "ok", p["error"]
    assert c["status"] == "ok", c.get("error")
    assert c["median_us"] > 0 and c["std_us"] is not None and c["wall_s"] > 0
    assert c["method"] in ("cupti", "cuda_graph") and c["cuda_graph_plan"] is True
    assert c["command"].startswith("python flashinfer_benchmark.py --routine "
                                   "BatchDecodeWithPagedKVCacheWrapper")
    assert c["clock_mhz"] is None or c["clock_mhz"] > 500
    assert c["row"]["backend"] == "fa2"
    # whether the tool's L2 was cold is read from its timer call, with the reason
    assert isinstance(c["cold_l2"], bool) and c["l2_detail"].startswith("the tool")
