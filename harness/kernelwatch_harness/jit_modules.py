"""Build side by side the FlashInfer JIT modules that one call builds one after another.

FlashInfer builds a module when a call first needs it, inside the call: a call that needs two
modules it has not built yet builds them in turn. The release suite's sampler is one in
FlashInfer 0.7: ``top_k_top_p_sampling_from_logits`` with ``top_k_first`` takes a fast path
through the radix ``top_k`` (its ``topk`` module) and then samples with the ``sampling``
module. On an H100 the ``topk`` build was still running after 480 s and ``sampling`` took
302 s (docs/results/h100-2026-12.md), and the release's sampler run, the last of the suite to
be built, waits for their sum. Each module is its own ninja build, so two can run at once: the
call then waits for the longer. A family names the modules its call needs in a release
(``flashinfer.jit`` generator functions); what the release lacks is skipped, and FlashInfer
still builds whatever the call needs that was not named.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# (module path, generator function): a flashinfer.jit generator returning a JitSpec
Generator = tuple[str, str]


def specs(generators: Sequence[Generator]) -> list[Any]:
    """The JIT specs of the generators this release has (a release without one skips it)."""
    out = []
    for module, name in generators:
        try:
            gen = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        out.append(gen())
    return out


def build_side_by_side(generators: Sequence[Generator], step: str = "build_and_load"
                       ) -> list[str]:
    """Build (or load, where an earlier process built it) each module of ``generators`` that
    the release has, all at once: each ``build_and_load`` takes its own module's lock and runs
    its own ninja. Returns the modules' names; none where fewer than two would overlap.
    ``step="build"`` compiles without loading (a machine without a GPU cannot load them)."""
    found = specs(generators)
    if len(found) < 2:
        return []
    with ThreadPoolExecutor(max_workers=len(found), thread_name_prefix="jit") as pool:
        # list(): waits for every build and re-raises a build's error
        list(pool.map(lambda spec: getattr(spec, step)(), found))
    return [str(spec.name) for spec in found]
