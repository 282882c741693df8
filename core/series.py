"""Series identity: what makes two points comparable across runs and releases.

kernel + completed parameters + backend + GPU SKU + the measurement conditions that change the
number (cold or warm L2). The FlashInfer version is deliberately *not* part of it: a series is
what one follows from release to release.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def series_key(
    kernel: str, params: dict[str, Any], backend: str, gpu_sku: str | None, cold_l2: bool = True
) -> str:
    identity = {
        "kernel": kernel,
        "params": params,
        "backend": backend,
        "gpu_sku": gpu_sku or "cpu",
        "cold_l2": cold_l2,
    }
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]
