"""The worker's task: execute one run (one job on this node, one FlashInfer version, one chunk
of the grid), storing every point the moment the harness reports it.

Crash safety: each point and its samples are committed on their own, so a killed worker loses
at most the point in flight. The run stays ``running`` on this node; the node's reaper (on the
restart, or another node's when this one's heartbeat goes stale) queues it again, and the new
delivery skips the (point_index, backend) pairs already stored: nothing is measured twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.orm import Session

from kernelwatch.core import hooks
from kernelwatch.core.benchmark_cli import repro_command
from kernelwatch.core.broker import TASK_EXECUTE_RUN, get_celery
from kernelwatch.core.crosscheck import store_crosscheck
from kernelwatch.core.db import new_session
from kernelwatch.core.environment import env_fingerprint
from kernelwatch.core.errors import IllegalTransition
from kernelwatch.core.gpus import sku_for_name
from kernelwatch.core.jobs import (
    get_job,
    is_cancelled,
    mark_run_finished,
    mark_run_started,
)
from kernelwatch.core.models import (
    TERMINAL_STATUSES,
    Job,
    JobStatus,
    Node,
    Point,
    PointStatus,
    Run,
)
from kernelwatch.core.nodes import is_alive
from kernelwatch.core.results import store_point, stored_point_keys
from kernelwatch.core.spec import SweepSpec
from kernelwatch.worker import benchmark_scripts
from kernelwatch.worker import node as node_mod
from kernelwatch.worker.runner import HarnessRequest, HarnessRunner
from kernelwatch_harness.catalogue import FLASHINFER_BACKENDS
from kernelwatch_harness.protocol import (
    TIMING_DEFAULTS,
    CrosscheckLine,
    CrosscheckRequest,
    error_point,
)

log = logging.getLogger(__name__)
app = get_celery()

# Deliveries of one run before it is given up (each worker crash on it is one).
MAX_ATTEMPTS = 5


class _Shutdown:
    """Set from Celery's ``worker_shutting_down`` (a signal handler): the task stops its
    harness at once and leaves the run to the reaper instead of finishing it.

    Why not requeue the message: a worker in warm shutdown may still fetch it again at once
    (it did, on the SQL transport), and start a harness only to stop it. A run left running
    on a stopped node is exactly the crash case, which the reaper already handles: this node
    re-queues it when it starts again, and another node of the tag takes it over once this
    node's heartbeat is stale (``stop_service`` makes it stale at once)."""

    requested = False
    runner: HarnessRunner | None = None


def request_shutdown() -> None:
    from kernelwatch.worker.prebuild import stop_builds

    _Shutdown.requested = True
    if _Shutdown.runner is not None:
        _Shutdown.runner.stop()
    # a release's builds too: a stopping worker must not wait for them to end
    stop_builds()


def _leave_for_reaper(session: Session, run: Run) -> None:
    session.refresh(run)
    if run.status == JobStatus.running:
        run.message = ("interrupted: the worker was stopped; the run resumes (stored points "
                       "kept) when this node restarts or another node of its tag takes it over")
        session.commit()


def store_environment(run: Run, message: Mapping[str, Any]) -> None:
    environment = dict(message.get("environment") or {})
    run.environment = environment
    run.timing_method = message.get("timing_method") or run.timing_method
    gpu_name = environment.get("gpu_name")
    if gpu_name:
        run.gpu_name = str(gpu_name)
        sku = sku_for_name(str(gpu_name))
        run.gpu_sku = sku.tag if sku else (environment.get("gpu_sku") or run.gpu_sku)
    run.env_fingerprint = env_fingerprint(environment)


def _claim(session: Session, run_id: int, me: Node | None) -> Run | None:
    """The run to execute, marked running on this node; None when there is nothing to do
    (gone, finished, cancelled, or already running on another live node)."""
    run = session.get(Run, run_id)
    if run is None:
        log.warning("run %s does not exist; dropped", run_id)
        return None
    get_job(session, run.job_id, lock=True)  # serialises claims of one job's runs
    session.refresh(run)
    if run.status in TERMINAL_STATUSES:
        log.info("run %s is already %s; nothing to do", run_id, run.status)
        return None
    if run.status == JobStatus.running and run.node_id is not None and (
        me is None or run.node_id != me.id
    ):
        other = session.get(Node, run.node_id)
        if is_alive(other):
            log.info("run %s is running on live node %s; duplicate delivery dropped", run_id,
                     other.name if other else "?")
            return None
    try:
        mark_run_started(session, run, me)
    except IllegalTransition as e:
        log.info("run %s not started: %s", run_id, e)
        return None
    return run


def _finish(session: Session, run: Run, status: str | None = None,
            message: str | None = None) -> None:
    job_done = mark_run_finished(session, run, status=status, message=message)
    session.commit()
    if job_done:
        try:
            hooks.on_job_finished(run.job_id)
        except Exception:  # the hook's trouble must not undo a finished run
            log.exception("on_job_finished(%s) failed", run.job_id)


def run_points(spec: SweepSpec, run: Run) -> list[tuple[int, dict[str, dict[str, Any]]]]:
    """The run's points: (point_index, completed params by backend)."""
    by_index = spec.backend_points()
    return [(int(i), by_index[int(i)]) for i in run.point_indices]


def build_request(session: Session, run: Run, job: Job, device: str) -> HarnessRequest:
    spec = SweepSpec(**job.spec)
    points = run_points(spec, run)
    return HarnessRequest(
        kernel=spec.kernel,
        device=device,
        backends=list(spec.backends),
        timing=spec.timing.config(),
        points=points,
        skip=stored_point_keys(session, run.id),
        crosscheck=crosscheck_request(spec, points, run.flashinfer_version, device),
    )


def crosscheck_request(spec: SweepSpec, points: list[tuple[int, dict[str, dict[str, Any]]]],
                       version: str | None, device: str) -> CrosscheckRequest | None:
    """flashinfer_benchmark.py's arguments for each unit of the run (or why there are none),
    and the version's copy of the script: what the harness cross-checks with."""
    if not spec.crosscheck or version is None:
        return None
    script, why = "", None
    if device == "cuda":  # a CPU run reports them unavailable without the script
        try:
            script = str(benchmark_scripts.script_dir(version))
        except Exception as e:
            why = str(e)
    lines: list[CrosscheckLine] = []
    for index, by_backend in points:
        for backend in spec.backends:  # a torch backend's line says why it has no command
            repro = repro_command(spec.kernel, by_backend[backend], backend)
            lines.append(CrosscheckLine(
                point_index=index, backend=backend, args=None if why else repro.args,
                reason=why or repro.reason))
    return CrosscheckRequest(script_dir=script, lines=lines)


def harness_python_for(version: str | None, backends: list[str], device: str) -> str:
    """The python of the harness for a run of FlashInfer ``version``."""
    from kernelwatch.worker.envs import harness_python

    # FlashInfer needs a GPU: on a CPU node the harness reports its backends unsupported
    # without importing it, so no version environment is built there for nothing.
    needs = device == "cuda" and any(b in FLASHINFER_BACKENDS for b in backends)
    return harness_python(version, needs)


@app.task(name=TASK_EXECUTE_RUN, acks_late=True, reject_on_worker_lost=True)
def execute_run(run_id: int) -> str:
    service = node_mod.service()
    if service is None:  # a worker started without our signals (e.g. tests calling directly)
        service = node_mod.start_service()
    service.current_run_id = run_id
    session = new_session()
    try:
        return _execute(session, run_id, service)
    finally:
        service.current_run_id = None
        session.close()


def _execute(session: Session, run_id: int, service: node_mod.NodeService) -> str:
    me = session.get(Node, service.node_id) if service.node_id is not None else None
    run = _claim(session, run_id, me)
    session.commit()
    if run is None:
        return "skipped"
    if _Shutdown.requested:  # received while stopping: claimed, so the reaper will resume it
        _leave_for_reaper(session, run)
        return "interrupted"
    if run.attempts > MAX_ATTEMPTS:
        # Something kills the worker itself on this run every time: stop retrying it.
        _finish(session, run, message=f"gave up after {MAX_ATTEMPTS} attempts; the stored "
                "points are kept")
        return str(run.status)
    measured = _prebuild(session, run, service, me)
    if measured is not None:
        return measured
    if _Shutdown.requested:
        _leave_for_reaper(session, run)
        return "interrupted"
    return _measure_guarded(session, run, service)


def _measure_guarded(session: Session, run: Run, service: node_mod.NodeService,
                     hold: Callable[[Mapping[str, Any]], bool] | None = None,
                     note: str | None = None) -> str:
    """Measure a claimed run; an error finishes it with what it has."""
    try:
        return _measure_run(session, run, service, hold, note)
    except Exception as e:
        # A deterministic failure (a bug, a spec this worker cannot read) must not come back
        # through the reaper forever: finish the run with what it has. If the database itself
        # is gone this raises too, and the run stays running for the reaper to retry later.
        log.exception("run %s failed", run.id)
        session.rollback()
        _finish(session, run, message=f"worker error: {type(e).__name__}: {e}"[:2000])
        return str(run.status)


def _prebuild(session: Session, run: Run, service: node_mod.NodeService,
              me: Node | None) -> str | None:
    """A release's JIT modules, built side by side before its first run here, each of its
    runs on this tag measured as its own build ends (a failure there only costs the time:
    each run still builds what it calls). Returns ``run``'s outcome when it was measured
    here, None when the caller is still to measure it.

    The release's other runs are claimed one at a time, as their builds end: a run not yet
    claimed stays queued for any node of the tag, and its own delivery, when it comes, finds
    it measured. While one of them is measured, ``run`` is held: claimed, not yet measured,
    and not to be re-queued by this node's reaper."""
    from kernelwatch.worker.prebuild import prebuild_release_once

    outcomes: dict[int, str] = {}
    claimed: dict[int, Run] = {run.id: run}

    def protect() -> None:
        # every claimed run not finished yet (``run``, and those with points held back) is
        # kept from this node's reaper, which spares only the current run otherwise; the set
        # is replaced, not changed, as the heartbeat thread reads it
        service.held_run_ids = {r for r in claimed if outcomes.get(r) in (None, HELD)}

    def measure_one(target: Run, hold: Callable[[Mapping[str, Any]], bool] | None,
                    note: str | None = None) -> bool:
        protect()  # before ``run`` stops being the current run
        service.current_run_id = target.id
        try:
            outcomes[target.id] = _measure_guarded(session, target, service, hold, note)
        finally:
            protect()
            service.current_run_id = run.id
        return outcomes[target.id] != "interrupted"

    def measure(run_id: int, building: Callable[[], bool]) -> bool:
        if _Shutdown.requested:
            return False
        target = run if run_id == run.id else _claim(session, run_id, me)
        session.commit()
        if target is None:  # finished, cancelled or taken by another node meanwhile
            return True
        claimed[run_id] = target
        # while other builds go on, a point timed one call at a time waits for them to end
        return measure_one(target, lambda msg: building() and held_while_building(msg))

    try:
        prebuild_release_once(session, run, service.ident.device, service.prebuilt, measure)
    except Exception:
        log.exception("prebuild before run %s failed; the runs build as they go", run.id)
        session.rollback()
    # the builds have ended: the points held back are measured now, on a quiet node
    for run_id, target in claimed.items():
        if outcomes.get(run_id) == HELD and not _Shutdown.requested:
            measure_one(target, None, note="measured as its build ended; its points timed "
                        "by CUDA events were measured again after the release's builds ended")
    service.held_run_ids = set()
    return outcomes.get(run.id)


def _measure_run(session: Session, run: Run, service: node_mod.NodeService,
                 hold: Callable[[Mapping[str, Any]], bool] | None = None,
                 note: str | None = None) -> str:
    job = session.get(Job, run.job_id)
    assert job is not None
    return measure_run(session, run, job, service.ident.device, hold, note)


# What a run measured while a release's builds go on returns for the points it held back.
HELD = "held"


def held_while_building(msg: Mapping[str, Any]) -> bool:
    """A point timed by CUDA events, one call at a time, includes the host's launch delays: on
    an H100 the torch sampler's batch-1 and batch-64 points read 1.89x and 1.75x their idle
    medians with FlashInfer compiling on every CPU at a lower priority (in one of two runs;
    in the other they did not move), while 36 graph-timed points stayed within 4 % of theirs,
    none flagged (docs/results/h100-2026-12.md). Such a point is measured again once the
    builds end."""
    return msg.get("status") == PointStatus.ok and msg.get("timing_method") == "cuda_event"


def measure_run(session: Session, run: Run, job: Job, device: str,
                hold: Callable[[Mapping[str, Any]], bool] | None = None,
                note: str | None = None) -> str:
    """Measure a started run through the harness, storing the environment and every point as
    it arrives, then finish it. Shared by sweeps and confirmation rounds. Returns the run's
    status, or "interrupted" when the worker is stopping (the run is left to the reaper).

    A point for which ``hold`` says so is not stored: the run is left running and ``HELD``
    returned, and measuring it again later measures just those points (the stored ones are
    skipped). ``note`` is the run's message for this attempt."""
    request = build_request(session, run, job, device)
    run.message = note or ((f"resumed (attempt {run.attempts}): {len(request.skip)} points "
                            "stored by an earlier attempt are kept, not measured again")
                           if request.skip else None)
    session.commit()
    log.info("run %s (job %s): %d pairs to measure, %d already stored", run.id, job.id,
             len(request.pairs()), len(request.skip))
    try:
        python = harness_python_for(run.flashinfer_version, request.backends, request.device)
    except Exception as e:  # no environment for this version on this node
        for pair in request.pairs():
            store_point(session, run, request.kernel, request.params(*pair),
                        error_point(*pair, f"no harness environment: {e}"))
        session.commit()
        _finish(session, run, message=f"no harness environment: {e}")
        return "failed"

    from kernelwatch.worker.envs import harness_env

    # The version's own JIT cache (FLASHINFER_WORKSPACE_BASE); the runner adds PYTHONPATH.
    runner = HarnessRunner(python, request, env=harness_env(run.flashinfer_version))
    _Shutdown.runner = runner
    cold_l2 = bool(request.timing.get("cold_l2", TIMING_DEFAULTS.cold_l2))
    cancelled = False
    held = 0
    stored: dict[tuple[int, str], Point] = {}  # this attempt's points: their cross-checks follow
    try:
        for msg in runner.messages():
            if msg["type"] == "env":
                store_environment(run, msg)
                session.commit()
            elif msg["type"] == "point" and hold is not None and hold(msg):
                held += 1  # not stored: measured again later (its cross-check is skipped)
            elif msg["type"] == "point":
                pair = (msg["point_index"], msg["backend"])
                stored[pair] = store_point(session, run, request.kernel,
                                           request.params(*pair), msg, cold_l2=cold_l2)
                session.commit()
                if msg["status"] != PointStatus.ok:
                    log.info("run %s point %s/%s %s: %s", run.id, msg["point_index"],
                             msg["backend"], msg["status"], (msg["error"] or "")[:500])
                if is_cancelled(session, run.job_id):
                    cancelled = True
                    runner.stop()
                    break
                if _Shutdown.requested:
                    runner.stop()
                    break
            elif msg["type"] == "crosscheck":
                point = stored.get((msg["point_index"], msg["backend"]))
                if point is not None:
                    store_crosscheck(session, point, msg, cold_l2)
                    session.commit()
            elif msg["type"] == "log" and msg["message"]:
                log.info("harness: %s", msg["message"])
    finally:
        _Shutdown.runner = None
        runner.close()

    if cancelled:
        log.info("run %s: job %s was cancelled; stopped", run.id, run.job_id)
        _finish(session, run, status=JobStatus.cancelled)
        return "cancelled"
    if _Shutdown.requested:
        _leave_for_reaper(session, run)
        return "interrupted"
    if held:
        log.info("run %s: %d point(s) held back, to be measured again", run.id, held)
        return HELD
    _finish(session, run)
    return str(run.status)
