"""bench/build_load_bias.py on a CPU: the suite's torch points through the real harness idle and
under a CPU load, the ratios with the comparisons' CI, and no load process left behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from types import ModuleType

import pytest

from tests.bench_support import load_bench
from tests.release_support import write_tiny_suite

ROOT = Path(__file__).resolve().parent.parent


def _bench() -> ModuleType:
    return load_bench("build_load_bias")


def test_points_idle_and_loaded_are_compared_with_the_comparisons_ci(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    out = tmp_path / "rows.jsonl"
    assert bench.main(["--suite", str(write_tiny_suite(tmp_path)), "--device", "cpu",
                       "--rounds", "2", "--load", "busy", "--load-procs", "1",
                       "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2  # the tiny suite's two torch-sdpa points
    for row in rows:
        assert row["backend"] == "torch-sdpa" and row["verdict"] in (
            "unchanged", "regression", "improvement")
        assert row["ci_low"] <= row["ratio"] <= row["ci_high"]
        assert row["ratio"] == pytest.approx(row["loaded_us"] / row["idle_us"])
        assert set(row["params"]) <= {"batch_size", "kv_len", "num_qo_heads",
                                      "num_kv_heads", "head_dim"}
    printed = capsys.readouterr().out
    assert "2 point(s), load busy x1 at nice 10, 2 round(s)" in printed
    # each pass says what the CPUs did: the busy share and the compilers at its end
    assert re.search(r"CPU busy during the idle passes: \d+%, \d+%; compilers running at "
                     r"their ends: \d+, \d+", printed)
    assert "CPU busy during the loaded passes:" in printed


def test_the_load_runs_inside_the_block_and_is_gone_after_it() -> None:
    bench = _bench()
    before = _children()
    with bench.cpu_load("busy", 2, niceness=9):
        during = _children() - before
        assert len(during) == 2
        # at the niceness asked for (the worker's builds'), or the worker's own if higher
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert {os.getpriority(os.PRIO_PROCESS, p) for p in during} == {max(9, own)}
    assert not (_children() & during)


def test_backends_narrow_each_entry_and_one_no_entry_has_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    suite = write_tiny_suite(tmp_path)
    out = tmp_path / "rows.jsonl"
    assert bench.main(["--suite", str(suite), "--device", "cpu", "--rounds", "1",
                       "--load", "busy", "--load-procs", "1", "--backends", "torch-sdpa",
                       "--out", str(out)]) == 0
    assert {json.loads(line)["backend"] for line in out.read_text().splitlines()} == \
        {"torch-sdpa"}
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--suite", str(suite), "--device", "cpu", "--backends", "cuda"])
    assert exit_.value.code == 2
    assert "--backends: no entry has any of cuda" in capsys.readouterr().err


def _children() -> set[int]:
    """This process's live (not zombie) children."""
    me = str(os.getpid())
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[1] == me and fields[0] != "Z":
                out.add(int(d.name))
    return out


def test_an_entry_the_suite_lacks_is_refused_naming_the_suites(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _bench().main(["--suite", str(write_tiny_suite(tmp_path)), "--device", "cpu",
                       "--entries", "release-nope"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--entries: release-nope not in the suite; its entries: release-tiny-decode" in err


def test_entries_are_measured_in_the_order_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What matters most is named first, so that a time limit stops only the rest."""
    suite = tmp_path / "two.yaml"
    suite.write_text(write_tiny_suite(tmp_path).read_text() + """
  - name: release-tiny-norm
    kernel: fused_add_rmsnorm
    backends: [auto, torch]
    params: {batch_size: [1], hidden_size: [4096]}
    cpu_params: {batch_size: [4], hidden_size: [256]}
    timing: {warmup: 1, iterations: 30}
""")
    out = tmp_path / "rows.jsonl"
    assert _bench().main(["--suite", str(suite), "--device", "cpu", "--rounds", "1",
                          "--load", "busy", "--load-procs", "1", "--entries",
                          "release-tiny-norm,release-tiny-decode", "--out", str(out)]) == 0
    entries = [json.loads(line)["entry"] for line in out.read_text().splitlines()]
    assert entries == ["release-tiny-norm"] + ["release-tiny-decode"] * 2


def test_a_pass_counts_the_busy_share_and_the_compilers_running() -> None:
    """The loaded passes' record shows the load was there: a busy loop makes its share of the
    CPUs busy, and a process named as a CUDA compiler is counted."""
    bench = _bench()
    idle = bench.Pass()
    time.sleep(0.5)
    idle.end()
    fake_nvcc = Path(tempfile.mkdtemp()) / "cicc"
    os.symlink("/bin/sleep", fake_nvcc)  # a process whose name is a compiler's
    proc = subprocess.Popen([str(fake_nvcc), "30"])
    try:
        with bench.cpu_load("busy", 1):
            loaded = bench.Pass()
            time.sleep(1.0)
            loaded.end()
        assert loaded.compilers >= 1
        # a busy loop on one CPU: at least its share of the node's (other tests may add more)
        assert 1.0 / (os.cpu_count() or 1) * 0.5 < loaded.share <= 1.0
        assert 0.0 <= idle.share <= 1.0
    finally:
        proc.kill()
        proc.wait()
