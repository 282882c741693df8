"""The attention family and FlashInfer's own benchmark, ``benchmarks/flashinfer_benchmark.py``:
the command line that reproduces a point (``repro``), and a line of the tool read as
kernelwatch parameters (``from_flags``).

The same shape in both tools must be the same experiment, so the mapping follows what the
tool's attention routines (0.5 to 0.7) do beyond their flags:

- the batch decode wrapper is built with ``kv_layout="HND"``, ``use_cuda_graph=True`` (unless
  ``--no_cuda_graph``) and ``use_tensor_cores`` for every backend but ``fa2`` (its ``fa2_tc``
  is fa2 with tensor cores);
- the paged prefill wrapper with HND (NHD for cudnn) and ``use_cuda_graph`` except for fa2;
- the ragged prefill wrapper with NHD and ``use_cuda_graph`` except for fa2;
- the MLA wrapper with ``use_cuda_graph``;
- every request has the same ``s_kv`` (``--random_actual_seq_len`` draws lengths with torch's
  generator on the GPU, which kernelwatch's seeded distributions do not reproduce: refused).
"""

from __future__ import annotations

from typing import Any

from kernelwatch_harness.family import Flags, LineGroup, Repro, Unmapped

ROUTINES = {
    "batch_decode": "BatchDecodeWithPagedKVCacheWrapper",
    "batch_prefill": "BatchPrefillWithPagedKVCacheWrapper",
    "batch_prefill_ragged": "BatchPrefillWithRaggedKVCacheWrapper",
    "mla_decode": "BatchMLAPagedAttentionWrapper",
}
DTYPES = {"bfloat16": "bfloat16", "float16": "float16", "fp8_e4m3": "float8_e4m3fn",
          "fp8_e5m2": "float8_e5m2"}
DTYPE_FLAGS = {v: k for k, v in DTYPES.items()}
ROUTINE_FLAGS = frozenset({
    "--backends", "--page_size", "--batch_size", "--s_qo", "--s_kv", "--num_qo_heads",
    "--num_kv_heads", "--head_dim_qk", "--head_dim_vo", "--head_dim_ckv", "--head_dim_kpe",
    "--q_dtype", "--kv_dtype", "--out_dtype", "--causal", "--no_cuda_graph"})
REFUSED_FLAGS = {
    "--random_actual_seq_len": "--random_actual_seq_len cannot be mapped: flashinfer_benchmark"
                               ".py draws those lengths with torch's generator on the GPU, "
                               "which kernelwatch's seeded distributions do not reproduce"}


def benchmark_params(kernel: str, backend: str, cuda_graph: bool = True) -> dict[str, Any]:
    """What flashinfer_benchmark.py fixes for ``kernel`` run by ``backend`` (its name for it:
    ``fa2_tc`` included) beyond its flags, as kernelwatch parameters: the backend's defaults
    of the parameters the family's backend defaults set. ``cuda_graph`` false:
    ``--no_cuda_graph``."""
    from kernelwatch_harness.catalogue import backend_defaults, family_of

    ours = "fa2" if backend == "fa2_tc" else backend
    table = family_of(kernel).backend_defaults[kernel]
    fixed_names = {n for row in table.values() for n in row}
    fixed = {n: v for n, v in backend_defaults(kernel, ours).items() if n in fixed_names}
    if backend == "fa2_tc":
        fixed["use_tensor_cores"] = True
    if not cuda_graph:
        fixed["use_cuda_graph"] = False
    return fixed


def repro(kernel: str, p: dict[str, Any], backend: str) -> Repro:
    """The flashinfer_benchmark.py arguments measuring the same experiment as the point
    (completed parameters, a FlashInfer backend), or why none do."""
    routine = ROUTINES.get(kernel)
    if routine is None:
        return Repro(None, f"flashinfer_benchmark.py has no routine for {kernel}")
    if p.get("kv_len_distribution", "constant") != "constant":
        return Repro(None, f"kv_len_distribution {p['kv_len_distribution']}: "
                           "flashinfer_benchmark.py gives every request the same s_kv")
    for name, default in (("fixed_split_size", 0), ("disable_split_kv", False),
                          ("window_left", -1), ("logits_soft_cap", 0),
                          ("pos_encoding_mode", "NONE")):
        if p.get(name, default) != default:
            return Repro(None, f"{name}={p[name]}: flashinfer_benchmark.py has no flag for it")
    fixed = benchmark_params(kernel, backend, bool(p.get("use_cuda_graph", True)))
    bench_backend = backend
    if kernel == "batch_decode" and backend == "fa2" and p.get("use_tensor_cores"):
        bench_backend, fixed["use_tensor_cores"] = "fa2_tc", True
    for name, value in fixed.items():
        if p.get(name) != value and name != "use_cuda_graph":
            return Repro(None, f"{name}={p.get(name)}: flashinfer_benchmark.py runs "
                               f"{kernel} with {backend} at {name}={value}")
    if p.get("use_cuda_graph") and not fixed["use_cuda_graph"]:
        return Repro(None, f"use_cuda_graph=true: flashinfer_benchmark.py builds {backend}'s "
                           f"{kernel} wrapper without it")
    dtype = DTYPE_FLAGS[p["dtype"]]
    kv = DTYPE_FLAGS[p.get("kv_dtype") or p["dtype"]]
    args = ["--routine", routine, "--backends", bench_backend]
    if "page_size" in p:
        args += ["--page_size", str(p["page_size"])]
    args += ["--batch_size", str(p["batch_size"]), "--s_qo", str(p.get("qo_len", 1)),
             "--s_kv", str(p["kv_len"]), "--num_qo_heads", str(p["num_qo_heads"])]
    if kernel == "mla_decode":
        args += ["--num_kv_heads", str(p["num_qo_heads"]), "--head_dim_ckv",
                 str(p["head_dim_ckv"]), "--head_dim_kpe", str(p["head_dim_kpe"])]
    else:
        args += ["--num_kv_heads", str(p["num_kv_heads"]), "--head_dim_qk", str(p["head_dim"]),
                 "--head_dim_vo", str(p["head_dim"])]
    if p.get("causal"):
        args.append("--causal")
    args += ["--q_dtype", dtype, "--kv_dtype", kv]
    if fixed["use_cuda_graph"] is False and p.get("use_cuda_graph") is False \
            and benchmark_params(kernel, backend)["use_cuda_graph"]:
        args.append("--no_cuda_graph")
    return Repro(args)


def from_flags(kernel: str, flags: Flags,
               flashinfer_backends: tuple[str, ...]) -> list[LineGroup]:
    """One line of the tool as kernelwatch parameters, one group per set of backends the tool
    builds the same way."""
    routine = flags.one("--routine")
    s_qo = int(flags.one("--s_qo", "1"))
    if kernel in ("batch_decode", "mla_decode") and s_qo != 1:
        raise Unmapped(f"--s_qo {s_qo}: {routine} is measured with one query token")
    q_dtype, kv_dtype = flags.one("--q_dtype", "bfloat16"), flags.one("--kv_dtype", "bfloat16")
    for flag, value in (("--q_dtype", q_dtype), ("--kv_dtype", kv_dtype)):
        if value not in DTYPES or (flag == "--q_dtype" and value.startswith("fp8")):
            raise Unmapped(f"{flag} {value} cannot be mapped")
    out_dtype = flags.one("--out_dtype", q_dtype)
    if out_dtype != q_dtype:
        raise Unmapped(f"--out_dtype {out_dtype}: kernelwatch writes the query's dtype")
    params: dict[str, Any] = {
        "batch_size": int(flags.one("--batch_size")),
        "kv_len": int(flags.one("--s_kv")),
        "num_qo_heads": int(flags.one("--num_qo_heads")),
        "dtype": DTYPES[q_dtype],
    }
    if DTYPES[kv_dtype] != DTYPES[q_dtype]:
        params["kv_dtype"] = DTYPES[kv_dtype]
    if kernel != "batch_prefill_ragged":
        params["page_size"] = int(flags.one("--page_size"))
    if kernel != "mla_decode":
        params["pos_encoding_mode"] = "NONE"  # the script has no flag for another
    if kernel in ("batch_prefill", "batch_prefill_ragged"):
        params["qo_len"] = s_qo
        params["causal"] = "--causal" in flags
    elif "--causal" in flags:
        raise Unmapped(f"--causal: {routine} takes no causal mask")
    if kernel == "mla_decode":
        params["head_dim_ckv"] = int(flags.one("--head_dim_ckv"))
        params["head_dim_kpe"] = int(flags.one("--head_dim_kpe"))
    else:
        qk, vo = int(flags.one("--head_dim_qk")), int(flags.one("--head_dim_vo"))
        if qk != vo:
            raise Unmapped(f"--head_dim_qk {qk} --head_dim_vo {vo}: kernelwatch measures "
                           "equal head dims")
        params["head_dim"] = qk
        params["num_kv_heads"] = int(flags.one("--num_kv_heads"))
    cuda_graph = "--no_cuda_graph" not in flags
    groups: dict[str, list[str]] = {}
    fixed_of: dict[str, dict[str, Any]] = {}
    for backend in flags.get("--backends") or ["fa2"]:
        ours = "fa2" if backend == "fa2_tc" else backend
        if ours not in flashinfer_backends:
            raise Unmapped(f"--backends {backend}: kernelwatch runs {kernel} with "
                           f"{', '.join(flashinfer_backends)}")
        fixed = benchmark_params(kernel, backend, cuda_graph)
        key = repr(sorted(fixed.items()))
        groups.setdefault(key, []).append(ours)
        fixed_of[key] = fixed
    return [(list(dict.fromkeys(backends)), {**params, **fixed_of[key]})
            for key, backends in groups.items()]
