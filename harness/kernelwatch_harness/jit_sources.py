"""Keep FlashInfer's JIT cache valid across processes where a release's own module generator
defeats it.

FlashInfer builds a JIT module with ninja, and a new process reuses the module it finds built
only when ninja sees every source older than its objects. In the releases from 0.6.13 (the
first with ``bgmv_moe``) through the 0.6 line, ``flashinfer/jit/bgmv_moe.py`` copies the
module's CUDA sources into the generated-source folder with ``shutil.copy`` on each process's
first call: every copy gets a fresh modification time, so ninja rebuilds the whole module in
every process. On an H100, 0.6.18.post1's was built in 376 s, again in 358 s by the next
process, and a third time by the one after (docs/results/h100-2026-12.md), while 0.7.4, which
copies with ``shutil.copy2`` (FlashInfer's own comment names the fix: "a fresh mtime forces a
full ninja rebuild (#4782)"), loaded its module built by the process before in 6 s.

The compiled code does not depend on the copies' times, only ninja's view of them does. So,
for a release whose generator still copies with ``shutil.copy``, the harness runs the
generator itself before the first call (it is cached per process, so it copies once) and gives
each copy the time of the source it is byte-for-byte equal to. A release's first build is
unchanged; the next process's ninja finds the module up to date, as it does for every other
module and in the releases that fixed it.
"""

from __future__ import annotations

import filecmp
import inspect
import os
from pathlib import Path
from types import ModuleType

FRESH_COPY = "shutil.copy("  # the generator's call that gives each copy a fresh time


def keep_source_times(copies: Path, sources: Path) -> list[str]:
    """Give every file of ``copies`` that is byte-for-byte equal to the file of the same name
    in ``sources`` that file's access and modification times (nanoseconds); a copy that
    differs, or that has no source, keeps its own. Returns the names given their source's."""
    kept = []
    for copy in sorted(copies.iterdir()):
        source = sources / copy.name
        if copy.is_file() and source.is_file() and filecmp.cmp(copy, source, shallow=False):
            st = source.stat()
            os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
            kept.append(copy.name)
    return kept


def copies_with_fresh_times(generator: ModuleType) -> bool:
    """Whether a FlashInfer module generator's source copies its files with ``shutil.copy``."""
    return FRESH_COPY in inspect.getsource(generator)


def keep_bgmv_moe_built() -> list[str]:
    """For a FlashInfer release whose ``jit/bgmv_moe.py`` copies with fresh times: run its
    generator (once per process) and give the copies their sources' times, so that a module
    built by an earlier process is found up to date. Returns the files given back their
    times; none for a release that copies with ``shutil.copy2`` or has no such generator."""
    import importlib

    try:
        generator = importlib.import_module("flashinfer.jit.bgmv_moe")
    except ImportError:
        return []
    if not copies_with_fresh_times(generator):
        return []
    from flashinfer.jit import env as jit_env

    generator.gen_bgmv_moe_module()  # copies the sources; functools.cache: only this once
    return keep_source_times(jit_env.FLASHINFER_GEN_SRC_DIR / generator.get_bgmv_moe_uri(),
                             generator._get_bgmv_moe_csrc_dir())
