"""The quantization family: FlashInfer's block-scaled quantisers (``flashinfer.quantization``),
as flashinfer_benchmark.py's quantization routines of the same names run them.

- ``mxfp8_quantize``: ``[m, k]`` to MXFP8 (one byte an element) with one 8-bit (UE8M0) scale
  per 32 elements;
- ``mxfp4_quantize``: ``[m, k]`` to MXFP4 (two elements a byte), one UE8M0 scale per 32;
- ``nvfp4_quantize``: ``[m, k]`` to NVFP4 (two elements a byte), one FP8 (E4M3) scale per
  ``sf_vec_size`` elements, under a float32 global scale;
- ``nvfp4_batched_quantize``: the same over ``[batch_size, m, k]``.

All four are declared, not measured: flashinfer_benchmark.py runs them on SM100, SM103 and
SM120/121 only (``routine_cc_to_supported_backends``: no backend below 10.0), so every other
node reports them unsupported with the reason, and kernelwatch does not run their FP4/FP8
block-scaled calls yet (a Blackwell node says so).

The quantisers are memory bound. Bytes are the input read once, the quantised output and its
scales written once (and the float32 global scale read, NVFP4), as the tool counts them; the
scales' swizzled layout pads nothing at the shapes the tool checks (``m`` a multiple of 128),
so it is left out. FLOPs are 3 an element: the block's absolute maximum, the division by its
scale, the conversion (the tool's estimate too).
"""

from __future__ import annotations

from typing import Any

from kernelwatch_harness import shared_params as shared
from kernelwatch_harness.family import (
    DTYPE_BYTES,
    DeclaredFamily,
    Kernel,
    Param,
    Work,
    by_name,
    not_run_yet,
)

# routine_cc_to_supported_backends at release-v0.6.18: 10.0, 10.3, 12.0 and 12.1 only.
ARCHS = ("sm100", "sm103", "sm120")
# Each quantiser: FlashInfer's backends (the tool's --backends choices it runs), bytes an
# element of the output, and the elements per scale (None: the sf_vec_size parameter's).
QUANTISERS: dict[str, tuple[tuple[str, ...], float, int | None, str]] = {
    "mxfp8_quantize": (("cuda", "cute-dsl"), 1.0, 32,
                       "MXFP8 quantisation, one UE8M0 scale per 32 elements"),
    "mxfp4_quantize": (("cuda", "cute-dsl"), 0.5, 32,
                       "MXFP4 quantisation, one UE8M0 scale per 32 elements"),
    "nvfp4_quantize": (("cuda", "cute-dsl"), 0.5, None,
                       "NVFP4 quantisation, FP8 block scales under a global scale"),
    "nvfp4_batched_quantize": (("cuda",), 0.5, None,
                               "NVFP4 quantisation of a batch of matrices"),
}
NVFP4 = ("nvfp4_quantize", "nvfp4_batched_quantize")
FLOPS_PER_ELEMENT = 3
GLOBAL_SCALE_BYTES = 4  # NVFP4's float32 global scale

_PARAMS = {"mxfp8_quantize": ("m", "k", "dtype"),
           "mxfp4_quantize": ("m", "k", "sf_layout", "dtype"),
           "nvfp4_quantize": ("m", "k", "sf_layout", "sf_vec_size", "dtype"),
           "nvfp4_batched_quantize": ("batch_size", "m", "k", "sf_vec_size", "dtype")}


class QuantizationFamily(DeclaredFamily):
    name = "quantization"
    # Shared names are declared once, in shared_params (m, k: as gemm takes them).
    params = by_name(
        shared.batch_size(doc="nvfp4_batched_quantize: matrices quantised in one call"),
        shared.m(doc="rows of the input (tokens)"),
        shared.k(doc="columns of the input, quantised in blocks along it"),
        Param("sf_layout", str, "128x4", choices=("128x4", "8x4", "linear"),
              doc="the scales' layout (the tool's --sf_layout)"),
        Param("sf_vec_size", int, 16, choices=(16, 32),
              doc="NVFP4: elements per FP8 scale (the tool's --sf_vec_size)"),
        shared.dtype(doc="the input (the tool's --input_dtype)"),
    )
    kernels = {
        name: Kernel(name, "quantization", _PARAMS[name], backends, (), description,
                     routine=name, archs=ARCHS, declared=True)
        for name, (backends, _, _, description) in QUANTISERS.items()
    }
    axes = ("m", "k", "batch_size")
    shape = ("batch_size", "m", "k")

    def why_not_run(self, kernel: str) -> str:
        return not_run_yet(kernel, "its block-scaled output", ARCHS)

    def block(self, kernel: str, point: dict[str, Any]) -> int:
        fixed = QUANTISERS[kernel][2]
        return fixed if fixed is not None else int(point["sf_vec_size"])

    def check_point(self, kernel: str, point: dict[str, Any]) -> None:
        block, k = self.block(kernel, point), int(point["k"])
        if k % block:
            raise ValueError(f"k={k}: {kernel} quantises blocks of {block} elements; k must be "
                             f"a multiple of {block}")

    def elements(self, kernel: str, point: dict[str, Any]) -> int:
        batch = int(point["batch_size"]) if kernel == "nvfp4_batched_quantize" else 1
        return batch * int(point["m"]) * int(point["k"])

    def work(self, kernel: str, point: dict[str, Any]) -> Work:
        n = self.elements(kernel, point)
        out = QUANTISERS[kernel][1]
        scales = n // self.block(kernel, point)  # one byte each (UE8M0 or E4M3)
        read = n * DTYPE_BYTES[str(point["dtype"])]
        if kernel in NVFP4:
            read += GLOBAL_SCALE_BYTES
        return Work(flops=float(n * FLOPS_PER_ELEMENT), bytes=float(read + n * out + scales),
                    extra={"scales": scales})

    def memory_bytes(self, kernel: str, point: dict[str, Any]) -> float:
        # the input, the output and its scales, and a float32 dequantised reference
        return self.work(kernel, point).bytes + self.elements(kernel, point) * 4


FAMILY = QuantizationFamily()
