"""How long a FlashInfer call's JIT modules take to build one after another (as the call
builds them) and side by side (kernelwatch_harness.jit_modules), each way from an empty
workspace, with each module's slowest compile (its ninja log): what the release's sampler
run waits for on a node with empty caches.

Builds are CPU work: no GPU is needed, only nvcc and the FlashInfer release. Run by a
python that imports the release (the version env's), from the repository root:

    python bench/jit_side_by_side.py [--modules topk,sampling] [--jobs 2] [--arch 9.0a]

``--jobs`` is ninja's parallel jobs per build (the worker's MAX_JOBS share); ``--arch`` the
architecture list to build for (FLASHINFER_CUDA_ARCH_LIST; a GPU node uses its own).
Prints one line per way and module, and the saving.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATORS = {"topk": ("flashinfer.jit.topk", "gen_topk_module"),
              "sampling": ("flashinfer.jit.sampling", "gen_sampling_module")}

# run in a fresh process per way: FlashInfer reads its workspace when imported
CHILD = """
import json, sys, time
from kernelwatch_harness import jit_modules
way, names = sys.argv[1], sys.argv[2].split(",")
generators = [GENERATORS[n] for n in names]
out = {}
t0 = time.perf_counter()
# compiled, not loaded: loading needs a GPU, and takes a fraction of a second where there is one
if way == "side_by_side":
    jit_modules.build_side_by_side(generators, step="build")
else:
    for name, spec in zip(names, jit_modules.specs(generators)):
        t = time.perf_counter()
        spec.build()
        out[name] = time.perf_counter() - t
out["total"] = time.perf_counter() - t0
print(json.dumps(out))
"""


def slowest_compile(workspace: Path, module: str) -> tuple[str, float] | None:
    """The module's longest ninja step (object or link) in seconds, from its .ninja_log."""
    logs = list(workspace.rglob(f"cached_ops/{module}/.ninja_log"))
    if not logs:
        return None
    steps = []
    for line in logs[0].read_text().splitlines()[1:]:
        start, end, _, target, _ = line.split("\t")
        steps.append((Path(target).name, (int(end) - int(start)) / 1000))
    return max(steps, key=lambda s: s[1]) if steps else None


def build(way: str, names: list[str], jobs: int, arch: str) -> tuple[dict[str, float], Path]:
    workspace = Path(tempfile.mkdtemp(prefix=f"kw-jit-{way}-"))
    env = {**os.environ, "FLASHINFER_WORKSPACE_BASE": str(workspace), "MAX_JOBS": str(jobs),
           "FLASHINFER_CUDA_ARCH_LIST": arch,
           "PYTHONPATH": os.pathsep.join([str(ROOT / "harness"),
                                          os.environ.get("PYTHONPATH", "")])}
    code = f"GENERATORS = {GENERATORS!r}\n" + CHILD
    done = subprocess.run([sys.executable, "-c", code, way, ",".join(names)], env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{way}: the build failed\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), workspace


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modules", default="topk,sampling")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--arch", default="9.0a")
    args = ap.parse_args(argv)
    names = args.modules.split(",")
    unknown = sorted(set(names) - set(GENERATORS))
    if unknown:
        ap.error(f"--modules: {', '.join(unknown)} unknown; known: {', '.join(GENERATORS)}")
    import flashinfer

    print(f"FlashInfer {flashinfer.__version__}, {os.cpu_count()} CPUs, MAX_JOBS {args.jobs} "
          f"per build, arch {args.arch}", flush=True)
    totals = {}
    for way in ("in_turn", "side_by_side"):
        seconds, workspace = build(way, names, args.jobs, args.arch)
        totals[way] = seconds["total"]
        for name in names:
            slow = slowest_compile(workspace, name)
            each = f"{seconds[name]:.0f} s, " if name in seconds else ""
            print(f"{way:<13} {name:<10} {each}slowest step "
                  f"{slow[0] if slow else '?'} {slow[1] if slow else 0:.0f} s", flush=True)
        print(f"{way:<13} total {seconds['total']:.0f} s", flush=True)
    print(f"side by side saves {totals['in_turn'] - totals['side_by_side']:.0f} s of "
          f"{totals['in_turn']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
