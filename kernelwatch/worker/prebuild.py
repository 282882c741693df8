"""Build a release's FlashInfer JIT modules side by side before the first of its runs is
measured on a node.

On a node whose JIT caches are empty, a release's comparison is mostly builds: on an H100,
406 s of the first 756 s of the standard suite were FlashInfer compiling its modules, the
sampling module alone 248 s per version (docs/results/h100-2026-12.md). Each run builds what
it calls when it first calls it, so the builds of both versions and every family come one
after another. A build is CPU work (nvcc), the measurement GPU work: here every run of the
release queued for this node's tag is called once per unit, each run in its own harness
process and all of them at once, so the release waits for its longest build instead of their
sum. The measurement finds the modules built (its points' ``jit_seconds`` near zero); the
builds' own time is recorded in the release's details (``prebuild.<tag>``), kept apart as
every JIT time is.

Each run is measured as soon as its own build ends (``release_measure_while_building``), one
at a time on the GPU, while the slower builds go on: one long build (0.7.4's sampling module,
more than 540 s on an H100) otherwise holds every run that is already built. The builds run
at a lower CPU priority (``release_build_niceness``), so that the measuring process gets a
CPU whenever it asks for one; bench/build_load_bias.py measures whether builds beside a
measurement move it. With the setting off, every run waits for the last build.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from kernelwatch.core.models import Job, Release, Run
from kernelwatch.core.releases import RELEASE_JOB_KIND
from kernelwatch.core.settings import get_settings
from kernelwatch.core.spec import SweepSpec
from kernelwatch.worker.runner import HarnessRequest, HarnessRunner
from kernelwatch_harness.catalogue import FLASHINFER_BACKENDS
from kernelwatch_harness.protocol import TimingConfig

T = TypeVar("T")
log = logging.getLogger(__name__)

# One call per unit, nothing the build does not need: no cold-L2 copies, no reference, no
# graph capture, no clock floor.
BUILD_TIMING: TimingConfig = {"warmup": 1, "iterations": 1, "repeats": 1, "cold_l2": False,
                               "check_correctness": False, "clock_floor": 0.0,
                               "method": "cuda_event"}
PENDING = ("queued", "running")
PROGRESS_SECONDS = 60.0  # how often the worker's log says which builds are still running


def ninja_jobs(builds: int, cpus: int | None = None) -> int:
    """ninja's parallel jobs for each of ``builds`` builds at once: the node's CPUs shared
    among them. FlashInfer's JIT runs ninja with its default (CPUs + 2) unless MAX_JOBS says
    otherwise, so eight builds at once on 16 CPUs would start up to 144 nvcc processes, each
    up to a few GB of memory: the node thrashes and every build takes longer."""
    return max(1, (cpus if cpus is not None else os.cpu_count() or 1) // max(1, builds))


@dataclass
class Built:
    run_id: int
    version: str | None
    kernel: str
    units: int
    failed: int
    jit_seconds: float
    wall_seconds: float
    error: str | None = None
    max_jobs: str | None = None  # the MAX_JOBS its harness ran with (ninja's parallel jobs)
    # units the release refused (nothing built for them): a build of only those built nothing
    unsupported: int = 0
    # seconds from the start of the release's builds to this one's end: when its run could
    # be measured
    ended_after: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "version": self.version, "kernel": self.kernel,
                "units": self.units, "failed": self.failed,
                "jit_seconds": round(self.jit_seconds, 2),
                "wall_seconds": round(self.wall_seconds, 2), "error": self.error,
                "max_jobs": self.max_jobs, "unsupported": self.unsupported,
                "ended_after": round(self.ended_after, 2)}


@dataclass(frozen=True)
class BuildTarget:
    """What a build needs of its run, read before the builds start: the pool's threads must
    not touch the ORM objects of a session the measuring thread commits on."""

    run_id: int
    version: str | None


def release_runs(session: Session, version: str, queue: str) -> list[Run]:
    """The release's runs still to measure on ``queue``, in the order they were queued."""
    return list(session.scalars(
        select(Run).join(Job, Job.id == Run.job_id)
        .where(Job.release_version == version, Job.kind == RELEASE_JOB_KIND, Run.queue == queue,
               Run.status.in_(PENDING))
        .order_by(Run.id)))


def _jobs_of(session: Session, runs: list[Run]) -> dict[int, Job]:
    return {j.id: j for j in session.scalars(select(Job).where(
        Job.id.in_({r.job_id for r in runs})))}


def build_request_for(run: Run, job: Job, device: str) -> HarnessRequest:
    """Every unit of the run, called once: no stored points skipped, no cross-check."""
    from kernelwatch.worker.tasks import run_points

    spec = SweepSpec(**job.spec)
    return HarnessRequest(kernel=spec.kernel, device=device, backends=list(spec.backends),
                          timing=TimingConfig(**BUILD_TIMING),
                          points=run_points(spec, run))


class _Builds:
    """The builds under way: each one's harness, so that the deadline can stop it, and when it
    started, so that the log says which ones a release is waiting for."""

    def __init__(self, deadline: float, total: int) -> None:
        self.total = total  # the builds to run
        self.started = time.monotonic()
        self.deadline = deadline
        self.expired = threading.Event()
        self.why = "the prebuild's time limit"  # what stopped the builds, for their records
        self.lock = threading.Lock()
        self.running: dict[int, tuple[str, str | None, float, HarnessRunner | None]] = {}
        self.done = 0

    def start(self, target: BuildTarget, kernel: str) -> None:
        with self.lock:
            self.running[target.run_id] = (kernel, target.version, time.monotonic(), None)

    def attach(self, target: BuildTarget, runner: HarnessRunner) -> bool:
        """Register the run's harness; False when the deadline has passed (do not start it)."""
        with self.lock:
            kernel, version, started, _ = self.running[target.run_id]
            self.running[target.run_id] = (kernel, version, started, runner)
            return not self.expired.is_set()

    def finish(self, built: Built) -> None:
        with self.lock:
            self.running.pop(built.run_id, None)
            self.done += 1
        log.info("prebuild: run %s (%s, FlashInfer %s) built in %.0f s, JIT %.0f s, "
                 "%d unit(s), %d failed, %d unsupported%s", built.run_id, built.kernel,
                 built.version, built.wall_seconds, built.jit_seconds, built.units,
                 built.failed, built.unsupported, f": {built.error}" if built.error else "")

    def expire(self, why: str | None = None) -> None:
        """The deadline, or nothing left to wait for the builds: stop every harness still
        building."""
        with self.lock:
            if not self.expired.is_set() and why:
                self.why = why
            self.expired.set()
            runners = [r for *_, r in self.running.values() if r is not None]
        for runner in runners:
            runner.stop()

    def building(self) -> bool:
        """Whether any build is still running (or yet to start)."""
        with self.lock:
            return self.done < self.total

    def report(self) -> str:
        now = time.monotonic()
        with self.lock:
            waiting = ", ".join(f"run {rid} {k} {v} for {now - t:.0f} s"
                                for rid, (k, v, t, _) in sorted(self.running.items()))
            return (f"prebuild: {self.done} of {self.total} built; building: "
                    f"{waiting or 'none'}")


_ACTIVE: set[_Builds] = set()  # the builds under way in this process (one release at a time)


def stop_builds(why: str = "the worker's stop") -> None:
    """Stop every build under way in this process: the worker is stopping, and nothing is to
    wait for a build (up to the time limit) before it may. Called from a signal handler, so
    it only starts a thread that takes the builds' locks."""
    def stop() -> None:
        for builds in list(_ACTIVE):
            builds.expire(why)

    threading.Thread(target=stop, name="prebuild-stop", daemon=True).start()


def _build(request: HarnessRequest, target: BuildTarget, builds: _Builds, jobs: int) -> Built:
    """Make the run's version environment if the node lacks it, then call every unit once,
    with FlashInfer's ninja limited to ``jobs`` (where the worker sets no MAX_JOBS of its own)
    and the harness, and so its compilers, at the builds' CPU priority."""
    from kernelwatch.worker.envs import harness_env
    from kernelwatch.worker.tasks import harness_python_for

    started = time.monotonic()
    units = failed = unsupported = 0
    jit = 0.0
    error = max_jobs = None
    builds.start(target, request.kernel)
    try:
        if builds.expired.is_set():
            raise TimeoutError(f"not started before {builds.why}")
        # Here, in the pool, so that the environments of two versions are made side by side
        # (about 30 s each on a GPU node); two runs of one version wait on its lock instead.
        python = harness_python_for(target.version, request.backends, request.device)
        env = harness_env(target.version)
        max_jobs = env.setdefault("MAX_JOBS", str(jobs))  # an operator's own is kept
        runner = HarnessRunner(python, request, env=env,
                               niceness=get_settings().release_build_niceness)
        if not builds.attach(target, runner):
            raise TimeoutError(f"not started before {builds.why}")
        for msg in runner.messages():
            if msg.get("type") == "point":
                units += 1
                seconds = msg.get("jit_seconds")
                jit += float(seconds) if isinstance(seconds, int | float) else 0.0
                failed += msg.get("status") not in ("ok", "unsupported")
                unsupported += msg.get("status") == "unsupported"
            elif msg.get("type") == "fatal":
                error = str(msg.get("error"))[:500]
        if builds.expired.is_set() and runner.stopped:
            error = f"stopped at {builds.why} after {units} unit(s)"
    except Exception as e:  # a build that fails leaves the run to report it when measured
        error = f"{type(e).__name__}: {e}"[:500]
    now = time.monotonic()
    built = Built(target.run_id, target.version, request.kernel, units, failed, jit,
                  now - started, error, max_jobs, unsupported, now - builds.started)
    builds.finish(built)
    return built


def prebuild(session: Session, runs: list[Run], device: str,
             parallel: int | None = None, timeout: float | None = None,
             on_built: Callable[[Built, Callable[[], bool]], bool] | None = None
             ) -> list[Built]:
    """Call every unit of ``runs`` once, each run in its own harness process, at most
    ``parallel`` at a time (default: half the CPUs, at least one), for at most ``timeout``
    seconds (default: the release_prebuild_timeout setting); the worker's log says every
    minute which builds it is waiting for. ``on_built`` is called in this thread with each
    build as it ends, while the others go on (the release measures its run there), and a
    function that says whether any build is still running; when it returns False, the
    builds still running are stopped. Returns the builds in ``runs``' order."""
    jobs = _jobs_of(session, runs)
    work = [(build_request_for(run, jobs[run.job_id], device),
             BuildTarget(run.id, run.flashinfer_version))
            for run in runs]
    width = min(max(1, parallel or (os.cpu_count() or 2) // 2), max(1, len(work)))
    each = ninja_jobs(width)
    log.info("prebuild: %d run(s), %d at a time, MAX_JOBS %s each", len(work), width,
             os.environ.get("MAX_JOBS", each))
    limit = get_settings().release_prebuild_timeout if timeout is None else timeout
    builds = _Builds(time.monotonic() + limit, len(work))
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(timeout=min(PROGRESS_SECONDS,
                                            max(0.0, builds.deadline - time.monotonic()))):
            if time.monotonic() >= builds.deadline:
                log.warning("prebuild: time limit of %.0f s reached; %s", limit,
                            builds.report())
                builds.expire()
                return
            log.info(builds.report())

    watcher = threading.Thread(target=watch, name="prebuild-watch", daemon=True)
    watcher.start()
    done: dict[int, Built] = {}
    _ACTIVE.add(builds)
    try:
        with ThreadPoolExecutor(max_workers=width) as pool:
            futures = [pool.submit(_build, request, target, builds, each)
                       for request, target in work]
            try:
                for future in as_completed(futures):
                    built = future.result()
                    done[built.run_id] = built
                    if on_built is not None and not on_built(built, builds.building):
                        builds.expire("the worker's stop")
            except BaseException:
                builds.expire("an error in the worker")  # nothing waits for them any more
                raise
        return [done[target.run_id] for _, target in work]
    finally:
        _ACTIVE.discard(builds)
        finished.set()
        watcher.join()


def _builds_here(session: Session, run: Run, device: str) -> bool:
    """Only FlashInfer builds anything, and only where it runs: a CPU node measures the
    torch backends alone."""
    return device == "cuda" and _names_flashinfer(session, run)


def _names_flashinfer(session: Session, run: Run) -> bool:
    job = session.get(Job, run.job_id)
    backends = (job.spec or {}).get("backends") or [] if job is not None else []
    return any(b in FLASHINFER_BACKENDS for b in backends)


def past_build_seconds(session: Session, tag: str, before: str,
                       releases: int = 5) -> dict[str, float]:
    """How long each kernel's build took on ``tag`` in the latest releases that recorded one
    (other than ``before``): the newest record of a kernel wins, the slower version of it."""
    seconds: dict[str, float] = {}
    recent = session.scalars(select(Release).where(Release.version != before)
                             .order_by(Release.created_at.desc(), Release.id.desc()))
    seen = 0
    for release in recent:
        record = ((release.details or {}).get("prebuild") or {}).get(tag)
        if not record:
            continue
        newest: dict[str, float] = {}
        for b in record.get("builds", []):
            newest[b["kernel"]] = max(newest.get(b["kernel"], 0.0), float(b["wall_seconds"]))
        for kernel, wall in newest.items():
            seconds.setdefault(kernel, wall)
        seen += 1
        if seen == releases:
            break
    return seconds


def build_order(session: Session, runs: list[Run], tag: str, version: str) -> list[Run]:
    """The runs in the order their builds should start: kernels never built on this tag first
    (nothing says they are short), then the others by how long they took last time,
    alternating the longest and the shortest left. The longest start at once, so the last
    build ends as early as longest-first would make it end; the shortest, started beside
    them, end within seconds, so the node starts measuring then instead of after its first
    long build. Replaying a fresh H100's recorded release with its recorded times
    (bench/release_timeline.py, whose model reads 993 s for the order as run, where the run
    took 994 s): the measuring ends after 842 s instead of longest-first's 993 s with the
    cross-check on, and after 684 s either way without it."""
    past = past_build_seconds(session, tag, version)
    jobs = _jobs_of(session, runs)

    def seconds(r: Run) -> float | None:
        return past.get(str((jobs[r.job_id].spec or {}).get("kernel")))

    never = [r for r in runs if seconds(r) is None]
    known = sorted((r for r in runs if seconds(r) is not None),
                   key=lambda r: -(seconds(r) or 0.0))  # stable: the queue's order among equals
    return never + alternate(known)


def alternate(longest_first: list[T]) -> list[T]:
    """``[L1, S1, L2, S2, ...]`` from a list sorted longest first: its ends, taken in turn."""
    out: list[T] = []
    left, right = 0, len(longest_first) - 1
    while left <= right:
        out.append(longest_first[left])
        left += 1
        if left <= right:
            out.append(longest_first[right])
            right -= 1
    return out


def prebuild_release_once(session: Session, run: Run, device: str, done: set[str],
                          measure: Callable[[int, Callable[[], bool]], bool] | None = None
                          ) -> None:
    """Before the first run of a release on this node (``done`` remembers the releases this
    worker built), build every run of it queued for the run's tag, and record how long that
    took in the release's details. With ``measure`` (and ``release_measure_while_building``
    on), each run is measured through it, by id, as soon as its build ends, with a function
    that says whether builds are still running; it returns False to stop (the worker is
    shutting down). A run of no release, or of one built already, passes."""
    job = session.get(Job, run.job_id)
    version = job.release_version if job is not None and job.kind == RELEASE_JOB_KIND else None
    settings = get_settings()
    if version is None or version in done or not settings.release_prebuild:
        return
    done.add(version)
    runs = release_runs(session, version, run.queue)
    if run not in runs:
        runs.insert(0, run)
    runs = [r for r in runs if _builds_here(session, r, device)]
    if not runs:
        return
    tag = run.target
    runs = build_order(session, runs, tag, version)
    pipelined = measure is not None and settings.release_measure_while_building

    def measured_as_built(b: Built, building: Callable[[], bool]) -> bool:
        assert measure is not None
        log.info("release %s: run %s built after %.0f s; measuring it while %d build(s) go "
                 "on", version, b.run_id, b.ended_after, len(runs) - len(ended) - 1)
        ended.append(b.run_id)
        return measure(b.run_id, building)

    ended: list[int] = []
    built = prebuild(session, runs, device, on_built=measured_as_built if pipelined else None)
    wall = max((b.ended_after for b in built), default=0.0)
    summary = {"runs": len(built), "wall_seconds": round(wall, 2),
               "jit_seconds": round(sum(b.jit_seconds for b in built), 2),
               "longest_seconds": round(max((b.wall_seconds for b in built), default=0.0), 2),
               "measured_as_built": pipelined,
               "builds": [b.as_dict() for b in built]}
    log.info("release %s: built %d run(s) side by side in %.1f s (JIT %.1f s in all)", version,
             len(built), wall, summary["jit_seconds"])
    release = session.scalar(select(Release).where(Release.version == version)
                             .with_for_update())
    if release is None:
        return
    details = dict(release.details or {})
    details["prebuild"] = {**(details.get("prebuild") or {}), tag: summary}
    release.details = details
    session.commit()
