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

Progress lives in ``Release.status`` and one ``ReleaseTag`` row per GPU tag, whose ``state``
goes benchmarking -> confirming -> done | no_baseline. Every step locks the Release row before
it reads or writes the release's tag rows, so two tags finishing at once on two nodes cannot
both miss being the last one, and a step that has already happened is not repeated (a
redelivered hook is harmless).
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

from kernelwatch.core import gpus, outbox
from kernelwatch.core.baseline import BaselineUnavailable, known_releases, previous_release
from kernelwatch.core.broker import (
    TASK_CONFIRM_REGRESSIONS,
    get_celery,
    queue_for_node,
    queue_for_tag,
)
from kernelwatch.core.compare.runs import compare_runs, persist_comparison, release_controls
from kernelwatch.core.db import insert_or_existing, session_scope
from kernelwatch.core.errors import InvalidInput, Unavailable
from kernelwatch.core.history import sort_versions
from kernelwatch.core.jobs import cancel_job, create_job, enqueue_after_commit
from kernelwatch.core.models import (
    FINAL_TAG_STATES,
    TERMINAL_STATUSES,
    UNSETTLED_REGRESSION_STATES,
    Comparison,
    Job,
    Node,
    Regression,
    RegressionState,
    Release,
    ReleaseStatus,
    ReleaseTag,
    Run,
    TagState,
    utcnow,
)
from kernelwatch.core.nodes import alive_nodes
from kernelwatch.core.settings import get_settings
from kernelwatch.core.spec import SweepSpec
from kernelwatch_harness.catalogue import KERNELS

log = logging.getLogger(__name__)

SUITE_PATH = Path(__file__).resolve().parent / "release_suite.yaml"
# A node seen within this window still counts as part of the fleet: its release jobs wait in
# its queue until it is back, rather than silently leaving its GPU out of the release.
RECENT_NODE = timedelta(days=7)
RELEASE_JOB_KIND = "release"

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
        raise InvalidInput(
            [field_name], f"{field_name}: {version!r} is not a version (e.g. 0.6.18.post1)"
        ) from None


# --------------------------------------------------------------------------- suite and fleet


class SuiteError(Unavailable, RuntimeError):
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


def suite_specs(tag: str, versions: list[str], suite: list[dict[str, Any]],
                crosscheck: bool | None = None) -> list[SweepSpec]:
    """The suite's sweeps for one GPU tag and the versions [baseline, release]. ``crosscheck``
    True or False turns the cross-check on or off for every entry; None keeps each entry's.
    CPU tags never cross-check: they measure no FlashInfer kernel."""
    out = []
    for raw in suite:
        entry = dict(raw)
        cpu_params = entry.pop("cpu_params", None)
        entry["targets"] = [tag]
        entry["flashinfer_versions"] = versions
        if crosscheck is not None:
            entry["crosscheck"] = crosscheck
        if tag == "cpu":
            entry.pop("crosscheck", None)
        try:
            spec = SweepSpec(**entry)  # every entry is checked, whatever the tag
            if tag == "cpu":
                torch = KERNELS[spec.kernel].torch_backends
                backends = [b for b in spec.backends if b in torch]
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
    tags: set[str] = set()
    for node in session.scalars(alive_nodes(window=RECENT_NODE)):
        node_tags = [str(t) for t in node.tags or []]
        skus = [t for t in node_tags if t in gpus.SKU_TAGS]
        if node.gpu_sku and node.gpu_sku in gpus.SKU_TAGS:
            tags.add(node.gpu_sku)
        elif skus:
            tags.update(skus)
        elif node.gpu_index is None or "cpu" in node_tags:
            tags.add("cpu")
    return sorted(tags)


@dataclass(frozen=True)
class Baseline:
    version: str | None
    source: str  # where it was chosen from, for the release's record and its readers


def choose_baseline(session: Session, version: str, override: str | None) -> Baseline:
    """The release ``version`` is compared with: the operator's ``override``, else FlashInfer's
    previous release by core.baseline's rule, from the wheelhouse or the package index; when
    neither can be read, the newest release this service recorded before it (said so)."""
    if override is not None:
        return Baseline(override, "named by the operator")
    settings = get_settings()
    try:
        listing = known_releases(settings.package_index_url, settings.wheelhouse)
    except BaselineUnavailable as exc:
        recorded = previous_release_version(session, version)
        return Baseline(recorded, f"recorded releases ({exc})")
    return Baseline(previous_release(version, listing.versions),
                    f"FlashInfer's previous release ({listing.source})")


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
    runs: list[Run] = field(default_factory=list)  # enqueued once the transaction commits
    rebaselined_from: str | None = None  # set when an operator changed the baseline


def get_release(session: Session, version: str, *, lock: bool = False) -> Release | None:
    stmt = select(Release).where(Release.version == version)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalar(stmt)


def release_tag_rows(session: Session, release: Release) -> list[ReleaseTag]:
    """The release's per-tag progress, by tag. Read after the Release row's lock when the
    caller changes them."""
    return list(session.scalars(
        select(ReleaseTag).where(ReleaseTag.release_id == release.id).order_by(ReleaseTag.tag)
    ))


def start_release(
    session: Session,
    version: str,
    *,
    previous: str | None = None,
    source: str = "manual",
    submitted_by: str | None = None,
    crosscheck: bool | None = None,
) -> ReleaseStart:
    """Record the release and create its jobs (not committed, not enqueued). ``crosscheck``
    (default: ``settings.release_crosscheck``, else as each suite entry says) runs
    flashinfer_benchmark.py beside every measured point of its GPU jobs. A version already
    recorded returns the existing release, created=False, and creates nothing, unless
    ``previous`` names another baseline: then it is benchmarked again against that one
    (``rebaseline``). Concurrent callers rely on the unique version (the loser's insert waits
    for the winner's commit)."""
    version = check_version(version)
    if previous is not None:
        previous = check_version(previous, "previous")
        if Version(previous) >= Version(version):
            raise InvalidInput(["previous"], f"previous: {previous} is not older than {version}")
    existing = get_release(session, version, lock=previous is not None)
    if existing is not None:
        if previous is not None and previous != existing.previous_version:
            return rebaseline(session, existing, previous, source, submitted_by)
        return ReleaseStart(existing, False)
    baseline = choose_baseline(session, version, previous)
    if crosscheck is None and get_settings().release_crosscheck:
        crosscheck = True
    release = Release(version=version, previous_version=baseline.version, source=source,
                      status=ReleaseStatus.benchmarking,
                      details={"baseline": _baseline_record(baseline),
                               **({"crosscheck": crosscheck} if crosscheck is not None else {})})

    def insert() -> None:
        session.add(release)
        session.flush()

    found = insert_or_existing(session, insert, lambda: get_release(session, version))
    if found is not None:
        return ReleaseStart(found, False)
    return ReleaseStart(release, True, _create_release_jobs(session, release, source,
                                                            submitted_by))


def _baseline_record(baseline: Baseline, **more: Any) -> dict[str, Any]:
    return {"version": baseline.version, "source": baseline.source,
            # The baseline is measured anew beside the release: same jobs, same nodes, same
            # environment. Stored measurements of it are not reused.
            "measured": "in this release's jobs, on the same nodes", **more}


def _create_release_jobs(session: Session, release: Release, source: str,
                         submitted_by: str | None) -> list[Run]:
    """Per GPU tag of the fleet, one job per suite entry measuring [baseline, release]."""
    suite = load_suite()
    versions = [v for v in (release.previous_version, release.version) if v]
    runs: list[Run] = []
    tags = release_tags(session)
    for tag in tags:
        job_ids = []
        for spec in suite_specs(tag, versions, suite, (release.details or {}).get("crosscheck")):
            job, _, job_runs = create_job(
                session, spec, source=source, submitted_by=submitted_by,
                idempotency_key=(f"release:{release.version}:{release.previous_version}:"
                                 f"{tag}:{spec.name}"),
                kind=RELEASE_JOB_KIND, release_version=release.version,
            )
            job_ids.append(job.id)
            runs.extend(job_runs)
        session.add(ReleaseTag(release_id=release.id, tag=tag, job_ids=job_ids,
                               state=TagState.benchmarking if job_ids else TagState.done))
    if not tags:
        release.status = ReleaseStatus.no_nodes
        release.details = {**(release.details or {}),
                           "message": "no GPU or CPU node registered in the last "
                           f"{RECENT_NODE.days} days: nothing to benchmark on"}
    session.flush()
    return runs


def rebaseline(session: Session, release: Release, previous: str, source: str,
               submitted_by: str | None) -> ReleaseStart:
    """An operator names another baseline for a recorded release: its unfinished jobs are
    cancelled, its per-tag progress starts over with new jobs measuring [previous, release]
    on every tag of the fleet, and it is compared, confirmed and notified again. Earlier
    comparisons stay stored. The caller holds the release's row lock."""
    old = release.previous_version
    cancelled = 0
    for job in release_jobs(session, release):
        if job.status not in TERMINAL_STATUSES:
            cancel_job(session, job)
            cancelled += 1
    for tag in release_tag_rows(session, release):
        session.delete(tag)
    session.flush()
    release.previous_version = previous
    release.status = ReleaseStatus.benchmarking
    release.notified_at = None
    details = {k: v for k, v in (release.details or {}).items()
               if k not in ("message", "notification")}
    release.details = {**details, "baseline": _baseline_record(
        choose_baseline(session, release.version, previous),
        changed_from=old, cancelled_jobs=cancelled)}
    runs = _create_release_jobs(session, release, source, submitted_by)
    log.info("release %s: baseline %s -> %s; %d unfinished jobs cancelled, %d runs to measure",
             release.version, old, previous, cancelled, len(runs))
    return ReleaseStart(release, False, runs, rebaselined_from=old)


def release_jobs(session: Session, release: Release) -> list[Job]:
    return list(session.scalars(
        select(Job).where(Job.release_version == release.version, Job.kind == RELEASE_JOB_KIND)
        .order_by(Job.id)
    ))


def release_verdict(release: Release, tags: list[ReleaseTag],
                    regressions: list[Regression]) -> str:
    """One word for a release: ``pending`` until every tag is final; then ``regressed`` (a
    regression was confirmed), ``not_compared`` (no tag had both versions to compare) or
    ``passed``."""
    if release.status == ReleaseStatus.no_nodes:
        return "not_compared"
    if release.status != ReleaseStatus.complete:
        return "pending"
    if any(r.state == RegressionState.confirmed for r in regressions):
        return "regressed"
    if tags and all(t.state == TagState.no_baseline for t in tags):
        return "not_compared"
    return "passed"


def release_response(session: Session, release: Release) -> dict[str, Any]:
    """What the webhook and the API answer about a release."""
    rows = release_tag_rows(session, release)
    tags = {t.tag: t.as_dict() for t in rows}
    jobs = release_jobs(session, release)
    tag_of = {jid: tag for tag, st in tags.items() for jid in st["jobs"]}
    comparison_ids = [t.comparison_id for t in rows if t.comparison_id]
    regressions = list(session.scalars(
        select(Regression).where(Regression.comparison_id.in_(comparison_ids)))
    ) if comparison_ids else []
    details = release.details or {}
    notification = details.get("notification")
    return {
        "version": release.version,
        "previous_version": release.previous_version,
        "status": ReleaseStatus(release.status).value,
        "verdict": release_verdict(release, rows, regressions),
        "source": release.source,
        "created_at": release.created_at.isoformat() if release.created_at else None,
        "notified_at": release.notified_at.isoformat() if release.notified_at else None,
        "message": details.get("message"),
        "baseline": details.get("baseline"),
        # Without the payload (the message itself is long and is rebuilt from the release).
        "notification": ({k: v for k, v in notification.items() if k != "payload"}
                         if isinstance(notification, dict) else None),
        "status_url": f"{get_settings().api_url.rstrip('/')}/v1/releases/{release.version}",
        # per GPU tag, what its node built before measuring (worker/prebuild.py); none on CPU
        "prebuild": details.get("prebuild") or {},
        "tags": tags,
        "jobs": [{"id": j.id, "name": j.name, "target": tag_of.get(j.id), "status": j.status}
                 for j in jobs],
    }


def seconds_text(v: Any) -> str:
    """A recorded duration for people: whole seconds, "-" where none was recorded."""
    return f"{v:,.0f} s" if isinstance(v, int | float) else "-"


def prebuild_lines(prebuild: dict[str, Any] | None) -> list[str]:
    """One line per GPU tag for a release's prebuild record (worker/prebuild.py): how long its
    node built before measuring, and the build it waited for."""
    out = []
    for tag, rec in sorted((prebuild or {}).items()):
        builds = rec.get("builds") or []
        longest = max(builds, key=lambda b: b.get("wall_seconds") or 0, default=None)
        which = (f"; the longest, {longest.get('kernel')} on FlashInfer "
                 f"{longest.get('version')}, {seconds_text(longest.get('wall_seconds'))}"
                 if longest else "")
        # a record of runs measured as their builds ended (worker.prebuild) says when the last
        # build ended; an older one, how long every run waited
        when = (f", the last after {seconds_text(rec.get('wall_seconds'))}, each run measured "
                "as its own build ended" if rec.get("measured_as_built") else
                f" in {seconds_text(rec.get('wall_seconds'))} before the first was measured")
        out.append(f"{tag}: {rec.get('runs', 0)} run(s) built side by side{when} (JIT "
                   f"{seconds_text(rec.get('jit_seconds'))} in all{which})")
    return out


# --------------------------------------------------------------------------- progress


def _tag_of_job(session: Session, release: Release, job_id: int) -> ReleaseTag | None:
    return next((t for t in release_tag_rows(session, release) if job_id in t.job_ids), None)


def on_release_job_finished(job_id: int) -> None:
    confirm_sent: list[int] = []
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or job.kind != RELEASE_JOB_KIND or not job.release_version:
            return
        release = get_release(session, job.release_version, lock=True)
        if release is None:
            return
        tag = _tag_of_job(session, release, job_id)
        if tag is None or tag.state != TagState.benchmarking:
            return  # not a job of this release, or already compared (a repeated hook)
        jobs = session.scalars(select(Job).where(Job.id.in_(tag.job_ids))).all()
        if not all(j.status in TERMINAL_STATUSES for j in jobs):
            return
        confirm = _compare_tag(session, release, tag)
        if confirm is not None:
            comparison_id, queue = confirm
            outbox.defer(session, lambda: _send_confirmation(comparison_id, queue),
                         f"confirmation of comparison {comparison_id}")
            confirm_sent.append(comparison_id)
    failed = outbox.failures(session)
    if failed and confirm_sent:
        # The broker refused: the regressions cannot be confirmed; say so rather than leave
        # the release waiting for a confirmation that will never come.
        comparison_id = confirm_sent[0]
        with session_scope() as session:
            for reg in session.scalars(select(Regression).where(
                    Regression.comparison_id == comparison_id)):
                reg.state = RegressionState.confirm_failed
        confirmation_finished(comparison_id)
        return
    maybe_finish(job_id_release_version(job_id))


def _send_confirmation(comparison_id: int, queue: str) -> None:
    get_celery().send_task(TASK_CONFIRM_REGRESSIONS, args=[comparison_id], queue=queue)
    log.info("release: confirmation of comparison %s sent to %s", comparison_id, queue)


def job_id_release_version(job_id: int) -> str | None:
    with session_scope() as session:
        return session.scalar(select(Job.release_version).where(Job.id == job_id))


def _compare_tag(session: Session, release: Release, tag: ReleaseTag) -> tuple[int, str] | None:
    runs = session.scalars(select(Run).where(Run.job_id.in_(tag.job_ids))
                           .order_by(Run.id)).all()
    base = [r for r in runs if r.flashinfer_version == release.previous_version]
    cont = [r for r in runs if r.flashinfer_version == release.version]
    if not release.previous_version or not base or not cont:
        tag.state = TagState.no_baseline
        tag.message = ("no previous release to compare with" if not release.previous_version
                       else "no runs of one of the versions")
        return None
    settings = get_settings()
    controls = release_controls(tag.tag != "cpu")
    result = compare_runs(session, [r.id for r in base], [r.id for r in cont],
                          threshold=settings.regression_threshold,
                          kernel_thresholds=settings.kernel_thresholds, controls=controls)
    comparison = persist_comparison(session, result, (release.previous_version, release.version),
                                    release_id=release.id)
    regressions = result.regressions
    tag.comparison_id = comparison.id
    tag.counts = result.counts
    tag.baseline_run_ids = result.baseline_run_ids
    tag.contender_run_ids = result.contender_run_ids
    tag.regressions = len(regressions)
    tag.state = TagState.confirming if regressions else TagState.done
    if not regressions:
        return None
    for reg in session.scalars(select(Regression).where(
            Regression.comparison_id == comparison.id)):
        reg.state = RegressionState.confirming
    release.status = ReleaseStatus.confirming
    return comparison.id, confirmation_queue(session, cont, tag.tag)


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
        for tag in release_tag_rows(session, release):
            if tag.comparison_id == comparison_id:
                tag.state = TagState.done
                tag.confirmed = sum(s == RegressionState.confirmed for s in states)
                tag.not_reproduced = sum(s == RegressionState.not_reproduced for s in states)
    maybe_finish(version)


def maybe_finish(version: str | None) -> None:
    """When every tag is done: mark the release complete and notify (once)."""
    if version is None:
        return
    with session_scope() as session:
        release = get_release(session, version, lock=True)
        if release is None or release.notified_at is not None:
            return
        tags = release_tag_rows(session, release)
        if not tags or not all(t.state in FINAL_TAG_STATES for t in tags):
            return
        release.status = ReleaseStatus.complete
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
        tags = session.scalars(
            select(ReleaseTag).join(Release, Release.id == ReleaseTag.release_id)
            .where(Release.status != ReleaseStatus.complete,
                   ReleaseTag.state.in_((TagState.benchmarking, TagState.confirming)))
            .order_by(ReleaseTag.id)
        )
        for tag in tags:
            if tag.state == TagState.benchmarking and tag.job_ids:
                statuses = session.scalars(
                    select(Job.status).where(Job.id.in_(tag.job_ids))).all()
                if statuses and all(s in TERMINAL_STATUSES for s in statuses):
                    jobs_to_finish.append(tag.job_ids[0])
            elif tag.state == TagState.confirming and tag.comparison_id:
                unsettled = session.scalar(
                    select(func.count()).select_from(Regression).where(
                        Regression.comparison_id == tag.comparison_id,
                        Regression.state.in_(UNSETTLED_REGRESSION_STATES)))
                if not unsettled:
                    comparisons_to_finish.append(tag.comparison_id)
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
    crosscheck: bool | None = None,
) -> ReleaseStart:
    """``start_release``, then commit; the new jobs' runs are enqueued once the commit has
    happened (core.outbox: a worker must not receive a run the database does not hold yet).
    ``before_commit`` lets the caller store something in the same transaction (the webhook's
    delivery answer). A broker failure is recorded on the release; the jobs stay queued in
    the database."""
    start = start_release(session, version, previous=previous, source=source,
                          submitted_by=submitted_by, crosscheck=crosscheck)
    if start.runs:
        enqueue_after_commit(session, start.runs)
    if before_commit is not None:
        before_commit(start)
    session.commit()
    failed = outbox.failures(session)
    if failed:
        e = failed[0].error
        log.error("release %s: enqueue failed: %s", version, e)
        start.release.details = {**(start.release.details or {}),
                                 "message": f"enqueue failed: {type(e).__name__}: {e}"}
        session.commit()
    return start
