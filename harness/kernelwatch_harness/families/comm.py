"""The comm family: FlashInfer's several-GPU communication kernels, as flashinfer_benchmark.py's
moe_comm, allreduce_comm and mixed_comm routines run them.

- ``moe_a2a_dispatch_combine``: MoE all-to-all (``MoeAlltoAll``): each rank dispatches its
  ``num_tokens`` tokens to the ranks holding their ``experts_per_token`` experts, then
  combines the experts' outputs back (expert parallelism over ``world_size`` ranks);
- ``allreduce_fusion``: the all-reduce of a ``[num_tokens, hidden_size]`` activation fused
  with what follows it (``fusion_pattern``: nothing, the residual add and RMSNorm, or those
  and a dynamic FP8 quantisation), FlashInfer's ``trtllm`` or ``mnnvl`` backend or its
  ``auto`` choice (the tool's ``--ar_backend``);
- ``mixed_comm``: ``MixedCommHandler``'s collectives (``comm_op``) across a tensor- and
  data-parallel grid of ranks.

All three are declared and refused everywhere: the tool runs each as ``world_size``
processes, one per GPU of a node (under mpirun, or its own spawned workers for mixed_comm),
and kernelwatch measures one GPU per point. The tool's support table lists none of them, so
no architecture is singled out.

Each formula is one rank's share: bytes are what the rank's GPU sends over the links (the
rings' ``2 (w - 1) / w`` of the message for an all-reduce, ``(w - 1) / w`` for a
reduce-scatter, ``w - 1`` local messages for an all-gather; MoE dispatch sends each
token's activation once per chosen expert, combine brings it back), the collectives' bus
bytes as the tool reports them; FLOPs are the reduction's additions (and 6 an element for the
residual add and RMSNorm, one more for the FP8 quantisation; MoE's combine adds
``experts_per_token`` weighted rows a token).
"""

from __future__ import annotations

from typing import Any

from kernelwatch_harness import shared_params as shared
from kernelwatch_harness.family import (
    ARCHS,
    DTYPE_BYTES,
    DeclaredFamily,
    Kernel,
    Param,
    Work,
    by_name,
)

A2A, ALLREDUCE, MIXED = "moe_a2a_dispatch_combine", "allreduce_fusion", "mixed_comm"
# The routines' --*_pattern / op choices at release-v0.6.18 (PATTERN_NAME_TO_CODE, the mixed
# ops), and the elementwise FLOPs each fusion pattern adds after the reduction.
PATTERN_FLOPS = {"allreduce": 0, "ar_residual_rmsnorm": 6, "ar_residual_rmsnorm_dynamic_fp8": 7}
# Each collective as the link traffic of one rank, in local messages, for w ranks.
COMM_OPS = ("allreduce", "allgather", "reducescatter", "allreduce_allgather",
            "reducescatter_allreduce")


def _traffic(op: str, w: int) -> float:
    return {"allreduce": 2 * (w - 1) / w, "allgather": float(w - 1),
            "reducescatter": (w - 1) / w}[op]


def _reduces(op: str, w: int) -> float:
    """Additions an element of the local message costs (the reduce steps)."""
    return {"allreduce": (w - 1) / w, "allgather": 0.0, "reducescatter": (w - 1) / w}[op]


_KERNELS = {
    A2A: (("mnnvl",), ("num_tokens", "hidden_size", "num_experts", "experts_per_token",
                       "world_size", "dtype"),
          "MoE all-to-all dispatch then combine across the expert-parallel ranks"),
    ALLREDUCE: (("auto", "trtllm", "mnnvl"), ("num_tokens", "hidden_size", "fusion_pattern",
                                             "world_size", "dtype"),
                "all-reduce fused with the residual add, RMSNorm and FP8 quantisation"),
    MIXED: (("auto",), ("num_tokens", "hidden_size", "comm_op", "world_size", "dtype"),
            "mixed collectives (all-reduce, all-gather, reduce-scatter) across TP x DP ranks"),
}


class CommFamily(DeclaredFamily):
    name = "comm"
    # Shared names are declared once, in shared_params (as the moe family takes them).
    params = by_name(
        shared.num_tokens(
            doc="tokens (rows) on each rank (mixed_comm: the tool's --local_bs_list)"),
        shared.hidden_size(doc="each token's width"),
        shared.num_experts(doc="experts of the layer"),
        shared.experts_per_token(doc="experts each token is routed to (the tool's --top_k)"),
        Param("world_size", int, 8, min=2, max=1024,
              doc="GPUs taking part (the tool's mpirun -np, or local_tp x local_dp)"),
        Param("fusion_pattern", str, "allreduce", choices=tuple(PATTERN_FLOPS),
              doc="allreduce_fusion: what follows the all-reduce (the tool's --pattern)"),
        Param("comm_op", str, "allreduce", choices=COMM_OPS,
              doc="mixed_comm: the collective (the tool's op)"),
        shared.dtype(doc="the activations (the tool's --input_dtype or --dtype)"),
    )
    kernels = {
        name: Kernel(name, "comm", params, backends, (), description, routine=name,
                     archs=ARCHS, declared=True)
        for name, (backends, params, description) in _KERNELS.items()
    }
    axes = ("num_tokens", "hidden_size", "world_size")
    shape = ("num_tokens", "hidden_size", "world_size")

    def why_not_run(self, kernel: str) -> str:
        return (f"{kernel} needs several GPUs of one node (flashinfer_benchmark.py runs it as "
                "one process per GPU, under mpirun or its own workers); kernelwatch measures "
                "one GPU per point")

    def check_point(self, kernel: str, point: dict[str, Any]) -> None:
        if kernel == A2A and int(point["experts_per_token"]) > int(point["num_experts"]):
            raise ValueError("experts_per_token must be at most num_experts (each token's "
                             "experts are distinct)")

    def work(self, kernel: str, point: dict[str, Any]) -> Work:
        n, h, w = (int(point[p]) for p in ("num_tokens", "hidden_size", "world_size"))
        elements = n * h
        message = elements * DTYPE_BYTES[str(point["dtype"])]
        if kernel == A2A:
            k = int(point["experts_per_token"])
            # dispatch sends each (token, expert) row, combine returns it and sums k rows
            return Work(flops=float(elements * k), bytes=float(2 * k * message))
        if kernel == ALLREDUCE:
            return Work(flops=elements * (_reduces("allreduce", w)
                                          + PATTERN_FLOPS[str(point["fusion_pattern"])]),
                        bytes=message * _traffic("allreduce", w))
        steps = str(point["comm_op"]).split("_")
        return Work(flops=elements * sum(_reduces(s, w) for s in steps),
                    bytes=message * sum(_traffic(s, w) for s in steps))

    def memory_bytes(self, kernel: str, point: dict[str, Any]) -> float:
        # one rank's input and output (an all-gather's output is world_size messages)
        n, h, w = (int(point[p]) for p in ("num_tokens", "hidden_size", "world_size"))
        message = n * h * DTYPE_BYTES[str(point["dtype"])]
        return float(message * (1 + w))


FAMILY = CommFamily()
