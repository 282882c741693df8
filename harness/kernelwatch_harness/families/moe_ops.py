"""The MoE family's tensors: seeded inputs as flashinfer_benchmark.py draws them, the FlashInfer
and PyTorch calls, the float32 reference (kernelwatch_harness.families.moe declares the
family)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from kernelwatch_harness.families.moe import BGMV_SINCE, DECLARED, FAMILY, MEASURED
from kernelwatch_harness.family import Operands, clone, flashinfer_module, not_run_yet, release
from kernelwatch_harness.jit_sources import keep_bgmv_moe_built
from kernelwatch_harness.prepared import Prepared

SEED = 0
# every kernel's FlashInfer backend (the family's declarations)
KERNEL_BACKENDS = {name: k.flashinfer_backends for name, k in FAMILY.kernels.items()}


class LoraOperands(Operands):
    """bgmv_moe's operands: FlashInfer reads the LoRA weights through tables of pointers, so a
    copy of the data (a cold-L2 rotation buffer) gets tables pointing at its own weights."""

    def copy_data(self) -> dict[str, Any]:
        data: dict[str, Any] = clone(self.data)
        point_at = self.kept.get("point_at")
        if point_at is not None:
            point_at(data)
        return data


def route(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """flashinfer_benchmark.py's compute_routing: softmax in float32, the top k, renormalised
    to sum to 1. Returns the experts (int32, as cutlass_fused_moe takes them) and weights."""
    probs = torch.softmax(logits, dim=1, dtype=torch.float)
    weights, experts = torch.topk(probs, k, dim=-1)
    return experts.to(torch.int32), weights / weights.sum(dim=-1, keepdim=True)


def inputs(kernel: str, params: dict[str, Any], backend: str, device: str) -> Operands:
    """The tool's draws, from one seed on the device (the weights are large): cutlass_fused_moe
    x ~ N(0, 1), fc1/fc2 N(0, 1)/10, router logits N(0, 1) in the dtype; bgmv_moe x N(0, 1)/10,
    LoRA weights N(0, 1)/100, each pair's expert uniform, weights a softmax of k normals, each
    token's adapter uniform."""
    if kernel not in MEASURED:
        # nothing to draw: the harness refuses it by architecture, or prepare() says why
        return Operands(kernel, params, {})
    dtype = getattr(torch, str(params["dtype"]))
    gen = torch.Generator(device=device).manual_seed(SEED)
    n, h, e, k = (int(params[p]) for p in ("num_tokens", "hidden_size", "num_experts",
                                          "experts_per_token"))

    def normal(*shape: int, dt: torch.dtype = dtype) -> torch.Tensor:
        return torch.randn(shape, generator=gen, device=device, dtype=dt)

    if kernel == "cutlass_fused_moe":
        i = int(params["intermediate_size"])
        x, fc1, fc2 = normal(n, h), normal(e, 2 * i, h) / 10, normal(e, h, i) / 10
        experts, weights = route(normal(n, e), k)
        return Operands(kernel, params, {"x": x, "experts": experts, "weights": weights,
                                         "fc1": fc1, "fc2": fc2})
    r, s, loras = int(params["rank"]), int(params["num_slices"]), int(params["num_loras"])
    pairs = n * k
    data: dict[str, Any] = {
        "x": normal(n, h) / 10,
        "lora_a": [normal(loras, e, r, h) / 100 for _ in range(s)],
        "lora_b": [normal(loras, e, h, r) / 100 for _ in range(s)],
        "token_ids": torch.arange(n, device=device).repeat_interleave(k),
        "expert_ids": torch.randint(0, e, (pairs,), generator=gen, device=device),
        "weights": torch.softmax(normal(n, k, dt=torch.float32), dim=-1).view(-1),
        "lora_indices": torch.randint(0, loras, (n,), generator=gen, device=device),
    }
    return LoraOperands(kernel, params, data)


# --------------------------------------------------------------------- the computations


def moe_layer(d: dict[str, Any], dtype: torch.dtype) -> torch.Tensor:
    """The routed SwiGLU MoE computed in ``dtype`` (float32 for the reference), one expert at
    a time: its tokens by index_select, its weighted output added back by index_add_."""
    x = d["x"].to(dtype)
    n, k = d["experts"].shape
    out = torch.zeros_like(x)
    experts = d["experts"].reshape(-1)
    tokens = torch.arange(n, device=x.device).repeat_interleave(k)
    weights = d["weights"].reshape(-1).to(dtype)
    for e in range(d["fc1"].shape[0]):
        picked = (experts == e).nonzero().squeeze(1)
        if picked.numel() == 0:
            continue
        rows = tokens.index_select(0, picked)
        # fc1 holds the up projection (w3) then the gate (w1), as FlashInfer reads it
        up, gate = (x.index_select(0, rows) @ d["fc1"][e].to(dtype).T).chunk(2, dim=-1)
        y = (F.silu(gate) * up) @ d["fc2"][e].to(dtype).T
        out.index_add_(0, rows, y * weights.index_select(0, picked)[:, None])
    return out


def lora_delta(d: dict[str, Any], dtype: torch.dtype) -> torch.Tensor:
    """bgmv_moe's shrink and expand computed in ``dtype``, one (adapter, expert) cell at a
    time, accumulated in float32 ``[num_tokens, num_slices * hidden_size]`` as FlashInfer's
    output is."""
    x = d["x"].to(dtype)
    n, h = x.shape
    tokens, experts = d["token_ids"], d["expert_ids"]
    adapters = d["lora_indices"].index_select(0, tokens)
    num_experts = d["lora_a"][0].shape[1]
    cells = adapters * num_experts + experts
    y = torch.zeros(n, len(d["lora_a"]) * h, dtype=torch.float32, device=x.device)
    for cell in torch.unique(cells).tolist():
        picked = (cells == cell).nonzero().squeeze(1)
        rows = tokens.index_select(0, picked)
        xs = x.index_select(0, rows)
        w = d["weights"].index_select(0, picked)[:, None]
        lora, e = divmod(int(cell), num_experts)
        for s, (a, b) in enumerate(zip(d["lora_a"], d["lora_b"], strict=True)):
            delta = (xs @ a[lora, e].to(dtype).T) @ b[lora, e].to(dtype).T
            y[:, s * h:(s + 1) * h].index_add_(0, rows, delta.float() * w)
    return y


def reference(inp: Operands) -> list[torch.Tensor]:
    compute = moe_layer if inp.kernel == "cutlass_fused_moe" else lora_delta
    return [compute(inp.data, torch.float32)]


# --------------------------------------------------------------------------- the calls


def _flashinfer_cutlass(inp: Operands) -> Any:
    """flashinfer.fused_moe.cutlass_fused_moe as the tool's base variant calls it (tp, ep 1,
    no quantisation, SwiGLU, enable_pdl False). Its signature is the same from 0.5.3 to 0.7.4;
    it writes ``output`` and returns a list, so the call hands ``output`` back. The experts are
    cast to int32 once here (the tool casts them inside its timed call)."""
    from flashinfer.fused_moe import cutlass_fused_moe

    out = torch.empty_like(inp.data["x"])
    dtype = inp.data["x"].dtype

    def call(d: dict[str, Any]) -> torch.Tensor:
        cutlass_fused_moe(**cutlass_kwargs(d, dtype, out))
        return out
    return call


def cutlass_kwargs(d: dict[str, Any], dtype: torch.dtype, out: torch.Tensor) -> dict[str, Any]:
    """cutlass_fused_moe's arguments by name (tests/test_family_moe.py checks the names
    against each release's signature)."""
    return {"input": d["x"], "token_selected_experts": d["experts"],
            "token_final_scales": d["weights"], "fc1_expert_weights": d["fc1"],
            "fc2_expert_weights": d["fc2"], "output_dtype": dtype, "quant_scales": None,
            "output": out, "enable_pdl": False}


def bgmv_kwargs(d: dict[str, Any], strides: dict[str, int]) -> tuple[dict[str, Any],
                                                                        dict[str, Any]]:
    """bgmv_moe_shrink's and bgmv_moe_expand's arguments by name: the shrink reads x through
    the A tables into ``shrink``, the expand reads it through the B tables into ``y``, one
    ``hidden_size`` of columns per slice."""
    h, slices = d["x"].shape[1], len(d["lora_a"])
    pairs = {"sorted_token_ids": d["token_ids"], "expert_ids": d["expert_ids"],
             "lora_indices": d["lora_indices"]}
    shrink = {"y": d["shrink"], "x": d["x"], "w_ptr": d["w_ptr_a"], **pairs,
              "lora_stride": strides["a"]}
    expand = {"y": d["y"], "x": d["shrink"], "w_ptr": d["w_ptr_b"], **pairs,
              "topk_weights": d["weights"], "slice_start_loc": d["slice_start"],
              "output_slices": [h] * slices, "lora_stride": strides["b"]}
    return shrink, expand


def lora_tables(d: dict[str, Any], fill: Any) -> dict[str, int]:
    """Give ``d`` what FlashInfer's kernels read besides the operands: the per-slice tables
    of each expert's A and B weights (``fill``: FlashInfer's fill_w_ptr, which also returns
    the stride between adapters), the shrink buffer, the float32 ``y``, each slice's first
    column. Returns the strides."""
    x, slices = d["x"], len(d["lora_a"])
    experts, rank = d["lora_a"][0].shape[1], d["lora_a"][0].shape[2]
    strides: dict[str, int] = {}
    for side in ("a", "b"):
        table = torch.zeros(slices, experts, dtype=torch.int64, device=x.device)
        for i, w in enumerate(d[f"lora_{side}"]):
            strides[side] = int(fill(table, w, experts, i))
        d[f"w_ptr_{side}"] = table
    d["shrink"] = torch.zeros(slices, d["token_ids"].numel(), rank, dtype=x.dtype,
                              device=x.device)
    d["y"] = torch.zeros(x.shape[0], slices * x.shape[1], dtype=torch.float32,
                         device=x.device)
    d["slice_start"] = torch.arange(slices, dtype=torch.int64, device=x.device) * x.shape[1]
    return strides


# The module, not the package's attribute of that name: flashinfer.fused_moe re-exports the
# module's bgmv_moe function under it (family.flashinfer_module takes the module).
BGMV_MODULE = "flashinfer.fused_moe.bgmv_moe"


def _flashinfer_bgmv(inp: Operands) -> Any:
    """flashinfer.fused_moe.bgmv_moe's shrink then expand, as the tool times them: both
    buffers zeroed in the call (the kernels accumulate into them), the pointer tables made by
    FlashInfer's fill_w_ptr outside it, and again for each rotated copy of the data."""
    import flashinfer

    if release(flashinfer.__version__) < release(BGMV_SINCE):
        raise NotImplementedError(f"FlashInfer {flashinfer.__version__} has no "
                                  f"flashinfer.fused_moe.bgmv_moe (added in {BGMV_SINCE})")
    fb = flashinfer_module(BGMV_MODULE)
    strides = lora_tables(inp.data, fb.fill_w_ptr)
    inp.kept["point_at"] = lambda d: lora_tables(d, fb.fill_w_ptr)

    def call(d: dict[str, Any]) -> torch.Tensor:
        d["shrink"].zero_()
        d["y"].zero_()
        shrink, expand = bgmv_kwargs(d, strides)
        fb.bgmv_moe_shrink(**shrink)
        fb.bgmv_moe_expand(**expand)
        return d["y"]
    return call


def _outputs(raw: torch.Tensor) -> list[torch.Tensor]:
    return [raw.float()]


def prepare(backend: str, inp: Operands, device: str) -> Prepared:
    kernel = inp.kernel
    if backend == "torch" and kernel in MEASURED:
        compute = moe_layer if kernel == "cutlass_fused_moe" else lora_delta
        dtype = getattr(torch, str(inp.params["dtype"]))

        def torch_call(d: dict[str, Any]) -> torch.Tensor:
            return compute(d, dtype)
        return Prepared(fn=torch_call, outputs=_outputs, resolved_backend="torch")
    if backend not in KERNEL_BACKENDS[kernel]:
        raise NotImplementedError(f"backend {backend!r} is not offered for {kernel}")
    if device != "cuda":
        raise NotImplementedError(f"FlashInfer backend {backend!r} needs a CUDA device")
    if kernel not in MEASURED:
        raise NotImplementedError(not_run_yet(kernel, "its block-scaled operands",
                                              DECLARED[kernel][1]))
    if kernel == "cutlass_fused_moe":
        return Prepared(fn=_flashinfer_cutlass(inp), outputs=_outputs, resolved_backend=backend)
    # Before anything calls the module: 0.6's generator gives its source copies fresh times,
    # and every process would rebuild it (kernelwatch_harness.jit_sources)
    kept = keep_bgmv_moe_built()
    return Prepared(fn=_flashinfer_bgmv(inp), outputs=_outputs, resolved_backend=backend,
                    notes={"jit_source_times_kept": len(kept)} if kept else {})
