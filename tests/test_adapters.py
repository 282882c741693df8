"""The FlashInfer adapters' argument mapping against each supported version's real signatures.

The signatures come from the released wheels (tests/signatures.py reads them with ``ast``,
no GPU or import needed) and are kept in tests/fixtures/gpu/flashinfer_signatures.json. When
the wheels are at hand (``KERNELWATCH_FLASHINFER_WHEELS``: a folder of flashinfer_python-*.whl)
the snapshot itself is checked against them.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Any

import pytest

from kernelwatch.core.spec import SweepSpec
from kernelwatch.worker.runner import HarnessRequest
from kernelwatch_harness.__main__ import request_units
from kernelwatch_harness.catalogue import complete_params
from kernelwatch_harness.families.attention import flashinfer_backends as fb
from kernelwatch_harness.families.attention.inputs import flashinfer_inputs, sm_scale
from tests.signatures import from_wheel

SNAPSHOT = Path(__file__).parent / "fixtures" / "gpu" / "flashinfer_signatures.json"
SIGS: dict[str, dict[str, Any]] = json.loads(SNAPSHOT.read_text())["versions"]
VERSIONS = sorted(SIGS)


def accepts(version: str, api: str, kwargs: dict[str, Any]) -> None:
    """Every keyword must be a named parameter of every definition of ``api``; a ``**kwargs``
    plan() (0.6+ decode) forwards to ``_plan_impl``, which must name it."""
    for sig in SIGS[version][api]:
        names = set(sig["positional"]) | set(sig["keyword_only"])
        if sig["var_keyword"] and api.endswith(".plan"):
            impl = SIGS[version].get(api.replace(".plan", "._plan_impl"))
            assert impl, f"{version} {api} takes **kwargs and has no _plan_impl"
            names |= {n for s in impl for n in (*s["positional"], *s["keyword_only"])}
        missing = set(kwargs) - names
        assert not missing, f"FlashInfer {version} {api} ({sig['file']}) lacks {sorted(missing)}"


def positional_run(version: str, api: str, names: list[str]) -> None:
    for sig in SIGS[version][api]:
        assert sig["positional"][1:1 + len(names)] == names, (version, api, sig["positional"])


def inputs(kernel: str, backend: str = "fa2", **params: Any) -> Any:
    return flashinfer_inputs(kernel, complete_params(kernel, params, backend), "cpu")


def test_snapshot_covers_supported_versions() -> None:
    assert {"0.5.3", "0.6.18.post1", "0.7.2.post1", "0.7.4"} <= set(VERSIONS)


@pytest.mark.parametrize("version", VERSIONS)
def test_single_kernels_keywords(version: str) -> None:
    p = complete_params("single_decode", {"kv_layout": "HND", "use_tensor_cores": True}, "fa2")
    accepts(version, "single_decode_with_kv_cache",
            {"q": 0, "k": 0, "v": 0, **fb.single_decode_kwargs(p, 0.1)})
    p = complete_params("single_prefill", {"causal": True}, "fa2")
    # 0.3.0 inserted positional parameters here: the adapter passes everything by keyword.
    accepts(version, "single_prefill_with_kv_cache",
            {"q": 0, "k": 0, "v": 0, **fb.single_prefill_kwargs(p, 0.1, "fa2")})


@pytest.mark.parametrize("version", VERSIONS)
def test_batch_decode_mapping(version: str) -> None:
    inp = inputs("batch_decode", batch_size=3, kv_len=50, page_size=16, kv_dtype="float8_e4m3fn")
    kw = fb.decode_plan_kwargs(inp, sm_scale("batch_decode", inp.params))
    accepts(version, "BatchDecodeWithPagedKVCacheWrapper.__init__",
            fb.decode_init_kwargs(inp.params, "fa2"))
    accepts(version, "BatchDecodeWithPagedKVCacheWrapper.plan", kw)
    positional_run(version, "BatchDecodeWithPagedKVCacheWrapper.run", ["q", "paged_kv_cache"])
    # Values mean what FlashInfer expects: page table of the lengths, fp8 KV type passed on.
    assert kw["indptr"].tolist() == [0, 4, 8, 12]
    assert kw["last_page_len"].tolist() == [2, 2, 2]
    assert str(kw["kv_data_type"]) == "torch.float8_e4m3fn" and kw["page_size"] == 16


@pytest.mark.parametrize("version", VERSIONS)
def test_batch_prefill_paged_and_ragged_mapping(version: str) -> None:
    inp = inputs("batch_prefill", "fa3", batch_size=2, qo_len=7, kv_len=40, causal=True)
    kw = fb.prefill_plan_kwargs(inp, 0.1)
    accepts(version, "BatchPrefillWithPagedKVCacheWrapper.__init__",
            fb.prefill_init_kwargs(inp.params, "fa3"))
    accepts(version, "BatchPrefillWithPagedKVCacheWrapper.plan", kw)
    positional_run(version, "BatchPrefillWithPagedKVCacheWrapper.run", ["q", "paged_kv_cache"])
    assert kw["qo_indptr"].tolist() == [0, 7, 14] and kw["causal"] is True
    rag = inputs("batch_prefill_ragged", batch_size=2, qo_len=7, kv_len=40)
    accepts(version, "BatchPrefillWithRaggedKVCacheWrapper.__init__",
            {"kv_layout": "NHD", "backend": "fa2"})
    accepts(version, "BatchPrefillWithRaggedKVCacheWrapper.plan", fb.ragged_plan_kwargs(rag, 0.1))
    positional_run(version, "BatchPrefillWithRaggedKVCacheWrapper.run", ["q", "k", "v"])


@pytest.mark.parametrize("version", VERSIONS)
def test_cudnn_prefill_mapping(version: str) -> None:
    """cuDNN is called directly, as flashinfer_benchmark.py does (through the wrappers it
    failed on the H200: token offsets refused, then a log-sum-exp of the wrong shape). Its
    batch offsets count elements, its lengths are (batch, 1, 1, 1), a paged cache comes
    with a block table of the page table."""
    inp = inputs("batch_prefill", "cudnn", batch_size=2, qo_len=7, kv_len=40, causal=True,
                 num_qo_heads=4, num_kv_heads=2, head_dim=64, page_size=16)
    kw = fb.cudnn_prefill_kwargs(inp, 0.1)
    accepts(version, "cudnn_batch_prefill_with_kv_cache",
            {"q": 0, "k_cache": 0, "v_cache": 0, "workspace_buffer": 0, **kw})
    assert kw["batch_offsets_q"].tolist() == [0, 7 * 4 * 64, 14 * 4 * 64]
    assert kw["batch_offsets_q"].tolist()[-1] == inp.data["q"].numel()
    assert kw["actual_seq_lens_q"].shape == (2, 1, 1, 1)
    assert kw["actual_seq_lens_kv"].flatten().tolist() == [40, 40]
    assert kw["max_token_per_sequence"] == 7 and kw["max_sequence_kv"] == 40
    assert kw["return_lse"] is True and kw["causal"] is True
    indptr, indices = inp.meta["kv_indptr"].tolist(), inp.meta["kv_indices"].tolist()
    assert kw["block_tables"].tolist() == [indices[indptr[0]:indptr[1]],
                                           indices[indptr[1]:indptr[2]]]
    rag = inputs("batch_prefill_ragged", "cudnn", batch_size=2, qo_len=7, kv_len=40,
                 num_qo_heads=4, num_kv_heads=2, head_dim=64)
    kw = fb.cudnn_prefill_kwargs(rag, 0.1)
    accepts(version, "cudnn_batch_prefill_with_kv_cache",
            {"q": 0, "k_cache": 0, "v_cache": 0, "workspace_buffer": 0, **kw})
    assert "block_tables" not in kw
    assert kw["batch_offsets_k"].tolist() == kw["batch_offsets_v"].tolist() == [0, 5120, 10240]
    assert kw["batch_offsets_k"].tolist()[-1] == rag.data["k"].numel()
    assert kw["batch_offsets_stats"].tolist() == [0, 28, 56]  # tokens x heads of the lse


@pytest.mark.parametrize("version", VERSIONS)
def test_cudnn_decode_mapping(version: str) -> None:
    """cuDNN's paged decode, called directly as flashinfer_benchmark.py calls it (0.5.x and
    0.6.x's decode wrapper has no cuDNN path): q, K, V, scale and workspace by position,
    lengths (batch, 1, 1, 1) and a block table of the page table by keyword."""
    inp = inputs("batch_decode", "cudnn", batch_size=3, kv_len=40, num_qo_heads=4,
                 num_kv_heads=2, head_dim=64, page_size=16, kv_len_distribution="uniform")
    kw = fb.cudnn_decode_kwargs(inp)
    accepts(version, "cudnn_batch_decode_with_kv_cache", kw)
    for sig in SIGS[version]["cudnn_batch_decode_with_kv_cache"]:
        assert sig["positional"][:5] == ["q", "k_cache", "v_cache", "scale", "workspace_buffer"]
    assert kw["actual_seq_lens_kv"].shape == (3, 1, 1, 1)
    assert kw["actual_seq_lens_kv"].flatten().tolist() == inp.kv_lens
    assert kw["max_sequence_kv"] == max(inp.kv_lens)
    indptr, indices = inp.meta["kv_indptr"].tolist(), inp.meta["kv_indices"].tolist()
    table = kw["block_tables"].tolist()
    assert len(table) == 3 and len({len(row) for row in table}) == 1  # padded to one width
    for i, row in enumerate(table):  # each request's pages first, in order
        pages = indices[indptr[i]:indptr[i + 1]]
        assert len(pages) == -(-inp.kv_lens[i] // 16) and row[:len(pages)] == pages


def test_cudnn_decode_refuses_fp8_kv_it_cannot_scale() -> None:
    inp = inputs("batch_decode", "cudnn", batch_size=2, kv_len=40, num_qo_heads=4,
                 num_kv_heads=2, head_dim=64, page_size=16, kv_dtype="float8_e4m3fn")
    with pytest.raises(NotImplementedError, match="allowed kv_dtype"):
        fb._cudnn_decode(inp, 0.1, inp.data["q"])


@pytest.mark.parametrize("version", VERSIONS)
def test_auto_single_prefill_asks_flashinfers_own_helper(version: str) -> None:
    """single_prefill resolves ``auto`` inside the call; the adapter asks the helper the call
    asks (``_auto_single_prefill``), by position, with the head dims where a version takes
    them (0.5.x does not: the adapter retries without)."""
    for sig in SIGS[version]["determine_attention_backend"]:
        assert sig["positional"] == ["device", "pos_encoding_mode", "use_fp16_qk_reductions",
                                     "use_custom_mask", "dtype_q", "dtype_kv"]
        assert version.startswith("0.5.") or {"head_dim_qk", "head_dim_vo"} <= set(
            sig["keyword_only"])


@pytest.mark.parametrize("version", VERSIONS)
def test_mla_mapping(version: str) -> None:
    inp = inputs("mla_decode", batch_size=2, kv_len=100, num_qo_heads=16, page_size=64)
    kw = fb.mla_plan_kwargs(inp, sm_scale("mla_decode", inp.params))
    accepts(version, "BatchMLAPagedAttentionWrapper.__init__", {"backend": "fa2"})
    accepts(version, "BatchMLAPagedAttentionWrapper.plan", kw)
    positional_run(version, "BatchMLAPagedAttentionWrapper.run",
                   ["q_nope", "q_pe", "ckv_cache", "kpe_cache"])
    assert kw["kv_len_arr"].tolist() == [100, 100] and kw["kv_indptr"].tolist() == [0, 2, 4]
    assert kw["head_dim_ckv"] == 512 and kw["head_dim_kpe"] == 64


def test_decode_backend_honesty() -> None:
    # Without tensor cores FlashInfer runs its CUDA-core kernel whatever backend is named.
    fb.check_decode_backend("fa2", False, "0.6.18.post1")
    fb.check_decode_backend("auto", False, "0.5.3")
    fb.check_decode_backend("fa3", True, "0.5.3")
    with pytest.raises(NotImplementedError, match="use_tensor_cores"):
        fb.check_decode_backend("fa3", False, "0.6.18.post1")
    # cudnn never reaches the wrapper: prepare_flashinfer calls cuDNN's decode directly


def _harness_units(**params: list[Any]) -> list[tuple[int, dict[str, Any], str]]:
    """What the harness runs for a batch_decode sweep over fa2 and fa3: the worker's request
    as it goes over the pipe, read back as the harness reads it."""
    spec = SweepSpec(name="fa2 vs fa3", kernel="batch_decode", backends=["fa2", "fa3"],
                     targets=["h200"], flashinfer_versions=["0.7.2.post1"],
                     params={"batch_size": [3], "kv_len": [50], **params})
    request = HarnessRequest(spec.kernel, "cuda", list(spec.backends), spec.timing.config(),
                             list(enumerate(spec.backend_points())))
    return request_units(json.loads(request.to_json(set())))


@pytest.mark.parametrize("version", VERSIONS)
def test_fa2_and_fa3_decode_are_built_as_flashinfer_benchmark_builds_them(version: str) -> None:
    """By default fa2 runs without tensor cores (its CUDA-core decode kernel, the benchmark's
    "fa2") and fa3 with them (else FlashInfer would run the fa2-family kernel under its name),
    both with the HND layout and the CUDA-graph plan mode; a value the spec gives is what both
    are built with."""
    units = _harness_units()
    assert [(i, b) for i, _, b in units] == [(0, "fa2"), (0, "fa3")]
    built = {b: fb.decode_init_kwargs(p, b) for _, p, b in units}
    assert built == {b: {"kv_layout": "HND", "use_tensor_cores": b == "fa3",
                         "use_cuda_graph": True, "backend": b} for b in ("fa2", "fa3")}
    for backend, kwargs in built.items():
        accepts(version, "BatchDecodeWithPagedKVCacheWrapper.__init__", kwargs)
        fb.check_decode_backend(backend, kwargs["use_tensor_cores"], version)
    given = {b: fb.decode_init_kwargs(p, b)
             for _, p, b in _harness_units(use_tensor_cores=[False], kv_layout=["NHD"])}
    assert {(k["use_tensor_cores"], k["kv_layout"]) for k in given.values()} == {(False, "NHD")}
    with pytest.raises(NotImplementedError, match="use_tensor_cores"):
        fb.check_decode_backend("fa3", given["fa3"]["use_tensor_cores"], version)


def test_trtllm_gen_is_refused_off_blackwell_naming_the_gpu() -> None:
    # measured on the H200: FlashInfer tried to download the cubins and failed (offline)
    with pytest.raises(NotImplementedError, match=r"Blackwell.*this GPU is sm90"):
        fb.check_arch("trtllm-gen", (9, 0))
    with pytest.raises(NotImplementedError, match="sm120"):
        fb.check_arch("trtllm-gen", (12, 0))
    fb.check_arch("trtllm-gen", (10, 0))
    fb.check_arch("trtllm-gen", (10, 3))
    for backend in ("fa2", "fa3", "auto", "cudnn", "cutlass"):
        fb.check_arch(backend, (9, 0))


def test_cudnn_without_its_frontend_is_refused_off_blackwell() -> None:
    """Without the cuDNN frontend (``import cudnn``) FlashInfer's cuDNN paths run its own
    cubins, built for sm100 (on the H200, without the frontend, their assertions were the
    errors: "Currently only supports return_lse = True"). Refused with the reason, naming
    the package; with the frontend, or on Blackwell, cuDNN is measured."""
    from kernelwatch_harness.measure import classify

    with pytest.raises(NotImplementedError, match=r"nvidia-cudnn-frontend.*this GPU is sm90") as e:
        fb.check_arch("cudnn", (9, 0), cudnn_frontend=False)
    assert classify(e.value) == "unsupported"
    fb.check_arch("cudnn", (9, 0), cudnn_frontend=True)
    fb.check_arch("cudnn", (10, 0), cudnn_frontend=False)
    fb.check_arch("fa3", (9, 0), cudnn_frontend=False)
    import importlib.util

    assert fb.cudnn_frontend_installed() == (importlib.util.find_spec("cudnn") is not None)


class _Wrapper:
    def __init__(self, backend: str) -> None:
        self._backend = backend


class _Wrapper07(_Wrapper):
    @property
    def resolved_backend(self) -> str:
        return "fa3"


def test_resolved_backend_reads_what_each_version_exposes() -> None:
    assert fb.resolved_backend(_Wrapper("auto"), "auto", tensor_cores=False) == "fa2"
    assert fb.resolved_backend(_Wrapper("fa3"), "auto") == "fa3"  # prefill: plan() rewrote it
    assert fb.resolved_backend(_Wrapper07("auto"), "auto") == "fa3"  # 0.7: the property


WHEELS = os.environ.get("KERNELWATCH_FLASHINFER_WHEELS", "")


@pytest.mark.skipif(not WHEELS, reason="KERNELWATCH_FLASHINFER_WHEELS not set")
def test_snapshot_matches_the_wheels() -> None:
    wheels = glob.glob(os.path.join(WHEELS, "**", "flashinfer_python-*.whl"), recursive=True)
    assert wheels
    for wheel in wheels:
        version, sigs = from_wheel(wheel)
        if version in SIGS:
            assert sigs == SIGS[version], version
