"""Which Python runs the harness for a FlashInfer version (one virtualenv per version).

Interface used by the worker (``worker.tasks``): ``harness_python`` and ``ready_versions``.
The GPU-worker work fills in building environments from a wheelhouse or the package index.
"""

from __future__ import annotations

import sys


def harness_python(version: str | None, needs_flashinfer: bool) -> str:
    """The interpreter to run ``python -m worker.harness`` with. A run whose backends are all
    torch ones needs no FlashInfer, whatever version label it carries: the worker's own."""
    if version is None or not needs_flashinfer:
        return sys.executable
    raise RuntimeError(f"FlashInfer {version}: version environments are not built yet")


def ready_versions() -> list[str]:
    """FlashInfer versions whose environment is built on this node."""
    return []
