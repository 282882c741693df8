"""Both directions between a kernelwatch point and FlashInfer's own benchmark,
``benchmarks/flashinfer_benchmark.py``: the command line that reproduces a point
(``repro_command``), and a ``--testlist`` file read as sweeps (``read_testlist``).

The same shape in both tools must be the same experiment; what each routine fixes beyond its
flags is the kernel's default for that backend (``catalogue.backend_defaults``), and the
mapping is its family's to say (``Family.repro`` and ``Family.from_flags``, e.g.
``kernelwatch_harness.families.attention.benchmark``). Here are the flags every routine
shares: a flag that changes the experiment in a way kernelwatch cannot express is refused,
naming the flag; one that only changes what the tool prints (``-vv``, ``--case_tag``, ...) is
accepted; the timing flags set the sweep's timing.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from typing import Any

from kernelwatch_harness.catalogue import KERNELS, complete_params, family_of
from kernelwatch_harness.family import DeclaredFamily, Flags, Repro, Unmapped

__all__ = ["Repro", "UnmappedLine", "line_specs", "read_testlist", "repro_command"]

# The tool's routine name -> kernelwatch's kernel.
KERNEL_OF = {k.routine: name for name, k in KERNELS.items() if k.routine}
# Flags that change only what the tool prints or checks, not what is timed.
_QUIET_FLAGS = {"-v", "-vv", "-vvv", "--verbose", "--refcheck", "--allow_output_mismatch",
                "--generate_repro_command", "--output_path", "--case_tag", "--random_seed"}
_TIMING_FLAGS = {"--num_iters", "--dry_run_iters", "--use_cupti", "--use_cuda_events"}


class UnmappedLine(ValueError):
    """A testlist line that cannot be read as the same experiment, with the reason."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"testlist line {line}: {message}")
        self.line = line


def repro_command(kernel: str, params: dict[str, Any], backend: str) -> Repro:
    """The flashinfer_benchmark.py arguments measuring the same experiment as the point, or
    why none do."""
    spec = KERNELS[kernel]
    if backend not in spec.flashinfer_backends:
        return Repro(None, f"backend {backend} is not FlashInfer's")
    return family_of(kernel).repro(kernel, complete_params(kernel, params, backend), backend)


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


def _timing(flags: Flags) -> dict[str, Any]:
    timing: dict[str, Any] = {}
    if "--use_cupti" in flags:  # FlashInfer's CUPTI timer flushes L2 before each call
        timing.update(method="cupti", cold_l2_method="flush")
    if "--use_cuda_events" in flags:
        timing["method"] = "cuda_event"
    if "--num_iters" in flags:
        timing["iterations"] = max(30, int(flags.one("--num_iters")))
    if "--dry_run_iters" in flags:
        timing["warmup"] = int(flags.one("--dry_run_iters"))
    return timing


def line_specs(text: str, line: int, name: str | None = None) -> list[dict[str, Any]]:
    """The sweep specs measuring what one testlist line measures: one per group of its
    backends that flashinfer_benchmark.py builds the same way (GPU target and FlashInfer
    versions are the caller's)."""
    flags = Flags(_parse_line(shlex.split(text), line))
    try:
        routine = flags.one("--routine")
        kernel = KERNEL_OF.get(routine)
        if kernel is None:
            raise Unmapped(f"--routine {routine}: kernelwatch measures "
                           f"{', '.join(sorted(KERNEL_OF))}")
        family = family_of(kernel)
        if isinstance(family, DeclaredFamily):
            family.from_flags(kernel, flags)  # refuses the routine, whatever its flags
        for flag, why in family.refused_flags.items():
            if flag in flags:
                raise Unmapped(why)
        accepted = {"--routine", *_QUIET_FLAGS, *_TIMING_FLAGS, *family.routine_flags}
        unknown = sorted(set(flags) - accepted)
        if unknown:
            raise Unmapped(f"{unknown[0]} cannot be mapped to a kernelwatch parameter")
        groups = family.from_flags(kernel, flags)
        timing = _timing(flags)
    except Unmapped as e:
        raise UnmappedLine(line, str(e)) from None
    specs = []
    for backends, params in groups:
        spec: dict[str, Any] = {
            "name": name or f"testlist line {line}",
            "kernel": kernel,
            "backends": backends,
            "params": {k: [v] for k, v in params.items()},
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
