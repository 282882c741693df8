"""The reference shapes of the GPU sweep benchmark (bench/gpu_sweep.py) and the cross-check
against FlashInfer's own timers (bench/gpu_crosscheck.py), with the service's default timing.

Both run on a GPU node: the sweep through the worker's path, the cross-check inside a
FlashInfer version's environment, where this distribution is installed and the service is not.
So the suites live here; their timing is the one set of defaults (``protocol.TIMING_DEFAULTS``).
The batch suites name their plan mode: the results report's figures were measured with wrappers
built without the CUDA-graph plan mode (``use_cuda_graph: false``), with the NHD layout and, for
decode, without tensor cores: the defaults of every backend then, named so that they stay what
the suites measure now that defaults follow the backend (``catalogue.BACKEND_DEFAULTS``).
"""

from __future__ import annotations

import itertools
from typing import Any

from kernelwatch_harness.catalogue import complete_params
from kernelwatch_harness.protocol import TIMING_DEFAULTS

HEADS = {"num_qo_heads": [32], "num_kv_heads": [8], "head_dim": [128], "dtype": ["bfloat16"]}
SUITES: dict[str, dict[str, Any]] = {
    "decode": {
        "kernel": "batch_decode",
        "backends": ["fa2", "auto"],
        "params": {
            "batch_size": [1, 16, 64, 256],
            "use_cuda_graph": [False],
            "kv_layout": ["NHD"],
            "use_tensor_cores": [False],
            "kv_len": [512, 2048, 8192, 32768],
            "page_size": [16],
            **HEADS,
        },
    },
    "prefill": {
        "kernel": "batch_prefill",
        "backends": ["fa2", "auto"],
        "params": {
            "batch_size": [1, 8],
            "use_cuda_graph": [False],
            "kv_layout": ["NHD"],
            "qo_len": [512, 2048],
            "kv_len": [2048, 8192],
            "causal": [True],
            "page_size": [16],
            **HEADS,
        },
    },
    "tiny": {  # a smoke test of the sweep (also on CPU: --device cpu --suites tiny)
        "kernel": "batch_decode",
        "backends": ["fa2"],
        "params": {
            "batch_size": [1, 3],
            "use_cuda_graph": [False],
            "kv_layout": ["NHD"],
            "use_tensor_cores": [False],
            "kv_len": [64, 200],
            "page_size": [16],
            "kv_len_distribution": ["uniform"],
            **HEADS,
        },
    },
    "single": {
        "kernel": "single_decode",
        "backends": ["fa2"],
        "params": {"kv_len": [512, 2048, 8192, 32768, 131072], **HEADS},
    },
}
# The service's defaults: 30 samples in 3 interleaved repeats of 10 after 5 warm-up replays.
TIMING: dict[str, Any] = dict(TIMING_DEFAULTS.as_dict())
AGREE_PCT = 3.0  # the agreement figure: medians within +-3 %


def grid(kernel: str, params: dict[str, list[Any]],
         backends: list[str]) -> list[dict[str, dict[str, Any]]]:
    """Each point as each of ``backends`` runs it, in the order of core.spec.SweepSpec.grid
    (itertools.product over the params in order)."""
    names = list(params)
    return [
        {b: complete_params(kernel, dict(zip(names, combo, strict=True)), b) for b in backends}
        for combo in itertools.product(*(params[n] for n in names))
    ]


def short(kernel: str, p: dict[str, Any]) -> str:
    """A point's label in reports, e.g. ``bs=16 kl=2048`` (batch size, query and KV lengths)."""
    keys = ("batch_size", "qo_len", "kv_len") if kernel != "single_decode" else ("kv_len",)
    return " ".join(
        f"{k.split('_')[0][0]}{k.split('_')[1][0] if '_' in k else ''}={p[k]}"
        for k in keys
        if k in p
    )


def delta_pct(ours: float, theirs: float) -> float:
    return 100 * (ours / theirs - 1)


def agrees(ours: float, theirs: float) -> bool:
    return abs(delta_pct(ours, theirs)) <= AGREE_PCT
