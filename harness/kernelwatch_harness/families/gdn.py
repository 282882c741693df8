"""The GDN family: the gated delta rule, Gated DeltaNet's linear attention
(``flashinfer.gdn_decode``, ``flashinfer.gdn_prefill``), as flashinfer_benchmark.py's gdn
routines of the same names run it.

Per value head, a ``[K, V]`` state ``S`` (``K = V = head_size``) turns each token's q, k, v
into an output by the delta rule, with a decay ``alpha`` and an update gate ``beta``::

    S = alpha * S
    S = S + k (beta * (v - S^T k))^T
    o = scale * S^T q                    (scale = head_size ** -0.5)

- ``gated_delta_rule_decode``: one token per request (``[batch_size, 1, heads, head_size]``)
  against a state pool of ``batch_size`` slots (``pool_mode`` split: ``2 * batch_size``,
  read from the first half, written to the second), the state ``[V, K]`` (``pretranspose``,
  K-last, ``gated_delta_rule_decode_pretranspose``) or ``[K, V]`` (``nontranspose``,
  ``gated_delta_rule_decode``); float32 or bfloat16 state (bfloat16: head_size 128,
  pretranspose);
- ``gated_delta_rule_mtp``: ``seq_len`` (>= 2) tokens per request in one call, the state
  K-last, written back only when ``update_state`` (bfloat16 state, reached through the
  pretranspose API as the tool does, always writes it back); ``cache_intermediate_states``
  also writes each token's float32 state to a ``[batch_size, seq_len, heads, V, K]`` buffer;
- ``chunk_gated_delta_rule``: prefill of ``batch_size`` sequences of ``seq_len`` tokens
  (varlen, by ``cu_seqlens``) from a zero state, the final float32 state written ``[N, H, V,
  K]``.

Decode and MTP compute their gates in the kernel from per-token inputs, as Qwen3-Next does:
``alpha = exp(-exp(A_log) * softplus(a + dt_bias))``, ``beta = sigmoid(b)``, and L2-normalise
q and k unless ``qk_l2norm`` is false (kernelwatch then gives them already normalised, so the
recurrence stays bounded; the kernel's work is the same). The prefill takes ``alpha`` (``g``)
and ``beta`` in (0, 1) directly, with k normalised by the caller, as the tool builds them.
Heads: decode and MTP take ``num_k_heads == num_q_heads`` and ``num_v_heads`` a multiple of it
(grouped value heads); the prefill also takes grouped query heads (``num_q_heads`` a multiple
of ``num_k_heads == num_v_heads``). The output has ``max(num_q_heads, num_v_heads)`` heads.

Backends: FlashInfer's ``auto`` (the tool's ``flashinfer``; its Triton and FLA baselines come
from FlashInfer's tests and flash-linear-attention, not the library) and ``torch`` (the
recurrence token by token in PyTorch, in the input dtype, as a user without FlashInfer runs
it). The reference is the same recurrence in float32 (kernelwatch's own, from FlashInfer's
``tests/gdn/reference_delta_rule.py`` and its API docs); it checks the output and, where the
kernel writes it, the new state. FlashInfer runs these kernels on SM90 and SM100/SM103
(flashinfer_benchmark.py's table); they are in FlashInfer from 0.6.2 (prefill from 0.6.0).

FLOPs and bytes are the tool's: decode and MTP count three ``K x V`` products a token and
head (``6 K V``), and move q, k, v, the output, the gates, the state (read, and written back
when it is) and the intermediate states; the prefill counts its two dominant products
(``4 K V`` a token and head) and moves q, k, v, float32 ``g`` and ``beta``, the output and
the final float32 state.
"""

from __future__ import annotations

import math
from typing import Any

from kernelwatch_harness import shared_params as shared
from kernelwatch_harness.family import (
    DTYPE_BYTES,
    Family,
    Flags,
    Kernel,
    LineGroup,
    Param,
    Repro,
    Unmapped,
    Work,
    by_name,
)

# Where FlashInfer runs them: flashinfer_benchmark.py lists its flashinfer backend for these
# routines on SM90, SM100 and SM103 only (0.7's prefill also builds for SM8x and SM120; the
# tool's table is what kernelwatch follows).
ARCHS = ("sm90", "sm100", "sm103")

DECODE = "gated_delta_rule_decode"
MTP = "gated_delta_rule_mtp"
CHUNK = "chunk_gated_delta_rule"
RECURRENT = (DECODE, MTP)  # gates computed in the kernel, a state pool

# The first FlashInfer release with each (gdn_decode.py came in 0.6.2, gdn_prefill.py 0.6.0).
SINCE = {DECODE: "0.6.2", MTP: "0.6.2", CHUNK: "0.6.0"}

# The tool's baselines that are not FlashInfer's library: refused with the reason.
FOREIGN_BACKENDS = {
    "triton": "the tool's Triton GDN kernels come from FlashInfer's tests/, not the library",
    "fla": "flash-linear-attention is another library",
}

_SHAPE = ("batch_size", "num_q_heads", "num_k_heads", "num_v_heads", "head_size")
_DECODE = (*_SHAPE, "dtype", "state_dtype", "state_layout", "pool_mode", "qk_l2norm")
_MTP = ("batch_size", "seq_len", "num_q_heads", "num_k_heads", "num_v_heads", "head_size",
        "dtype", "state_dtype", "pool_mode", "update_state", "cache_intermediate_states",
        "qk_l2norm")
_CHUNK = ("batch_size", "seq_len", "num_q_heads", "num_k_heads", "num_v_heads", "head_size",
          "dtype")


def _kernel(name: str, params: tuple[str, ...], description: str) -> Kernel:
    return Kernel(name, "gdn", params, ("auto",), ("torch",), description, routine=name,
                  archs=ARCHS, since=SINCE[name])


def tokens_per_request(kernel: str, point: dict[str, Any]) -> int:
    return 1 if kernel == DECODE else int(point["seq_len"])


def state_written(kernel: str, point: dict[str, Any]) -> bool:
    """Whether the call writes the new state back: always, but for float32 MTP without
    ``update_state`` (the tool's ``disable_state_update``)."""
    if kernel != MTP:
        return True
    return point["state_dtype"] == "bfloat16" or bool(point["update_state"])


def heads(point: dict[str, Any]) -> int:
    """The state's (and the output's) heads: max(num_q_heads, num_v_heads)."""
    return max(int(point["num_q_heads"]), int(point["num_v_heads"]))


class GdnFamily(Family):
    name = "gdn"
    ops = "kernelwatch_harness.families.gdn_ops"
    # Shared names are declared once, in shared_params, with gdn's doc.
    params = by_name(
        shared.batch_size(doc="requests (decode, MTP) or sequences (prefill)"),
        shared.seq_len(doc="MTP: tokens per request (>= 2); prefill: tokens per sequence"),
        Param("num_q_heads", int, 16, min=1, max=256, doc="query heads"),
        Param("num_k_heads", int, 16, min=1, max=256, doc="key heads"),
        Param("num_v_heads", int, 32, min=1, max=256,
              doc="value heads (grouped value heads when more than num_q_heads)"),
        Param("head_size", int, 128, choices=(128, 256),
              doc="K = V, the head dimension of q, k, v and the state"),
        shared.dtype(doc="q, k, v, the gate inputs a and b, and the output"),
        shared.state_dtype(
            doc="the recurrent state (gdn: float32 or bfloat16; mamba: all three)"),
        Param("state_layout", str, "pretranspose", choices=("pretranspose", "nontranspose"),
              doc="pretranspose: state [V, K] (K-last); nontranspose: [K, V]"),
        Param("pool_mode", str, "single", choices=("single", "split"),
              doc="single: the state is read and written in place; split: read from one "
                  "slot, written to another (speculative decoding)"),
        Param("update_state", bool, False, choices=(False, True),
              doc="MTP: write the final state back (bfloat16 state always does)"),
        Param("cache_intermediate_states", bool, False, choices=(False, True),
              doc="MTP, float32 state: also write every token's state to a buffer"),
        Param("qk_l2norm", bool, True, choices=(False, True),
              doc="decode, MTP: the kernel L2-normalises q and k"),
    )
    kernels = {
        k.name: k for k in (
            _kernel(DECODE, _DECODE, "gated delta rule, one token per request (decode)"),
            _kernel(MTP, _MTP, "gated delta rule, several tokens per request (MTP)"),
            _kernel(CHUNK, _CHUNK, "chunked gated delta rule prefill (varlen)"),
        )
    }
    # The tool's defaults: --seq_len 2 for MTP, --s_qo 2048 for the prefill.
    backend_defaults = {MTP: {"*": {"seq_len": 2}}, CHUNK: {"*": {"seq_len": 2048}}}

    axes = ("batch_size", "seq_len", "num_v_heads", "num_q_heads", "head_size")
    shape = ("batch_size", "seq_len", "num_q_heads", "num_k_heads", "num_v_heads",
             "head_size")

    routine_flags = frozenset({"--backends", "--batch_size", "--num_q_heads", "--num_k_heads",
                               "--num_v_heads", "--head_size", "--input_dtype",
                               "--state_dtype", "--state_layout", "--pool_mode", "--seq_len",
                               "--s_qo", "--update_state", "--cache_intermediate_states",
                               "--no_qk_l2norm", "--no_cuda_graph"})

    def check_point(self, kernel: str, point: dict[str, Any]) -> None:
        hq, hk, hv = (int(point[f"num_{x}_heads"]) for x in "qkv")
        gva = hq == hk and hv % hq == 0
        if kernel in RECURRENT and not gva:
            raise ValueError(f"num_q_heads={hq}, num_k_heads={hk}, num_v_heads={hv}: {kernel} "
                             "takes num_k_heads == num_q_heads and num_v_heads a multiple of "
                             "it")
        if kernel == CHUNK and not (gva or (hk == hv and hq % hv == 0)):
            raise ValueError(f"num_q_heads={hq}, num_k_heads={hk}, num_v_heads={hv}: {kernel} "
                             "takes num_v_heads a multiple of num_q_heads == num_k_heads, or "
                             "num_q_heads a multiple of num_k_heads == num_v_heads")
        if kernel == CHUNK:
            return
        if kernel == MTP and int(point["seq_len"]) < 2:
            raise ValueError(f"seq_len={point['seq_len']}: {MTP} takes seq_len >= 2")
        state = str(point["state_dtype"])
        if state not in ("float32", "bfloat16"):
            raise ValueError(f"state_dtype={state}: {kernel} keeps its state in float32 or "
                             "bfloat16")
        split = point["pool_mode"] == "split"
        if state == "bfloat16":
            # The rules flashinfer_benchmark.py states for FlashInfer's kernels.
            if int(point["head_size"]) != 128:
                raise ValueError(f"state_dtype=bfloat16 with head_size={point['head_size']}: "
                                 "FlashInfer's bfloat16-state kernels take head_size 128")
            if point.get("state_layout", "pretranspose") != "pretranspose":
                raise ValueError("state_dtype=bfloat16 takes state_layout pretranspose")
            if point.get("cache_intermediate_states"):
                raise ValueError("cache_intermediate_states takes state_dtype float32 (the "
                                 "bfloat16 MTP path has no intermediate state buffer)")
        if split and point.get("state_layout", "pretranspose") != "pretranspose":
            raise ValueError("pool_mode=split takes state_layout pretranspose")
        if split and kernel == MTP and state != "bfloat16":
            raise ValueError("pool_mode=split with gated_delta_rule_mtp takes state_dtype "
                             "bfloat16 (the float32 MTP API has no output_state_indices)")

    # --- flashinfer_benchmark.py ---------------------------------------------------------

    def repro(self, kernel: str, params: dict[str, Any], backend: str) -> Repro:
        args = ["--routine", kernel, "--backends", "flashinfer",
                "--batch_size", str(params["batch_size"])]
        if kernel == MTP:
            args += ["--seq_len", str(params["seq_len"])]
        if kernel == CHUNK:
            args += ["--s_qo", str(params["seq_len"])]
        for name in ("num_q_heads", "num_k_heads", "num_v_heads", "head_size"):
            args += [f"--{name}", str(params[name])]
        args += ["--input_dtype", str(params["dtype"])]
        if kernel in RECURRENT:
            args += ["--state_dtype", str(params["state_dtype"])]
            if kernel == DECODE:
                args += ["--state_layout", str(params["state_layout"])]
            args += ["--pool_mode", str(params["pool_mode"])]
            if kernel == MTP and params["update_state"]:
                args.append("--update_state")
            if kernel == MTP and params["cache_intermediate_states"]:
                args.append("--cache_intermediate_states")
            if not params["qk_l2norm"]:
                args.append("--no_qk_l2norm")
        return Repro(args)

    def from_flags(self, kernel: str, flags: Flags) -> list[LineGroup]:
        for backend in flags.get("--backends") or ["flashinfer"]:
            if backend != "flashinfer":
                why = FOREIGN_BACKENDS.get(backend, "not one of the tool's choices")
                raise Unmapped(f"--backends {backend}: {why}; kernelwatch runs {kernel} with "
                               "FlashInfer (flashinfer) and its own torch backend")
        for switch in ("--update_state", "--cache_intermediate_states", "--no_qk_l2norm"):
            if flags.get(switch, []):
                raise Unmapped(f"{switch} takes no value")
        dtype = flags.one("--input_dtype", "bfloat16")
        if dtype not in (self.params["dtype"].choices or ()):
            raise Unmapped(f"--input_dtype {dtype} cannot be mapped")
        params: dict[str, Any] = {"batch_size": int(flags.one("--batch_size"))}
        for name, default in (("num_q_heads", "16"), ("num_k_heads", "16"),
                              ("num_v_heads", "32"), ("head_size", "128")):
            params[name] = int(flags.one(f"--{name}", default))
        params["dtype"] = dtype
        seq_len = flags.one("--seq_len", "2" if kernel == MTP else "1")
        if kernel != MTP and int(seq_len) != 1:
            raise Unmapped(f"--seq_len {seq_len}: only gated_delta_rule_mtp reads it")
        if kernel == CHUNK:
            # The tool's prefill reads none of the state flags: they are left out, as it
            # ignores them.
            params["seq_len"] = int(flags.one("--s_qo", "2048"))
            return [(["auto"], params)]
        if kernel == MTP:
            params["seq_len"] = int(seq_len)
            params["update_state"] = "--update_state" in flags
            params["cache_intermediate_states"] = "--cache_intermediate_states" in flags
        elif "--update_state" in flags or "--cache_intermediate_states" in flags:
            raise Unmapped("--update_state / --cache_intermediate_states: only "
                           "gated_delta_rule_mtp reads them")
        state = flags.one("--state_dtype", "float32")
        if state not in ("float32", "bfloat16"):
            raise Unmapped(f"--state_dtype {state} cannot be mapped")
        params["state_dtype"] = state
        layout = flags.one("--state_layout", "pretranspose")
        if kernel == DECODE:
            params["state_layout"] = layout
        params["pool_mode"] = flags.one("--pool_mode", "single")
        params["qk_l2norm"] = "--no_qk_l2norm" not in flags
        return [(["auto"], params)]

    # --- formulas --------------------------------------------------------------------------

    def work(self, kernel: str, point: dict[str, Any]) -> Work:
        b, d, h = int(point["batch_size"]), int(point["head_size"]), heads(point)
        t = tokens_per_request(kernel, point)
        size = DTYPE_BYTES[str(point["dtype"])]
        qkv_heads = int(point["num_q_heads"]) + int(point["num_k_heads"]) \
            + int(point["num_v_heads"])
        tokens = b * t
        moved = tokens * (qkv_heads + h) * d * size  # q, k, v read, the output written
        if kernel == CHUNK:
            moved += tokens * h * 2 * 4  # float32 g and beta
            moved += b * h * d * d * 4  # the final float32 state, written
            return Work(flops=float(4 * tokens * h * d * d), bytes=float(moved),
                        extra={"tokens": tokens})
        state = DTYPE_BYTES[str(point["state_dtype"])]
        moved += b * h * d * d * state * (2 if state_written(kernel, point) else 1)
        moved += h * 4 * 2 + tokens * h * 2 * size  # A_log, dt_bias; a, b
        if kernel == MTP and point["cache_intermediate_states"]:
            moved += tokens * h * d * d * state
        return Work(flops=float(6 * tokens * h * d * d), bytes=float(moved),
                    extra={"tokens": tokens})

    def memory_bytes(self, kernel: str, point: dict[str, Any]) -> float:
        # what the call moves, the pool's second half (split), a pristine copy of the state
        # read and the float32 reference (output and state), twice over for the torch path's
        # temporaries
        b, d, h = int(point["batch_size"]), int(point["head_size"]), heads(point)
        states = b * h * d * d * 4
        outputs = b * tokens_per_request(kernel, point) * h * d * 4
        return self.work(kernel, point).bytes * 2 + (states + outputs) * 3

    def tolerance(self, kernel: str, params: dict[str, Any]) -> float:
        # Outputs are O(0.1) (decode: unit q scaled by head_size ** -0.5) to O(1) (prefill);
        # states reach ~4. Each step rounds a state held in bfloat16 (or, on the torch path,
        # computed in the input dtype) by up to 2 ** -8 of it, the errors of T steps adding
        # up like a random walk. A missing gate or a wrong layout is off by O(0.1) in the
        # output and O(1) in the state.
        dtype = str(params["dtype"])
        if kernel == CHUNK:
            return {"float16": 2e-2, "bfloat16": 6e-2}[dtype]
        base = {"float16": 1e-2, "bfloat16": 5e-2}[dtype]
        if params["state_dtype"] == "bfloat16":
            base = max(base, 2.5e-2)
        return base * math.sqrt(tokens_per_request(kernel, params))


FAMILY = GdnFamily()
