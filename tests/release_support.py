"""Helpers for the release-flow tests: a tiny CPU release suite and a local HTTP server that
records the notifications it receives."""

from __future__ import annotations

from pathlib import Path

TINY_SUITE = """
specs:
  - name: release-tiny-decode
    kernel: batch_decode
    backends: [fa2, torch-sdpa]
    params: {batch_size: [16], kv_len: [8192]}
    cpu_params: {batch_size: [1, 2], kv_len: [64], num_qo_heads: [4], num_kv_heads: [2],
                 head_dim: [64]}
    timing: {warmup: 1, iterations: 30}
"""


def write_tiny_suite(tmp_path: Path) -> Path:
    p = tmp_path / "suite.yaml"
    p.write_text(TINY_SUITE)
    return p
