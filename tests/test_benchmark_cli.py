"""Both directions between kernelwatch and flashinfer_benchmark.py: a point's command line,
read back as a testlist line, is the same experiment (same series key); testlist lines map to
sweeps or are refused naming the flag; the CLI submits a testlist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernelwatch.cli.main import cli
from kernelwatch.core.benchmark_cli import (
    KERNEL_OF,
    UnmappedLine,
    line_specs,
    read_testlist,
    repro_command,
)
from kernelwatch.core.models import Job
from kernelwatch.core.series import series_key
from kernelwatch.core.spec import SweepSpec
from kernelwatch_harness.catalogue import KERNELS, complete_params

SAMPLE = Path(__file__).parent / "fixtures" / "testlist" / "attention.txt"

POINTS = [
    ("batch_decode", {"batch_size": 16, "kv_len": 4096, "kv_layout": "HND",
                      "use_tensor_cores": True}, "auto"),
    ("batch_decode", {"batch_size": 1, "kv_len": 512, "kv_layout": "HND"}, "fa2"),
    ("batch_decode", {"batch_size": 8, "kv_len": 512, "kv_layout": "HND",
                      "use_tensor_cores": True}, "fa2"),  # fa2_tc
    ("batch_decode", {"kv_layout": "HND", "use_tensor_cores": True, "use_cuda_graph": False,
                      "kv_dtype": "float8_e4m3fn"}, "trtllm-gen"),
    ("batch_prefill", {"batch_size": 2, "qo_len": 512, "kv_len": 2048, "causal": True,
                       "kv_layout": "HND"}, "fa3"),
    ("batch_prefill", {"qo_len": 64, "kv_layout": "HND", "use_cuda_graph": False}, "fa2"),
    ("batch_prefill", {"qo_len": 64, "kv_layout": "NHD"}, "cudnn"),
    ("batch_prefill_ragged", {"qo_len": 128, "kv_len": 1024, "causal": True}, "cutlass"),
    ("mla_decode", {"batch_size": 4, "kv_len": 2048, "num_qo_heads": 128}, "fa3"),
    ("rmsnorm", {"batch_size": 512, "hidden_size": 8192, "dtype": "float16"}, "auto"),
    ("gemma_fused_add_rmsnorm", {"batch_size": 64, "num_heads": 8, "hidden_size": 128},
     "auto"),
]


def _point_of(spec: dict[str, object]) -> tuple[str, dict[str, object], str]:
    (backend,) = spec["backends"]  # type: ignore[misc]
    sweep = SweepSpec(**{**spec, "targets": ["h200"], "flashinfer_versions": ["0.7.4"]})
    (grid,) = sweep.grid(str(backend))
    return str(spec["kernel"]), grid, str(backend)


@pytest.mark.parametrize(("kernel", "params", "backend"), POINTS)
def test_a_points_command_reads_back_as_the_same_series(kernel: str, params: dict[str, object],
                                                        backend: str) -> None:
    completed = complete_params(kernel, params, backend)
    repro = repro_command(kernel, completed, backend)
    assert repro.command is not None, repro.reason
    assert repro.command.startswith("python benchmarks/flashinfer_benchmark.py --routine ")
    args = shlex.split(repro.command)[2:]
    (spec,) = line_specs(shlex.join(args), 1)
    k, p, b = _point_of(spec)
    assert series_key(k, p, b, "h200") == series_key(kernel, completed, backend, "h200")


# FlashInfer backends the tool's routine does not run (its mm_fp8 passes the low-latency
# weight layout to every backend; its bmm_bf16 accepts cudnn, cutlass and auto): no command
# measures them, and test_family_gemm checks the reason given.
NOT_THE_TOOLS = {("mm_fp8", "cublas"), ("mm_fp8", "cudnn"), ("bmm_bf16", "cutile"),
                 # the declared routines (but the GEMMs, whose commands are written out): a
                 # line naming them is refused with the reason, and a point has no command
                 # (test_family_moe, test_family_declared)
                 *((k, b) for k, spec in KERNELS.items() if spec.declared
                   and spec.family != "gemm" for b in spec.flashinfer_backends)}


@pytest.mark.parametrize(("kernel", "backend"), [
    (k, b) for k in KERNEL_OF.values() for b in KERNELS[k].flashinfer_backends
    if (k, b) not in NOT_THE_TOOLS])
def test_a_default_point_is_flashinfer_benchmarks_default_run(kernel: str, backend: str) -> None:
    """The defaults are what flashinfer_benchmark.py builds for the backend: a point that
    names nothing has a command (with none of the flags that change the build), and the
    command reads back as the same series."""
    completed = complete_params(kernel, {}, backend)
    repro = repro_command(kernel, completed, backend)
    assert repro.command is not None, repro.reason
    assert "--no_cuda_graph" not in repro.command and "fa2_tc" not in repro.command
    (spec,) = line_specs(shlex.join(shlex.split(repro.command)[2:]), 1)
    k, p, b = _point_of(spec)
    assert (k, p, b) == (kernel, completed, backend)
    assert series_key(k, p, b, "h200") == series_key(kernel, completed, backend, "h200")


@pytest.mark.parametrize(("kernel", "params", "backend", "reason"), [
    ("batch_decode", {"kv_layout": "NHD"}, "fa2", "kv_layout=NHD: flashinfer_benchmark.py "
     "runs batch_decode with fa2 at kv_layout=HND"),
    ("batch_decode", {"kv_layout": "HND", "kv_len_distribution": "zipf"}, "fa2",
     "kv_len_distribution zipf"),
    ("batch_prefill", {"use_cuda_graph": True}, "fa2", "use_cuda_graph=true: "
     "flashinfer_benchmark.py builds fa2's batch_prefill wrapper without it"),
    ("batch_decode", {"use_tensor_cores": False}, "fa3", "use_tensor_cores=False: "
     "flashinfer_benchmark.py runs batch_decode with fa3 at use_tensor_cores=True"),
    ("batch_decode", {}, "torch-sdpa", "backend torch-sdpa is not FlashInfer's"),
    ("single_decode", {}, "fa2", "no routine for single_decode"),
    ("batch_decode", {"kv_layout": "HND", "fixed_split_size": 256}, "fa2",
     "fixed_split_size=256: flashinfer_benchmark.py has no flag for it"),
    ("batch_prefill", {"qo_len": 64, "kv_layout": "HND", "use_cuda_graph": False,
                       "pos_encoding_mode": "ROPE_LLAMA"}, "fa2",
     "pos_encoding_mode=ROPE_LLAMA: flashinfer_benchmark.py has no flag for it"),
    ("batch_decode", {"kv_layout": "HND", "pos_encoding_mode": "ALIBI"}, "fa2",
     "pos_encoding_mode=ALIBI: flashinfer_benchmark.py has no flag for it"),
])
def test_a_point_with_no_equal_command_says_why(kernel: str, params: dict[str, object],
                                                backend: str, reason: str) -> None:
    repro = repro_command(kernel, complete_params(kernel, params, backend), backend)
    assert repro.command is None and repro.reason is not None and reason in repro.reason


def test_flashinfers_sample_testlist_maps_or_refuses_every_line() -> None:
    """FlashInfer's own sample testlist (its attention lines): every line is refused, each
    naming the flag that makes it another experiment (random lengths drawn on the GPU, fp8
    queries, several query tokens in decode); none is dropped silently. With those flags
    changed, the same lines map."""
    lines = SAMPLE.read_text().splitlines()
    specs, refused = read_testlist(lines)
    work = [n for n, line in enumerate(lines, 1) if line.strip() and not line.startswith("#")]
    assert specs == [] and [e.line for e in refused] == work
    flags = {str(e).split(": ", 1)[1].split()[0] for e in refused}
    assert flags == {"--random_actual_seq_len", "--q_dtype", "--s_qo"}
    fixed = [line.replace("--random_actual_seq_len", "").replace("fa2_tc cudnn trtllm-gen "
             "trtllm-gen-native", "fa2_tc cudnn trtllm-gen") for line in lines]
    specs, refused = read_testlist(fixed)
    assert {e.line for e in refused} >= {3, 4, 8, 11} and specs
    assert {s["name"] for s in specs} >= {"Llama-3.1-70B"}


def test_a_testlist_line_splits_where_flashinfer_builds_backends_differently() -> None:
    line = ("--routine BatchDecodeWithPagedKVCacheWrapper --backends fa2 fa2_tc trtllm-gen "
            "--page_size 16 --batch_size 16 --s_qo 1 --s_kv 1024 --num_qo_heads 64 "
            "--num_kv_heads 8 --head_dim_qk 128 --head_dim_vo 128 -vv --refcheck "
            "--q_dtype bfloat16 --kv_dtype bfloat16 --case_tag Llama-3.1-70B")
    specs, refused = read_testlist([line])
    assert refused == []
    by_tc = {s["params"]["use_tensor_cores"][0]: s["backends"] for s in specs}
    assert by_tc == {False: ["fa2"], True: ["fa2", "trtllm-gen"]}
    assert {s["name"] for s in specs} == {"Llama-3.1-70B"}
    assert all(s["params"]["kv_layout"] == ["HND"] for s in specs)
    # flashinfer_benchmark.py applies no positional encoding: the spec says so.
    assert all(s["params"]["pos_encoding_mode"] == ["NONE"] for s in specs)
    mla = line_specs("--routine BatchMLAPagedAttentionWrapper --backends fa3 --page_size 64 "
                     "--batch_size 4 --s_kv 2048 --num_qo_heads 128 --num_kv_heads 128 "
                     "--head_dim_ckv 512 --head_dim_kpe 64", 1)
    assert all("pos_encoding_mode" not in s["params"] for s in mla)  # MLA takes none


@pytest.mark.parametrize(("flags", "named"), [
    ("--random_actual_seq_len", "--random_actual_seq_len"),
    ("--autotune", "--autotune"),
    ("--enable_pdl", "--enable_pdl"),
    ("--out_dtype float16", "--out_dtype"),
])
def test_unmappable_flags_are_refused_by_name(flags: str, named: str) -> None:
    base = ("--routine BatchPrefillWithPagedKVCacheWrapper --backends fa3 --page_size 16 "
            "--batch_size 1 --s_qo 512 --s_kv 512 --num_qo_heads 32 --num_kv_heads 8 "
            "--head_dim_qk 128 --head_dim_vo 128 --causal ")
    with pytest.raises(UnmappedLine, match=named):
        line_specs(base + flags, 7)
    with pytest.raises(UnmappedLine, match="head_dim_vo 64"):
        line_specs(base.replace("--head_dim_vo 128", "--head_dim_vo 64"), 7)


def test_submit_from_testlist(api_server: str, session: Session, tmp_path: Path) -> None:
    testlist = tmp_path / "list.txt"
    testlist.write_text(
        "# decode\n"
        "--routine BatchDecodeWithPagedKVCacheWrapper --backends fa2 --page_size 16 "
        "--batch_size 4 --s_qo 1 --s_kv 2048 --num_qo_heads 32 --num_kv_heads 8 "
        "--head_dim_qk 128 --head_dim_vo 128 --q_dtype bfloat16 --kv_dtype bfloat16\n"
        "--routine BatchDecodeWithPagedKVCacheWrapper --backends prims-ts --page_size 16 "
        "--batch_size 4 --s_qo 4 --s_kv 2048 --num_qo_heads 32 --num_kv_heads 8 "
        "--head_dim_qk 128 --head_dim_vo 128\n")
    out = CliRunner().invoke(cli, ["submit", str(testlist), "--from-testlist", "--target",
                                   "h200", "--versions", "0.7.4"])
    assert out.exit_code == 0, out.output
    assert "refused: testlist line 3: --s_qo 4" in out.output
    (job,) = session.scalars(select(Job)).all()
    assert job.spec["targets"] == ["h200"] and job.spec["flashinfer_versions"] == ["0.7.4"]
    assert job.spec["params"]["kv_layout"] == ["HND"]
    missing = CliRunner().invoke(cli, ["submit", str(testlist), "--from-testlist"])
    assert missing.exit_code == 2 and "--target" in missing.output


def test_results_carry_each_points_repro_command(session: Session) -> None:
    """The job's results (API, CSV, CLI): each point's flashinfer_benchmark.py command line,
    or the reason it has none."""
    from kernelwatch.core.jobs import result_rows
    from kernelwatch.core.models import Run
    from kernelwatch.core.results import store_point

    params = complete_params("batch_decode", {"kv_layout": "HND", "use_tensor_cores": True},
                             "auto")
    job = Job(name="r", kernel="batch_decode", spec={})
    session.add(job)
    session.flush()
    run = Run(job_id=job.id, target="h200", queue="q", point_indices=[0], gpu_sku="h200")
    session.add(run)
    session.flush()
    for backend in ("auto", "torch-sdpa"):
        store_point(session, run, "batch_decode", params, {
            "type": "point", "point_index": 0, "backend": backend, "status": "ok",
            "error": None, "samples_us": [10.0, 10.1, 10.2]})
    session.commit()
    rows = {r["backend"]: r for r in result_rows(session, job)}
    assert rows["auto"]["repro_command"] == repro_command("batch_decode", params, "auto").command
    assert "--routine BatchDecodeWithPagedKVCacheWrapper --backends auto" in \
        rows["auto"]["repro_command"]
    assert rows["torch-sdpa"]["repro_command"] is None
    assert rows["torch-sdpa"]["repro_note"] == "backend torch-sdpa is not FlashInfer's"


@pytest.mark.parametrize(("line", "message"), [
    ("--routine rmsnorm --batch_size 8 --hidden_size 4096 --is_sf_swizzled_layout",
     "--is_sf_swizzled_layout: only the FP4 norm routines"),
    ("--routine rmsnorm --batch_size 8 --hidden_size 4096 --eps 1e-5",
     "--eps 1e-5: kernelwatch measures eps=1e-06"),
    ("--routine rmsnorm_fp4quant --batch_size 8 --hidden_size 4096",
     "--routine rmsnorm_fp4quant: kernelwatch does not run rmsnorm_fp4quant's FlashInfer call yet"),
    ("--routine rmsnorm --batch_size 8 --hidden_size 64 --input_dtype float32",
     "--input_dtype float32 cannot be mapped"),
])
def test_norm_lines_that_cannot_be_mapped_are_refused(line: str, message: str) -> None:
    with pytest.raises(UnmappedLine, match=re.escape(message)):
        line_specs(line, 3)


def test_a_quantising_norm_line_is_read_and_rmsnorm_ignores_its_flags() -> None:
    (spec,) = line_specs("--routine rmsnorm_quant --batch_size 4 --hidden_size 2048 "
                         "--out_dtype fp8_e5m2 --scale 0.5 --num_heads 8", 1)
    # 2D only in the tool: --num_heads is ignored, as it is there
    assert spec["params"] == {"batch_size": [4], "hidden_size": [2048], "dtype": ["bfloat16"],
                              "quant_dtype": ["float8_e5m2"], "quant_scale": [0.5]}
    (plain,) = line_specs("--routine rmsnorm --batch_size 4 --hidden_size 2048 "
                          "--out_dtype fp8_e4m3 --scale 2", 1)
    assert set(plain["params"]) == {"batch_size", "hidden_size", "num_heads", "dtype"}


def test_a_norm_line_is_the_same_experiment() -> None:
    (spec,) = line_specs("--routine fused_add_rmsnorm --backends cuda cute-dsl --batch_size 4 "
                         "--hidden_size 2048 --input_dtype float16 -vv --refcheck", 1)
    assert spec == {"name": "testlist line 1", "kernel": "fused_add_rmsnorm",
                    "backends": ["auto"], "params": {"batch_size": [4], "hidden_size": [2048],
                                                     "num_heads": [0], "dtype": ["float16"]}}
