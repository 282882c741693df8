"""A release's JIT modules built side by side before its first run on a node
(kernelwatch.worker.prebuild): every queued run of the release on the tag goes through the
real harness once, several at a time; a worker does it once per release, records its time in
the release's details, and skips it where nothing is built (a CPU node, the setting off)."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernelwatch.core import db
from kernelwatch.core.models import Job, Node, Point, Release, Run
from kernelwatch.core.releases import release_response, start_release
from kernelwatch.core.settings import Settings
from kernelwatch.worker import prebuild as prebuild_mod
from kernelwatch.worker.prebuild import Built, prebuild, prebuild_release_once, release_runs
from tests.conftest import configure
from tests.release_support import write_tiny_suite


def _assert_measured(session: Session, *runs: Run) -> None:
    """Each run finished with the tiny suite's two points stored."""
    session.expire_all()
    for run in runs:
        row = session.get(Run, run.id)
        assert row is not None and row.status == "succeeded"
        assert session.scalar(select(func.count()).select_from(Point)
                              .where(Point.run_id == run.id)) == 2


def _build_074_hangs(started: threading.Event | None = None) -> type:
    """The builds' harness runner, with 0.7.4's build hanging (``started`` set) until its
    harness is stopped: by the time limit, or the measuring side."""
    real = prebuild_mod.HarnessRunner

    class Hangs074(real):  # type: ignore[misc, valid-type]
        def messages(self) -> Iterator[Any]:
            if "0.7.4" in self.env.get("FLASHINFER_WORKSPACE_BASE", ""):
                if started is not None:
                    started.set()
                while not self.stopped:
                    time.sleep(0.05)
                return
            yield from super().messages()

    return Hangs074


def _build_074_after(event: threading.Event) -> type:
    """The builds' harness runner, with 0.7.4's build starting only once ``event`` is set."""
    real = prebuild_mod.HarnessRunner

    class Build074After(real):  # type: ignore[misc, valid-type]
        def messages(self) -> Iterator[Any]:
            if "0.7.4" in self.env.get("FLASHINFER_WORKSPACE_BASE", ""):
                assert event.wait(timeout=60), "0.7.4's build waited in vain"
            yield from super().messages()

    return Build074After


@pytest.fixture
def release_runs_cpu(kw_env: Settings, session: Session, cpu_node: Node, tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch) -> list[Run]:
    configure(monkeypatch, release_suite=str(write_tiny_suite(tmp_path)))
    start = start_release(session, "0.7.4", previous="0.6.18.post1")
    session.commit()
    runs = release_runs(session, "0.7.4", start.runs[0].queue)
    assert [r.id for r in runs] == sorted(r.id for r in start.runs) and len(runs) == 2
    return runs


def test_each_run_goes_through_the_harness_once_all_at_once(
        session: Session, release_runs_cpu: list[Run], monkeypatch: pytest.MonkeyPatch) -> None:
    both = threading.Barrier(2, timeout=60)  # passes only if the two harnesses overlap
    requests: list[Any] = []
    max_jobs: list[str] = []
    real = prebuild_mod.HarnessRunner

    class Together(real):  # type: ignore[misc, valid-type]
        def messages(self) -> Iterator[Any]:
            requests.append(self.request)
            max_jobs.append(self.env["MAX_JOBS"])
            both.wait()
            yield from super().messages()

    monkeypatch.setattr(prebuild_mod, "HarnessRunner", Together)
    built = prebuild(session, release_runs_cpu, "cpu", parallel=2)
    assert [b.run_id for b in built] == [r.id for r in release_runs_cpu]
    assert {b.version for b in built} == {"0.6.18.post1", "0.7.4"}
    for b in built:  # the tiny suite on a CPU tag: 2 points of torch-sdpa
        assert (b.units, b.failed, b.error) == (2, 0, None), b
    # one call a unit: nothing timed for long, nothing checked, nothing cross-checked
    for request in requests:
        assert request.timing["iterations"] == 1 and request.timing["cold_l2"] is False
        assert request.timing["check_correctness"] is False and request.crosscheck is None
    # the two builds share the CPUs: each harness's ninja (FlashInfer's JIT) gets half
    each = str(max(1, (os.cpu_count() or 1) // 2))
    assert max_jobs == [each, each] and [b.max_jobs for b in built] == [each, each]


def test_a_build_counts_the_units_its_release_refused(
        session: Session, release_runs_cpu: list[Run]) -> None:
    """A unit the release refuses builds nothing: the record says so apart from the failures
    (a GPU node's log gave only "0 failed" for builds that may have been refusals)."""
    for job in {r.job_id for r in release_runs_cpu}:
        row = session.get(Job, job)
        assert row is not None
        row.spec = {**row.spec, "backends": ["fa2", *row.spec["backends"]]}
    session.commit()
    for b in prebuild(session, release_runs_cpu, "cpu", parallel=2):
        # fa2 needs a CUDA device: refused on this CPU tag; torch-sdpa runs
        assert (b.units, b.failed, b.unsupported, b.error) == (4, 0, 2, None), b
        assert b.as_dict()["unsupported"] == 2


def test_builds_at_once_share_the_cpus_and_an_operators_max_jobs_is_kept(
        session: Session, release_runs_cpu: list[Run], monkeypatch: pytest.MonkeyPatch) -> None:
    assert [prebuild_mod.ninja_jobs(n, cpus=16) for n in (1, 2, 8, 10, 40)] == [16, 8, 2, 1, 1]
    monkeypatch.setenv("MAX_JOBS", "3")
    built = prebuild(session, release_runs_cpu, "cpu", parallel=2)
    assert [b.max_jobs for b in built] == ["3", "3"]
    assert all(b.as_dict()["max_jobs"] == "3" for b in built)


def test_a_worker_builds_a_release_once_and_records_how_long(
        session: Session, release_runs_cpu: list[Run], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[int]] = []

    def fake(session: Session, runs: list[Run], device: str,
             on_built: Any = None) -> list[Built]:
        calls.append([r.id for r in runs])
        return [Built(r.id, r.flashinfer_version, "batch_decode", 2, 0, 30.0 + i, 40.0 + i,
                      ended_after=45.0 + i) for i, r in enumerate(runs)]

    # On this CPU tag the suite keeps the torch backends only: nothing to build, nothing done.
    done: set[str] = set()
    first, second = release_runs_cpu[1], release_runs_cpu[0]
    prebuild_release_once(session, first, "cpu", done)
    assert not prebuild_mod._names_flashinfer(session, first)
    assert (session.scalar(select(Release)).details or {}).get("prebuild") is None
    assert release_response(session, session.scalar(select(Release)))["prebuild"] == {}

    monkeypatch.setattr(prebuild_mod, "prebuild", fake)
    monkeypatch.setattr(prebuild_mod, "_names_flashinfer", lambda s, r: True)
    done = set()
    prebuild_release_once(session, first, "cuda", done)
    prebuild_release_once(session, second, "cuda", done)  # the same release: built already
    assert calls == [[r.id for r in release_runs_cpu]] and done == {"0.7.4"}
    record = session.scalar(select(Release)).details["prebuild"]["cpu"]
    assert (record["runs"], record["jit_seconds"], record["longest_seconds"]) == (2, 61.0, 41.0)
    assert record["wall_seconds"] == 46.0  # when the last build ended
    assert [b["run_id"] for b in record["builds"]] == calls[0]
    # what the API and the webhook answer about the release carries it
    release = session.scalar(select(Release))
    assert release_response(session, release)["prebuild"] == {"cpu": record}


def test_the_setting_turns_it_off(session: Session, release_runs_cpu: list[Run],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, release_prebuild="false")
    monkeypatch.setattr(prebuild_mod, "prebuild", lambda *a: pytest.fail("built"))
    monkeypatch.setattr(prebuild_mod, "_names_flashinfer", lambda s, r: True)
    prebuild_release_once(session, release_runs_cpu[0], "cuda", set())


def test_the_versions_environments_are_made_side_by_side(
        session: Session, release_runs_cpu: list[Run], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each version's environment is made inside the pool, so a node with neither waits for
    the longer of the two instead of their sum; one that cannot be made fails its own build."""
    from kernelwatch.worker import tasks

    both = threading.Barrier(2, timeout=60)  # passes only if the two are made at once
    made: list[str | None] = []

    def make(version: str | None, backends: list[str], device: str) -> str:
        made.append(version)
        both.wait()
        if version == "0.6.18.post1":
            raise RuntimeError("no wheel for 0.6.18.post1 in the wheelhouse")
        return sys.executable

    monkeypatch.setattr(tasks, "harness_python_for", make)
    built = {b.version: b for b in prebuild(session, release_runs_cpu, "cpu", parallel=2)}
    assert sorted(made) == ["0.6.18.post1", "0.7.4"]
    assert (built["0.7.4"].units, built["0.7.4"].error) == (2, None)
    assert built["0.6.18.post1"].units == 0
    assert built["0.6.18.post1"].error == ("RuntimeError: no wheel for 0.6.18.post1 in the "
                                           "wheelhouse")


def test_a_build_that_does_not_end_is_stopped_at_the_time_limit_and_logged(
        session: Session, release_runs_cpu: list[Run], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """One run's build hangs (a release's builds on a GPU node held its runs for more than
    7 minutes with nothing in the worker's log): the log says every interval which builds it
    waits for, and at the limit the hanging harness is stopped and its build recorded so,
    while the other run's build finished normally."""
    import logging

    hung = threading.Event()
    monkeypatch.setattr(prebuild_mod, "HarnessRunner", _build_074_hangs(hung))
    monkeypatch.setattr(prebuild_mod, "PROGRESS_SECONDS", 0.5)
    caplog.set_level(logging.INFO, logger=prebuild_mod.__name__)
    started = time.monotonic()
    built = {b.version: b for b in prebuild(session, release_runs_cpu, "cpu", parallel=2,
                                            timeout=4.0)}
    assert hung.is_set() and 4.0 <= time.monotonic() - started < 30
    assert (built["0.6.18.post1"].units, built["0.6.18.post1"].error) == (2, None)
    assert built["0.7.4"].units == 0
    assert built["0.7.4"].error == "stopped at the prebuild's time limit after 0 unit(s)"
    hanging = built["0.7.4"].run_id
    assert f"prebuild: 1 of 2 built; building: run {hanging} batch_decode 0.7.4 for" \
        in caplog.text
    assert "prebuild: time limit of 4 s reached" in caplog.text
    done = built["0.6.18.post1"].run_id
    assert f"prebuild: run {done} (batch_decode, FlashInfer 0.6.18.post1) built in" \
        in caplog.text


def test_builds_start_by_what_they_took_last_release_longest_and_shortest_in_turn(
        kw_env: Settings, session: Session, cpu_node: Node, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With more runs than build slots, the order builds start in decides when the release can
    measure: kernels never built on the tag first, then the last release's builds, the
    longest and the shortest left in turn (the longest start at once; the shortest end
    within seconds, so measuring starts then)."""
    suite = tmp_path / "suite.yaml"
    suite.write_text("""
specs:
  - name: norm
    kernel: fused_add_rmsnorm
    backends: [auto, torch]
    params: {batch_size: [1], hidden_size: [4096]}
  - name: gemm
    kernel: mm_bf16
    backends: [cublaslt, torch]
    params: {m: [16], n: [4096], k: [4096]}
  - name: sampling
    kernel: top_k_top_p_sampling_from_logits
    backends: [cuda, torch]
    params: {batch_size: [1], vocab_size: [128256]}
""")
    configure(monkeypatch, release_suite=str(suite))
    previous = start_release(session, "0.6.18.post1", previous="0.5.3")
    session.commit()
    tag = previous.runs[0].target
    release = session.scalar(select(Release).where(Release.version == "0.6.18.post1"))
    assert release is not None
    release.details = {**(release.details or {}), "prebuild": {tag: {"builds": [
        {"kernel": "fused_add_rmsnorm", "wall_seconds": 34.1},
        {"kernel": "top_k_top_p_sampling_from_logits", "wall_seconds": 248.2},
        {"kernel": "top_k_top_p_sampling_from_logits", "wall_seconds": 251.0}]}}}
    start = start_release(session, "0.7.4", previous="0.6.18.post1")
    session.commit()
    runs = release_runs(session, "0.7.4", start.runs[0].queue)

    def kernels(order: list[Run]) -> list[str]:
        return [session.get(Job, r.job_id).kernel for r in order]  # type: ignore[union-attr]

    assert kernels(runs) == ["fused_add_rmsnorm"] * 2 + ["mm_bf16"] * 2 \
        + ["top_k_top_p_sampling_from_logits"] * 2
    assert prebuild_mod.past_build_seconds(session, tag, "0.7.4") == {
        "fused_add_rmsnorm": 34.1, "top_k_top_p_sampling_from_logits": 251.0}
    ordered = prebuild_mod.build_order(session, runs, tag, "0.7.4")
    assert kernels(ordered) == ["mm_bf16"] * 2 + ["top_k_top_p_sampling_from_logits",
                                                  "fused_add_rmsnorm"] * 2
    # never built: the queue's order (the previous version's run first)
    assert ordered[:2] == runs[2:4]
    # longest first, then shortest: the ends of the list sorted longest first, in turn
    assert ordered[2:] == [runs[4], runs[1], runs[5], runs[0]]
    assert prebuild_mod.alternate([9, 7, 5, 3, 1]) == [9, 1, 7, 3, 5]
    # another tag's record says nothing about this one
    assert prebuild_mod.past_build_seconds(session, "other-tag", "0.7.4") == {}


def test_each_build_is_handed_on_as_it_ends_while_the_slower_ones_go_on(
        session: Session, release_runs_cpu: list[Run], monkeypatch: pytest.MonkeyPatch) -> None:
    """The release measures a run as soon as its own build ends: 0.7.4's build here does not
    end until the 0.6.18.post1 build has been handed on (in the worker, measured), so the
    prebuild returns at all only if that happens while 0.7.4's build still runs."""
    real = prebuild_mod.HarnessRunner
    handed = threading.Event()
    niceness: list[int] = []

    class SlowFor074(real):  # type: ignore[misc, valid-type]
        def messages(self) -> Iterator[Any]:
            niceness.append(self.niceness)
            if "0.7.4" in self.env.get("FLASHINFER_WORKSPACE_BASE", ""):
                assert handed.wait(timeout=60), "0.7.4's build waited for the other's hand-on"
            yield from super().messages()

    order: list[tuple[str | None, str, bool]] = []

    def on_built(b: Built, building: Any) -> bool:
        order.append((b.version, threading.current_thread().name, building()))
        handed.set()
        return True

    monkeypatch.setattr(prebuild_mod, "HarnessRunner", SlowFor074)
    built = prebuild(session, release_runs_cpu, "cpu", parallel=2, on_built=on_built)
    # in the caller's thread, which owns the session, in the order the builds ended, saying
    # whether a build still runs: 0.7.4's while the first is handed on, none at the last
    main = threading.current_thread().name
    assert order == [("0.6.18.post1", main, True), ("0.7.4", main, False)]
    assert [b.run_id for b in built] == [r.id for r in release_runs_cpu]  # the runs' order
    by_version = {b.version: b for b in built}
    assert by_version["0.7.4"].ended_after > by_version["0.6.18.post1"].ended_after > 0
    assert all((b.units, b.error) == (2, None) for b in built)
    # the builds' harnesses (and the compilers they start) at the builds' CPU priority
    assert niceness == [10, 10]


def test_a_stop_from_the_measuring_side_stops_the_builds_still_running(
        session: Session, release_runs_cpu: list[Run], monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker stopping while a release builds: the builds still running are stopped at
    once, not left to the time limit, and their records say what stopped them."""
    monkeypatch.setattr(prebuild_mod, "HarnessRunner", _build_074_hangs())
    started = time.monotonic()
    built = {b.version: b for b in prebuild(session, release_runs_cpu, "cpu", parallel=2,
                                            timeout=600, on_built=lambda b, building: False)}
    assert time.monotonic() - started < 60
    assert built["0.6.18.post1"].error is None
    assert built["0.7.4"].error == "stopped at the worker's stop after 0 unit(s)"


def test_a_release_is_measured_run_by_run_as_its_builds_end(
        kw_env: Settings, session: Session, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the worker's task: the first delivery of a release's run builds every run of
    the release on the tag and measures each as its build ends. Here the delivered run's own
    build ends last (it waits for the other run's measurement to start), so the other run is
    measured first, while the delivered one is held: claimed, and not re-queued by this
    node's reaper. The other run's own delivery then finds it measured."""
    from kernelwatch.worker import node as node_mod
    from kernelwatch.worker import tasks
    from kernelwatch.worker.node import NodeIdentity

    configure(monkeypatch, release_suite=str(write_tiny_suite(tmp_path)))
    service = node_mod.start_service(NodeIdentity(name="pipeline", hostname="h", tags=["cpu"]))
    try:
        start = start_release(session, "0.7.4", previous="0.6.18.post1")
        session.commit()
        delivered, other = (sorted(start.runs, key=lambda r: r.flashinfer_version != "0.7.4"))
        assert (delivered.flashinfer_version, other.flashinfer_version) == \
            ("0.7.4", "0.6.18.post1")
        measuring_other = threading.Event()
        seen: dict[str, Any] = {}
        measure_runner = tasks.HarnessRunner

        class Measure(measure_runner):  # type: ignore[misc, valid-type]
            def messages(self) -> Iterator[Any]:
                if "0.6.18.post1" in self.env.get("FLASHINFER_WORKSPACE_BASE", ""):
                    seen["current"] = service.current_run_id
                    seen["held"] = set(service.held_run_ids)
                    service.reap_once()  # the reaper runs meanwhile: the held run stays
                    with db.session_scope() as s:
                        seen["delivered"] = s.get(Run, delivered.id).status  # type: ignore
                    measuring_other.set()
                yield from super().messages()

        monkeypatch.setattr(prebuild_mod, "HarnessRunner", _build_074_after(measuring_other))
        monkeypatch.setattr(tasks, "HarnessRunner", Measure)
        monkeypatch.setattr(prebuild_mod, "_builds_here", lambda s, r, d: True)
        assert tasks.execute_run(delivered.id) == "succeeded"
        # the delivered run is held (with the one measured, which is current as well)
        assert seen == {"current": other.id, "held": {delivered.id, other.id},
                        "delivered": "running"}
        assert tasks.execute_run(other.id) == "skipped"
        _assert_measured(session, delivered, other)
        record = session.scalar(select(Release).where(Release.version == "0.7.4"))
        summary = record.details["prebuild"]["cpu"]  # type: ignore[union-attr]
        assert summary["measured_as_built"] is True and summary["runs"] == 2
        ends = {b["version"]: b["ended_after"] for b in summary["builds"]}
        assert ends["0.7.4"] > ends["0.6.18.post1"]
        assert summary["wall_seconds"] == ends["0.7.4"]
        assert service.held_run_ids == set()
    finally:
        node_mod.stop_service()


def test_with_the_setting_off_the_runs_wait_for_the_last_build(
        kw_env: Settings, session: Session, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from kernelwatch.worker import node as node_mod
    from kernelwatch.worker import tasks
    from kernelwatch.worker.node import NodeIdentity

    configure(monkeypatch, release_suite=str(write_tiny_suite(tmp_path)),
              release_measure_while_building="false")
    service = node_mod.start_service(NodeIdentity(name="waits", hostname="h", tags=["cpu"]))
    try:
        start = start_release(session, "0.7.4", previous="0.6.18.post1")
        session.commit()
        monkeypatch.setattr(prebuild_mod, "_builds_here", lambda s, r, d: True)
        first, second = start.runs
        assert tasks.execute_run(first.id) == "succeeded"
        session.expire_all()
        assert session.get(Run, second.id).status == "queued"  # type: ignore[union-attr]
        assert tasks.execute_run(second.id) == "succeeded"
        record = session.scalar(select(Release).where(Release.version == "0.7.4"))
        assert record.details["prebuild"]["cpu"]["measured_as_built"] is False  # type: ignore
        assert service.prebuilt == {"0.7.4"}
    finally:
        node_mod.stop_service()


def test_a_stopping_worker_stops_the_release_builds_under_way(
        session: Session, release_runs_cpu: list[Run], monkeypatch: pytest.MonkeyPatch) -> None:
    """Celery's warm shutdown waits for the task: a task waiting on a build (0.7.4's sampler
    module, more than 8 minutes on an H100) held a stopping worker until the flow's limit
    killed it. The shutdown request stops the builds; nothing is then measured."""
    from kernelwatch.worker import tasks

    hanging = threading.Event()
    monkeypatch.setattr(prebuild_mod, "HarnessRunner", _build_074_hangs(hanging))
    monkeypatch.setattr(tasks._Shutdown, "requested", False)
    measured: list[int] = []

    def on_built(b: Built, building: Any) -> bool:
        if not hanging.wait(timeout=60):
            raise AssertionError("0.7.4's build did not start")
        tasks.request_shutdown()  # as Celery's worker_shutting_down does
        measured.append(b.run_id)
        return True  # only the shutdown request may stop the other build

    started = time.monotonic()
    built = {b.version: b for b in prebuild(session, release_runs_cpu, "cpu", parallel=2,
                                            timeout=30, on_built=on_built)}
    assert time.monotonic() - started < 25
    assert built["0.7.4"].error == "stopped at the worker's stop after 0 unit(s)"
    assert not prebuild_mod._ACTIVE


def test_points_timed_by_cuda_events_beside_builds_are_measured_again_after_them(
        kw_env: Settings, session: Session, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A point timed one call at a time by CUDA events includes the host's launch delays,
    which compiling on the CPUs lengthens (the torch sampler read up to 1.9x on an H100): the
    run measured while another build still runs stores none of those; they are measured
    again once every build has ended, while the run stays claimed and held from the reaper.
    A run measured after the last build stores them at once. (On a CPU node every point is
    wall-timed, so here the test says which points a GPU would time by events.)"""
    from kernelwatch.worker import node as node_mod
    from kernelwatch.worker import tasks
    from kernelwatch.worker.node import NodeIdentity

    configure(monkeypatch, release_suite=str(write_tiny_suite(tmp_path)))
    service = node_mod.start_service(NodeIdentity(name="holds", hostname="h", tags=["cpu"]))
    try:
        start = start_release(session, "0.7.4", previous="0.6.18.post1")
        session.commit()
        delivered, early = sorted(start.runs, key=lambda r: r.flashinfer_version != "0.7.4")
        early_measured, reaped = threading.Event(), threading.Event()
        real_measure = tasks.HarnessRunner
        harnesses: list[tuple[str | None, int]] = []

        class Measure(real_measure):  # type: ignore[misc, valid-type]
            def messages(self) -> Iterator[Any]:
                version = "0.7.4" if "0.7.4" in self.env["FLASHINFER_WORKSPACE_BASE"] \
                    else "0.6.18.post1"
                harnesses.append((version, len(self.request.skip)))
                yield from super().messages()
                if version == "0.6.18.post1" and not early_measured.is_set():
                    early_measured.set()
                    service.reap_once()  # its points held back, the run must stay claimed
                    with db.session_scope() as s:
                        assert s.get(Run, early.id).status == "running"  # type: ignore
                    reaped.set()

        # 0.7.4's build ends only after the early run's first measurement and a reaper pass
        monkeypatch.setattr(prebuild_mod, "HarnessRunner", _build_074_after(reaped))
        monkeypatch.setattr(tasks, "HarnessRunner", Measure)
        monkeypatch.setattr(prebuild_mod, "_builds_here", lambda s, r, d: True)
        # as a GPU would time torch-sdpa's points by CUDA events
        monkeypatch.setattr(tasks, "held_while_building", lambda msg: msg["status"] == "ok")
        assert tasks.execute_run(delivered.id) == "succeeded"
        # the early run twice (its points held back, then measured with nothing stored
        # to skip); the delivered run once, after the last build: nothing held back
        assert harnesses == [("0.6.18.post1", 0), ("0.7.4", 0), ("0.6.18.post1", 0)]
        _assert_measured(session, delivered, early)
        row = session.get(Run, early.id)
        assert row is not None and "measured again after the release's builds ended" in \
            (row.message or "")
        assert service.held_run_ids == set()
    finally:
        node_mod.stop_service()
