"""bench/jit_side_by_side.py's parts that need no FlashInfer: a module's slowest build step
read from its ninja log, and an unknown module refused naming the known ones."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.bench_support import load_bench

ROOT = Path(__file__).resolve().parent.parent


def _bench() -> ModuleType:
    return load_bench("jit_side_by_side")


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


def test_both_ways_build_each_module_in_a_fresh_workspace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The child builds the named generators' specs in turn (timing each) or at once, with
    the workspace, MAX_JOBS and architecture it is given."""
    (tmp_path / "fakegen.py").write_text(
        "import json, os, threading, time\n"
        "class Spec:\n"
        "    def __init__(self, name):\n"
        "        self.name = name\n"
        "    def build(self):\n"
        "        time.sleep(0.2)\n"
        "        out = os.path.join(os.environ['FLASHINFER_WORKSPACE_BASE'], self.name)\n"
        "        with open(out, 'w') as f:\n"
        "            json.dump({'jobs': os.environ['MAX_JOBS'],\n"
        "                       'arch': os.environ['FLASHINFER_CUDA_ARCH_LIST'],\n"
        "                       'thread': threading.current_thread().name}, f)\n"
        "def gen_a():\n    return Spec('a')\n"
        "def gen_b():\n    return Spec('b')\n")
    bench = _bench()
    monkeypatch.setattr(bench, "GENERATORS", {"a": ("fakegen", "gen_a"),
                                              "b": ("fakegen", "gen_b")})
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    import json

    seconds, workspace = bench.build("in_turn", ["a", "b"], 3, "9.0a")
    assert set(seconds) == {"a", "b", "total"} and seconds["total"] >= 0.4
    records = [json.loads((workspace / n).read_text()) for n in ("a", "b")]
    assert all(r["jobs"] == "3" and r["arch"] == "9.0a" for r in records)
    assert {r["thread"] for r in records} == {"MainThread"}
    seconds, other = bench.build("side_by_side", ["a", "b"], 2, "8.0")
    assert set(seconds) == {"total"} and other != workspace
    threads = {json.loads((other / n).read_text())["thread"] for n in ("a", "b")}
    assert len(threads) == 2 and "MainThread" not in threads
