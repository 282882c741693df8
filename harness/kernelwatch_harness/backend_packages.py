"""The packages that one FlashInfer backend, or FlashInfer's CUPTI timer, needs besides
FlashInfer itself: the worker installs them into a version's environment where it can
(kernelwatch.worker.envs), the harness records which it found (a run's environment), and a
backend whose package is missing is refused naming it.

Standard library only: the worker imports this without torch.
"""

from __future__ import annotations

import importlib.metadata

# module name -> distribution. cuDNN: without its frontend FlashInfer falls back to cubins
# built for sm100 only (docs/measurement.md); cuda-tile: the cutile GEMMs; the CuTe DSL:
# GDN's kernels.
BACKEND_DEPS = {"cudnn": "nvidia-cudnn-frontend", "cuda.tile": "cuda-tile",
                "cutlass.cute": "nvidia-cutlass-dsl"}
# FlashInfer's CUPTI timer (the cross-check's flashinfer_benchmark.py --use_cupti)
TIMER_PACKAGES = ("cupti-python",)


def installed() -> dict[str, str]:
    """Each of those packages installed here, with its version."""
    out = {}
    for dist in (*BACKEND_DEPS.values(), *TIMER_PACKAGES):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out
