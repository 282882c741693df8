"""bench/jit_side_by_side.py's parts that need no FlashInfer: a module's slowest build step
read from its ninja log, and an unknown module refused naming the known ones."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("jit_side_by_side",
                                                  ROOT / "bench" / "jit_side_by_side.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_slowest_step_comes_from_the_modules_ninja_log(tmp_path: Path) -> None:
    log = tmp_path / ".cache" / "flashinfer" / "0.7.4" / "90a" / "cached_ops" / "topk"
    log.mkdir(parents=True)
    (log / ".ninja_log").write_text(
        "# ninja log v5\n"
        "0\t412345\t0\t/ws/cached_ops/topk/topk.cuda.o\tabc\n"
        "2\t98000\t0\t/ws/cached_ops/topk/cub_topk.cuda.o\tdef\n"
        "412400\t413100\t0\t/ws/cached_ops/topk/topk.so\tghi\n")
    assert _bench().slowest_compile(tmp_path, "topk") == ("topk.cuda.o", pytest.approx(412.345))
    assert _bench().slowest_compile(tmp_path, "sampling") is None  # not built


def test_an_unknown_module_is_refused_naming_the_known_ones(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _bench().main(["--modules", "topk,nope"])
    assert exit_.value.code == 2
    assert "--modules: nope unknown; known: topk, sampling" in capsys.readouterr().err
