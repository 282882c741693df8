"""The release flow: a new FlashInfer version is benchmarked against the release before it on
every GPU of the fleet, compared, its regressions confirmed, and the outcome posted.

    start_release (webhook or `kernelwatch release`)
      -> Release row (unique version) + per GPU tag, one job per suite entry with
         flashinfer_versions [previous, new] (its runs per version are baseline / contender)
    on_release_job_finished (kernelwatch.core.hooks, when a job is terminal)
      -> once every job of a tag is terminal: compare_runs(previous runs, new runs),
         persist the Comparison + open Regressions; with regressions, send the confirmation
         task to the node that measured the contender; without, the tag is done
    confirmation_finished (worker.confirm, when the interleaved re-measurement is stored)
      -> the tag is done
    maybe_finish -> when every tag is done: Release.status "complete" and the notification

Progress lives in ``Release.status`` and ``Release.details["tags"][tag]["state"]``
(benchmarking -> confirming -> done | no_baseline). Every step locks the Release row, so two
tags finishing at once on two nodes cannot both miss being the last one, and a step that has
already happened is not repeated (a redelivered hook is harmless).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from packaging.version import InvalidVersion, Version
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernelwatch.core import gpus
from kernelwatch.core.broker import (
    TASK_CONFIRM_REGRESSIONS,
    get_celery,
    queue_for_node,
    queue_for_tag,
)
from kernelwatch.core.compare import compare_runs, persist_comparison
from kernelwatch.core.db import insert_or_existing, session_scope
from kernelwatch.core.history import sort_versions
from kernelwatch.core.jobs import create_job
from kernelwatch.core.models import TERMINAL_STATUSES, Job, Node, Regression, Release, Run, utcnow
from kernelwatch.core.settings import get_settings
from kernelwatch.core.spec import SweepSpec
from kernelwatch_harness.catalogue import TORCH_BACKENDS

log = logging.getLogger(__name__)

SUITE_PATH = Path(__file__).resolve().parent / "release_suite.yaml"
# A node seen within this window still counts as part of the fleet: its release jobs wait in
# its queue until it is back, rather than silently leaving its GPU out of the release.
RECENT_NODE = timedelta(days=7)
RELEASE_JOB_KIND = "release"

# Tag states.
BENCHMARKING, CONFIRMING, DONE, NO_BASELINE = "benchmarking", "confirming", "done", "no_baseline"
FINAL_TAG_STATES = {DONE, NO_BASELINE}

_TAG_RE = re.compile(r"^v?(\d+(?:\.\d+)*(?:(?:a|b|rc)\d+)?(?:\.post\d+)?(?:\.dev\d+)?)$")


def parse_version_tag(tag: str) -> str | None:
    """'v0.6.18' or '0.6.18.post1' -> the version; anything else (a branch) -> None."""
    m = _TAG_RE.match(tag.strip())
    if not m:
        return None
    try:
        return str(Version(m.group(1)))
    except InvalidVersion:
        return None


def check_version(version: str, field_name: str = "version") -> str:
    try:
        return str(Version(version))
    except InvalidVersion:
        raise ValueError(
            f"{field_name}: {version!r} is not a version (e.g. 0.6.18.post1)"
        ) from None


# --------------------------------------------------------------------------- suite and fleet


class SuiteError(RuntimeError):
    """The release suite cannot be read or one of its specs is invalid (a server
    misconfiguration: the webhook answers 503 and GitHub's redelivery can try again)."""


def load_suite(path: str | Path | None = None) -> list[dict[str, Any]]:
    p = Path(path or get_settings().release_suite or SUITE_PATH)
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SuiteError(f"release suite {p}: {e}") from None
    entries = data.get("specs") if isinstance(data, dict) and "specs" in data else data
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list) or not entries:
        raise SuiteError(f"release suite {p}: expected a mapping with a non-empty 'specs' list")
    return [dict(e) for e in entries]


def suite_specs(tag: str, versions: list[str], suite: list[dict[str, Any]]) -> list[SweepSpec]:
    out = []
    for raw in suite:
        entry = dict(raw)
        cpu_params = entry.pop("cpu_params", None)
        entry["targets"] = [tag]
        entry["flashinfer_versions"] = versions
        try:
            spec = SweepSpec(**entry)  # every entry is checked, whatever the tag
            if tag == "cpu":
                backends = [b for b in spec.backends if b in TORCH_BACKENDS]
                if not backends:
                    continue
                entry["backends"] = backends
                if cpu_params is not None:
                    entry["params"] = cpu_params
                spec = SweepSpec(**entry)
        except ValueError as e:  # pydantic's ValidationError is a ValueError
            raise SuiteError(f"release suite entry {entry.get('name')!r}: {e}") from None
        out.append(spec)
    return out


def release_tags(session: Session) -> list[str]:
    """One tag per kind of device in the fleet: the SKU tag of each GPU node seen recently,
    'cpu' for CPU nodes."""
    cutoff = utcnow() - RECENT_NODE
    tags: set[str] = set()
    for node in session.scalars(select(Node).where(Node.last_heartbeat >= cutoff)):
        node_tags = [str(t) for t in node.tags or []]
        skus = [t for t in node_tags if t in gpus.SKU_TAGS]
        if node.gpu_sku and node.gpu_sku in gpus.SKU_TAGS:
            tags.add(node.gpu_sku)
        elif skus:
            tags.update(skus)
        elif node.gpu_index is None or "cpu" in node_tags:
            tags.add("cpu")
    return sorted(tags)


def previous_release_version(session: Session, version: str) -> str | None:
    """The latest known release older than ``version`` (by packaging.version)."""
    v = Version(version)
    older = [r for r in session.scalars(select(Release.version)) if _older(r, v)]
    return sort_versions(older)[-1] if older else None


def _older(candidate: str, v: Version) -> bool:
    try:
        return Version(candidate) < v
    except InvalidVersion:
        return False


# --------------------------------------------------------------------------- starting


@dataclass
class ReleaseStart:
    release: Release
    created: bool
    runs: list[Run] = field(default_factory=list)  # to enqueue after the commit


def get_release(session: Session, version: str, *, lock: bool = False) -> Release | None:
    stmt = select(Release).where(Release.version == version)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalar(stmt)


def start_release(
    session: Session,
    version: str,
    *,
    previous: str | None = None,
    source: str = "manual",
    submitted_by: str | None = None,
) -> ReleaseStart:
    """Record the release and create its jobs (not committed, not enqueued). A version already
    recorded returns the existing release, created=False, and creates nothing: concurrent
    callers rely on the unique version (the loser's insert waits for the winner's commit)."""
    version = check_version(version)
    if previous is not None:
        previous = check_version(previous, "previous")
        if Version(previous) >= Version(version):
            raise ValueError(f"previous: {previous} is not older than {version}")
    existing = get_release(session, version)
    if existing is not None:
        return ReleaseStart(existing, False)
    if previous is None:
        previous = previous_release_version(session, version)
    release = Release(version=version, previous_version=previous, source=source,
                      status=BENCHMARKING, details={"tags": {}})
    def insert() -> None:
        session.add(release)
        session.flush()

    found = insert_or_existing(session, insert, lambda: get_release(session, version))
    if found is not None:
        return ReleaseStart(found, False)

    suite = load_suite()
    versions = [v for v in (previous, version) if v]
    tags_state: dict[str, Any] = {}
    runs: list[Run] = []
    for tag in release_tags(session):
        job_ids = []
        for spec in suite_specs(tag, versions, suite):
            job, _, job_runs = create_job(
                session, spec, source=source, submitted_by=submitted_by,
                idempotency_key=f"release:{version}:{tag}:{spec.name}",
                kind=RELEASE_JOB_KIND, release_version=version,
            )
            job_ids.append(job.id)
            runs.extend(job_runs)
        tags_state[tag] = {"jobs": job_ids, "state": BENCHMARKING if job_ids else DONE}
    release.details = {"tags": tags_state}
    if not tags_state:
        release.status = "no_nodes"
        release.details = {"tags": {}, "message": "no GPU or CPU node registered in the last "
                           f"{RECENT_NODE.days} days: nothing to benchmark on"}
    session.flush()
    return ReleaseStart(release, True, runs)


def release_jobs(session: Session, release: Release) -> list[Job]:
    return list(session.scalars(
        select(Job).where(Job.release_version == release.version, Job.kind == RELEASE_JOB_KIND)
        .order_by(Job.id)
    ))


def release_response(session: Session, release: Release) -> dict[str, Any]:
    """What the webhook and the API answer about a release."""
    tags = (release.details or {}).get("tags", {})
    jobs = release_jobs(session, release)
    tag_of = {jid: tag for tag, st in tags.items() for jid in st.get("jobs", [])}
    return {
        "version": release.version,
        "previous_version": release.previous_version,
        "status": release.status,
        "source": release.source,
        "created_at": release.created_at.isoformat() if release.created_at else None,
        "notified_at": release.notified_at.isoformat() if release.notified_at else None,
        "message": (release.details or {}).get("message"),
        "tags": tags,
        "jobs": [{"id": j.id, "name": j.name, "target": tag_of.get(j.id), "status": j.status}
                 for j in jobs],
    }


# --------------------------------------------------------------------------- progress


def _set_tag(release: Release, tag: str, **values: Any) -> None:
    details = dict(release.details or {})
    tags = dict(details.get("tags", {}))
    tags[tag] = {**tags.get(tag, {}), **values}
    details["tags"] = tags
    release.details = details  # a new object: the JSON column sees the change


def on_release_job_finished(job_id: int) -> None:
    confirm: tuple[int, str] | None = None
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or job.kind != RELEASE_JOB_KIND or not job.release_version:
            return
        release = get_release(session, job.release_version, lock=True)
        if release is None:
            return
        tag = next((t for t, st in (release.details or {}).get("tags", {}).items()
                    if job_id in st.get("jobs", [])), None)
        if tag is None:
            return
        state = release.details["tags"][tag]
        if state.get("state") != BENCHMARKING:
            return  # already compared (a repeated hook)
        jobs = session.scalars(select(Job).where(Job.id.in_(state["jobs"]))).all()
        if not all(j.status in TERMINAL_STATUSES for j in jobs):
            return
        confirm = _compare_tag(session, release, tag, state["jobs"])
    if confirm is not None:
        comparison_id, queue = confirm
        try:
            get_celery().send_task(TASK_CONFIRM_REGRESSIONS, args=[comparison_id], queue=queue)
            log.info("release: confirmation of comparison %s sent to %s", comparison_id, queue)
        except Exception:
            # The broker refused: the regressions cannot be confirmed; say so rather than
            # leave the release waiting for a confirmation that will never come.
            log.exception("release: confirmation of comparison %s could not be sent",
                          comparison_id)
            with session_scope() as session:
                for reg in session.scalars(select(Regression).where(
                        Regression.comparison_id == comparison_id)):
                    reg.state = "confirm_failed"
            confirmation_finished(comparison_id)
            return
    maybe_finish(job_id_release_version(job_id))


def job_id_release_version(job_id: int) -> str | None:
    with session_scope() as session:
        return session.scalar(select(Job.release_version).where(Job.id == job_id))


def _compare_tag(
    session: Session, release: Release, tag: str, job_ids: list[int]
) -> tuple[int, str] | None:
    runs = session.scalars(select(Run).where(Run.job_id.in_(job_ids)).order_by(Run.id)).all()
    base = [r for r in runs if r.flashinfer_version == release.previous_version]
    cont = [r for r in runs if r.flashinfer_version == release.version]
    if not release.previous_version or not base or not cont:
        _set_tag(release, tag, state=NO_BASELINE,
                 message="no previous release to compare with" if not release.previous_version
                 else "no runs of one of the versions")
        return None
    settings = get_settings()
    result = compare_runs(session, [r.id for r in base], [r.id for r in cont],
                          threshold=settings.regression_threshold,
                          kernel_thresholds=settings.kernel_thresholds)
    comparison = persist_comparison(session, result, (release.previous_version, release.version),
                                    release_id=release.id)
    regressions = result.regressions
    _set_tag(release, tag, comparison_id=comparison.id, counts=result.counts,
             baseline_run_ids=result.baseline_run_ids,
             contender_run_ids=result.contender_run_ids,
             regressions=len(regressions),
             state=CONFIRMING if regressions else DONE)
    if not regressions:
        return None
    for reg in session.scalars(select(Regression).where(
            Regression.comparison_id == comparison.id)):
        reg.state = "confirming"
    release.status = CONFIRMING
    return comparison.id, confirmation_queue(session, cont, tag)


def confirmation_queue(session: Session, contender_runs: list[Run], tag: str) -> str:
    """The queue of the node that measured the contender (same GPU, same environment), or
    the tag's queue when that is not known."""
    node_ids = [r.node_id for r in contender_runs if r.node_id]
    if node_ids:
        node = session.get(Node, node_ids[0])
        if node is not None:
            return queue_for_node(node.name)
    return queue_for_tag(tag)


def confirmation_finished(comparison_id: int) -> None:
    """Called by the confirmation task once the Regression states are committed."""
    version: str | None = None
    with session_scope() as session:
        from kernelwatch.core.models import Comparison

        comparison = session.get(Comparison, comparison_id)
        if comparison is None or comparison.release_id is None:
            return
        release = session.scalar(select(Release).where(Release.id == comparison.release_id)
                                 .with_for_update())
        if release is None:
            return
        version = release.version
        states = [s for (s,) in session.execute(
            select(Regression.state).where(Regression.comparison_id == comparison_id))]
        for tag, st in (release.details or {}).get("tags", {}).items():
            if st.get("comparison_id") == comparison_id:
                _set_tag(release, tag, state=DONE,
                         confirmed=sum(s == "confirmed" for s in states),
                         not_reproduced=sum(s == "not_reproduced" for s in states))
    maybe_finish(version)


def maybe_finish(version: str | None) -> None:
    """When every tag is done: mark the release complete and notify (once)."""
    if version is None:
        return
    with session_scope() as session:
        release = get_release(session, version, lock=True)
        if release is None or release.notified_at is not None:
            return
        tags = (release.details or {}).get("tags", {})
        if not tags or not all(st.get("state") in FINAL_TAG_STATES for st in tags.values()):
            return
        release.status = "complete"
        release.notified_at = utcnow()  # claimed under the lock: exactly one notifier
        release_id = release.id
    from kernelwatch.core.notify import notify_release

    notify_release(release_id)


def redrive_releases() -> int:
    """Finish what a lost step left hanging, so a release never waits forever: a tag still
    benchmarking whose jobs have all finished (the job hook failed, e.g. the database blipped
    during the comparison), or still confirming whose regressions are all settled (the
    confirmation's last step was lost). The steps it calls are idempotent and take the
    release's row lock. Run periodically by every worker's reaper. Returns steps re-driven."""
    jobs_to_finish: list[int] = []
    comparisons_to_finish: list[int] = []
    with session_scope() as session:
        for release in session.scalars(select(Release).where(Release.status != "complete")):
            for st in (release.details or {}).get("tags", {}).values():
                if st.get("state") == BENCHMARKING and st.get("jobs"):
                    statuses = session.scalars(
                        select(Job.status).where(Job.id.in_(st["jobs"]))).all()
                    if statuses and all(s in TERMINAL_STATUSES for s in statuses):
                        jobs_to_finish.append(st["jobs"][0])
                elif st.get("state") == CONFIRMING and st.get("comparison_id"):
                    unsettled = session.scalar(
                        select(func.count()).select_from(Regression).where(
                            Regression.comparison_id == st["comparison_id"],
                            Regression.state.in_(("open", "confirming"))))
                    if not unsettled:
                        comparisons_to_finish.append(st["comparison_id"])
    for job_id in jobs_to_finish:
        log.warning("release: job %s finished but its release tag did not move on: re-driven",
                    job_id)
        on_release_job_finished(job_id)
    for comparison_id in comparisons_to_finish:
        confirmation_finished(comparison_id)
    return len(jobs_to_finish) + len(comparisons_to_finish)


def trigger_release(
    session: Session,
    version: str,
    *,
    previous: str | None = None,
    source: str = "manual",
    submitted_by: str | None = None,
    before_commit: Callable[[ReleaseStart], None] | None = None,
) -> ReleaseStart:
    """``start_release``, commit, then enqueue the new jobs' runs (never before the commit:
    a worker must not receive a run the database does not hold yet). ``before_commit`` lets
    the caller store something in the same transaction (the webhook's delivery answer). A
    broker failure is recorded on the release; the jobs stay queued in the database."""
    from kernelwatch.core.jobs import enqueue_runs

    start = start_release(session, version, previous=previous, source=source,
                          submitted_by=submitted_by)
    if before_commit is not None:
        before_commit(start)
    session.commit()
    if start.created and start.runs:
        try:
            enqueue_runs(start.runs)
        except Exception as e:
            log.exception("release %s: enqueue failed", version)
            start.release.details = {**(start.release.details or {}),
                                     "message": f"enqueue failed: {type(e).__name__}: {e}"}
            session.commit()
    return start
