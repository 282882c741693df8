"""How long a FlashInfer call's JIT modules take to build one after another (as the call
builds them) and side by side, each way from an empty workspace, with each module's slowest
compile (its ninja log): what the release's sampler run waits for on a node with empty
caches, and whether building its modules side by side would shorten that.

FlashInfer 0.7's top_k_top_p_sampling_from_logits with top_k_first (the release suite's
sampler) runs the radix top_k, whose ``topk`` module is built inside the first call, and then
samples with the ``sampling`` module, built next. Measured here (2 CPUs, FlashInfer 0.7.4,
sm_90a, MAX_JOBS 2): in turn 724 s (topk 651 s, of which its cub_topk.cu alone 650 s;
sampling 72 s); side by side 788 s, the sampling compiles taking CPU from cub_topk.cu, the
one long compile both ways wait for. So the harness lets the call build them in turn
(docs/results/h100-2026-12.md).

Builds are CPU work: no GPU is needed, only nvcc and the FlashInfer release (the modules are
compiled, not loaded). Run by a python that imports the release (the version env's), from
the repository root:

    python bench/jit_side_by_side.py [--modules topk,sampling] [--jobs 2] [--arch 9.0a]

``--jobs`` is ninja's parallel jobs per build (the worker's MAX_JOBS share); ``--arch`` the
architecture list to build for (FLASHINFER_CUDA_ARCH_LIST; a GPU node uses its own). On a
machine whose CUDA toolkit lacks cuRAND's headers or the CUDA libraries to link against,
point CPATH and LIBRARY_PATH at them (the pip packages nvidia-curand and
nvidia-cuda-runtime have them). Prints one line per way and module, and the difference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

GENERATORS = {"topk": ("flashinfer.jit.topk", "gen_topk_module"),
              "sampling": ("flashinfer.jit.sampling", "gen_sampling_module")}

# run in a fresh process per way: FlashInfer reads its workspace when imported. Compiled, not
# loaded: loading needs a GPU, and takes a fraction of a second where there is one.
CHILD = """
import importlib, json, sys, time
from concurrent.futures import ThreadPoolExecutor
way, names = sys.argv[1], sys.argv[2].split(",")
specs = [getattr(importlib.import_module(GENERATORS[n][0]), GENERATORS[n][1])() for n in names]
out = {}
t0 = time.perf_counter()
if way == "side_by_side":
    with ThreadPoolExecutor(len(specs)) as pool:  # each build runs its own ninja
        list(pool.map(lambda spec: spec.build(), specs))
else:
    for name, spec in zip(names, specs):
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
           "FLASHINFER_CUDA_ARCH_LIST": arch}
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
          f"{totals['in_turn']:.0f} s (negative: it costs)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
