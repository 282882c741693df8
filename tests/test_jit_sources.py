"""FlashInfer 0.6's bgmv_moe generator copies its sources with fresh times, so ninja rebuilt the
module in every process (354 s each on an H100); kernelwatch_harness.jit_sources gives the
copies their sources' times back. Here with a real ninja: a module "built" from copies is found
up to date by the next process only when the times are kept."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernelwatch_harness import jit_sources
from kernelwatch_harness.jit_sources import copies_with_fresh_times, keep_source_times

NINJA = shutil.which("ninja")
SOURCES = ("moe_bgmv_binding.cu", "moe_bgmv_impl.cuh")


def _csrc(root: Path) -> Path:
    csrc = root / "csrc"
    csrc.mkdir()
    for name in SOURCES:
        (csrc / name).write_text(f"// {name}\n")
    past = time.time() - 3600  # as a wheel's files are: installed long before any build
    for name in SOURCES:
        os.utime(csrc / name, (past, past))
    return csrc


def _generate(csrc: Path, gen: Path) -> None:
    """What 0.6's gen_bgmv_moe_module does to its sources on each process's first call."""
    gen.mkdir(exist_ok=True)
    for name in SOURCES:
        shutil.copy(csrc / name, gen / name)


def _ninja(build: Path, *args: str) -> str:
    assert NINJA, "ninja (Debian's ninja-build) is needed, as FlashInfer's JIT needs it"
    out = subprocess.run([NINJA, "-C", str(build), *args], capture_output=True, text=True,
                         check=True)
    return out.stdout


def _build_dir(root: Path, gen: Path) -> Path:
    build = root / "build"
    build.mkdir()
    (build / "build.ninja").write_text(textwrap.dedent(f"""\
        rule nvcc
          command = cat $in > $out
        build module.so: nvcc {gen}/moe_bgmv_binding.cu | {gen}/moe_bgmv_impl.cuh
        """))
    return build


def _process(csrc: Path, gen: Path, keep: bool) -> None:
    _generate(csrc, gen)
    if keep:
        assert keep_source_times(gen, csrc) == sorted(SOURCES)


@pytest.mark.parametrize("keep", [True, False])
def test_the_next_process_finds_the_module_built_only_with_the_sources_times(
        tmp_path: Path, keep: bool) -> None:
    csrc, gen = _csrc(tmp_path), tmp_path / "generated"
    build = _build_dir(tmp_path, gen)
    _process(csrc, gen, keep)  # the first process: builds
    _ninja(build)
    assert (build / "module.so").read_text() == "".join(f"// {n}\n" for n in SOURCES[:1])
    time.sleep(0.05)  # the next process's copies are later than the build, as on a node
    _process(csrc, gen, keep)
    again = _ninja(build, "-n")
    if keep:
        assert "no work to do" in again
    else:  # 0.6's own behaviour: a full rebuild in every process
        assert "no work to do" not in again and "module.so" in again


def test_a_copy_that_differs_from_its_source_keeps_its_own_time(tmp_path: Path) -> None:
    csrc, gen = _csrc(tmp_path), tmp_path / "generated"
    _generate(csrc, gen)
    (gen / "moe_bgmv_impl.cuh").write_text("// edited after the copy\n")
    (gen / "generated_only.h").write_text("// no source\n")
    before = (gen / "moe_bgmv_impl.cuh").stat().st_mtime_ns
    assert keep_source_times(gen, csrc) == ["moe_bgmv_binding.cu"]
    assert (gen / "moe_bgmv_impl.cuh").stat().st_mtime_ns == before
    assert (gen / "moe_bgmv_binding.cu").stat().st_mtime_ns == \
        (csrc / "moe_bgmv_binding.cu").stat().st_mtime_ns


GENERATOR = '''\
import functools
import shutil
from pathlib import Path

from . import env as jit_env

CSRC = Path({csrc!r})
calls = []


def _get_bgmv_moe_csrc_dir():
    return CSRC


def get_bgmv_moe_uri():
    return "bgmv_moe"


@functools.cache
def gen_bgmv_moe_module():
    calls.append(1)
    gen = jit_env.FLASHINFER_GEN_SRC_DIR / get_bgmv_moe_uri()
    gen.mkdir(parents=True, exist_ok=True)
    for name in {sources!r}:
        shutil.{copy}(CSRC / name, gen / name)
    return "spec"
'''


@pytest.fixture
def flashinfer_like(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A package laid out as FlashInfer's is where the harness reaches into it (jit/env.py's
    FLASHINFER_GEN_SRC_DIR, jit/bgmv_moe.py's three functions, with 0.6.18.post1's names):
    FlashInfer itself imports only with its CUDA dependencies, which this machine lacks."""
    root = tmp_path / "site"
    (root / "flashinfer" / "jit").mkdir(parents=True)
    (root / "flashinfer" / "__init__.py").write_text("")
    (root / "flashinfer" / "jit" / "__init__.py").write_text("")
    (root / "flashinfer" / "jit" / "env.py").write_text(
        f"from pathlib import Path\nFLASHINFER_GEN_SRC_DIR = Path({str(tmp_path / 'gen')!r})\n")
    monkeypatch.syspath_prepend(str(root))
    for name in [m for m in sys.modules if m == "flashinfer" or m.startswith("flashinfer.")]:
        monkeypatch.delitem(sys.modules, name)
    yield root
    for name in [m for m in sys.modules if m == "flashinfer" or m.startswith("flashinfer.")]:
        del sys.modules[name]


@pytest.mark.parametrize(("copy", "kept"), [("copy", sorted(SOURCES)), ("copy2", [])])
def test_only_a_generator_that_copies_with_fresh_times_is_corrected(
        tmp_path: Path, flashinfer_like: Path, copy: str, kept: list[str]) -> None:
    csrc = _csrc(tmp_path)
    (flashinfer_like / "flashinfer" / "jit" / "bgmv_moe.py").write_text(
        GENERATOR.format(csrc=str(csrc), sources=SOURCES, copy=copy))
    generator = importlib.import_module("flashinfer.jit.bgmv_moe")
    assert copies_with_fresh_times(generator) is (copy == "copy")
    assert jit_sources.keep_bgmv_moe_built() == kept
    gen = tmp_path / "gen" / "bgmv_moe"
    if kept:  # generated once, here: the module's own first call finds it cached
        assert generator.calls == [1]
        assert generator.gen_bgmv_moe_module() == "spec" and generator.calls == [1]
        for name in SOURCES:
            assert (gen / name).stat().st_mtime_ns == (csrc / name).stat().st_mtime_ns
    else:  # copy2 keeps the times itself: the harness does not run the generator
        assert generator.calls == [] and not gen.exists()


def test_a_release_without_the_generator_is_left_alone(flashinfer_like: Path) -> None:
    assert jit_sources.keep_bgmv_moe_built() == []
