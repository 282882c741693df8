"""NVML readings around each point (clocks, temperature, power, throttle reasons) and the
environment fingerprint of a run. NVML (``pynvml`` from nvidia-ml-py, a FlashInfer
dependency) is optional: without it the readings are absent, never an error."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any

import torch

from kernelwatch_harness import backend_packages

# Throttle ("clocks event") reason bits that mean the GPU ran slower than it could. Idle,
# application-clock settings, sync boost and display settings are not throttling.
THROTTLE_BITS = {
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
}
OTHER_BITS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x10: "sync_boost",
    0x100: "display_clock_setting",
}


def reason_names(mask: int) -> list[str]:
    return [name for bit, name in {**OTHER_BITS, **THROTTLE_BITS}.items() if mask & bit]


def is_throttled(*masks: int | None) -> bool:
    return any(m is not None and m & sum(THROTTLE_BITS) for m in masks)


class Nvml:
    """NVML handle for the GPU torch uses (found by UUID, so CUDA_VISIBLE_DEVICES holds)."""

    def __init__(self, torch_index: int = 0) -> None:
        self.nv: Any = None
        self.handle: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nv = pynvml
            uuid = str(torch.cuda.get_device_properties(torch_index).uuid)
            try:
                self.handle = pynvml.nvmlDeviceGetHandleByUUID(
                    uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
                )
            except pynvml.NVMLError:
                self.handle = pynvml.nvmlDeviceGetHandleByIndex(torch_index)
        except Exception:  # no NVML library, no driver, or an old pynvml: no readings
            self.nv = None

    def _get(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self.nv, name)(self.handle, *args)
        except Exception:
            return None

    def snapshot(self) -> dict[str, Any] | None:
        if self.nv is None:
            return None
        nv = self.nv
        reasons = self._get("nvmlDeviceGetCurrentClocksEventReasons")
        if reasons is None:
            reasons = self._get("nvmlDeviceGetCurrentClocksThrottleReasons")
        power = self._get("nvmlDeviceGetPowerUsage")
        return {
            "sm_clock_mhz": self._get("nvmlDeviceGetClockInfo", nv.NVML_CLOCK_SM),
            "mem_clock_mhz": self._get("nvmlDeviceGetClockInfo", nv.NVML_CLOCK_MEM),
            "temperature_c": self._get("nvmlDeviceGetTemperature", nv.NVML_TEMPERATURE_GPU),
            "power_w": power / 1000.0 if power is not None else None,
            "throttle_reasons": reasons,
            "throttle_names": reason_names(int(reasons)) if reasons is not None else None,
        }

    def static(self) -> dict[str, Any]:
        if self.nv is None:
            return {}
        nv = self.nv
        driver = None
        try:
            driver = nv.nvmlSystemGetDriverVersion()
            driver = driver.decode() if isinstance(driver, bytes) else driver
        except Exception:
            pass
        limit = self._get("nvmlDeviceGetPowerManagementLimit")
        ecc = self._get("nvmlDeviceGetEccMode")
        mig = self._get("nvmlDeviceGetMigMode")
        return {
            "driver": driver,
            "power_limit_w": limit / 1000.0 if limit is not None else None,
            "max_sm_clock_mhz": self._get("nvmlDeviceGetMaxClockInfo", nv.NVML_CLOCK_SM),
            "max_mem_clock_mhz": self._get("nvmlDeviceGetMaxClockInfo", nv.NVML_CLOCK_MEM),
            "ecc_mode": ecc[0] if isinstance(ecc, list | tuple) else ecc,
            "mig_mode": mig[0] if isinstance(mig, list | tuple) else mig,
            "clocks": self.snapshot(),
        }


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: str, nvml: Nvml | None) -> dict[str, Any]:
    env: dict[str, Any] = {
        "device": device,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "flashinfer": package_version("flashinfer-python"),
        "flashinfer_cubin": package_version("flashinfer-cubin"),
        "flashinfer_jit_cache": package_version("flashinfer-jit-cache"),
        # which optional backends' packages (and CUPTI's) the env has: GDN's FlashInfer
        # points, for one, run only with the CuTe DSL
        "backend_packages": backend_packages.installed(),
        "flashinfer_workspace": os.environ.get("FLASHINFER_WORKSPACE_BASE"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(
            {
                "gpu_name": props.name,
                "sm_count": props.multi_processor_count,
                "capability": f"{props.major}.{props.minor}",
                "memory_bytes": props.total_memory,
                "l2_cache_bytes": getattr(props, "L2_cache_size", None),
                "gpu_uuid": str(getattr(props, "uuid", "")),
            }
        )
        if nvml is not None:
            env.update(nvml.static())
    else:
        env.update(
            {
                "cpu": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
            }
        )
    return env
