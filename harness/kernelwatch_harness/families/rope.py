"""The RoPE family: rotary positional embeddings applied to q and k (``flashinfer.rope``), as
flashinfer_benchmark.py's rope routines of the same names run them.

- ``apply_rope``: ragged q ``[tokens, num_qo_heads, head_dim]`` and k
  ``[tokens, num_kv_heads, head_dim]`` (``batch_size`` requests of ``seq_len`` tokens, given
  by ``indptr``, each from position 0: ``offsets`` are zero), rotated into new tensors;
- ``apply_rope_pos_ids``: the same with one position per token (``pos_ids``, int32);
- ``apply_llama31_rope`` / ``apply_llama31_rope_pos_ids``: the same with Llama 3.1's
  frequency scaling (``low_freq_factor``, ``high_freq_factor``, ``old_context_len``);
- ``apply_rope_with_cos_sin_cache``: q ``[tokens, num_qo_heads * head_dim]``, k likewise,
  turned by a precomputed float32 cos/sin table ``[seq_len, rotary_dim]`` (cos then sin) at
  int64 ``positions``; ``interleave`` is the library's ``is_neox=False``. The table holds
  the angles at theta 1e4, as a model builds it (the tool fills it with random numbers: the
  kernel's work is the same).

The first ``rotary_dim`` dimensions of each head rotate (0: all of them), pairing a dimension
with the one half of them further (FlashInfer's default) or with its neighbour when
``interleave``, by ``position * theta^(-2i / rotary_dim) / rope_scale`` (Llama 3.1 blends
the scaled and unscaled frequency). Parameters and their defaults are the tool's: ``float16``
inputs, ``rope_scale`` 1 and ``rope_theta`` 1e4 for every routine (the library's own
Llama 3.1 defaults, 8 and 5e5, are not the tool's), positions 0 to ``seq_len - 1``.

Backends: FlashInfer's ``auto`` (the library's call, the tool's ``cuda``) and ``torch``
(what a PyTorch user writes: float32 angles, cos and sin in the input dtype, ``x * cos +
rotate_half(x) * sin``; the cached form indexes the table). The reference is float32 and
shares the attention family's RoPE (``families.attention.reference``); flashinfer_benchmark.py
checks none of these routines.

RoPE is memory bound: bytes are one read and one write of q and k, plus ``pos_ids`` (4 bytes a
token) or ``positions`` (8) and the cos/sin table, as the tool counts them (``indptr`` and
``offsets``, a few bytes a request, are not counted by it either), except that the
table is counted as the float32 it must be (the tool builds it in the input dtype, which every
FlashInfer release refuses). The tool reports 0 FLOPs; kernelwatch counts the rotation's
arithmetic, 3 per rotated element (two products and a sum), so a point has a place on the
roofline.

The FP8 routines (``mla_rope_quantize_fp8``, ``rope_quantize_fp8``,
``rope_quantize_fp8_append_paged_kv_cache``, SM89 and newer) rotate as the cached form does
(the same float32 table, ``interleave`` as ``is_neox=False``), then quantise to FP8: see
``rope_fp8`` for their parameters and counts. Their torch backend rotates in float32 and
casts (``.to(torch.float8_e4m3fn)``), writing the append's cache by index; their reference is
the float32 rotation, compared with the dequantised outputs (and, for the append, the cache
slots each token was written to) to half an FP8 step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kernelwatch_harness import shared_params as shared
from kernelwatch_harness.families import rope_fp8
from kernelwatch_harness.families.rope_fp8 import APPEND, FP8, FP8_ARCHS, MLA, QUANT
from kernelwatch_harness.family import (
    AMPERE_HOPPER,
    DTYPE_BYTES,
    Family,
    Flags,
    Kernel,
    LineGroup,
    Operands,
    Param,
    Repro,
    Unmapped,
    Work,
    by_name,
)

if TYPE_CHECKING:
    import torch

    from kernelwatch_harness.prepared import Prepared

FP8_OPS = "kernelwatch_harness.families.rope_fp8_ops"

# Where FlashInfer's rope kernels run: flashinfer_benchmark.py lists the plain ones on every
# architecture from SM75, the FP8 ones from SM89 (rope_fp8.FP8_ARCHS).
ARCHS = (*AMPERE_HOPPER, "sm100", "sm103", "sm120")

INDPTR = ("apply_rope", "apply_llama31_rope")  # requests by indptr and offsets
POS_IDS = ("apply_rope_pos_ids", "apply_llama31_rope_pos_ids")  # a position per token
LLAMA31 = ("apply_llama31_rope", "apply_llama31_rope_pos_ids")
CACHED = "apply_rope_with_cos_sin_cache"
# The flags only the FP8 routines read.
FP8_FLAGS = ("--no_rope_dim", "--quant_dtype", "--page_size", "--kv_layout")

CACHE_NOTE = ("flashinfer_benchmark.py builds this routine's cos/sin table in the input dtype, "
              "which FlashInfer refuses (\"cos_sin_cache should be float32\"); kernelwatch's "
              "table is float32")



_SHAPE = ("batch_size", "seq_len", "num_qo_heads", "num_kv_heads", "head_dim", "rotary_dim",
          "interleave")
_ROPE = (*_SHAPE, "rope_scale", "rope_theta", "dtype")
_LLAMA = (*_SHAPE, "rope_scale", "rope_theta", "low_freq_factor", "high_freq_factor",
          "old_context_len", "dtype")
_CACHE = (*_SHAPE, "dtype")


def _kernel(name: str, params: tuple[str, ...], description: str,
            archs: tuple[str, ...] = ARCHS) -> Kernel:
    return Kernel(name, "rope", params, ("auto",), ("torch",), description, routine=name,
                  archs=archs)


class RopeFamily(Family):
    name = "rope"
    ops = "kernelwatch_harness.families.rope_ops"
    # Shared names are declared once, in shared_params, with rope's doc.
    params = by_name(
        shared.batch_size(doc="requests, each of seq_len tokens"),
        shared.seq_len(doc="tokens per request, at positions 0 to seq_len - 1"),
        shared.num_qo_heads(doc="query heads"),
        shared.num_kv_heads(doc="key heads"),
        shared.head_dim(doc="head dimension of q and k"),
        Param("rotary_dim", int, 0, min=0, max=256,
              doc="leading dimensions of each head that rotate, a multiple of 16 below "
                  "head_dim; 0: all of them (the tool's default)"),
        Param("interleave", bool, False, choices=(False, True),
              doc="pair neighbouring dimensions (GPT-J) instead of the two halves"),
        Param("rope_scale", float, 1.0, min=0.001, max=1000.0,
              doc="positions are divided by it (Llama 3.1: its factor for low frequencies)"),
        Param("rope_theta", float, 10000.0, min=1.0, max=1e9,
              doc="base of the rotary frequencies"),
        Param("low_freq_factor", float, 1.0, min=0.001, max=1000.0,
              doc="Llama 3.1: wavelengths beyond old_context_len / it are fully scaled"),
        Param("high_freq_factor", float, 4.0, min=0.001, max=1000.0,
              doc="Llama 3.1: wavelengths below old_context_len / it are not scaled"),
        Param("old_context_len", int, 8192, min=1, max=1 << 24,
              doc="Llama 3.1: the context length the model was trained at"),
        shared.dtype(doc="q, k and the outputs (the FP8 kernels: q, k and v)"),
        Param("rope_dim", int, 128, min=32, max=512,
              doc="FP8 kernels: dimensions of each head that rotate (q_rope, k_rope), a "
                  "multiple of 32"),
        Param("no_rope_dim", int, 0, min=0, max=512,
              doc="FP8 kernels: dimensions of each head that only pass through (q_nope, "
                  "k_nope), a multiple of 16; 0: none"),
        shared.quant_dtype(
            doc="FP8 kernels: the format q and k (and the cache) are quantised to"),
        # The append kernel's paged cache, as the attention family's.
        shared.page_size(doc="tokens per page of the paged KV cache"),
        shared.kv_layout(
            doc="K/V memory layout: tokens then heads (NHD) or heads then tokens (HND)"),
    )
    kernels = {
        k.name: k for k in (
            _kernel("apply_rope", _ROPE, "RoPE on ragged q and k (indptr, offsets)"),
            _kernel("apply_rope_pos_ids", _ROPE, "RoPE on q and k at per-token positions"),
            _kernel("apply_llama31_rope", _LLAMA,
                    "Llama 3.1 scaled RoPE on ragged q and k (indptr, offsets)"),
            _kernel("apply_llama31_rope_pos_ids", _LLAMA,
                    "Llama 3.1 scaled RoPE on q and k at per-token positions"),
            _kernel(CACHED, _CACHE, "RoPE from a precomputed float32 cos/sin table"),
            _kernel(MLA, rope_fp8.MLA_PARAMS,
                    "RoPE from a float32 cos/sin table, then FP8, MLA's one shared k head",
                    FP8_ARCHS),
            _kernel(QUANT, rope_fp8.PARAMS,
                    "RoPE from a float32 cos/sin table, then FP8", FP8_ARCHS),
            _kernel(APPEND, rope_fp8.APPEND_PARAMS,
                    "RoPE then FP8, k and v appended to a paged FP8 KV cache", FP8_ARCHS),
        )
    }
    # The tool's --input_dtype defaults to float16 (the shared declaration's is bfloat16).
    backend_defaults = {name: {"*": {"dtype": "float16"}} for name in kernels}

    axes = ("seq_len", "batch_size", "num_qo_heads", "num_kv_heads", "head_dim", "rotary_dim",
            "rope_dim", "no_rope_dim", "page_size")
    groups = {"head_config": ("num_qo_heads", "num_kv_heads", "head_dim")}
    shape = ("batch_size", "seq_len", "num_qo_heads", "num_kv_heads", "head_dim", "rope_dim",
             "no_rope_dim")

    # flashinfer_benchmark.py's rope routines: --backends cuda (their only one) is "auto".
    routine_flags = frozenset({"--backends", "--batch_size", "--seq_len", "--num_qo_heads",
                               "--num_kv_heads", "--head_dim", "--rotary_dim",
                               "--input_dtype", "--interleave", "--rope_scale", "--rope_theta",
                               "--low_freq_factor", "--high_freq_factor", "--old_context_len",
                               "--no_cuda_graph", *FP8_FLAGS})

    def check_point(self, kernel: str, point: dict[str, Any]) -> None:
        if kernel in FP8:
            rope_fp8.check_point(kernel, point)
        else:
            self._check_rotary_dim(point)
        if "num_kv_heads" in point and int(point["num_qo_heads"]) % int(point["num_kv_heads"]):
            raise ValueError("num_qo_heads must be a multiple of num_kv_heads")
        if kernel in LLAMA31 and (float(point["high_freq_factor"])
                                  <= float(point["low_freq_factor"])):
            raise ValueError("high_freq_factor must exceed low_freq_factor (Llama 3.1 blends "
                             "between them)")

    @staticmethod
    def _check_rotary_dim(point: dict[str, Any]) -> None:
        rotary, head_dim = int(point.get("rotary_dim", 0)), int(point["head_dim"])
        # FlashInfer's kernels move 16-byte vectors of each half; rotary_dim == head_dim would
        # be the default's experiment under a second name.
        if rotary and (rotary % 16 or rotary >= head_dim):
            raise ValueError(f"rotary_dim={rotary} with head_dim={head_dim}: rotary_dim is 0 "
                             "(every dimension) or a multiple of 16 below head_dim")

    # --- flashinfer_benchmark.py ---------------------------------------------------------

    def repro(self, kernel: str, params: dict[str, Any], backend: str) -> Repro:
        args = ["--routine", kernel, "--backends", "cuda"]
        if kernel in FP8:
            return Repro([*args, *rope_fp8.repro_args(kernel, params)])
        for name in ("batch_size", "seq_len", "num_qo_heads", "num_kv_heads", "head_dim"):
            args += [f"--{name}", str(params[name])]
        if int(params.get("rotary_dim", 0)):
            args += ["--rotary_dim", str(params["rotary_dim"])]
        if params.get("interleave"):
            args.append("--interleave")
        for name in ("rope_scale", "rope_theta", "low_freq_factor", "high_freq_factor",
                     "old_context_len"):
            if name in params:  # str() of a float is exact (":g" would round 1234567)
                args += [f"--{name}", str(params[name])]
        # The same experiment, but the tool's cached routine fails as it stands: said beside it.
        note = CACHE_NOTE if kernel == CACHED else None
        return Repro([*args, "--input_dtype", str(params["dtype"])], note)

    def from_flags(self, kernel: str, flags: Flags) -> list[LineGroup]:
        for backend in flags.get("--backends") or ["cuda"]:
            if backend != "cuda":
                raise Unmapped(f"--backends {backend}: flashinfer_benchmark.py runs {kernel} "
                               "with cuda only")
        dtype = flags.one("--input_dtype", "float16")
        if dtype not in (self.params["dtype"].choices or ()):
            raise Unmapped(f"--input_dtype {dtype} cannot be mapped")
        if kernel in FP8:
            return [(["auto"], {**rope_fp8.from_flags(kernel, flags), "dtype": dtype})]
        for flag in FP8_FLAGS:
            if flag in flags:
                raise Unmapped(f"{flag}: only the FP8 rope routines read it")
        if flags.get("--interleave", []):
            raise Unmapped("--interleave takes no value")
        wanted = self.kernels[kernel].params
        params: dict[str, Any] = {}
        for name in ("batch_size", "seq_len", "num_qo_heads", "num_kv_heads", "head_dim"):
            params[name] = int(flags.one(f"--{name}"))
        rotary = int(flags.one("--rotary_dim", "0"))
        params["rotary_dim"] = 0 if rotary == params["head_dim"] else rotary
        params["interleave"] = "--interleave" in flags
        # Flags a routine does not read are left out, as the tool ignores them.
        for name, default in (("rope_scale", "1"), ("rope_theta", "10000"),
                              ("low_freq_factor", "1"), ("high_freq_factor", "4")):
            if name in wanted:
                params[name] = float(flags.one(f"--{name}", default))
        if "old_context_len" in wanted:
            params["old_context_len"] = int(flags.one("--old_context_len", "8192"))
        params["dtype"] = dtype
        return [(["auto"], params)]

    # --- formulas --------------------------------------------------------------------------

    def tokens(self, point: dict[str, Any]) -> int:
        return int(point["batch_size"]) * int(point["seq_len"])

    def rotary_dim(self, point: dict[str, Any]) -> int:
        return int(point.get("rotary_dim", 0)) or int(point["head_dim"])

    def elements(self, point: dict[str, Any]) -> int:
        """Elements of q and k together."""
        heads = int(point["num_qo_heads"]) + int(point["num_kv_heads"])
        return self.tokens(point) * heads * int(point["head_dim"])

    def work(self, kernel: str, point: dict[str, Any]) -> Work:
        if kernel in FP8:
            return rope_fp8.work(kernel, point)
        n, tokens = self.elements(point), self.tokens(point)
        # q and k read, their rotated copies written
        moved = n * DTYPE_BYTES[str(point["dtype"])] * 2
        if kernel in POS_IDS:
            moved += tokens * 4  # int32 pos_ids
        elif kernel == CACHED:
            # int64 positions, and the float32 table of seq_len rows (cos and sin halves)
            moved += tokens * 8 + int(point["seq_len"]) * self.rotary_dim(point) * 4
        rotated = n // int(point["head_dim"]) * self.rotary_dim(point)
        return Work(flops=float(rotated * 3), bytes=float(moved))

    def memory_bytes(self, kernel: str, point: dict[str, Any]) -> float:
        if kernel in FP8:
            return rope_fp8.memory_bytes(kernel, point)
        # inputs and outputs, the float32 reference, and as much again for the torch path's
        # temporaries (cos, sin, the rotated halves)
        return self.work(kernel, point).bytes * 2 + self.elements(point) * 4 * 2

    # --- measuring ---------------------------------------------------------------------------

    def _ops_of(self, kernel: str) -> Any:
        """The module holding the kernel's tensors (the FP8 kernels have their own)."""
        import importlib

        return importlib.import_module(FP8_OPS if kernel in FP8 else self.ops)

    def inputs(self, kernel: str, params: dict[str, Any], backend: str,
               device: str) -> Operands:
        return self._ops_of(kernel).inputs(kernel, params, backend, device)  # type: ignore[no-any-return]

    def prepare(self, backend: str, inp: Operands, device: str) -> Prepared:
        return self._ops_of(inp.kernel).prepare(backend, inp, device)  # type: ignore[no-any-return]

    def reference(self, inp: Operands) -> list[torch.Tensor]:
        return self._ops_of(inp.kernel).reference(inp)  # type: ignore[no-any-return]

    def tolerance(self, kernel: str, params: dict[str, Any]) -> float:
        if kernel in FP8:
            return rope_fp8.tolerance(params)
        # Outputs a*cos - b*sin of normal inputs reach ~6: rounding there (and the torch
        # path's rounding of cos, sin and each product) is ~1e-2 in bf16, 8x less in fp16.
        # Angles are position * frequency in float32 and the kernels' fast sincos: their
        # error grows with the position, about 2^-20 per unit at these magnitudes. A wrong
        # pairing or frequency is off by O(1).
        base = {"float16": 1e-2, "bfloat16": 8e-2}[str(params["dtype"])]
        return base + int(params["seq_len"]) * 2.0 ** -20


def tensor_args(kernel: str) -> dict[str, str]:
    """flashinfer.rope's tensor keywords for the kernel, each with the input it reads."""
    if kernel == CACHED:  # this one names q and k query and key
        return {"positions": "positions", "query": "q", "key": "k",
                "cos_sin_cache": "cos_sin_cache"}
    if kernel in INDPTR:
        return {"q": "q", "k": "k", "indptr": "indptr", "offsets": "offsets"}
    return {"q": "q", "k": "k", "pos_ids": "pos_ids"}


def call_kwargs(kernel: str, params: dict[str, Any]) -> dict[str, Any]:
    """The scalar keywords flashinfer.rope's function of the kernel's name is called with, as
    flashinfer_benchmark.py calls it (tensors are the caller's)."""
    if kernel == CACHED:
        return {"head_size": int(params["head_dim"]), "is_neox": not params["interleave"]}
    kwargs: dict[str, Any] = {
        "rotary_dim": int(params.get("rotary_dim", 0)) or int(params["head_dim"]),
        "interleave": bool(params["interleave"]),
        "rope_scale": float(params["rope_scale"]), "rope_theta": float(params["rope_theta"]),
    }
    if kernel in LLAMA31:
        kwargs.update(low_freq_factor=float(params["low_freq_factor"]),
                      high_freq_factor=float(params["high_freq_factor"]),
                      old_context_len=int(params["old_context_len"]))
    return kwargs


FAMILY = RopeFamily()
