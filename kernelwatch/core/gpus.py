"""GPU SKUs: how a device name maps to tags, and each SKU's spec-sheet peaks.

Peaks are vendor spec-sheet figures (dense, no sparsity): memory bandwidth in TB/s (1e12 B/s)
and 16-bit tensor-core TFLOP/s. Workers also measure copy bandwidth at start (stored on the
node), because a spec sheet is an upper bound no kernel reaches.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuSku:
    tag: str
    arch: str
    memory_gib: float
    peak_tbps: float
    peak_tflops_16bit: float
    l2_mib: float
    # Lower-case substrings of torch.cuda.get_device_name() that identify this SKU.
    name_patterns: tuple[str, ...]


SKUS: tuple[GpuSku, ...] = (
    GpuSku("gh200", "hopper", 96, 4.0, 989.4, 50, ("gh200",)),  # before h200: "gh200" holds it
    GpuSku("h200", "hopper", 141, 4.8, 989.4, 50, ("h200",)),
    GpuSku("h100-pcie", "hopper", 80, 2.0, 756.0, 50, ("h100 pcie",)),
    GpuSku("h100", "hopper", 80, 3.35, 989.4, 50, ("h100",)),
    GpuSku("a100-40gb", "ampere", 40, 1.555, 312.0, 40, ("a100-sxm4-40gb", "a100-pcie-40gb")),
    GpuSku("a100", "ampere", 80, 2.039, 312.0, 40, ("a100",)),
    GpuSku("a10g", "ampere", 24, 0.6, 125.0, 6, ("a10g",)),
    GpuSku("a10", "ampere", 24, 0.6, 125.0, 6, ("a10",)),
    GpuSku("l40s", "ada", 48, 0.864, 362.0, 96, ("l40s",)),
    GpuSku("l4", "ada", 24, 0.3, 121.0, 48, ("l4",)),
    GpuSku("rtx4090", "ada", 24, 1.008, 165.2, 72, ("4090",)),
    GpuSku("b200", "blackwell", 180, 8.0, 2250.0, 126, ("b200",)),
)

ARCH_TAGS = ("ampere", "ada", "hopper", "blackwell")
SKU_TAGS = tuple(s.tag for s in SKUS)
BUILTIN_TAGS = ("cpu", *ARCH_TAGS, *SKU_TAGS)
CPU_MEMORY_GIB = 8.0


def arch_for_capability(major: int, minor: int) -> str | None:
    """sm80/86/87 -> ampere, sm89 -> ada, sm90 -> hopper, sm100/sm120 -> blackwell."""
    if major == 8:
        return "ada" if minor == 9 else "ampere"
    if major == 9:
        return "hopper"
    if major in (10, 11, 12):
        return "blackwell"
    return None


def sku_for_name(device_name: str) -> GpuSku | None:
    name = device_name.lower()
    for sku in SKUS:  # ordered most specific first
        if any(p in name for p in sku.name_patterns):
            return sku
    return None


def sku_by_tag(tag: str | None) -> GpuSku | None:
    return next((s for s in SKUS if s.tag == tag), None)


def largest_memory_gib(target: str) -> float:
    """Memory of the largest device a target tag can route to (for spec validation)."""
    if target == "cpu":
        return CPU_MEMORY_GIB
    sku = sku_by_tag(target)
    if sku:
        return sku.memory_gib
    in_arch = [s.memory_gib for s in SKUS if s.arch == target]
    if in_arch:
        return max(in_arch)
    return max(s.memory_gib for s in SKUS)  # an operator tag: any GPU may carry it
