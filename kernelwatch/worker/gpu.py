"""GPU discovery for the worker launcher, through NVML: the launcher must not initialise CUDA
in a process it later forks, and NVML tells name, compute capability and memory without it."""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from kernelwatch.core import gpus


@dataclass
class GpuInfo:
    index: int
    name: str
    capability: tuple[int, int]
    memory_bytes: int
    uuid: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def arch(self) -> str | None:
        return gpus.arch_for_capability(*self.capability)

    @property
    def sku(self) -> str | None:
        sku = gpus.sku_for_name(self.name)
        return sku.tag if sku else None


def detect_gpus() -> list[GpuInfo]:
    """Every NVIDIA GPU NVML sees (empty when there is no driver), honouring
    CUDA_VISIBLE_DEVICES when it lists plain indices."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            name = name.decode() if isinstance(name, bytes) else name
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h).total
            uuid = pynvml.nvmlDeviceGetUUID(h)
            uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
            out.append(GpuInfo(i, name, (int(major), int(minor)), int(mem), uuid))
    finally:
        pynvml.nvmlShutdown()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and all(p.strip().isdigit() for p in visible.split(",") if p.strip()):
        keep = [int(p) for p in visible.split(",") if p.strip()]
        out = [g for g in out if g.index in keep]
    return out


def operator_tags(raw: str) -> list[str]:
    return [t.strip().lower() for t in raw.split(",") if t.strip()]


def tags_for(gpu: GpuInfo | None, extra: str = "") -> list[str]:
    """Queue tags a worker consumes: architecture and SKU for a GPU (``cpu`` without one),
    plus the operator's KERNELWATCH_WORKER_TAGS."""
    tags = ["cpu"] if gpu is None else [t for t in (gpu.arch, gpu.sku) if t]
    for t in operator_tags(extra):
        if t not in tags:
            tags.append(t)
    return tags


def node_name(gpu: GpuInfo | None, override: str = "") -> str:
    host = override or socket.gethostname()
    return f"{host}:cpu" if gpu is None else f"{host}:gpu{gpu.index}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def fingerprint(gpu: GpuInfo) -> dict[str, Any]:
    """What identifies this GPU and its state for a node record: name, SKU and architecture
    tags, capability, memory, UUID, and from NVML (when it answers) driver, power limit, max
    clocks, ECC and MIG mode and PCI bus id. Never initialises CUDA."""
    out: dict[str, Any] = {
        "index": gpu.index,
        "name": gpu.name,
        "uuid": gpu.uuid,
        "sku": gpu.sku,
        "arch": gpu.arch,
        "capability": f"{gpu.capability[0]}.{gpu.capability[1]}",
        "memory_bytes": gpu.memory_bytes,
    }
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return out
    try:
        h = (
            pynvml.nvmlDeviceGetHandleByUUID(gpu.uuid)
            if gpu.uuid
            else pynvml.nvmlDeviceGetHandleByIndex(gpu.index)
        )
        probes = {
            "driver": lambda: _text(pynvml.nvmlSystemGetDriverVersion()),
            "power_limit_w": lambda: pynvml.nvmlDeviceGetPowerManagementLimit(h) / 1000.0,
            "max_sm_clock_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM),
            "max_mem_clock_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM),
            "ecc_mode": lambda: pynvml.nvmlDeviceGetEccMode(h)[0],
            "mig_mode": lambda: pynvml.nvmlDeviceGetMigMode(h)[0],
            "pci_bus_id": lambda: _text(pynvml.nvmlDeviceGetPciInfo(h).busId),
        }
        for key, probe in probes.items():
            # A probe this GPU or driver does not support leaves its key out.
            with contextlib.suppress(Exception):
                out[key] = probe()
    except Exception:
        pass
    finally:
        pynvml.nvmlShutdown()
    return out
