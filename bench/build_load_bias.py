"""Does compiling on the node's CPUs move the GPU timings measured beside it?

A release's runs are measured only after the last of its FlashInfer builds ends (the
prebuild, docs/regressions.md), so one long build (0.7.4's sampling module: more than 540 s on
an H100) holds every run that is already built. Measuring each run as its own build ends,
while slower builds go on, would cut that wait, but only if a compile beside a measurement
does not change the measurement. This measures it: the release suite's points, through the
harness with each entry's own timing, once with the node idle and once with CPU load
processes running, the order alternating from round to round; per point, the loaded/idle
ratio of medians with the bootstrap CI kernelwatch's comparisons use
(kernelwatch.core.compare.stats.compare_samples) and its verdict at the comparison threshold.

Loads (``--load``):
  jit   FlashInfer compiling its sampling module (the suite's longest build) in throwaway
        workspaces, one nvcc at a time per process: what the prebuild puts on the CPUs
  busy  a copy loop over 256 MiB arrays per process: a core and memory bandwidth kept busy,
        more than a compiler keeps them
``--load-procs`` defaults to the node's CPU count, ``--nice`` to the CPU priority the worker
gives a release's builds (``release_build_niceness``): the load as the worker puts it beside a
measurement. ``--nice 0`` measures compilers at the measurement's own priority.

With kernelwatch installed, from the repository root, the harness and the loads run by the
version env's python (FLASHINFER_WORKSPACE_BASE set to the version's JIT cache; scripts/gpu-check
buildload does all this):
    python bench/build_load_bias.py --python ENVS/V/venv/bin/python
        [--suite kernelwatch/core/release_suite.yaml]
        [--entries release-norm,release-sampling] [--backends auto,torch] [--rounds 2]
        [--load jit|busy] [--load-procs N] [--nice N] [--device cuda|cpu] [--out F]
``--backends`` keeps only those backends of each entry (a backend whose module takes longer to
build than the check may run, left out).
``--device cpu`` runs the torch points of the suite's ``cpu_params`` (the plumbing, no GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kernelwatch.core.compare.stats import DEFAULT_THRESHOLD, compare_samples
from kernelwatch.core.releases import load_suite, suite_specs
from kernelwatch.core.settings import get_settings
from kernelwatch.core.spec import SweepSpec
from kernelwatch.core.stats import repeat_labels
from kernelwatch.worker.runner import HarnessRequest, HarnessRunner

LOADS = {
    "busy": ("import numpy as np\n"
             "a = np.ones(1 << 25)\n"
             "b = np.empty_like(a)\n"
             "while True:\n"
             "    np.copyto(b, a)\n"),
    # each build in a new workspace (a built module would load in seconds and stop loading
    # the CPU) and in a new process (FlashInfer reads its workspace at import)
    "jit": ("import os, subprocess, sys, tempfile\n"
            "BUILD = 'from flashinfer.jit.sampling import gen_sampling_module; "
            "gen_sampling_module().build()'\n"
            "while True:\n"
            "    with tempfile.TemporaryDirectory() as ws:\n"
            "        env = {**os.environ, 'FLASHINFER_WORKSPACE_BASE': ws, 'MAX_JOBS': '1'}\n"
            "        subprocess.run([sys.executable, '-c', BUILD], env=env, check=False)\n"),
}


@contextlib.contextmanager
def cpu_load(kind: str, procs: int, python: str = sys.executable,
             niceness: int = 0) -> Iterator[None]:
    """``procs`` load processes at ``niceness`` for the block's duration, each in its own
    session so that stopping one stops what it started (nvcc under ninja under the build)."""
    # the jit load needs FlashInfer (the version env's python); busy only numpy (this one's)
    interpreter = python if kind == "jit" else sys.executable
    started = [subprocess.Popen([interpreter, "-c", LOADS[kind]], start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(procs)]
    for p in started:  # before the loads start their compilers, which inherit it
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, p.pid, niceness)
    try:
        time.sleep(5.0)  # the loads under way before the first point
        yield
    finally:
        for p in started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


COMPILERS = frozenset({"nvcc", "cicc", "ptxas", "cudafe++", "fatbinary", "nvlink"})


def cpu_jiffies() -> tuple[int, int]:
    """The node's busy and total CPU time so far (/proc/stat), in clock ticks."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # idle and iowait are not busy


def compilers_running() -> int:
    """CUDA compiler processes on the node now: whether a jit load is compiling."""
    count = 0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                count += (d / "comm").read_text().strip() in COMPILERS
    return count


class Pass:
    """What the node's CPUs did during one measuring pass: the busy share and how many
    compilers ran at its end, so that a loaded pass shows that the load was there."""

    def __init__(self) -> None:
        self.busy, self.total = cpu_jiffies()
        self.share = 0.0
        self.compilers = 0

    def end(self) -> Pass:
        busy, total = cpu_jiffies()
        self.share = (busy - self.busy) / max(1, total - self.total)
        self.compilers = compilers_running()
        return self


def measure(spec: SweepSpec, device: str, python: str) -> dict[tuple[int, str], dict[str, Any]]:
    """Every point of the spec through the harness of ``python``, by (point, backend)."""
    points = list(enumerate(spec.backend_points()))
    request = HarnessRequest(kernel=spec.kernel, device=device, backends=list(spec.backends),
                             timing=spec.timing.config(), points=points)
    out: dict[tuple[int, str], dict[str, Any]] = {}
    for m in HarnessRunner(python, request).messages():
        if m["type"] == "point":
            out[(m["point_index"], m["backend"])] = dict(m)
    return out


def rows(idle: dict[tuple[int, str], dict[str, Any]],
         loaded: dict[tuple[int, str], dict[str, Any]], name: str,
         params: dict[int, dict[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """One row per point measured ``ok`` both ways: the loaded/idle ratio and its CI."""
    out = []
    for key, a in sorted(idle.items()):
        b = loaded.get(key)
        if b is None or a["status"] != "ok" or b["status"] != "ok":
            continue
        est = compare_samples(a["samples_us"], b["samples_us"], threshold,
                              baseline_groups=repeat_labels(a["repeat_sizes"],
                                                            len(a["samples_us"])),
                              contender_groups=repeat_labels(b["repeat_sizes"],
                                                             len(b["samples_us"])))
        out.append({"entry": name, "point": key[0], "backend": key[1],
                    "params": params.get(key[0], {}), "timing_method": b.get("timing_method"),
                    "idle_us": est.baseline_median, "loaded_us": est.contender_median,
                    "ratio": est.ratio, "ci_low": est.ci_low, "ci_high": est.ci_high,
                    "verdict": str(est.verdict.value)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default=None, help="the release suite (default: the standard)")
    ap.add_argument("--entries", help="comma-separated entry names, measured in this order "
                    "(default: every entry, in the suite's order)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--load", choices=sorted(LOADS), default="jit")
    ap.add_argument("--load-procs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--nice", type=int, default=get_settings().release_build_niceness,
                    help="the load processes' CPU priority (default: the worker's builds')")
    ap.add_argument("--backends", help="comma-separated backends to keep (default: all)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--python", default=sys.executable,
                    help="the version env's python: runs the harness and the jit load")
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    ap.add_argument("--out", type=Path, help="write the rows as JSON lines")
    args = ap.parse_args(argv)

    suite = load_suite(args.suite)
    if args.entries:
        names = set(args.entries.split(","))
        known = [str(e.get("name")) for e in suite]
        if names - set(known):
            ap.error(f"--entries: {', '.join(sorted(names - set(known)))} not in the suite; "
                     f"its entries: {', '.join(known)}")
        # in the order named: what matters most first, should a time limit stop the rest
        order = args.entries.split(",")
        suite = sorted((e for e in suite if e.get("name") in names),
                       key=lambda e: order.index(str(e.get("name"))))
    tag = "cpu" if args.device == "cpu" else "gpu"
    # the version label is the spec's, not the harness's: it measures what is installed
    specs = suite_specs(tag, ["0.0.0"], suite, crosscheck=False)
    if args.backends:
        keep = args.backends.split(",")
        specs = [SweepSpec(**{**s.model_dump(), "backends": [b for b in s.backends
                                                              if b in keep]})
                 for s in specs if any(b in keep for b in s.backends)]
        if not specs:
            ap.error(f"--backends: no entry has any of {args.backends}")
    results = []
    passes: dict[str, list[Pass]] = {"idle": [], "loaded": []}
    started = time.monotonic()
    for spec in specs:
        name = spec.name
        # the entry's own parameters of each point (the rest are the kernel's defaults)
        params = {i: {k: v for k, v in next(iter(p.values())).items() if k in spec.params}
                  for i, p in enumerate(spec.backend_points())}
        idle: dict[tuple[int, str], dict[str, Any]] = {}
        loaded: dict[tuple[int, str], dict[str, Any]] = {}
        for r in range(args.rounds):
            # alternate which goes first, so neither always follows the other's GPU state
            for with_load in ((False, True) if r % 2 == 0 else (True, False)):
                if with_load:
                    with cpu_load(args.load, args.load_procs, args.python, args.nice):
                        cpu = Pass()
                        _pool(loaded, measure(spec, args.device, args.python))
                        passes["loaded"].append(cpu.end())
                else:
                    cpu = Pass()
                    _pool(idle, measure(spec, args.device, args.python))
                    passes["idle"].append(cpu.end())
        for row in rows(idle, loaded, name, params, args.threshold):
            results.append(row)
            print(f"{name:<24} {row['backend']:<10} {row['idle_us']:>10.2f} us "
                  f"{row['loaded_us']:>10.2f} us  x{row['ratio']:.4f} "
                  f"[{row['ci_low']:.4f}, {row['ci_high']:.4f}] {row['verdict']}"
                  f"  {json.dumps(row['params'], sort_keys=True)}")
    moved = [r for r in results if r["verdict"] != "unchanged"]
    print(f"{len(results)} point(s), load {args.load} x{args.load_procs} at nice {args.nice}, "
          f"{args.rounds} "
          f"round(s): {len(moved)} moved beyond {args.threshold:.0%} with the CI clear of 1, "
          f"in {time.monotonic() - started:.0f} s")
    for kind, done in passes.items():
        if done:
            print(f"CPU busy during the {kind} passes: "
                  f"{', '.join(f'{p.share:.0%}' for p in done)}; compilers running at their "
                  f"ends: {', '.join(str(p.compilers) for p in done)}")
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in results))
    return 0


def _pool(into: dict[tuple[int, str], dict[str, Any]],
          new: dict[tuple[int, str], dict[str, Any]]) -> None:
    """Each point's samples over the rounds, a round per repeat group."""
    for key, m in new.items():
        kept = into.get(key)
        if kept is None:
            into[key] = {**m, "repeat_sizes": list(m.get("repeat_sizes") or
                                                   [len(m.get("samples_us") or [])])}
            continue
        if kept["status"] == "ok" and m["status"] == "ok":
            kept["samples_us"] = kept["samples_us"] + m["samples_us"]
            kept["repeat_sizes"] = kept["repeat_sizes"] + list(
                m.get("repeat_sizes") or [len(m["samples_us"])])
        else:
            kept["status"] = m["status"] if m["status"] != "ok" else kept["status"]


if __name__ == "__main__":
    sys.exit(main())
