"""Read the real signatures of the FlashInfer APIs the harness calls, from released wheels,
without importing them (no GPU needed): the adapters' argument mapping is tested against them
(tests/test_adapters.py), for every version kernelwatch supports.

    python tests/signatures.py WHEEL [WHEEL ...] > tests/fixtures/gpu/flashinfer_signatures.json

Wheels: ``python3 -m pip download --no-deps --only-binary=:all: -d WHEELS flashinfer-python==V``;
the exact command that made the committed snapshot is in tests/fixtures/README.md.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import zipfile
from typing import Any

FUNCTIONS = ("single_decode_with_kv_cache", "single_prefill_with_kv_cache",
             "cudnn_batch_prefill_with_kv_cache", "cudnn_batch_decode_with_kv_cache",
             "determine_attention_backend",
             # the GEMM family's (kernelwatch_harness.families.gemm_ops)
             "bmm_fp8", "mm_fp8", "mm_bf16", "bmm_bf16", "tinygemm_bf16",
             # the RoPE family's (kernelwatch_harness.families.rope_ops)
             "apply_rope", "apply_rope_pos_ids", "apply_llama31_rope",
             "apply_llama31_rope_pos_ids", "apply_rope_with_cos_sin_cache",
             "mla_rope_quantize_fp8", "rope_quantize_fp8",
             "rope_quantize_fp8_append_paged_kv_cache",
             # the sampling family's (flashinfer.sampling, and flashinfer.top_k and its
             # transforms in topk.py)
             "softmax", "sampling_from_probs", "sampling_from_logits",
             "top_k_sampling_from_probs", "top_p_sampling_from_probs",
             "top_k_top_p_sampling_from_probs", "top_k_top_p_sampling_from_logits",
             "min_p_sampling_from_probs", "top_k_renorm_probs", "top_p_renorm_probs",
             "top_k_mask_logits", "chain_speculative_sampling", "top_k",
             "top_k_page_table_transform", "top_k_ragged_transform",
             # flashinfer.top_k_varlen (topk_varlen/topk_varlen.py, 0.6.18 and later)
             "top_k_varlen",
             # the MoE family's (flashinfer.fused_moe: core.py and bgmv_moe.py)
             "cutlass_fused_moe", "bgmv_moe_shrink", "bgmv_moe_expand", "fill_w_ptr",
             # the GDN family's (flashinfer.gdn_decode, flashinfer.gdn_prefill) and the mamba
             # family's (flashinfer.mamba)
             "gated_delta_rule_decode", "gated_delta_rule_decode_pretranspose",
             "gated_delta_rule_mtp", "chunk_gated_delta_rule", "selective_state_update",
             # the norm family's quantising and fused norms (flashinfer.norm)
             "rmsnorm_quant", "fused_add_rmsnorm_quant", "layernorm_quant",
             "fused_rmsnorm_silu", "fused_dit_gate_residual_layernorm_gamma_beta",
             "fused_dit_gate_residual_layernorm_scale_shift",
             "fused_dit_residual_layernorm_scale_shift", "fused_qk_rmsnorm_rope")
CLASSES = (
    "BatchDecodeWithPagedKVCacheWrapper",
    "BatchPrefillWithPagedKVCacheWrapper",
    "BatchPrefillWithRaggedKVCacheWrapper",
    "BatchMLAPagedAttentionWrapper",
)
METHODS = ("__init__", "plan", "run", "_plan_impl")


def _is_overload(fn: ast.FunctionDef) -> bool:
    return any(
        (isinstance(d, ast.Name) and d.id == "overload")
        or (isinstance(d, ast.Attribute) and d.attr == "overload")
        for d in fn.decorator_list
    )


def _literal(annotation: ast.expr | None) -> list[str] | None:
    """The values of a ``Literal["a", "b"]`` annotation (a backend's choices), else None."""
    if not (isinstance(annotation, ast.Subscript)
            and ast.unparse(annotation.value).endswith("Literal")):
        return None
    items = annotation.slice.elts if isinstance(annotation.slice, ast.Tuple) else [
        annotation.slice]
    return [i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)]


def describe(fn: ast.FunctionDef) -> dict[str, Any]:
    a = fn.args
    out: dict[str, Any] = {
        "positional": [p.arg for p in (*a.posonlyargs, *a.args)],
        "keyword_only": [p.arg for p in a.kwonlyargs],
        "var_positional": a.vararg is not None,
        "var_keyword": a.kwarg is not None,
    }
    literals = {p.arg: v for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)
                if (v := _literal(p.annotation)) is not None}
    if literals:  # what a backend argument accepts in this release
        out["literals"] = literals
    return out


def signatures_from_sources(sources: dict[str, str]) -> dict[str, Any]:
    """Implementation (non-@overload) signatures of the APIs, from a package's sources; a
    name defined in several modules (a class moved between releases, with a shim left
    behind) keeps every definition, and the adapters must fit all of them."""
    out: dict[str, Any] = {}
    for path, text in sorted(sources.items()):
        if not any(f"def {n}" in text or f"class {n}" in text for n in (*FUNCTIONS, *CLASSES)):
            continue  # most of the package: skip parsing it
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        for node in tree.body:
            if (
                isinstance(node, ast.FunctionDef)
                and node.name in FUNCTIONS
                and not _is_overload(node)
            ):
                out.setdefault(node.name, []).append({**describe(node), "file": path})
            if isinstance(node, ast.ClassDef) and node.name in CLASSES:
                for item in node.body:
                    if (
                        isinstance(item, ast.FunctionDef)
                        and item.name in METHODS
                        and not _is_overload(item)
                    ):
                        key = f"{node.name}.{item.name}"
                        out.setdefault(key, []).append({**describe(item), "file": path})
    return out


def from_wheel(path: str) -> tuple[str, dict[str, Any]]:
    version = re.search(r"flashinfer_python-([^-]+)-", path)
    if not version:
        raise ValueError(f"not a flashinfer-python wheel: {path}")
    with zipfile.ZipFile(path) as zf:
        sources = {
            n: zf.read(n).decode("utf-8", "replace")
            for n in zf.namelist()
            if n.startswith("flashinfer/") and n.endswith(".py")
        }
    return version.group(1), signatures_from_sources(sources)


def main(argv: list[str]) -> int:
    data: dict[str, Any] = {"format": "flashinfer-signatures/1", "versions": {}}
    for wheel in argv:
        version, sigs = from_wheel(wheel)
        data["versions"][version] = sigs
    json.dump(data, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
