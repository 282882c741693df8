"""The sampling family's correctness checks (kernelwatch_harness.families.sampling says what is
checked): each kernel's result turned into the tensors ``max_abs_error`` compares, and the
reference they are compared with. All in float32, from the pristine inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from kernelwatch_harness.families.sampling import SAMPLERS, SCORES, TRANSFORMS, VARLEN
from kernelwatch_harness.family import Operands

# Nucleus boundaries are sums of float32 probabilities in another order than the kernel's:
# a token this close to the boundary may go either way.
MASS_SLACK = 1e-4


@dataclass(frozen=True)
class Support:
    """Which tokens a filter allows: the top-k set, the top-p nucleus (of the top-k set
    renormalised when ``within_top_k``), the min-p set; ``probs``: values are probabilities
    (a zero-probability token is never allowed)."""

    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    within_top_k: bool = False
    probs: bool = True

    def allowed(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Whether a token of value ``x`` (``[rows, m]``) may be chosen from row ``p``."""
        count_gt, _, mass_gt = _above(p, x)
        ok = x > 0 if self.probs else torch.ones_like(x, dtype=torch.bool)
        if self.top_k is not None:
            ok &= count_gt < self.top_k
        if self.top_p is not None:
            ok &= mass_gt < self.top_p * self._mass(p) + MASS_SLACK
        if self.min_p is not None:
            top = p.max(dim=-1, keepdim=True).values
            ok &= x >= self.min_p * top * (1 - 1e-6)
        return ok

    def required(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Whether a token of value ``x`` is in every valid set (it may not be dropped)."""
        count_gt, count_ge, mass_gt = _above(p, x)
        need = x > 0 if self.probs else torch.ones_like(x, dtype=torch.bool)
        if self.top_k is not None:
            need &= count_ge <= self.top_k  # with its ties, it fits in the k
        if self.top_p is not None:  # below the boundary, and no tie to choose instead
            need &= (mass_gt < self.top_p * self._mass(p) - MASS_SLACK) & (count_ge - count_gt == 1)
        return need

    def _mass(self, p: torch.Tensor) -> torch.Tensor:
        """The mass top-p is a fraction of: the row's, or its top-k set's."""
        if self.within_top_k and self.top_k is not None:
            return p.topk(self.top_k, dim=-1).values.sum(-1, keepdim=True)
        return p.sum(-1, keepdim=True)


def _above(p: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per value of ``x``: how many of its row's ``p`` are greater, greater or equal, and
    their mass greater."""
    s = p.sort(dim=-1).values.contiguous()
    csum = torch.cat([torch.zeros_like(s[..., :1]), s.cumsum(-1)], dim=-1)
    n = p.shape[-1]
    le = torch.searchsorted(s, x.contiguous(), right=True)  # how many are <= x
    lt = torch.searchsorted(s, x.contiguous(), right=False)
    mass_gt = csum[..., -1:] - csum.gather(-1, le)
    return n - le, n - lt, mass_gt


def support(kernel: str, params: dict[str, Any]) -> Support:
    k = int(params["top_k"]) if "top_k" in params else None
    p = float(params["top_p"]) if "top_p" in params else None
    if kernel == "min_p_sampling_from_probs":
        return Support(min_p=float(params["min_p"]))
    return Support(top_k=k, top_p=p, probs=kernel != "top_k_mask_logits",
                   within_top_k=params.get("filter_apply_order") == "top_k_first")


def _distribution(inp: Operands) -> torch.Tensor:
    """The row distribution the kernel filters (float32): its probabilities, the softmax of
    its logits, or the logits themselves for masking."""
    d = inp.kept["pristine"]
    if "probs" in d:
        return d["probs"].float()
    if inp.kernel == "top_k_mask_logits":
        return d["logits"].float()
    return torch.softmax(d["logits"].float(), dim=-1)


def sample_violations(inp: Operands, samples: torch.Tensor) -> torch.Tensor:
    """1 for each row whose sampled token is outside the allowed support, else 0."""
    p = _distribution(inp)
    s = samples.long().reshape(-1, 1)
    inside = (s >= 0) & (s < p.shape[-1])
    x = p.gather(-1, s.clamp(0, p.shape[-1] - 1))
    ok = inside & support(inp.kernel, inp.params).allowed(p, x)
    return (~ok).float().reshape(-1)


def speculative_violations(inp: Operands, tokens: torch.Tensor,
                           emitted: torch.Tensor) -> torch.Tensor:
    """1 for each row that is not: the first ``emitted`` draft tokens, then a token the
    residual ``max(target - draft, 0)`` (or, all drafts accepted, the target) can give, then
    -1 to the end."""
    d = inp.kept["pristine"]
    draft, ids, target = d["draft_probs"].float(), d["draft_token_ids"].long(), \
        d["target_probs"].float()
    b, n, v = draft.shape
    e = emitted.long().reshape(b)
    tokens = tokens.long().reshape(b, n + 1)
    pos = torch.arange(n + 1, device=tokens.device).expand(b, n + 1)
    drafts = torch.cat([ids, torch.full_like(ids[:, :1], -1)], dim=1)
    prefix_ok = torch.where(pos < e[:, None], tokens == drafts, True).all(dim=1)
    tail_ok = torch.where(pos > e[:, None], tokens == -1, True).all(dim=1)
    rows = torch.arange(b, device=tokens.device)
    last = tokens[rows, e.clamp(0, n)]
    inside = (last >= 0) & (last < v) & (e >= 0) & (e <= n)
    t = target[rows, e.clamp(0, n)]
    q = draft[rows, e.clamp(0, n - 1)] * (e < n)[:, None]  # nothing to subtract at the end
    residual = (t - q).gather(-1, last.clamp(0, v - 1)[:, None]).squeeze(-1)
    ok = prefix_ok & tail_ok & inside & (residual > 0)
    return (~ok).float()


def set_errors(inp: Operands, out: torch.Tensor) -> list[torch.Tensor]:
    """A filter's result: per token, 1 where it is kept but not allowed or dropped but
    required; per token, how far its value is from the input (masking) or the input over the
    kept mass (renormalising); per row, 1 where fewer than top_k are kept."""
    p, rule = _distribution(inp), support(inp.kernel, inp.params)
    out = out.float()
    if inp.kernel == "top_k_mask_logits":
        kept = out > float("-inf")
        want = p
    else:
        kept = out != 0
        want = p / (p * kept).sum(-1, keepdim=True)
    bad = (kept & ~rule.allowed(p, p)) | (~kept & rule.required(p, p))
    value = torch.where(kept, (out - want).abs(), torch.zeros_like(out))
    value = torch.nan_to_num(value, nan=float("inf"))
    short = torch.zeros(p.shape[0], device=p.device)
    if rule.top_k is not None:
        nonzero = (p > 0).sum(-1) if rule.probs else torch.full_like(short, p.shape[-1])
        short = (kept.sum(-1) < torch.clamp(nonzero, max=rule.top_k)).float()
    return [bad.float(), value, short]


def top_k_values(inp: Operands, values: torch.Tensor, indices: torch.Tensor) -> list[torch.Tensor]:
    """top_k's values sorted, and the input's values at its indices sorted (unsorted output:
    both are compared as sets)."""
    x = inp.kept["pristine"]["logits"].float()
    at = x.gather(-1, indices.long())
    return [values.float().sort(-1, descending=True).values,
            at.sort(-1, descending=True).values]


def transform_violations(inp: Operands, out: torch.Tensor) -> torch.Tensor:
    """1 for each selected entry that, read back as its row's index (the page table is a
    permutation; a ragged entry is offset by its row's start), is out of the row, repeated,
    or outside every valid top-k set of the row's scores."""
    d = inp.kept["pristine"]
    n = d["scores"].shape[-1]
    out = out.long()
    if inp.kernel == "top_k_page_table_transform":
        inverse = d["src_page_table"].long().argsort(-1)
        idx = inverse.gather(-1, out.clamp(0, n - 1))
        inside = (out >= 0) & (out < n)
    else:
        idx = out - d["offsets"].long()[:, None]
        inside = (idx >= 0) & (idx < n)
    return _selection_violations(d["scores"].float(), idx, inside, int(inp.params["top_k"]))


def varlen_violations(inp: Operands, out: torch.Tensor) -> torch.Tensor:
    """1 for each of top_k_varlen's column indices that is past its row's length, repeated,
    or outside every valid top-k set of the row's first ``seq_len`` scores; -1 is right only
    in the slots past a row shorter than k."""
    d = inp.kept["pristine"]
    x, lens = d["logits"].float(), d["seq_lens"].long()[:, None]
    n, idx = x.shape[-1], out.long()
    x = x.masked_fill(torch.arange(n, device=x.device) >= lens, float("-inf"))
    padding = torch.arange(idx.shape[-1], device=idx.device) >= lens
    inside = (idx >= 0) & (idx < lens)
    bad = _selection_violations(x, idx, inside, int(inp.params["top_k"]))
    return torch.where(padding, (idx != -1).float(), bad)


def _selection_violations(x: torch.Tensor, idx: torch.Tensor, inside: torch.Tensor,
                          k: int) -> torch.Tensor:
    """1 for each selected row index (``idx``, ``inside`` its row) that is outside, repeated
    or not in any valid top-k set of its row's ``x``."""
    n = x.shape[-1]
    # An entry outside its row is a violation already; a distinct key keeps it from making a
    # valid entry look repeated.
    key = torch.where(inside, idx, n + torch.arange(idx.shape[-1], device=idx.device))
    ordered, order = key.sort(-1)
    repeated = torch.zeros_like(inside)
    repeated.scatter_(-1, order[:, 1:], ordered[:, 1:] == ordered[:, :-1])
    idx = idx.clamp(0, n - 1)
    allowed = Support(top_k=k, probs=False).allowed(x, x.gather(-1, idx))
    return (~(inside & allowed & ~repeated)).float()


def reference(inp: Operands) -> list[torch.Tensor]:
    d = inp.kept["pristine"]
    b = int(inp.params["batch_size"])
    if inp.kernel in SAMPLERS:
        return [torch.zeros(b, device=next(iter(d.values())).device)]
    if inp.kernel == "softmax":
        return [torch.softmax(d["logits"].float() / float(inp.params["temperature"]), dim=-1)]
    if inp.kernel == "top_k":
        top = d["logits"].float().topk(int(inp.params["top_k"]), dim=-1).values
        return [top, top]
    if inp.kernel in SCORES:
        x = next(iter(d.values()))
        return [torch.zeros(b, int(inp.params["top_k"]), device=x.device)]
    x = next(iter(d.values()))
    zeros = torch.zeros(x.shape, device=x.device)
    return [zeros, zeros, torch.zeros(b, device=x.device)]


def outputs(inp: Operands, raw: Any) -> list[torch.Tensor]:
    """A kernel's result (FlashInfer's or PyTorch's, the same form) as ``reference`` reads."""
    if inp.kernel == "chain_speculative_sampling":
        tokens, _accepted, emitted = raw
        return [speculative_violations(inp, tokens, emitted)]
    if inp.kernel in SAMPLERS:
        return [sample_violations(inp, raw)]
    if inp.kernel == "softmax":
        return [raw.float()]
    if inp.kernel == "top_k":
        return top_k_values(inp, *raw)
    if inp.kernel in TRANSFORMS:
        return [transform_violations(inp, raw)]
    if inp.kernel == VARLEN:
        indices, _values = raw
        return [varlen_violations(inp, indices)]
    return set_errors(inp, raw)
