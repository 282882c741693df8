"""The options that change which kernel FlashInfer runs or how it splits the work: the
wrapper's CUDA-graph plan mode (with its index buffers) and the split-KV controls, mapped to
each supported version's real signatures (the committed snapshot), and refused by name where a
version's function lacks them."""

from __future__ import annotations

import re
from typing import Any

import pytest

from kernelwatch_harness.catalogue import KERNELS, LEGACY_VALUES, PARAMS, complete_params
from kernelwatch_harness.families.attention import flashinfer_backends as fb
from tests.test_adapters import VERSIONS, accepts, inputs

CLASSES = {"batch_decode": "BatchDecodeWithPagedKVCacheWrapper",
           "batch_prefill": "BatchPrefillWithPagedKVCacheWrapper",
           "batch_prefill_ragged": "BatchPrefillWithRaggedKVCacheWrapper",
           "mla_decode": "BatchMLAPagedAttentionWrapper"}
SHAPES: dict[str, dict[str, Any]] = {
    "batch_decode": {"batch_size": 3, "kv_len": 50},
    "batch_prefill": {"batch_size": 2, "qo_len": 7, "kv_len": 40},
    "batch_prefill_ragged": {"batch_size": 2, "qo_len": 7, "kv_len": 40},
    "mla_decode": {"batch_size": 2, "kv_len": 30, "num_qo_heads": 4},
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("kernel", list(CLASSES))
def test_the_cuda_graph_plan_mode_passes_its_buffers(version: str, kernel: str) -> None:
    inp = inputs(kernel, **SHAPES[kernel], use_cuda_graph=True)
    kw = fb.init_kwargs(inp, "fa2")
    assert kw["use_cuda_graph"] is True
    # Every preallocated buffer is the tensor the plan receives, under the wrapper's name.
    for name, meta in fb.CUDA_GRAPH_BUFFERS[kernel].items():
        assert kw[name] is inp.meta[meta]
    accepts(version, f"{CLASSES[kernel]}.__init__", kw)
    plain = fb.init_kwargs(inputs(kernel, **SHAPES[kernel], use_cuda_graph=False), "fa2")
    assert plain["use_cuda_graph"] is False
    assert not set(fb.CUDA_GRAPH_BUFFERS[kernel]) & set(plain)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("kernel", ["batch_decode", "batch_prefill", "batch_prefill_ragged"])
def test_the_split_kv_controls_reach_plan_only_when_set(version: str, kernel: str) -> None:
    plan_of = {"batch_decode": fb.decode_plan_kwargs, "batch_prefill": fb.prefill_plan_kwargs,
               "batch_prefill_ragged": fb.ragged_plan_kwargs}[kernel]
    default = plan_of(inputs(kernel, **SHAPES[kernel]), 0.1)
    assert "fixed_split_size" not in default and "disable_split_kv" not in default
    kw = plan_of(inputs(kernel, **SHAPES[kernel], fixed_split_size=128, disable_split_kv=True),
                 0.1)
    assert kw["fixed_split_size"] == 128 and kw["disable_split_kv"] is True
    accepts(version, f"{CLASSES[kernel]}.plan", kw)


def test_the_new_parameters_default_to_what_stored_points_measured_but_the_plan_mode() -> None:
    """Defaults: the plan mode follows flashinfer_benchmark.py (true); the split controls
    leave the split to FlashInfer, as every point before them did."""
    assert PARAMS["use_cuda_graph"].default is True and LEGACY_VALUES["use_cuda_graph"] is False
    for name in ("fixed_split_size", "disable_split_kv"):
        assert PARAMS[name].default == LEGACY_VALUES[name]
    for kernel in CLASSES:
        assert "use_cuda_graph" in KERNELS[kernel].params
    assert "fixed_split_size" not in complete_params("mla_decode", {}, "fa2")


def test_an_option_a_version_lacks_is_refused_by_name() -> None:
    def plan(indptr: int, indices: int, page_size: int = 16) -> None:  # an older signature
        pass

    with pytest.raises(NotImplementedError, match=re.escape(
            "FlashInfer 0.4.0's BatchDecode.plan() has no fixed_split_size")):
        fb.check_accepts(plan, {"fixed_split_size": 64}, "BatchDecode.plan()", "0.4.0")
    fb.check_accepts(plan, {"page_size": 8}, "BatchDecode.plan()", "0.4.0")  # it has that

    def forwarding(*args: Any, **kwargs: Any) -> None:  # 0.6+ decode plan(**kwargs)
        pass

    fb.check_accepts(forwarding, {"fixed_split_size": 64}, "plan()", "0.6.18.post1")
