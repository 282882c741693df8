"""The cross-check against FlashInfer's own benchmark (spec ``crosscheck: true``): the spec
option, the script's cache per version, the harness's side of the protocol, the judgement and
its causes, storage and the summaries, the curves' markers and the release suite's switch.

The GPU side (flashinfer_benchmark.py run on the node) is exercised by tests/test_gpu.py and
``scripts/gpu-check official``; the rows here that stand for the tool's output are test inputs
with the tool's column names, not measurements."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernelwatch.api.main import create_app
from kernelwatch.cli.main import cli
from kernelwatch.core import crosscheck, db
from kernelwatch.core.crosscheck import CrosscheckCounts, judge, store_crosscheck
from kernelwatch.core.jobs import create_job, mark_run_started, result_rows
from kernelwatch.core.models import Crosscheck, Job, Point, Run
from kernelwatch.core.releases import load_suite, suite_specs
from kernelwatch.core.settings import Settings
from kernelwatch.core.spec import SweepSpec
from kernelwatch.core.tokens import create_token
from kernelwatch.worker import benchmark_scripts
from kernelwatch.worker.benchmark_scripts import NoBenchmarkScript, script_dir
from kernelwatch.worker.tasks import build_request, measure_run
from kernelwatch_harness.official import (
    command_line,
    cuda_graph_plan,
    read_rows,
    result_of,
    timer_method,
)
from kernelwatch_harness.protocol import ProtocolError, parse_message
from tests.conftest import configure
from tests.worker_support import TINY_SPEC

CHECKED = {**TINY_SPEC, "name": "checked", "backends": ["fa2", "torch-sdpa"],
           "flashinfer_versions": ["0.6.18.post1"], "crosscheck": True, "targets": ["h100"]}


# --------------------------------------------------------------------------- spec


def test_crosscheck_needs_a_flashinfer_backend() -> None:
    with pytest.raises(ValueError, match=r"crosscheck: needs a FlashInfer backend \(allowed: "
                                         r"auto, fa2, fa3"):
        SweepSpec(**{**TINY_SPEC, "crosscheck": True})
    assert SweepSpec(**CHECKED).crosscheck is True
    assert SweepSpec(**TINY_SPEC).crosscheck is False


def test_the_api_answers_422_naming_the_field(kw_env: Settings) -> None:
    with db.session_scope() as session:
        token = create_token(session, "t")
    client = TestClient(create_app())
    r = client.post("/v1/jobs", json={**TINY_SPEC, "crosscheck": True},
                    headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 422
    assert "crosscheck: needs a FlashInfer backend" in r.text
    r = client.post("/v1/jobs", json={**TINY_SPEC, "crosscheck": "sometimes"},
                    headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 422
    (err,) = r.json()["detail"]
    assert err["msg"].startswith("crosscheck: ") and err["msg"].endswith("allowed: true, false")


# --------------------------------------------------------------------------- the script


def _archive(files: dict[str, str], top: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


BENCH = {"benchmarks/flashinfer_benchmark.py": "# the tool\n",
         "benchmarks/routines/attention.py": "# a routine\n",
         "README.md": "not extracted\n"}


def test_script_from_the_wheelhouse_is_cached_once(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wh"
    wheelhouse.mkdir()
    (wheelhouse / "flashinfer-benchmarks-0.6.18.post1.tar.gz").write_bytes(_archive(BENCH))
    where = script_dir("0.6.18.post1", tmp_path / "envs", str(wheelhouse))
    assert (where / "flashinfer_benchmark.py").read_text() == "# the tool\n"
    assert (where / "routines" / "attention.py").is_file()
    assert not (where.parent / "README.md").exists()
    ready = json.loads((where.parent / "READY").read_text())
    assert ready["source"].endswith("flashinfer-benchmarks-0.6.18.post1.tar.gz")
    # Cached: the wheelhouse copy is not read again.
    (wheelhouse / "flashinfer-benchmarks-0.6.18.post1.tar.gz").unlink()
    assert script_dir("0.6.18.post1", tmp_path / "envs", str(wheelhouse)) == where


def test_a_source_archive_in_the_wheelhouse_serves_too(tmp_path: Path) -> None:
    (tmp_path / "flashinfer-0.7.4.tar.gz").write_bytes(
        _archive({**BENCH, "../evil.py": "x", "benchmarks/../../evil.py": "x",
                  "tests/mamba/triton_reference/__init__.py": "", "tests/test_x.py": "x",
                  "tests/mamba/../../evil.py": "x"},
                 top="flashinfer-0.7.4/"))
    where = script_dir("0.7.4", tmp_path / "envs", str(tmp_path))
    assert (where / "flashinfer_benchmark.py").is_file()
    assert (where.parent / "tests" / "mamba" / "triton_reference" / "__init__.py").is_file()
    assert not (where.parent / "tests" / "test_x.py").exists()
    assert not list(tmp_path.rglob("evil.py"))


class _Archive(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        if self.path != "/flashinfer-ai/flashinfer/archive/refs/tags/v0.5.3.tar.gz":
            self.send_error(404)
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def archive_server() -> Iterator[str]:
    _Archive.body = _archive(BENCH, top="flashinfer-0.5.3/")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Archive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_script_downloaded_from_the_tag(tmp_path: Path, archive_server: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, benchmarks_url=archive_server + "/{repo}/archive/refs/tags/"
                                                          "v{version}.tar.gz")
    where = script_dir("0.5.3", tmp_path / "envs", "")
    assert (where / "flashinfer_benchmark.py").is_file()
    with pytest.raises(NoBenchmarkScript) as e:
        script_dir("0.6.0", tmp_path / "envs", str(tmp_path))
    assert "flashinfer-benchmarks-0.6.0.tar.gz or flashinfer-0.6.0.tar.gz" in str(e.value)
    assert "v0.6.0.tar.gz could not be read" in str(e.value)
    assert not (tmp_path / "envs" / "benchmarks" / "0.6.0" / "READY").exists()


def test_an_archive_without_the_script_is_refused(tmp_path: Path) -> None:
    (tmp_path / "flashinfer-benchmarks-0.5.3.tar.gz").write_bytes(
        _archive({"benchmarks/other.py": ""}))
    with pytest.raises(NoBenchmarkScript, match=r"no benchmarks/flashinfer_benchmark\.py"):
        script_dir("0.5.3", tmp_path / "envs", str(tmp_path))


def test_wheelhouse_command_writes_the_tags_benchmarks(tmp_path: Path) -> None:
    repo = tmp_path / "flashinfer"
    (repo / "benchmarks" / "routines").mkdir(parents=True)
    (repo / "benchmarks" / "flashinfer_benchmark.py").write_text("# v1.2.3\n")
    (repo / "benchmarks" / "routines" / "norm.py").write_text("# norm\n")
    # the references the tool's mamba and gdn routines import, found from benchmarks/..
    (repo / "tests" / "mamba" / "triton_reference").mkdir(parents=True)
    (repo / "tests" / "mamba" / "triton_reference" / "ssu.py").write_text("# ref\n")
    (repo / "tests" / "gdn").mkdir(parents=True)
    (repo / "tests" / "gdn" / "reference_delta_rule.py").write_text("# gdn ref\n")
    (repo / "tests" / "attention").mkdir(parents=True)
    (repo / "tests" / "attention" / "test_big.py").write_text("# not needed\n")
    (repo / "setup.py").write_text("")
    git = ["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "release"], check=True)
    subprocess.run([*git, "tag", "v1.2.3"], check=True)
    out = CliRunner().invoke(cli, ["wheelhouse", "benchmarks", "1.2.3", "--from-git",
                                   str(repo), "--dir", str(tmp_path / "wh")])
    assert out.exit_code == 0, out.output
    where = script_dir("1.2.3", tmp_path / "envs", str(tmp_path / "wh"))
    assert (where / "flashinfer_benchmark.py").read_text() == "# v1.2.3\n"
    assert (where / "routines" / "norm.py").is_file()
    tests = where.parent / "tests"
    assert (tests / "mamba" / "triton_reference" / "ssu.py").read_text() == "# ref\n"
    assert (tests / "gdn" / "reference_delta_rule.py").is_file()
    assert not (tests / "attention").exists()
    missing = CliRunner().invoke(cli, ["wheelhouse", "benchmarks", "9.9.9", "--from-git",
                                       str(repo), "--dir", str(tmp_path / "wh")])
    assert missing.exit_code == 1 and "git archive v9.9.9" in missing.output
    # The tag's commit is named in the archive and in the cache's READY.
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
    assert (where / "SOURCE").read_text() == f"v1.2.3 {head}\n"
    ready = json.loads((where.parent / "READY").read_text())
    assert ready["git"] == f"v1.2.3 {head}"


def test_wheelhouse_command_takes_a_branch_for_a_release_without_its_tag(tmp_path: Path) -> None:
    repo = tmp_path / "flashinfer"
    (repo / "benchmarks").mkdir(parents=True)
    (repo / "benchmarks" / "flashinfer_benchmark.py").write_text("# rc\n")
    git = ["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "rc"], check=True)
    subprocess.run([*git, "branch", "release-v1.2"], check=True)
    (repo / "benchmarks" / "flashinfer_benchmark.py").write_text("# later\n")
    subprocess.run([*git, "commit", "-qam", "later"], check=True)
    out = CliRunner().invoke(cli, ["wheelhouse", "benchmarks", "1.2.post1", "--from-git",
                                   str(repo), "--ref", "release-v1.2", "--dir",
                                   str(tmp_path / "wh")])
    assert out.exit_code == 0, out.output
    where = script_dir("1.2.post1", tmp_path / "envs", str(tmp_path / "wh"))
    assert (where / "flashinfer_benchmark.py").read_text() == "# rc\n"
    ready = json.loads((where.parent / "READY").read_text())
    assert ready["git"].startswith("release-v1.2 ") and len(ready["git"].split()[1]) == 40


def test_a_ref_of_another_release_is_refused_unless_taken_knowingly(tmp_path: Path) -> None:
    """A branch whose version.txt still names 0.6.18 does not hold 0.7.4's routines (on a
    GPU, such an archive's decode routine called a testing helper with an argument 0.7.4's
    lacks): refused, naming both; --other-release takes it and SOURCE says what it is. A
    post-release of the named release is the same release."""
    repo = tmp_path / "flashinfer"
    (repo / "benchmarks").mkdir(parents=True)
    (repo / "benchmarks" / "flashinfer_benchmark.py").write_text("# dev\n")
    (repo / "version.txt").write_text("0.6.18\n")
    git = ["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "dev"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
    wh = tmp_path / "wh"
    base = ["wheelhouse", "benchmarks", "0.7.4", "--from-git", str(repo), "--ref", "main",
            "--dir", str(wh)]
    refused = CliRunner().invoke(cli, base)
    assert refused.exit_code == 1
    assert f"main ({head[:12]}) holds FlashInfer 0.6.18 (its version.txt), not 0.7.4" \
        in refused.output
    assert not (wh / "flashinfer-benchmarks-0.7.4.tar.gz").exists()
    taken = CliRunner().invoke(cli, [*base, "--other-release"])
    assert taken.exit_code == 0, taken.output
    where = script_dir("0.7.4", tmp_path / "envs", str(wh))
    assert (where / "SOURCE").read_text() == f"main {head} version.txt=0.6.18\n"
    same = CliRunner().invoke(cli, ["wheelhouse", "benchmarks", "0.6.18.post1", "--from-git",
                                    str(repo), "--ref", "main", "--dir", str(wh)])
    assert same.exit_code == 0, same.output
    with tarfile.open(wh / "flashinfer-benchmarks-0.6.18.post1.tar.gz") as tar:
        member = tar.extractfile("benchmarks/SOURCE")
        assert member is not None and member.read().decode() == f"main {head}\n"


# --------------------------------------------------------------------------- harness side


def test_harness_reads_the_tools_output(tmp_path: Path) -> None:
    # The tool's CSV: its header, then one line per backend run (values unquoted).
    header = "routine,median_time,std_time,tflops,tb_per_sec,backend,resolved_backend,s_qo"
    path = tmp_path / "out.csv"
    path.write_text(header + "\nBatchDecodeWithPagedKVCacheWrapper,0.0412,0.0003,1.5,"
                             "2.9,fa2,fa2,1\n")
    (row,) = read_rows(path)
    got = result_of(row)
    assert got["median_us"] == pytest.approx(41.2) and got["std_us"] == pytest.approx(0.3)
    assert got["resolved_backend"] == "fa2"
    assert result_of({"median_time": "", "backend": "fa2"})["median_us"] is None


def test_harness_names_the_tools_timer_and_plan_mode() -> None:
    args = SimpleNamespace(use_cupti=True, no_cuda_graph=False,
                           routine="BatchPrefillWithPagedKVCacheWrapper")
    assert timer_method(args, []) == "cupti"
    assert timer_method(args, ["CUPTI is not installed. Try 'pip install -U cupti-python'. "
                               "Falling back to CUDA events for benchmarking."]) == "cuda_graph"
    assert timer_method(SimpleNamespace(use_cupti=False, no_cuda_graph=True), []) == "cuda_event"
    assert cuda_graph_plan(args, "fa2") is False  # fa2 prefill: no graph in the tool
    assert cuda_graph_plan(args, "fa3") is True
    args.no_cuda_graph = True
    assert cuda_graph_plan(args, "fa3") is False
    assert command_line(["--routine", "X", "--s_kv", "8"]) == \
        "python flashinfer_benchmark.py --routine X --s_kv 8"


def test_harness_reports_a_cpu_runs_crosscheck_unavailable() -> None:
    from tests.test_harness_cpu import params_for, run_harness

    msgs = run_harness({
        "kernel": "single_decode", "device": "cpu", "backends": ["torch-sdpa"],
        "timing": {"warmup": 1, "iterations": 10, "repeats": 1},
        "points": [{"point_index": 0,
                    "params_by_backend": {"torch-sdpa": params_for("single_decode")}}],
        "crosscheck": {"script_dir": "", "lines": [
            {"point_index": 0, "backend": "torch-sdpa", "args": ["--routine", "X"],
             "reason": None}]},
    })
    kinds = [m["type"] for m in msgs]
    assert kinds[-3:] == ["point", "crosscheck", "done"]
    check = msgs[-2]
    assert check["status"] == "unavailable" and check["point_index"] == 0
    assert "CUDA GPU; this run is on cpu" in check["error"]


def test_crosscheck_messages_parse() -> None:
    line = json.dumps({"type": "crosscheck", "point_index": "3", "backend": "fa2",
                       "status": "ok", "command": "python flashinfer_benchmark.py",
                       "median_us": 41.2})
    msg = parse_message(line)
    assert msg is not None and msg["type"] == "crosscheck" and msg["point_index"] == 3
    with pytest.raises(ProtocolError, match="without command"):
        parse_message(json.dumps({"type": "crosscheck", "point_index": 1, "backend": "fa2",
                                  "status": "ok"}))


# --------------------------------------------------------------------------- judgement


def _point(**over: Any) -> Point:
    base: dict[str, Any] = {"median_us": 100.0, "resolved_backend": "fa2",
                            "params": {"use_cuda_graph": True},
                            "telemetry": {"repeats": [{"clock": {"median_mhz": 1980.0}},
                                                      {"clock": {"median_mhz": 1965.0}}]}}
    return Point(**{**base, **over})


def _official(**over: Any) -> dict[str, Any]:
    return {"status": "ok", "median_us": 101.0, "method": "cupti", "resolved_backend": "fa2",
            "cold_l2": True, "cuda_graph_plan": True, "clock_mhz": 1980.0, **over}


def test_points_within_three_percent_agree() -> None:
    v = judge(_point(), _official(), cold_l2=True)
    assert v.agrees is True and v.diff_pct == pytest.approx(-0.990, abs=1e-3) and v.causes == []
    v = judge(_point(median_us=103.5), _official(median_us=100.0), cold_l2=True)
    assert v.agrees is False and v.diff_pct == pytest.approx(3.5)
    assert v.causes == []  # nothing measured differed: the cause is not named


def test_each_measured_cause_is_named() -> None:
    slow = _official(median_us=112.0, clock_mhz=1755.0, cold_l2=True, cuda_graph_plan=False,
                     resolved_backend="fa3", method="cuda_event")
    v = judge(_point(), slow, cold_l2=False)
    assert v.agrees is False
    assert [c["cause"] for c in v.causes] == ["clock", "l2", "plan_mode", "backend", "timer"]
    details = " | ".join(c["detail"] for c in v.causes)
    assert "1972 MHz in kernelwatch, 1755 MHz" in details
    assert "L2 warm in kernelwatch, cold in the tool" in details
    assert "use_cuda_graph=true in kernelwatch, false in the tool" in details
    assert "kernelwatch ran fa2, the tool fa3" in details
    # fa2_tc is the tool's name for fa2 with tensor cores: not a different backend.
    assert judge(_point(), _official(median_us=150.0, resolved_backend="fa2_tc"),
                 True).causes == []


def test_nothing_to_compare() -> None:
    assert judge(_point(), {"status": "error"}, True).agrees is None
    assert judge(_point(median_us=None), _official(), True).agrees is None


def test_counts() -> None:
    c = CrosscheckCounts()
    c.add("ok", True, 9)
    c.add("ok", False, 1)
    c.add("unavailable", None, 2)
    c.add("error", None, 1)
    assert (c.checked, c.agree, c.disagree, c.unavailable, c.error) == (10, 9, 1, 2, 1)
    assert c.describe() == "9 of 10 within 3% (2 unavailable, 1 errored)"
    assert crosscheck.total([]) is None
    assert crosscheck.total([c, c]).agree == 18  # type: ignore[union-attr]


# --------------------------------------------------------------------------- storage


def _job_with_point(session: Session, spec: dict[str, Any]) -> tuple[Job, Run, Point]:
    job, _, runs = create_job(session, SweepSpec(**spec), source="api", submitted_by=None)
    run = runs[0]
    point = Point(run_id=run.id, job_id=job.id, point_index=0, kernel=job.kernel,
                  backend="fa2", resolved_backend="fa2", params={"use_cuda_graph": True},
                  series_key="k", status="ok", median_us=100.0, n_samples=30)
    session.add(point)
    session.flush()
    return job, run, point


def test_storage_replaces_a_retried_rows_and_feeds_results(session: Session) -> None:
    job, run, point = _job_with_point(session, CHECKED)
    msg: Any = {"type": "crosscheck", "point_index": 0, "backend": "fa2", "status": "error",
                "command": "python flashinfer_benchmark.py --routine X", "error": "boom"}
    store_crosscheck(session, point, msg, cold_l2=True)
    store_crosscheck(session, point, {**msg, **_official(median_us=110.0, wall_s=1.5,
                                                       row={"median_time": "0.11"})}, True)
    session.commit()
    (row,) = session.scalars(select(Crosscheck)).all()
    assert row.point_id == point.id and row.status == "ok" and row.agrees is False
    assert row.diff_pct == pytest.approx(-9.091, abs=1e-3) and row.wall_s == 1.5
    assert row.command == "python flashinfer_benchmark.py --routine X"
    assert row.row == {"median_time": "0.11"}
    (result,) = [r for r in result_rows(session, job) if r["backend"] == "fa2"]
    assert result["crosscheck_median_us"] == 110.0 and result["crosscheck_agrees"] is False
    assert result["crosscheck_command"].startswith("python flashinfer_benchmark.py")
    counts = crosscheck.counts_by_run(session, [run.id])[run.id]
    assert (counts.checked, counts.disagree) == (1, 1)


def test_a_job_without_crosscheck_has_no_crosscheck_columns(session: Session) -> None:
    job, _, _ = _job_with_point(session, {**CHECKED, "crosscheck": False})
    assert not any(k.startswith("crosscheck_") for k in result_rows(session, job)[0])


def test_the_worker_asks_for_each_units_command(session: Session) -> None:
    # HND: the layout flashinfer_benchmark.py builds its decode wrapper with
    spec = {**CHECKED, "params": {"batch_size": [4], "kv_len": [512], "kv_layout": ["HND"]}}
    job, _, runs = create_job(session, SweepSpec(**spec), source="api", submitted_by=None)
    request = build_request(session, runs[0], job, "cpu")
    assert request.crosscheck is not None and request.crosscheck["script_dir"] == ""
    lines = {line["backend"]: line for line in request.crosscheck["lines"]}
    assert lines["fa2"]["args"] is not None and "--routine" in lines["fa2"]["args"]
    assert "--refcheck" not in lines["fa2"]["args"]  # kernelwatch checks correctness itself
    assert lines["torch-sdpa"]["args"] is None
    assert lines["torch-sdpa"]["reason"] == "backend torch-sdpa is not FlashInfer's"
    assert json.loads(request.to_json(set()))["crosscheck"]["lines"][0]["point_index"] == 0
    job2, _, runs2 = create_job(session, SweepSpec(**{**spec, "crosscheck": False}),
                                source="api", submitted_by=None)
    assert build_request(session, runs2[0], job2, "cpu").crosscheck is None


def test_a_node_without_the_script_says_why_for_every_unit(
        session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_script(version: str) -> Path:
        raise NoBenchmarkScript(f"flashinfer_benchmark.py of {version}: offline")

    monkeypatch.setattr(benchmark_scripts, "script_dir", no_script)
    job, _, runs = create_job(session, SweepSpec(**CHECKED), source="api", submitted_by=None)
    request = build_request(session, runs[0], job, "cuda")
    assert request.crosscheck is not None
    assert {line["reason"] for line in request.crosscheck["lines"]} == {
        "flashinfer_benchmark.py of 0.6.18.post1: offline"}
    assert all(line["args"] is None for line in request.crosscheck["lines"])


def test_the_worker_stores_what_the_harness_says(session: Session, cpu_node: Any) -> None:
    """build_request -> the real harness subprocess -> measure_run's message loop -> storage
    -> the API summary, on CPU: a GPU job run by a worker on the CPU device (FlashInfer
    backends are unsupported there), so its torch points are measured and their cross-check
    is stored as unavailable, with the reason."""
    spec = {**CHECKED, "params": {**TINY_SPEC["params"], "kv_len": [64]}}
    job, _, runs = create_job(session, SweepSpec(**spec), source="api", submitted_by=None)
    session.commit()
    run = runs[0]
    mark_run_started(session, run, cpu_node)
    session.commit()
    assert measure_run(session, run, job, "cpu") in ("succeeded", "partial")
    points = session.scalars(select(Point).where(Point.run_id == run.id)).all()
    assert {p.backend: p.status for p in points} == {"fa2": "unsupported", "torch-sdpa": "ok"}
    checks = session.execute(select(Point.backend, Crosscheck).join(
        Crosscheck, Crosscheck.point_id == Point.id)).all()
    assert len(checks) == 2 and {b for b, _ in checks} == {"torch-sdpa"}
    assert all(c.status == "unavailable" and "this run is on cpu" in (c.error or "")
               for _, c in checks)
    with db.session_scope() as s2:
        token = create_token(s2, "reader")
    body = TestClient(create_app()).get(f"/v1/jobs/{job.id}",
                                        headers={"Authorization": f"Bearer {token}"}).json()
    assert body["crosscheck"] == {"checked": 0, "agree": 0, "disagree": 0, "unavailable": 2,
                                  "error": 0}
    assert body["runs"][0]["crosscheck"]["unavailable"] == 2


# --------------------------------------------------------------------------- curves, releases


def _curve_row(**over: Any) -> dict[str, Any]:
    return {"series": "fa2", "x": "16", "status": "ok", "median_us": 50.0, "ci_low_us": 49.0,
            "ci_high_us": 51.0, "tbps": 2.0, "n_samples": 30, "cv": 0.01, "throttled": False,
            "id": 1, "run_id": 1, "job_id": 1, "environment": {}, "gpu_name": "H200",
            "official_median_us": 55.0, "official_diff_pct": -9.09, "official_agrees": False,
            "official_causes": [{"cause": "clock", "detail": "SM clock 1980 MHz in kw"}],
            **over}


@pytest.fixture(scope="module")
def curves() -> Any:
    """The curves page module (creating the app registers the pages first)."""
    import importlib

    from kernelwatch.dashboard.app import create_app

    create_app()
    return importlib.import_module("kernelwatch.dashboard.pages.curves")


def test_curves_draw_the_tools_median_beside_each_point(curves: Any) -> None:
    curve_figure, official = curves.curve_figure, curves.OFFICIAL
    rows = [_curve_row(), _curve_row(x="32", id=2, official_median_us=None,
                                     official_diff_pct=None, official_agrees=None)]
    fig, csv_rows, summary = curve_figure(rows, "batch_decode", "batch_size", "latency",
                                          "backend", {})
    (marker,) = [t for t in fig["data"] if t["name"] == official]
    assert marker["x"] == [16.0] and marker["y"] == [55.0]
    assert "kernelwatch vs it: -9.1%" in marker["hovertext"][0]
    assert "clock: SM clock" in marker["hovertext"][0]
    assert "2 measured points in 1 series" in summary
    assert "0 of 1 within 3% of flashinfer_benchmark.py" in summary
    assert [r["flashinfer_benchmark_value"] for r in csv_rows] == [55.0, None]
    fig, _, _ = curve_figure(rows, "batch_decode", "batch_size", "tbps", "backend", {})
    (marker,) = [t for t in fig["data"] if t["name"] == official]
    assert marker["y"] == [pytest.approx(2.0 * 50.0 / 55.0)]  # same bytes, its latency


def test_the_release_suite_can_turn_the_crosscheck_on() -> None:
    suite = load_suite()
    assert not any(s.crosscheck for s in suite_specs("h200", ["0.6.18.post1", "0.7.4"], suite))
    on = suite_specs("h200", ["0.6.18.post1", "0.7.4"], suite, crosscheck=True)
    assert on and all(s.crosscheck for s in on)
    entry = [{**suite[0], "crosscheck": True}]
    assert suite_specs("h200", ["0.7.4"], entry)[0].crosscheck is True
    assert suite_specs("h200", ["0.7.4"], entry, crosscheck=False)[0].crosscheck is False
    # A CPU tag measures no FlashInfer kernel: never cross-checked.
    assert not any(s.crosscheck for s in suite_specs("cpu", ["0.7.4"], suite, True))
