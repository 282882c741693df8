"""Copy-bandwidth calibration a worker measures at start and stores on its node
(``Node.copy_bandwidth_tbps``): the memory-bandwidth ceiling actually reachable on this GPU,
which is what a memory-bound kernel's TB/s should be compared with (the datasheet peak is not
reachable; on an H200 a device-to-device copy moves about 4.3 of its 4.8 TB/s).

Bytes counted: read + written (2 x buffer size per copy), as FlashInfer counts them.
Run it in the worker process that is pinned to its GPU (``CUDA_VISIBLE_DEVICES``), never in a
parent that forks afterwards: it initialises CUDA.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

BUFFER_BYTES = 1 << 30
"""1 GiB source and destination: far larger than any L2 (50-60 MB on Hopper), small enough
for any node with room for the sweeps themselves."""


@dataclass
class CopyBandwidth:
    tbps: float
    buffer_bytes: int
    samples_ms: list[float]
    device: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "copy_bandwidth_tbps": self.tbps,
            "buffer_bytes": self.buffer_bytes,
            "samples_ms": self.samples_ms,
            "device": self.device,
        }


def measure_copy_bandwidth(
    buffer_bytes: int = BUFFER_BYTES, iterations: int = 20, warmup: int = 3
) -> CopyBandwidth | None:
    """Median device-to-device copy bandwidth in TB/s (1e12 B/s), or None without CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info()
    size = min(buffer_bytes, max(1 << 20, free // 4))
    src = torch.empty(size, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    for _ in range(warmup):
        dst.copy_(src)
    events = [
        (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
        for _ in range(iterations)
    ]
    torch.cuda.synchronize()
    for start, end in events:
        start.record()
        dst.copy_(src)
        end.record()
    torch.cuda.synchronize()
    samples = [s.elapsed_time(e) for s, e in events]
    median_s = statistics.median(samples) / 1000.0
    name = torch.cuda.get_device_name()
    del src, dst
    torch.cuda.empty_cache()
    return CopyBandwidth(2 * size / median_s / 1e12, size, samples, name)


def calibrate_node_bandwidth() -> float | None:
    """What the worker stores on ``Node.copy_bandwidth_tbps`` (None on a CPU node)."""
    result = measure_copy_bandwidth()
    return round(result.tbps, 4) if result else None


if __name__ == "__main__":
    import json

    res = measure_copy_bandwidth()
    print(json.dumps(res.as_dict() if res else None))
