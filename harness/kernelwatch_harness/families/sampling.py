"""The sampling family: FlashInfer's token sampling, its probability filters and its top-k
(``flashinfer.sampling``, ``flashinfer.top_k`` and its transforms), as
flashinfer_benchmark.py's sampling routines of the same names run them.

- ``softmax``: ``softmax(logits / temperature)``, float32 probabilities;
- ``sampling_from_probs`` / ``sampling_from_logits``: one token per row from the distribution;
- ``top_k_sampling_from_probs``, ``top_p_sampling_from_probs``, ``min_p_sampling_from_probs``,
  ``top_k_top_p_sampling_from_probs`` / ``_from_logits``: one token per row from the filtered
  distribution (``filter_apply_order``: ``top_k_first`` applies top-p to the top-k set
  renormalised, ``joint`` applies both to the original distribution);
- ``top_k_renorm_probs`` / ``top_p_renorm_probs``: the filtered distribution, renormalised;
  ``top_k_mask_logits``: the logits outside the top k set to -inf;
- ``chain_speculative_sampling``: accept or reject ``num_speculate_tokens`` draft tokens
  against the target model's probabilities, then sample the next token;
- ``top_k``: the k largest values of each row and their indices (unsorted);
- ``top_k_page_table_transform`` / ``top_k_ragged_transform``: the top k of each row of
  ``max_len`` scores (sparse attention's selection), written as that row's page-table entries
  or as indices offset into a ragged buffer (int32);
- ``top_k_varlen`` (``flashinfer.top_k_varlen``, FlashInfer 0.6.18 and later): the top k
  column indices (int32) of each row of ``max_len`` scores within the row's own length
  (``seq_lens``, int32; a row shorter than k pads with -1), sparse attention's KV selection at
  decode. The tool's routine of the same name (its own ``topk_varlen`` category) fills every
  row to ``max_len`` (``--max_seq_len``), as kernelwatch does; its backends are FlashInfer's
  own: ``radix_cutlass`` (every architecture), ``radix`` (CuTe DSL, Blackwell) and ``gvr``
  (CuTe DSL, SM100/SM103; given the tool's previous-step hint ``pre_idx``: each row's argmax,
  then columns 1 to k - 1; top_k 512, 1024 or 2048 only).

Inputs are ``[batch_size, vocab_size]`` (chain speculative sampling: ``[batch_size, n, vocab]``
draft and ``[batch_size, n + 1, vocab]`` target probabilities), seeded: logits standard
normal, probabilities their softmax; the transforms' scores are ``[batch_size, max_len]``
(all rows full length, one row per request, as the tool builds them), each row's page table a
permutation (any table times the same; distinct entries make the selected indices readable
back). ``logits_dtype`` is the tool's ``--input_dtype`` (kernelwatch's ``input_dtype`` is the
GEMMs' fp8 operand type): as there, the dtype of the logits and scores, and of the
probabilities of ``top_k_renorm_probs``; the other kernels read float32 probabilities.
Samplers are called with a fixed seed and offset where the release takes them (0.6.18 and
later, as the tool does, so each call samples the same way), or with a seeded generator
(0.5.3); softmax runs without PDL (the tool's default).

Backends: FlashInfer's ``cuda`` (its one CUDA kernel per function; the tool's name; for
``top_k_varlen`` its three named backends) and ``torch``: what a PyTorch user writes
(``torch.softmax``, ``torch.topk`` or a sorted cumulative sum to filter, then renormalising or
``torch.multinomial``; for ``top_k_varlen`` ``torch.topk`` of each row masked to its length).

Correctness. Deterministic results are checked against float32 computed from the inputs:
softmax against ``torch.softmax``; ``top_k``'s values (sorted, and read back through its
indices) against ``torch.topk``; the transforms' entries, read back as indices, must be
distinct members of a valid top-k set (``top_k_varlen``'s: of the row's first ``seq_len``
scores, -1 only past a short row's length); the renormalised and masked results by their kept
set, which must be a valid top-k set or nucleus, and their values, which must be the inputs
(masking) or the inputs over the kept set's mass (renormalising). Where tokens tie at the
boundary, any valid choice is accepted. Samplers are stochastic: each sampled token must lie
in the allowed support (the top-k set, the nucleus, the min-p set, never a zero-probability
token; a draft prefix, then a token the residual distribution can give, for speculative
sampling), so the outputs are the violations (0 or 1 per row) against a reference of zeros,
tolerance 0.

Work counts as flashinfer_benchmark.py does: no FLOPs (memory bound); bytes are one read of
the input and one write of the output (float32 probabilities, int32 samples, int64 top-k
indices); see ``work``. ``top_k_varlen`` counts its int32 ``seq_lens`` too; the tool also
counts a read of ``pre_idx`` (gvr's hint) for every backend, kernelwatch does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kernelwatch_harness import shared_params as shared
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


# flashinfer_benchmark.py lists its sampling routines from SM75 to SM121.
ARCHS = (*AMPERE_HOPPER, "sm100", "sm103", "sm120")

# Kernels that sample (stochastic: checked by support), and what each reads.
SAMPLERS = ("sampling_from_probs", "sampling_from_logits", "top_k_sampling_from_probs",
            "top_p_sampling_from_probs", "top_k_top_p_sampling_from_probs",
            "top_k_top_p_sampling_from_logits", "min_p_sampling_from_probs",
            "chain_speculative_sampling")
# Kernels reading logits; the rest read probabilities.
READS_LOGITS = ("softmax", "sampling_from_logits", "top_k_top_p_sampling_from_logits",
                "top_k_mask_logits", "top_k")
# Kernels selecting the top k of ``max_len`` scores per row (sparse attention's selection).
TRANSFORMS = ("top_k_page_table_transform", "top_k_ragged_transform")
# The top k of each row within its own length (flashinfer.top_k_varlen).
VARLEN = "top_k_varlen"
# Where each of its FlashInfer backends runs (top_k_varlen's supported_compute_capability
# tables, 0.6.18 to 0.7.4: radix_cutlass every architecture, radix Blackwell, gvr SM100/103).
VARLEN_ARCHS: dict[str, tuple[str, ...]] = {
    "radix_cutlass": ARCHS, "radix": ("sm100", "sm103", "sm120"), "gvr": ("sm100", "sm103")}
# The k gvr has kernel parameters for (GvrParams); other values fail inside it.
GVR_TOP_K = (512, 1024, 2048)
# The most rows gvr's load-balanced kernel (the default, as the tool runs it) takes.
GVR_MAX_ROWS = 1024
# Kernels whose input is in ``logits_dtype`` (the tool builds the rest's probabilities float32).
# The tool's flag for each parameter, where it is not the parameter's name.
FLAG = {"logits_dtype": "--input_dtype"}
VARLEN_FLAG = {**FLAG, "max_len": "--max_seq_len"}
TAKES_DTYPE = (*READS_LOGITS, *TRANSFORMS, VARLEN, "top_k_renorm_probs")
# Kernels whose rows are ``max_len`` scores (the rest: ``vocab_size`` tokens).
SCORES = (*TRANSFORMS, VARLEN)
# Kernels returning a [batch_size, vocab_size] tensor in their input's dtype.
SAME_SHAPE = ("top_k_renorm_probs", "top_p_renorm_probs", "top_k_mask_logits")



def _kernel(name: str, extra: tuple[str, ...], description: str,
            since: str | None = None) -> Kernel:
    dtype = ("logits_dtype",) if name in TAKES_DTYPE else ()
    width = "max_len" if name in SCORES else "vocab_size"
    backends = tuple(VARLEN_ARCHS) if name == VARLEN else ("cuda",)
    return Kernel(name, "sampling", ("batch_size", width, *dtype, *extra), backends,
                  ("torch",), description, routine=name, archs=ARCHS, since=since)


def flag(kernel: str, name: str) -> str:
    """The tool's flag for one of the kernel's parameters."""
    return (VARLEN_FLAG if kernel == VARLEN else FLAG).get(name, f"--{name}")


class SamplingFamily(Family):
    name = "sampling"
    ops = "kernelwatch_harness.families.sampling_ops"
    params = by_name(
        shared.batch_size(doc="rows (sequences) sampled in one call"),
        Param("vocab_size", int, 128256, min=16, max=1048576,
              doc="tokens per row (the last dimension)"),
        Param("max_len", int, 4096, min=16, max=1048576,
              doc="scores per row the transforms select from (a request's KV length)"),
        Param("logits_dtype", str, "float32", choices=("float32", "float16", "bfloat16"),
              doc="dtype of the logits and scores (and of top_k_renorm_probs' "
                  "probabilities)"),
        Param("temperature", float, 1.0, min=0.01, max=100.0,
              doc="softmax's temperature: logits are divided by it"),
        Param("top_k", int, 50, min=1, max=1048576,
              doc="tokens kept by the top-k filter (at most vocab_size)"),
        Param("top_p", float, 0.9, min=0.01, max=1.0,
              doc="probability mass kept by the top-p (nucleus) filter"),
        Param("min_p", float, 0.1, min=0.0, max=1.0,
              doc="min-p filter: tokens with at least min_p times the top probability"),
        Param("filter_apply_order", str, "top_k_first", choices=("top_k_first", "joint"),
              doc="top_k_first: top-p on the renormalised top-k set; joint: both filters on "
                  "the original distribution"),
        Param("num_speculate_tokens", int, 5, min=1, max=64,
              doc="draft tokens checked per row by chain speculative sampling"),
    )
    kernels = {
        k.name: k for k in (
            _kernel("softmax", ("temperature",), "softmax of logits / temperature (float32)"),
            _kernel("sampling_from_probs", (), "one token per row from probabilities"),
            _kernel("sampling_from_logits", (), "one token per row from softmax(logits)"),
            _kernel("top_k_sampling_from_probs", ("top_k",),
                    "one token per row from the top-k set"),
            _kernel("top_p_sampling_from_probs", ("top_p",),
                    "one token per row from the top-p nucleus"),
            _kernel("top_k_top_p_sampling_from_probs",
                    ("top_k", "top_p", "filter_apply_order"),
                    "one token per row after top-k and top-p filters"),
            _kernel("top_k_top_p_sampling_from_logits",
                    ("top_k", "top_p", "filter_apply_order"),
                    "one token per row of softmax(logits) after top-k and top-p filters"),
            _kernel("min_p_sampling_from_probs", ("min_p",),
                    "one token per row from the min-p set"),
            _kernel("top_k_renorm_probs", ("top_k",), "top-k filter, renormalised"),
            _kernel("top_p_renorm_probs", ("top_p",), "top-p filter, renormalised"),
            _kernel("top_k_mask_logits", ("top_k",), "logits outside the top k set to -inf"),
            _kernel("chain_speculative_sampling", ("num_speculate_tokens",),
                    "accept or reject draft tokens against the target, sample the next"),
            _kernel("top_k", ("top_k",), "the k largest values per row and their indices",
                    since="0.6.0"),
            _kernel("top_k_page_table_transform", ("top_k",),
                    "the top k scores per row as that row's page-table entries", since="0.6.0"),
            _kernel("top_k_ragged_transform", ("top_k",),
                    "the top k scores per row as offset indices into a ragged buffer",
                    since="0.6.0"),
            _kernel(VARLEN, ("top_k",), "the top k column indices per row within its length "
                    "(sparse attention's KV selection)", since="0.6.18"),
        )
    }
    # The tool's --top_k defaults to 512 for top_k_varlen (50 for the samplers).
    backend_defaults = {VARLEN: {"*": {"top_k": 512}}}

    axes = ("batch_size", "vocab_size", "max_len", "top_k", "top_p", "min_p",
            "num_speculate_tokens")
    shape = ("batch_size", "vocab_size", "max_len")
    default_backend = "cuda"

    # flashinfer_benchmark.py's sampling routines: --backends cuda (their only backend).
    routine_flags = frozenset({"--backends", "--batch_size", "--vocab_size", "--input_dtype",
                               "--top_k", "--top_p", "--min_p", "--temperature",
                               "--filter_apply_order", "--num_speculate_tokens",
                               "--max_len", "--num_rows", "--no_cuda_graph",
                               "--max_seq_len"})

    @staticmethod
    def width(kernel: str) -> str:
        """The parameter giving a row's length."""
        return "max_len" if kernel in SCORES else "vocab_size"

    def check_point(self, kernel: str, point: dict[str, Any]) -> None:
        width = self.width(kernel)
        if "top_k" in point and int(point["top_k"]) > int(point[width]):
            raise ValueError(f"params: top_k={point['top_k']} exceeds {width}="
                             f"{point[width]}; top_k is at most {width}")

    def repro(self, kernel: str, params: dict[str, Any], backend: str) -> Repro:
        args = ["--routine", kernel, "--backends", backend]  # kernelwatch's names are the tool's
        for name in self.kernels[kernel].params:
            value = params[name]
            args += [flag(kernel, name),
                     repr(float(value)) if isinstance(value, float) else str(value)]
        return Repro(args)

    def from_flags(self, kernel: str, flags: Flags) -> list[LineGroup]:
        offered = self.kernels[kernel].flashinfer_backends
        # The tool's default: every backend of the routine (top_k_varlen's run where the GPU
        # has them; kernelwatch reports the others unsupported, with the reason).
        backends = flags.get("--backends") or list(offered)
        for backend in backends:
            if backend not in offered:
                raise Unmapped(f"--backends {backend}: flashinfer_benchmark.py runs {kernel} "
                               f"with {', '.join(offered)} only")
        rows = flags.one("--num_rows", flags.one("--batch_size"))
        if rows != flags.one("--batch_size"):
            raise Unmapped(f"--num_rows {rows}: kernelwatch measures one row per request "
                           "(num_rows = batch_size, the tool's default)")
        # The tool reads every flag and uses the routine's own: the others change nothing.
        params: dict[str, Any] = {}
        defaults = self.backend_defaults.get(kernel, {}).get("*", {})
        # The tool requires the row width but for the transforms (its --max_len has a default).
        required = ("batch_size", "vocab_size", *(("max_len",) if kernel == VARLEN else ()))
        for name in self.kernels[kernel].params:
            p = self.params[name]
            name_flag = flag(kernel, name)
            default = str(defaults.get(name, p.default))
            text = flags.one(name_flag, None if name in required else default)
            try:
                params[name] = p.kind(text)
            except ValueError:
                raise Unmapped(f"{name_flag} {text} is not a number") from None
            if p.choices is not None and params[name] not in p.choices:
                raise Unmapped(f"{name_flag} {text} cannot be mapped")
        return [(list(backends), params)]

    def work(self, kernel: str, point: dict[str, Any]) -> Work:
        b, v = int(point["batch_size"]), int(point[self.width(kernel)])
        size = DTYPE_BYTES[str(point.get("logits_dtype", "float32"))]
        if kernel == "chain_speculative_sampling":
            n = int(point["num_speculate_tokens"])
            # draft probs and ids, target probs in; tokens, accepted and emitted counts out
            moved = b * n * v * 4 + b * n * 4 + b * (n + 1) * v * 4 + b * (n + 1) * 4 + 2 * b * 4
        elif kernel == "softmax":
            moved = b * v * size + b * v * 4  # float32 probabilities out
        elif kernel in SAME_SHAPE:
            moved = 2 * b * v * size
        elif kernel == "top_k_page_table_transform":
            # scores and the page table in, the selected entries out (int32)
            moved = b * v * size + b * v * 4 + b * int(point["top_k"]) * 4
        elif kernel == "top_k_ragged_transform":
            moved = b * v * size + b * int(point["top_k"]) * 4
        elif kernel == VARLEN:  # scores and int32 seq_lens in, int32 indices out
            moved = b * v * size + b * 4 + b * int(point["top_k"]) * 4
        elif kernel == "top_k":
            k = int(point["top_k"])
            moved = b * v * size + b * k * size + b * k * 8  # values, int64 indices
        else:  # a sampler: its input in, one int32 token per row out
            moved = b * v * size + b * 4
        return Work(flops=0.0, bytes=float(moved))

    def memory_bytes(self, kernel: str, point: dict[str, Any]) -> float:
        # The streams, a pristine copy, and the float32 check: a sorted copy and its sums per
        # row, and for a filter's whole result int64 ranks of every token (~64 B a token).
        rows = int(point["batch_size"]) * (2 * int(point.get("num_speculate_tokens", 0)) + 1
                                           if kernel == "chain_speculative_sampling" else 1)
        per_token = 64 if kernel in SAME_SHAPE else 24
        return (self.work(kernel, point).bytes * 2
                + rows * int(point[self.width(kernel)]) * per_token)

    def reference(self, inp: Operands) -> list[torch.Tensor]:
        from kernelwatch_harness.families import sampling_checks

        return sampling_checks.reference(inp)

    def tolerance(self, kernel: str, params: dict[str, Any]) -> float:
        if kernel in (*SAMPLERS, *SCORES, "top_k", "top_k_mask_logits"):
            return 0.0  # violations are 1; top-k values and masking copy their inputs
        if kernel == "softmax":
            return 1e-5  # the tool's atol; float32 probabilities differ by ~1e-7
        # Renormalised probabilities (at most 1) written in the input's dtype: half an ulp at
        # 1 (bf16 3.9e-3, fp16 4.9e-4); a wrong set or scale is off by far more.
        return {"float32": 1e-5, "float16": 1e-3, "bfloat16": 8e-3}[
            str(params.get("logits_dtype", "float32"))]


FAMILY = SamplingFamily()
