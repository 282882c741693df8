"""Confirmation before alarm: re-measure the points a comparison flagged, on the node that
measured the contender, both versions interleaved, and keep or drop each alarm.

Why interleave: a node drifts (clocks, temperature, a neighbour's load); measuring all of
version A then all of B turns that drift into a difference between A and B. Alternating
A B A B ... for ``ROUNDS`` rounds spreads the drift over both sides. Each round is one short
harness invocation per version for just the flagged points (JIT caches make repeats fast).

Nothing is lost: the re-measurement is a Job of kind ``confirm`` whose runs (one per round and
version) store their points and every sample through ``core.results.store_point``. Its spec is
a valid sweep spec over the flagged points (params: the values they take; each run's
``point_indices`` pick exactly the flagged combinations), so if this node dies mid-way, the
reaper's re-queued runs are ordinary runs the worker knows how to finish. A worker that is
stopped mid-way cancels the partial job and sends the confirmation again to the node's queue
(``WorkerShuttingDown``): the release waits for it rather than settling on nothing.

Per regression the rounds give a new ratio with its bootstrap CI, paired block by block (a
block: one round's repeat r of each version, measured back to back; ``kernelwatch.core.compare.
compare_paired``), judged by the same rule and threshold as the comparison. ``confirmed`` when that
verdict is still ``regression``; ``not_reproduced`` otherwise; ``confirm_failed`` when the
re-measurement produced no usable samples (it says nothing either way).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kernelwatch.core.broker import TASK_CONFIRM_REGRESSIONS, get_celery, queue_for_node
from kernelwatch.core.compare.runs import load_samples
from kernelwatch.core.compare.stats import (
    Verdict,
    compare_paired,
    compare_samples,
    pool_samples,
)
from kernelwatch.core.db import new_session
from kernelwatch.core.jobs import cancel_job
from kernelwatch.core.models import (
    Comparison,
    Job,
    JobStatus,
    Node,
    Point,
    PointStatus,
    Regression,
    RegressionState,
    Run,
)
from kernelwatch.core.models import utcnow as _now
from kernelwatch.core.spec import SweepSpec
from kernelwatch.worker import node as node_mod

log = logging.getLogger(__name__)
app = get_celery()

ROUNDS = 5
CONFIRMABLE = (RegressionState.open, RegressionState.confirming)


class WorkerShuttingDown(Exception):
    """The worker stopped in the middle of a confirmation. What was measured stays stored, the
    partial confirm job is cancelled and the regressions stay ``confirming``: the confirmation
    is sent again to ``queue`` (the node's), so the release waits for its verdict instead of
    reporting regressions that were never re-measured as settled."""

    def __init__(self, message: str, queue: str) -> None:
        super().__init__(message)
        self.queue = queue


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def confirm_spec(
    comparison_id: int, kernel: str, regs: list[Regression], target: str,
    versions: list[str | None], timing: dict[str, Any],
) -> tuple[SweepSpec, list[int]]:
    """A sweep spec whose grid covers the flagged points, and their indices in that grid."""
    wanted = {_key(r.params) for r in regs}
    names = list(regs[0].params)
    values = {n: list(dict.fromkeys(r.params[n] for r in regs)) for n in names}
    spec = SweepSpec(
        name=f"confirm comparison {comparison_id}: {kernel}",
        kernel=kernel,
        backends=sorted({r.backend for r in regs}),
        flashinfer_versions=[v for v in dict.fromkeys(versions) if v],
        targets=[target],
        params=values,
        timing=timing,  # type: ignore[arg-type]
    )
    # The flagged points give every parameter, so each combination is one of them as stored.
    indices = [i for i, p in enumerate(spec.combinations()) if _key(p) in wanted]
    return spec, indices


def _measure_run(session: Session, run: Run, job: Job, device: str, me: Node | None,
                 service: node_mod.NodeService | None) -> bool:
    """One harness invocation for one round of one version, through the worker's own
    machinery (``worker.tasks.measure_run``). False when the worker is shutting down: the run
    is left running for the reaper, like an interrupted sweep."""
    from kernelwatch.core.jobs import mark_run_started
    from kernelwatch.worker import tasks

    mark_run_started(session, run, me)
    session.commit()
    if service is not None:
        service.current_run_id = run.id  # the reaper must not hand this run to another task
    try:
        return tasks.measure_run(session, run, job, device) != "interrupted"
    finally:
        if service is not None:
            service.current_run_id = None


def run_confirmation(
    session: Session,
    comparison_id: int,
    rounds: int = ROUNDS,
    service: node_mod.NodeService | None = None,
) -> dict[str, str]:
    """Re-measure and settle every open regression of a comparison, kernel by kernel: each
    kernel's regressions are settled as soon as its confirm job is measured, so a stop in a
    later kernel's job keeps them, and a confirmation sent again re-measures only the kernels
    still confirming. Returns {id: state}."""
    comparison = session.get(Comparison, comparison_id)
    if comparison is None:
        log.warning("confirm: comparison %s does not exist", comparison_id)
        return {}
    regs = list(session.scalars(
        select(Regression).where(Regression.comparison_id == comparison_id,
                                 Regression.state.in_(CONFIRMABLE)).order_by(Regression.id)
    ))
    if not regs:
        return {}
    base_runs = list(session.scalars(select(Run).where(Run.id.in_(comparison.baseline_run_ids))))
    cont_runs = list(session.scalars(select(Run).where(Run.id.in_(comparison.contender_run_ids))))
    base_version = base_runs[0].flashinfer_version if base_runs else None
    cont_version = cont_runs[0].flashinfer_version if cont_runs else None
    ref_run = cont_runs[0]
    cont_job = session.get(Job, ref_run.job_id)
    timing = dict((cont_job.spec or {}).get("timing") or {}) if cont_job else {}
    me = session.get(Node, service.node_id) if service and service.node_id else None
    device = service.ident.device if service else ("cuda" if ref_run.gpu_sku else "cpu")
    queue = queue_for_node(me.name) if me else ref_run.queue
    thresholds = dict((comparison.summary or {}).get("kernel_thresholds") or {})

    by_kernel: dict[str, list[Regression]] = defaultdict(list)
    for r in regs:
        by_kernel[r.kernel].append(r)
        r.state = RegressionState.confirming
    session.commit()
    # The largest slowdown's kernel is confirmed first: its verdict matters most, and a flow
    # stopped by its time limit (0.7.4's 27x bgmv_moe came third, after 380 s of decode and
    # Mamba rounds) or a worker's stop then has it settled already.
    order = sorted(by_kernel, key=lambda k: -max(float(r.ratio) for r in by_kernel[k]))

    states: dict[str, str] = {}
    for kernel in order:
        kregs = by_kernel[kernel]
        roles: dict[int, str] = {}  # run id -> baseline | contender
        spec, indices = confirm_spec(comparison_id, kernel, kregs, ref_run.target,
                                     [base_version, cont_version], timing)
        job = Job(name=spec.name, kind="confirm", kernel=kernel,
                  spec=spec.model_dump(mode="json"), status=JobStatus.queued,
                  source="confirm", submitted_by=f"comparison:{comparison_id}",
                  release_version=cont_version,
                  total_points=len(indices) * len(spec.backends) * rounds * 2)
        session.add(job)
        session.flush()
        runs = []
        for rnd in range(rounds):  # A B A B ...
            for role, version in (("baseline", base_version), ("contender", cont_version)):
                run = Run(job_id=job.id, target=ref_run.target, queue=queue,
                          flashinfer_version=version, chunk=rnd, chunks=rounds,
                          point_indices=indices, status=JobStatus.queued,
                          gpu_sku=ref_run.gpu_sku, gpu_name=ref_run.gpu_name)
                session.add(run)
                runs.append((run, role))
        session.flush()
        for run, role in runs:
            roles[run.id] = role
        for r in kregs:
            r.confirm_job_id = job.id
        session.commit()
        log.info("confirm: comparison %s, %s: %d points x %d backends, %d rounds on %s",
                 comparison_id, kernel, len(indices), len(spec.backends), rounds,
                 me.name if me else device)
        for run, _ in runs:
            if not _measure_run(session, run, job, device, me, service):
                # its unfinished runs must not be picked up as ordinary runs: a new delivery
                # measures every round again, interleaved
                cancel_job(session, job)
                session.commit()
                raise WorkerShuttingDown(f"comparison {comparison_id}: stopped in round "
                                         f"{run.chunk} of {rounds}", queue)
        settled = settle(session, comparison, kregs, roles, thresholds)
        log.info("confirm: comparison %s, %s settled: %s", comparison_id, kernel, settled)
        states.update(settled)
    return states


def settle(session: Session, comparison: Comparison, regs: list[Regression],
           roles: dict[int, str], thresholds: dict[str, float]) -> dict[str, str]:
    """Each regression's verdict from its re-measurement: paired by block, a block being one
    round's repeat of each version (``core.compare.compare_paired``), so what the harness's
    repeat order or a round's moment does to both versions cancels; pooled
    (``compare_samples``) where fewer than two blocks have both sides."""
    points = list(session.scalars(
        select(Point).where(Point.run_id.in_(list(roles)), Point.status == PointStatus.ok)
    ))
    samples = load_samples(session, [p.id for p in points])
    rounds = {r.id: r.chunk for r in session.scalars(select(Run).where(Run.id.in_(list(roles))))}
    side_ids: dict[tuple[str, str], list[int]] = defaultdict(list)
    # (series, role) -> (round, repeat) -> samples
    blocks: dict[tuple[str, str], dict[tuple[int, int], list[float]]] = defaultdict(
        lambda: defaultdict(list))
    for p in sorted(points, key=lambda p: p.id):
        role = roles[p.run_id]
        side_ids[(p.series_key, role)].append(p.id)
        for v, rep in samples.get(p.id, []):
            blocks[(p.series_key, role)][(int(rounds[p.run_id] or 0), rep)].append(v)
    out = {}
    for r in regs:
        threshold = thresholds.get(r.kernel, comparison.threshold)
        b_blocks = blocks.get((r.series_key, "baseline"), {})
        c_blocks = blocks.get((r.series_key, "contender"), {})
        both = sorted(k for k in b_blocks
                      if len(b_blocks[k]) >= 2 and len(c_blocks.get(k, [])) >= 2)
        if len(both) >= 2:
            est = compare_paired([(b_blocks[k], c_blocks[k]) for k in both], threshold)
        else:
            b, bg = pool_samples(side_ids.get((r.series_key, "baseline"), []), samples)
            c, cg = pool_samples(side_ids.get((r.series_key, "contender"), []), samples)
            if len(b) < 2 or len(c) < 2:
                r.state = RegressionState.confirm_failed
                out[str(r.id)] = r.state.value
                continue
            est = compare_samples(b, c, threshold, baseline_groups=bg, contender_groups=cg)
        r.confirm_ratio, r.confirm_ci_low, r.confirm_ci_high = (
            est.ratio, est.ci_low, est.ci_high)
        r.state = (RegressionState.confirmed if est.verdict == Verdict.regression
                   else RegressionState.not_reproduced)
        out[str(r.id)] = r.state.value
    session.commit()
    return out


def _failed(session: Session, comparison_id: int) -> dict[str, str]:
    """The comparison's regressions still confirming are ``confirm_failed``: the notification
    names them as flagged but not confirmed."""
    session.rollback()
    for r in session.scalars(select(Regression).where(
            Regression.comparison_id == comparison_id,
            Regression.state == RegressionState.confirming)):
        r.state = RegressionState.confirm_failed
    session.commit()
    return {}


@app.task(name=TASK_CONFIRM_REGRESSIONS, acks_late=True)
def confirm_regressions(comparison_id: int, rounds: int = ROUNDS) -> dict[str, str]:
    service = node_mod.service()
    if service is None:
        service = node_mod.start_service()
    session = new_session()
    try:
        started = _now()
        states = run_confirmation(session, comparison_id, rounds, service)
        log.info("confirm: comparison %s settled in %.0f s: %s", comparison_id,
                 (_now() - started).total_seconds(), states)
    except WorkerShuttingDown as stop:
        try:
            app.send_task(TASK_CONFIRM_REGRESSIONS, args=[comparison_id, rounds],
                          queue=stop.queue)
            log.warning("confirm: %s; sent again to %s", stop, stop.queue)
            return {}  # not settled: the release keeps waiting for this confirmation
        except Exception:  # no broker to take it: nothing would ever finish it
            log.exception("confirm: comparison %s: %s, and could not be sent again",
                          comparison_id, stop)
            states = _failed(session, comparison_id)
    except Exception:
        log.exception("confirm: comparison %s failed", comparison_id)
        states = _failed(session, comparison_id)
    finally:
        session.close()
    from kernelwatch.core.releases import confirmation_finished

    confirmation_finished(comparison_id)
    return states
