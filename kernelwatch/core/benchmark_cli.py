"""Both directions between a kernelwatch point and FlashInfer's own benchmark,
``benchmarks/flashinfer_benchmark.py``: the command line that reproduces a point
(``repro_command``), and a ``--testlist`` file read as sweeps (``read_testlist``).

The same shape in both tools must be the same experiment. What flashinfer_benchmark.py's
attention routines (0.5 to 0.7) fix beyond their flags (the wrapper's kv_layout, tensor cores
and CUDA-graph plan mode, per backend) is kernelwatch's default for that backend
(``catalogue.BACKEND_DEFAULTS``); beyond those, every request has the same ``s_kv``
(``--random_actual_seq_len`` draws lengths with torch's generator on the GPU, which
kernelwatch's seeded distributions do not reproduce: refused).

A flag that changes the experiment in a way kernelwatch cannot express is refused, naming the
flag; one that only changes what the tool prints (``-vv``, ``--case_tag``, ...) is accepted.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kernelwatch_harness.catalogue import (
    BACKEND_DEFAULTS,
    FLASHINFER_BACKENDS,
    KERNELS,
    backend_defaults,
    complete_params,
)

SCRIPT = "benchmarks/flashinfer_benchmark.py"
ROUTINES = {
    "batch_decode": "BatchDecodeWithPagedKVCacheWrapper",
    "batch_prefill": "BatchPrefillWithPagedKVCacheWrapper",
    "batch_prefill_ragged": "BatchPrefillWithRaggedKVCacheWrapper",
    "mla_decode": "BatchMLAPagedAttentionWrapper",
}
KERNEL_OF = {routine: kernel for kernel, routine in ROUTINES.items()}
DTYPES = {"bfloat16": "bfloat16", "float16": "float16", "fp8_e4m3": "float8_e4m3fn",
          "fp8_e5m2": "float8_e5m2"}
DTYPE_FLAGS = {v: k for k, v in DTYPES.items()}
# Flags that change only what the tool prints or checks, not what is timed.
_QUIET_FLAGS = {"-v", "-vv", "-vvv", "--verbose", "--refcheck", "--allow_output_mismatch",
                "--generate_repro_command", "--output_path", "--case_tag", "--random_seed"}


class UnmappedLine(ValueError):
    """A testlist line that cannot be read as the same experiment, with the reason."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"testlist line {line}: {message}")
        self.line = line


def benchmark_params(kernel: str, backend: str, cuda_graph: bool = True) -> dict[str, Any]:
    """What flashinfer_benchmark.py fixes for ``kernel`` run by ``backend`` (its name for it:
    ``fa2_tc`` included) beyond its flags, as kernelwatch parameters: the backend's defaults
    of the parameters ``BACKEND_DEFAULTS`` sets. ``cuda_graph`` false: ``--no_cuda_graph``."""
    ours = "fa2" if backend == "fa2_tc" else backend
    fixed_names = {n for row in BACKEND_DEFAULTS[kernel].values() for n in row}
    fixed = {n: v for n, v in backend_defaults(kernel, ours).items() if n in fixed_names}
    if backend == "fa2_tc":
        fixed["use_tensor_cores"] = True
    if not cuda_graph:
        fixed["use_cuda_graph"] = False
    return fixed


@dataclass(frozen=True)
class Repro:
    command: str | None
    reason: str | None = None  # why there is no command


def repro_command(kernel: str, params: dict[str, Any], backend: str) -> Repro:
    """The flashinfer_benchmark.py command line measuring the same experiment as the point,
    or why none does."""
    routine = ROUTINES.get(kernel)
    if routine is None:
        return Repro(None, f"flashinfer_benchmark.py has no routine for {kernel}")
    if backend not in FLASHINFER_BACKENDS:
        return Repro(None, f"backend {backend} is not FlashInfer's")
    p = complete_params(kernel, params, backend)
    if p.get("kv_len_distribution", "constant") != "constant":
        return Repro(None, f"kv_len_distribution {p['kv_len_distribution']}: "
                           "flashinfer_benchmark.py gives every request the same s_kv")
    for name, default in (("fixed_split_size", 0), ("disable_split_kv", False),
                          ("window_left", -1), ("logits_soft_cap", 0)):
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
    args += ["--refcheck", "-vv"]
    return Repro(f"python {SCRIPT} " + shlex.join(args))


# --------------------------------------------------------------------------- testlists


def _parse_line(tokens: list[str], line: int) -> dict[str, Any]:
    """Flags of one testlist line (``--backends`` takes several values)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        flag = tokens[i]
        if not flag.startswith("-"):
            raise UnmappedLine(line, f"unexpected value {flag!r}")
        values = []
        i += 1
        while i < len(tokens) and not (tokens[i].startswith("-") and not _is_number(tokens[i])):
            values.append(tokens[i])
            i += 1
        out[flag] = values
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_ACCEPTED = {"--routine", "--backends", "--page_size", "--batch_size", "--s_qo", "--s_kv",
             "--num_qo_heads", "--num_kv_heads", "--head_dim_qk", "--head_dim_vo",
             "--head_dim_ckv", "--head_dim_kpe", "--q_dtype", "--kv_dtype", "--out_dtype",
             "--causal", "--no_cuda_graph", "--num_iters", "--dry_run_iters", "--use_cupti",
             "--use_cuda_events", *_QUIET_FLAGS}


def _one(flags: dict[str, Any], name: str, line: int, default: Any = None) -> Any:
    values = flags.get(name)
    if values is None:
        if default is None:
            raise UnmappedLine(line, f"{name} is required")
        return default
    if len(values) != 1:
        raise UnmappedLine(line, f"{name} takes one value")
    return values[0]


def line_specs(text: str, line: int, name: str | None = None) -> list[dict[str, Any]]:
    """The sweep specs measuring what one testlist line measures: one per group of its
    backends that flashinfer_benchmark.py builds the same way (GPU target and FlashInfer
    versions are the caller's)."""
    flags = _parse_line(shlex.split(text), line)
    if "--random_actual_seq_len" in flags:
        raise UnmappedLine(line, "--random_actual_seq_len cannot be mapped: flashinfer_benchmark"
                                 ".py draws those lengths with torch's generator on the GPU, "
                                 "which kernelwatch's seeded distributions do not reproduce")
    unknown = sorted(set(flags) - _ACCEPTED)
    if unknown:
        raise UnmappedLine(line, f"{unknown[0]} cannot be mapped to a kernelwatch parameter")
    routine = _one(flags, "--routine", line)
    kernel = KERNEL_OF.get(routine)
    if kernel is None:
        raise UnmappedLine(line, f"--routine {routine}: kernelwatch measures "
                                  f"{', '.join(sorted(KERNEL_OF))}")
    s_qo = int(_one(flags, "--s_qo", line, "1"))
    if kernel in ("batch_decode", "mla_decode") and s_qo != 1:
        raise UnmappedLine(line, f"--s_qo {s_qo}: {routine} is measured with one query token")
    q_dtype, kv_dtype = _one(flags, "--q_dtype", line, "bfloat16"), _one(
        flags, "--kv_dtype", line, "bfloat16")
    for flag, value in (("--q_dtype", q_dtype), ("--kv_dtype", kv_dtype)):
        if value not in DTYPES or (flag == "--q_dtype" and value.startswith("fp8")):
            raise UnmappedLine(line, f"{flag} {value} cannot be mapped")
    out_dtype = _one(flags, "--out_dtype", line, q_dtype)
    if out_dtype != q_dtype:
        raise UnmappedLine(line, f"--out_dtype {out_dtype}: kernelwatch writes the query's "
                                  "dtype")
    params: dict[str, Any] = {
        "batch_size": int(_one(flags, "--batch_size", line)),
        "kv_len": int(_one(flags, "--s_kv", line)),
        "num_qo_heads": int(_one(flags, "--num_qo_heads", line)),
        "dtype": DTYPES[q_dtype],
    }
    if DTYPES[kv_dtype] != DTYPES[q_dtype]:
        params["kv_dtype"] = DTYPES[kv_dtype]
    if kernel != "batch_prefill_ragged":
        params["page_size"] = int(_one(flags, "--page_size", line))
    if kernel in ("batch_prefill", "batch_prefill_ragged"):
        params["qo_len"] = s_qo
        params["causal"] = "--causal" in flags
    elif "--causal" in flags:
        raise UnmappedLine(line, f"--causal: {routine} takes no causal mask")
    if kernel == "mla_decode":
        params["head_dim_ckv"] = int(_one(flags, "--head_dim_ckv", line))
        params["head_dim_kpe"] = int(_one(flags, "--head_dim_kpe", line))
    else:
        qk, vo = int(_one(flags, "--head_dim_qk", line)), int(_one(flags, "--head_dim_vo", line))
        if qk != vo:
            raise UnmappedLine(line, f"--head_dim_qk {qk} --head_dim_vo {vo}: kernelwatch "
                                      "measures equal head dims")
        params["head_dim"] = qk
        params["num_kv_heads"] = int(_one(flags, "--num_kv_heads", line))
    timing: dict[str, Any] = {}
    if "--use_cupti" in flags:  # FlashInfer's CUPTI timer flushes L2 before each call
        timing.update(method="cupti", cold_l2_method="flush")
    if "--use_cuda_events" in flags:
        timing["method"] = "cuda_event"
    if "--num_iters" in flags:
        timing["iterations"] = max(30, int(_one(flags, "--num_iters", line)))
    if "--dry_run_iters" in flags:
        timing["warmup"] = int(_one(flags, "--dry_run_iters", line))
    cuda_graph = "--no_cuda_graph" not in flags
    groups: dict[str, list[str]] = {}
    fixed_of: dict[str, dict[str, Any]] = {}
    for backend in flags.get("--backends") or ["fa2"]:
        ours = "fa2" if backend == "fa2_tc" else backend
        if ours not in KERNELS[kernel].flashinfer_backends:
            raise UnmappedLine(line, f"--backends {backend}: kernelwatch runs {kernel} with "
                                      f"{', '.join(KERNELS[kernel].flashinfer_backends)}")
        fixed = benchmark_params(kernel, backend, cuda_graph)
        key = repr(sorted(fixed.items()))
        groups.setdefault(key, []).append(ours)
        fixed_of[key] = fixed
    specs = []
    for key, backends in groups.items():
        spec: dict[str, Any] = {
            "name": name or f"testlist line {line}",
            "kernel": kernel,
            "backends": list(dict.fromkeys(backends)),
            "params": {k: [v] for k, v in {**params, **fixed_of[key]}.items()},
        }
        if timing:
            spec["timing"] = timing
        specs.append(spec)
    return specs


def read_testlist(
    lines: Iterable[str],
) -> tuple[list[dict[str, Any]], list[UnmappedLine]]:
    """Every line of a testlist as sweep specs (comments and blank lines skipped), and every
    line that cannot be mapped, each refusal naming its line and flag."""
    specs: list[dict[str, Any]] = []
    refused: list[UnmappedLine] = []
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        try:
            tokens = shlex.split(text)
            tag = None
            if "--case_tag" in tokens and tokens.index("--case_tag") + 1 < len(tokens):
                tag = tokens[tokens.index("--case_tag") + 1]
            specs.extend(line_specs(text, number, tag))
        except UnmappedLine as exc:
            refused.append(exc)
        except ValueError as exc:  # a malformed number or quote
            refused.append(UnmappedLine(number, str(exc)))
    return specs, refused
