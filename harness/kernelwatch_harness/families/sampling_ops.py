"""The sampling family's tensors: seeded inputs, the FlashInfer and PyTorch calls
(kernelwatch_harness.families.sampling declares the family, sampling_checks checks results)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection
from typing import Any

import torch

from kernelwatch_harness.families import sampling_checks
from kernelwatch_harness.families.sampling import (
    GVR_MAX_ROWS,
    GVR_TOP_K,
    READS_LOGITS,
    SCORES,
    TAKES_DTYPE,
    TRANSFORMS,
    VARLEN,
    VARLEN_ARCHS,
)
from kernelwatch_harness.family import Operands, check_backend_arch, flashinfer_api
from kernelwatch_harness.prepared import Prepared

SEED = 0
Call = Callable[[dict[str, torch.Tensor]], Any]


def inputs(kernel: str, params: dict[str, Any], backend: str, device: str) -> Operands:
    """Logits standard normal from one seed, probabilities their softmax (draft token ids
    uniform, page tables permutations; top_k_varlen's rows full length, and for gvr the tool's
    hint); a pristine copy is kept for the checks."""
    gen = torch.Generator(device="cpu").manual_seed(SEED)
    b = int(params["batch_size"])
    v = int(params["max_len" if kernel in SCORES else "vocab_size"])
    dtype = getattr(torch, str(params["logits_dtype"])) if kernel in TAKES_DTYPE else torch.float32
    data: dict[str, torch.Tensor]
    if kernel == "chain_speculative_sampling":
        n = int(params["num_speculate_tokens"])
        data = {"draft_probs": torch.softmax(torch.randn(b, n, v, generator=gen), dim=-1),
                "draft_token_ids": torch.randint(v, (b, n), generator=gen, dtype=torch.int32),
                "target_probs": torch.softmax(torch.randn(b, n + 1, v, generator=gen), dim=-1)}
    elif kernel in TRANSFORMS:
        data = {"scores": torch.randn(b, v, generator=gen).to(dtype)}
        if kernel == "top_k_page_table_transform":
            data["src_page_table"] = torch.stack(
                [torch.randperm(v, generator=gen) for _ in range(b)]).int()
        else:  # each row's scores at its own offset of one ragged buffer
            data["offsets"] = torch.arange(0, b * v, v, dtype=torch.int32)
        data["lengths"] = torch.full((b,), v, dtype=torch.int32)
    elif kernel == VARLEN:
        data = {"logits": torch.randn(b, v, generator=gen).to(dtype),
                "seq_lens": torch.full((b,), v, dtype=torch.int32)}
        if backend == "gvr":  # the previous step's selection: argmax first, then 1 to k - 1
            hint = torch.arange(int(params["top_k"]), dtype=torch.int32).repeat(b, 1)
            hint[:, 0] = data["logits"].argmax(dim=-1).int()
            data["pre_idx"] = hint
    else:
        logits = torch.randn(b, v, generator=gen)
        data = ({"logits": logits.to(dtype)} if kernel in READS_LOGITS
                else {"probs": torch.softmax(logits, dim=-1).to(dtype)})
    inp = Operands(kernel, params, {k: t.to(device) for k, t in data.items()})
    inp.kept["pristine"] = {k: t.clone() for k, t in inp.data.items()}
    return inp


# ------------------------------------------------------------------------------- PyTorch


def _multinomial(weights: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.multinomial(weights.float(), 1, generator=gen).squeeze(-1)


def _nucleus(sorted_desc: torch.Tensor, top_p: float) -> torch.Tensor:
    """Which of a row's tokens, sorted by probability, the top-p nucleus keeps: those with
    less than top_p of the mass before them."""
    mass = sorted_desc / sorted_desc.sum(-1, keepdim=True)
    return (mass.cumsum(-1) - mass) < top_p


def _top_k_top_p(probs: torch.Tensor, k: int, top_p: float, order: str,
                 gen: torch.Generator) -> torch.Tensor:
    vals, idx = probs.topk(k, dim=-1)
    # top_k_first: the nucleus of the renormalised top-k set; joint: of the whole row
    total = (vals if order == "top_k_first" else probs).sum(-1, keepdim=True)
    keep = (vals.cumsum(-1) - vals) < top_p * total
    return idx.gather(-1, _multinomial(vals * keep, gen)[:, None]).squeeze(-1)


def _speculative(d: dict[str, torch.Tensor],
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chain speculative sampling: accept draft token i with probability
    min(1, target/draft), stop at the first rejection and sample from max(target - draft, 0)
    there, or from the last target when every draft is accepted."""
    draft, ids, target = d["draft_probs"], d["draft_token_ids"].long(), d["target_probs"]
    b, n, _ = draft.shape
    q = draft.gather(-1, ids[..., None]).squeeze(-1)
    p = target[:, :n].gather(-1, ids[..., None]).squeeze(-1)
    u = torch.rand(b, n, generator=gen, device=draft.device)
    accepted = u * q < p
    emitted = accepted.int().cumprod(-1).sum(-1)
    rows = torch.arange(b, device=draft.device)
    residual = target[rows, emitted] - draft[rows, emitted.clamp(max=n - 1)] * \
        (emitted < n)[:, None]
    last = _multinomial(residual.clamp_min(0), gen)
    pos = torch.arange(n + 1, device=draft.device).expand(b, n + 1)
    drafts = torch.cat([ids, torch.full_like(ids[:, :1], -1)], dim=1)
    tokens = torch.where(pos < emitted[:, None], drafts, -1)
    tokens[rows, emitted] = last
    return tokens.int(), accepted.int().sum(-1).int(), emitted.int()


def _torch_call(kernel: str, params: dict[str, Any], gen: torch.Generator) -> Call:
    """What a PyTorch user writes for each kernel; the samplers draw from ``gen``."""
    k = int(params.get("top_k", 1))
    top_p = float(params.get("top_p", 1.0))

    def probs(d: dict[str, torch.Tensor]) -> torch.Tensor:
        return d["probs"] if "probs" in d else torch.softmax(d["logits"].float(), dim=-1)

    def renorm(x: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        out = x.float() * kept
        return (out / out.sum(-1, keepdim=True)).to(x.dtype)

    def top_k_renorm(d: dict[str, torch.Tensor]) -> torch.Tensor:
        x = d["probs"]
        kept = torch.zeros_like(x, dtype=torch.bool).scatter_(
            -1, x.topk(k, dim=-1).indices, True)
        return renorm(x, kept)

    def top_p_renorm(d: dict[str, torch.Tensor]) -> torch.Tensor:
        x = d["probs"]
        s, idx = x.sort(dim=-1, descending=True)
        return renorm(x, torch.zeros_like(x, dtype=torch.bool).scatter_(
            -1, idx, _nucleus(s, top_p)))

    def mask(d: dict[str, torch.Tensor]) -> torch.Tensor:
        x = d["logits"]
        vals, idx = x.topk(k, dim=-1)
        return torch.full_like(x, float("-inf")).scatter_(-1, idx, vals)

    def top_p_sample(d: dict[str, torch.Tensor]) -> torch.Tensor:
        s, idx = d["probs"].sort(dim=-1, descending=True)
        return idx.gather(-1, _multinomial(s * _nucleus(s, top_p), gen)[:, None]).squeeze(-1)

    def min_p_sample(d: dict[str, torch.Tensor]) -> torch.Tensor:
        x = d["probs"]
        floor = float(params["min_p"]) * x.max(-1, keepdim=True).values
        return _multinomial(x * (x >= floor), gen)

    def varlen(d: dict[str, torch.Tensor]) -> tuple[torch.Tensor, None]:
        x, lens = d["logits"], d["seq_lens"][:, None]
        beyond = torch.arange(x.shape[-1], device=x.device) >= lens
        idx = x.masked_fill(beyond, float("-inf")).topk(k, dim=-1).indices
        slots = torch.arange(k, device=x.device)
        return torch.where(slots < lens, idx, -1).int(), None  # -1 past a short row, as FI

    def top_k_sample(d: dict[str, torch.Tensor]) -> torch.Tensor:
        vals, idx = d["probs"].topk(k, dim=-1)
        return idx.gather(-1, _multinomial(vals, gen)[:, None]).squeeze(-1)

    calls: dict[str, Call] = {
        "softmax": lambda d: torch.softmax(
            d["logits"].float() / float(params["temperature"]), dim=-1),
        "sampling_from_probs": lambda d: _multinomial(probs(d), gen),
        "sampling_from_logits": lambda d: _multinomial(probs(d), gen),
        "top_k_sampling_from_probs": top_k_sample,
        "top_p_sampling_from_probs": top_p_sample,
        "top_k_top_p_sampling_from_probs": lambda d: _top_k_top_p(
            probs(d), k, top_p, str(params["filter_apply_order"]), gen),
        "top_k_top_p_sampling_from_logits": lambda d: _top_k_top_p(
            probs(d), k, top_p, str(params["filter_apply_order"]), gen),
        "min_p_sampling_from_probs": min_p_sample,
        "top_k_renorm_probs": top_k_renorm,
        "top_p_renorm_probs": top_p_renorm,
        "top_k_mask_logits": mask,
        "chain_speculative_sampling": lambda d: _speculative(d, gen),
        "top_k": lambda d: d["logits"].topk(k, dim=-1),
        "top_k_page_table_transform": lambda d: d["src_page_table"].gather(
            -1, d["scores"].topk(k, dim=-1).indices).int(),
        "top_k_ragged_transform": lambda d: (
            d["scores"].topk(k, dim=-1).indices + d["offsets"][:, None]).int(),
        VARLEN: varlen,
    }
    return calls[kernel]


# ------------------------------------------------------------------------------ FlashInfer


# The keywords each kernel's FlashInfer function is called with (its tensors go first, by
# position); samplers add their random state.
_KEYWORDS: dict[str, tuple[str, ...]] = {
    "softmax": ("temperature", "enable_pdl"),
    "top_k_sampling_from_probs": ("top_k",),
    "top_p_sampling_from_probs": ("top_p",),
    "top_k_top_p_sampling_from_probs": ("top_k", "top_p", "filter_apply_order"),
    "top_k_top_p_sampling_from_logits": ("top_k", "top_p", "filter_apply_order"),
    "min_p_sampling_from_probs": ("min_p",),
    "top_k_renorm_probs": ("top_k",),
    "top_p_renorm_probs": ("top_p",),
    "top_k_mask_logits": ("top_k",),
    "top_k": ("k",),
    "top_k_page_table_transform": ("k",),
    "top_k_ragged_transform": ("k",),
}
# The tensors each kernel's FlashInfer function takes first, in order.
_TENSORS: dict[str, tuple[str, ...]] = {
    "chain_speculative_sampling": ("draft_probs", "draft_token_ids", "target_probs"),
    "top_k_page_table_transform": ("scores", "src_page_table", "lengths"),
    "top_k_ragged_transform": ("scores", "offsets", "lengths"),
}
# FlashInfer backends of the kernels that have more than the one CUDA kernel.
KERNELS_BACKENDS: dict[str, tuple[str, ...]] = {VARLEN: tuple(VARLEN_ARCHS)}
RANDOM = ("sampling_from_probs", "sampling_from_logits", "top_k_sampling_from_probs",
          "top_p_sampling_from_probs", "top_k_top_p_sampling_from_probs",
          "top_k_top_p_sampling_from_logits", "min_p_sampling_from_probs",
          "chain_speculative_sampling")


def flashinfer_kwargs(kernel: str, params: dict[str, Any], accepted: Collection[str],
                      version: str, generator: Any = None) -> dict[str, Any]:
    """The keywords for ``kernel``'s FlashInfer function of this ``version``, whose
    parameters are ``accepted``: the tool's seed and offset where the release takes them
    (0.6.18+), else a seeded ``generator`` (0.5.3). A keyword the release lacks is refused."""
    values = {**params, "k": params.get("top_k"), "enable_pdl": False}  # PDL: tool's default
    kwargs = {name: values[name] for name in _KEYWORDS.get(kernel, ())}
    if kernel in RANDOM:
        if {"seed", "offset"} <= set(accepted):
            kwargs.update(seed=SEED, offset=0)
        else:
            kwargs["generator"] = generator
    missing = [name for name in kwargs if name not in accepted]
    if missing:
        raise NotImplementedError(f"FlashInfer {version}: {api_name(kernel)} has no keyword "
                                  f"{missing[0]!r}")
    return kwargs


def api_name(kernel: str) -> str:
    top = kernel == "top_k" or kernel in TRANSFORMS  # flashinfer.topk's, exported at the top
    return f"flashinfer.{kernel}" if top else f"flashinfer.sampling.{kernel}"


def _flashinfer_call(kernel: str, params: dict[str, Any],
                     gen: torch.Generator) -> tuple[Call, tuple[torch.Generator, ...]]:
    """The call, and the generators it draws from (``gen`` where the release takes one)."""
    op, version = flashinfer_api(api_name(kernel))
    kwargs = flashinfer_kwargs(kernel, params, inspect.signature(op).parameters, version, gen)
    names = _TENSORS.get(kernel)

    def call(d: dict[str, torch.Tensor]) -> Any:
        return op(*(d[n] for n in names or d), **kwargs)
    return call, ((gen,) if "generator" in kwargs else ())


def varlen_refusal(backend: str, params: dict[str, Any], arch: str) -> str | None:
    """Why FlashInfer's ``backend`` of top_k_varlen cannot run the point on ``arch``, or
    None: its architectures, and gvr's own limits (its admission check in every release
    that has it)."""
    try:
        check_backend_arch(VARLEN, backend, VARLEN_ARCHS[backend], arch)
    except NotImplementedError as e:
        return str(e)
    if backend != "gvr":
        return None
    k, rows = int(params["top_k"]), int(params["batch_size"])
    # gvr loads 16 bytes at a time: each row must start 16-byte aligned
    per_16_bytes = 16 // {"float32": 4}.get(str(params["logits_dtype"]), 2)
    if k not in GVR_TOP_K:
        return f"gvr selects top_k {', '.join(map(str, GVR_TOP_K))} only, not {k}"
    if int(params["max_len"]) % per_16_bytes:
        return (f"gvr reads rows in 16-byte vectors: max_len is a multiple of {per_16_bytes} "
                f"for {params['logits_dtype']}")
    if rows > GVR_MAX_ROWS:
        return f"gvr's load-balanced kernel takes at most {GVR_MAX_ROWS} rows, not {rows}"
    return None


def _varlen_call(backend: str, params: dict[str, Any], device: str) -> Call:
    """flashinfer.top_k_varlen with the backend named, as the tool calls it (the hint for gvr,
    none for the others)."""
    # named first: no backend of it runs on any GPU with this release
    op, version = flashinfer_api(f"flashinfer.{VARLEN}", " (added in 0.6.18)")
    major, minor = torch.cuda.get_device_capability(torch.device(device))
    why = varlen_refusal(backend, params, f"sm{major}{minor}")
    if why is not None:
        raise NotImplementedError(why)
    accepted = inspect.signature(op).parameters
    missing = [n for n in ("pre_idx", "backend") if n not in accepted]
    if missing:
        raise NotImplementedError(f"FlashInfer {version}: flashinfer.{VARLEN} has no keyword "
                                  f"{missing[0]!r}")
    k = int(params["top_k"])

    def call(d: dict[str, torch.Tensor]) -> Any:
        return op(d["logits"], d["seq_lens"], k, pre_idx=d.get("pre_idx"), backend=backend)
    return call


def prepare(backend: str, inp: Operands, device: str) -> Prepared:
    def outputs(raw: Any) -> list[torch.Tensor]:
        return sampling_checks.outputs(inp, raw)

    gen = torch.Generator(device=device).manual_seed(SEED)
    if backend == "torch":
        return Prepared(fn=_torch_call(inp.kernel, inp.params, gen), outputs=outputs,
                        resolved_backend="torch",
                        generators=(gen,) if inp.kernel in RANDOM else ())
    if backend not in KERNELS_BACKENDS.get(inp.kernel, ("cuda",)):
        raise NotImplementedError(f"backend {backend!r} is not offered for {inp.kernel}")
    if device != "cuda":
        raise NotImplementedError(f"FlashInfer backend {backend!r} needs a CUDA device")
    if inp.kernel == VARLEN:
        return Prepared(fn=_varlen_call(backend, inp.params, device), outputs=outputs,
                        resolved_backend=backend)
    fn, generators = _flashinfer_call(inp.kernel, inp.params, gen)
    return Prepared(fn=fn, outputs=outputs, resolved_backend="cuda", generators=generators)
