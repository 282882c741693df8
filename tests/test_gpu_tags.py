"""Routing tags from what NVML reports (device name, compute capability), operator tags, node
names, and the fingerprint of a GPU without NVML."""

from __future__ import annotations

import pytest

from kernelwatch.worker.gpu import GpuInfo, fingerprint, node_name, tags_for

GIB = 1 << 30


@pytest.mark.parametrize(
    ("name", "capability", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", (9, 0), ["hopper", "h100"]),
        ("NVIDIA H100 PCIe", (9, 0), ["hopper", "h100-pcie"]),
        ("NVIDIA H200", (9, 0), ["hopper", "h200"]),
        ("NVIDIA GH200 480GB", (9, 0), ["hopper", "gh200"]),
        ("NVIDIA A100-SXM4-80GB", (8, 0), ["ampere", "a100"]),
        ("NVIDIA A100-SXM4-40GB", (8, 0), ["ampere", "a100-40gb"]),
        ("NVIDIA A10G", (8, 6), ["ampere", "a10g"]),
        ("NVIDIA A10", (8, 6), ["ampere", "a10"]),
        ("NVIDIA L40S", (8, 9), ["ada", "l40s"]),
        ("NVIDIA L4", (8, 9), ["ada", "l4"]),
        ("NVIDIA GeForce RTX 4090", (8, 9), ["ada", "rtx4090"]),
        ("NVIDIA B200", (10, 0), ["blackwell", "b200"]),
        # A GPU the SKU table does not know still routes by architecture.
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", (12, 0), ["blackwell"]),
        ("NVIDIA Jetson AGX Orin", (8, 7), ["ampere"]),
        ("Tesla V100-SXM2-16GB", (7, 0), []),
    ],
)
def test_tags_from_name_and_capability(name: str, capability: tuple[int, int],
                                       expected: list[str]) -> None:
    assert tags_for(GpuInfo(0, name, capability, 80 * GIB)) == expected


def test_operator_tags_are_added_once_lowercased() -> None:
    gpu = GpuInfo(1, "NVIDIA H200", (9, 0), 141 * GIB)
    assert tags_for(gpu, " Fleet-A, hopper ,,h200,nightly") == ["hopper", "h200", "fleet-a",
                                                               "nightly"]
    assert tags_for(None, "nightly") == ["cpu", "nightly"]


def test_node_names_are_per_gpu() -> None:
    gpu = GpuInfo(3, "NVIDIA H100 80GB HBM3", (9, 0), 80 * GIB)
    assert node_name(gpu, "box") == "box:gpu3"
    assert node_name(None, "box") == "box:cpu"


def test_fingerprint_without_nvml_has_identity_fields() -> None:
    gpu = GpuInfo(0, "NVIDIA H200", (9, 0), 141 * GIB, uuid="GPU-123")
    fp = fingerprint(gpu)  # no driver here: NVML calls fail quietly
    assert fp["sku"] == "h200" and fp["arch"] == "hopper" and fp["capability"] == "9.0"
    assert fp["memory_bytes"] == 141 * GIB and fp["uuid"] == "GPU-123"
