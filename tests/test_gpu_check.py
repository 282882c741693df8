"""scripts/gpu-check, the one command for the checks on a GPU node, as far as it runs without
one: its arguments, the commands each check would run (--dry-run), and a run that stops at the
first setup step that cannot succeed here, recording what it did and did not run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu-check"
CHECKS = ["tests", "sweep", "crosscheck", "release", "agreement", "families", "routed",
          "buildload", "evidence"]
V = "0.6.18.post1"


def gpu_check(*args: str, env: dict[str, str] | None = None,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    """A wheelhouse with an unpack script and cupti-python (names only: a dry run reads none)."""
    wh = tmp_path / "whl"
    wh.mkdir()
    (wh / "unpack.sh").write_text("exit 0\n")
    (wh / "cupti_python-13.0.1-cp312-cp312-manylinux_2_28_x86_64.whl").write_bytes(b"")
    return wh


def dry_run(name: str, out: Path, *extra: str) -> list[str]:
    got = gpu_check(name, "--dry-run", "--out", str(out), *extra)
    assert got.returncode == 0, got.stderr
    lines = got.stdout.splitlines()
    assert lines[0].startswith(f"# scripts/gpu-check {name}: {len(lines) - 1} steps")
    return lines[1:]


def test_help_names_every_check() -> None:
    got = gpu_check("--help")
    assert got.returncode == 0
    assert "{" + ",".join(CHECKS) + "}" in got.stdout
    assert "--dry-run" in got.stdout and "$OUT" in got.stdout


@pytest.mark.parametrize("args, message", [
    ([], "the following arguments are required: name"),
    (["smoke"], "invalid choice: 'smoke'"),
    (["tests", "--version", "0.6 18"], "--version: not a FlashInfer version: '0.6 18'"),
    (["release", "--previous", "../x"], "--previous: not a FlashInfer version"),
    (["crosscheck", "--timer-from", "missing.whl"], "--timer-from: not a wheel"),
])
def test_bad_arguments_are_refused(args: list[str], message: str) -> None:
    got = gpu_check(*args)
    assert got.returncode == 2 and message in got.stderr


@pytest.mark.parametrize("name", CHECKS)
def test_the_dry_run_lists_each_checks_commands(tmp_path: Path, wheelhouse: Path,
                                               name: str) -> None:
    out = tmp_path / "out"
    steps = dry_run(name, out, "--wheelhouse", str(wheelhouse), "--version", V,
                    "--envs-dir", str(tmp_path / "envs"))
    assert not out.exists()  # nothing ran, nothing was written
    # The wheelhouse's unpack script first, then the node's setup; every output in --out.
    assert steps[0] == f"bash {wheelhouse / 'unpack.sh'} > {out / 'unpack.log'} 2>&1"
    assert "step machine" in steps[1] and steps[1].endswith(f"> {out / 'machine.txt'} 2>&1")
    assert all(f"> {out}/" in s for s in steps)
    assert "step driver" in steps[3] and str(ROOT / "harness") in steps[3]
    joined = "\n".join(steps)
    sweep = f"bench/gpu_sweep.py --versions {V} --runs 2 --suites decode,prefill,single"
    crosscheck = "bench/gpu_crosscheck.py --suites decode,prefill,single"
    tests = "-m pytest --noconftest -p no:cacheprovider tests/test_gpu.py"
    release = f"bench/regression_gpu_release.py --new {V} --previous 0.5.3"
    agreement = f"bench/gpu_agreement.py --versions 0.5.3,{V} --wheelhouse {wheelhouse}"
    routed = "bench/routed_routines.py --benchmarks"
    venv_python = str(tmp_path / "envs" / V / "venv" / "bin" / "python")
    buildload = f"bench/build_load_bias.py --python {venv_python}"
    expected = {"tests": [tests], "sweep": [sweep], "crosscheck": [crosscheck],
                "release": [release], "agreement": [agreement],
                "families": [tests, release], "routed": [routed], "buildload": [buildload],
                "evidence": [sweep, crosscheck, tests]}[name]
    for other in {sweep, crosscheck, tests, release, agreement, routed,
                  buildload} - set(expected):
        assert other not in joined
    # evidence: in that order, the version's env built once before them
    where = [next(i for i, s in enumerate(steps) if cmd in s) for cmd in expected]
    assert where == sorted(where)
    if name not in ("release", "agreement", "families"):  # those build envs through the service
        env = [i for i, s in enumerate(steps) if f"step env {V}" in s]
        assert len(env) == 1 and env[0] < where[0]
    if name in ("tests", "crosscheck", "routed", "evidence"):  # in the version's env
        for cmd in expected:
            if cmd != sweep:
                line = next(s for s in steps if cmd in s)
                assert f"{venv_python} " in line
                assert f"FLASHINFER_WORKSPACE_BASE={tmp_path / 'envs' / V / 'jit'}" in line
    if name in ("crosscheck", "evidence"):
        assert any("cupti_python-13.0.1" in s and "--target" in s for s in steps)
        assert f"{crosscheck} --out {out / f'crosscheck-{V}.jsonl'} --cupti" in joined
    if name in ("release", "agreement", "families", "routed", "buildload"):
        assert any("step wheels" in s and str(wheelhouse / "svc") in s for s in steps)
    if name == "buildload":  # the driver runs it; the builds' JIT cache is the version's
        line = next(s for s in steps if buildload in s)
        assert f"FLASHINFER_WORKSPACE_BASE={tmp_path / 'envs' / V / 'jit'}" in line
        assert "kernelwatch/core/release_suite.yaml" in line
    if name in ("release", "families"):  # the flow's envs (and JIT caches) are the tests'
        assert f"--envs-dir {tmp_path / 'envs'} " in next(s for s in steps if release in s)


def test_families_tests_both_versions_then_the_standard_suite_cross_checked(
        tmp_path: Path, wheelhouse: Path) -> None:
    steps = dry_run("families", tmp_path / "out", "--wheelhouse", str(wheelhouse), "--version",
                    "0.7.4", "--previous", V, "--envs-dir", str(tmp_path / "envs"),
                    "--flow-timeout", "400", "--test-workers", "4")
    tests = [s for s in steps if "tests/test_gpu.py" in s]
    # each version's family tests in its own env and JIT cache, the versions built once each
    for v, line in zip(["0.7.4", V], tests, strict=True):
        assert str(tmp_path / "envs" / v / "venv" / "bin" / "python") in line
        assert f"FLASHINFER_WORKSPACE_BASE={tmp_path / 'envs' / v / 'jit'}" in line
        assert "-k 'every_kernel or crosscheck' -n 4" in line
        assert sum(f"step env {v} " in s for s in steps) == 1
    (flow,) = [s for s in steps if "regression_gpu_release.py" in s]
    assert steps.index(tests[0]) < steps.index(flow) < steps.index(tests[1])
    assert f"--new 0.7.4 --previous {V}" in flow and "--crosscheck" in flow
    assert f"--suite {ROOT / 'kernelwatch' / 'core' / 'release_suite.yaml'}" in flow
    assert "--timeout 400.0" in flow


def test_select_narrows_the_gpu_tests(tmp_path: Path, wheelhouse: Path) -> None:
    for name in ("tests", "families"):
        steps = dry_run(name, tmp_path / name, "--wheelhouse", str(wheelhouse),
                        "--select", "every_kernel and moe")
        tests = [s for s in steps if "tests/test_gpu.py" in s]
        assert tests and all("-k 'every_kernel and moe'" in s for s in tests), (name, tests)


def test_entries_run_a_part_of_the_suite(tmp_path: Path, wheelhouse: Path) -> None:
    steps = dry_run("release", tmp_path / "out", "--wheelhouse", str(wheelhouse),
                    "--entries", "release-norm,release-moe")
    (flow,) = [s for s in steps if "regression_gpu_release.py" in s]
    assert "--entries release-norm,release-moe" in flow

    from tests.bench_support import load_bench

    flow_module = load_bench("regression_gpu_release")
    import yaml

    standard = ROOT / "kernelwatch" / "core" / "release_suite.yaml"
    part = flow_module.suite_part(standard, ["release-norm", "release-moe"],
                                  tmp_path / "part.yaml")
    specs = yaml.safe_load(part.read_text())["specs"]
    assert [s["name"] for s in specs] == ["release-moe", "release-norm"]  # the suite's order
    assert specs[0]["kernel"] == "bgmv_moe"
    with pytest.raises(SystemExit,
                       match=r"release-mo not in .*its entries: release-moe, release-gdn"):
        flow_module.suite_part(standard, ["release-mo"], tmp_path / "bad.yaml")


def test_routines_narrow_the_routed_check(tmp_path: Path, wheelhouse: Path) -> None:
    steps = dry_run("routed", tmp_path / "out", "--wheelhouse", str(wheelhouse),
                    "--routines", "rmsnorm,mm_bf16")
    (routed,) = [s for s in steps if "bench/routed_routines.py" in s]
    assert "--routines rmsnorm,mm_bf16" in routed


def test_out_defaults_to_the_out_variable(tmp_path: Path) -> None:
    got = gpu_check("tests", "--dry-run", env={"OUT": str(tmp_path / "o")})
    assert got.returncode == 0
    assert f"outputs in {tmp_path / 'o'}" in got.stdout.splitlines()[0]


def test_without_unpack_script_or_cupti_neither_step_is_listed(tmp_path: Path) -> None:
    steps = dry_run("crosscheck", tmp_path / "out", "--wheelhouse", str(tmp_path))
    assert not any(s.startswith("bash ") or "--cupti" in s or "cupti_python" in s
                   for s in steps)


def test_a_failed_setup_step_stops_the_check_and_says_so(tmp_path: Path) -> None:
    """Here the version's FlashInfer env cannot be built (no wheels): the check exits 1, what
    ran is logged with its exit status, and the GPU tests are recorded as not run."""
    out = tmp_path / "out"
    got = gpu_check("tests", "--out", str(out), "--wheelhouse", str(tmp_path / "empty"),
                    "--envs-dir", str(tmp_path / "envs"), timeout=300)
    assert got.returncode == 1
    record = (out / "steps.txt").read_text().splitlines()
    assert record[0] == (f"== scripts/gpu-check tests --out {out} --wheelhouse "
                         f"{tmp_path / 'empty'} --envs-dir {tmp_path / 'envs'}")
    assert record[1].startswith("machine: exit 0")
    assert any(line.startswith(("driver-install: exit 1", "env-0.6.18.post1: exit 1"))
               for line in record)
    assert record[-1] == f"tests-{V}: not run (" + record[-1].split("(", 1)[1]
    assert "python" in (out / "machine.txt").read_text()


def test_buildload_passes_the_entries_and_backends_on(tmp_path: Path, wheelhouse: Path) -> None:
    steps = dry_run("buildload", tmp_path / "out", "--wheelhouse", str(wheelhouse), "--version",
                    V, "--envs-dir", str(tmp_path / "envs"), "--entries",
                    "release-norm,release-sampling", "--backends", "auto,torch")
    line = next(s for s in steps if "bench/build_load_bias.py" in s)
    assert line.split(" > ")[0].endswith("--entries release-norm,release-sampling "
                                         "--backends auto,torch")


def _module() -> Any:
    """scripts/gpu-check imported (it has no .py suffix)."""
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("gpu_check", str(SCRIPT))
    spec = importlib.util.spec_from_loader("gpu_check", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up
    loader.exec_module(module)
    return module


TRAPS_TERM = """
import signal, sys, time
def stop(*_):
    open(sys.argv[1], "w").write("written")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
time.sleep(60)
"""


def test_a_step_out_of_time_is_asked_to_stop_before_it_is_killed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At its share of --limit less the grace, a step gets SIGTERM and the grace to write what
    it has (the release flow writes release_flow.json); one that ignores it is killed at the
    limit. Either way the step is recorded as out of time (124)."""
    check = _module()
    monkeypatch.setattr(check, "GRACE", 2.0)
    written = tmp_path / "flow.json"
    step = check.Step("release", [sys.executable, "-c", TRAPS_TERM, str(written)],
                      tmp_path / "release.log")
    assert check.run_step(step, 3.0) == 124
    assert written.read_text() == "written"

    deaf = check.Step("deaf", [sys.executable, "-c",
                               "import signal, time; "
                               "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"],
                      tmp_path / "deaf.log")
    import time

    t0 = time.monotonic()
    assert check.run_step(deaf, 3.0) == 124
    assert time.monotonic() - t0 < 10  # killed once the grace ran out, not after its sleep
    quick = check.Step("quick", [sys.executable, "-c", "raise SystemExit(3)"],
                       tmp_path / "quick.log")
    assert check.run_step(quick, 30.0) == 3 and check.run_step(quick, None) == 3


def test_the_older_release_suite_is_the_standard_one_for_the_families_0_5_has() -> None:
    """bench/regression_gpu_suite_older.yaml measures an older release with the cross-check
    on: the standard suite's entries for the families 0.5.x has, as they are, except batch
    decode without its largest batch (the tool's decode routine makes its KV cache on the
    CPU); every entry is a valid release suite entry."""
    from kernelwatch.core.releases import load_suite, suite_specs

    standard = {e["name"]: e for e in load_suite(ROOT / "kernelwatch" / "core" /
                                                 "release_suite.yaml")}
    older = load_suite(ROOT / "bench" / "regression_gpu_suite_older.yaml")
    assert [e["name"] for e in older] == ["release-batch-prefill", "release-sampling",
                                          "release-batch-decode", "release-rope"]
    for entry in older:
        expected = {k: v for k, v in standard[entry["name"]].items() if k != "cpu_params"}
        if entry["name"] == "release-batch-decode":
            assert entry["params"].pop("batch_size") == [1, 16]
            assert expected["params"].pop("batch_size") == [1, 16, 128]
        assert entry == expected
    assert len(suite_specs("h100", ["0.5.3", "0.6.18.post1"], older, crosscheck=True)) == 4
