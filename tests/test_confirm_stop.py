"""A confirmation that cannot finish: a worker stopped in the middle sends it again and the
release keeps waiting; a confirmation that failed settles its regressions as not confirmed,
and the notification names them instead of reading "no regression" (real Postgres, the H200
release data; the measurement itself is replaced, the states around it are the subject)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernelwatch.core import notify
from kernelwatch.core.models import Comparison, Job, Regression, Release, Run
from kernelwatch.core.releases import redrive_releases
from kernelwatch.worker import confirm
from tests.test_release_redrive import _release_with_finished_jobs_but_no_comparison


def _confirming(session: Session, monkeypatch: pytest.MonkeyPatch) -> tuple[Release, int]:
    release = _release_with_finished_jobs_but_no_comparison(session)
    assert redrive_releases() == 1  # compared: four regressions, confirming
    comparison_id = session.scalar(select(Comparison.id).where(
        Comparison.release_id == release.id))
    assert comparison_id is not None
    monkeypatch.setattr(confirm.node_mod, "service", lambda: SimpleNamespace(
        node_id=None, ident=SimpleNamespace(device="cuda"), current_run_id=None))
    return release, comparison_id


def _states(session: Session, comparison_id: int) -> list[str]:
    session.expire_all()
    return sorted(str(s) for s in session.scalars(select(Regression.state).where(
        Regression.comparison_id == comparison_id)))


def test_a_stopped_worker_sends_the_confirmation_again_and_the_release_waits(
        session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    release, comparison_id = _confirming(session, monkeypatch)
    measured: list[int] = []

    def measure(session: Session, run: Run, *rest: Any) -> bool:
        measured.append(run.id)
        return len(measured) < 2  # the first round's baseline, then the worker stops

    sent: list[tuple[str, list[Any], str]] = []
    monkeypatch.setattr(confirm, "_measure_run", measure)
    monkeypatch.setattr(confirm.app, "send_task",
                        lambda name, args, queue: sent.append((name, args, queue)))
    assert confirm.confirm_regressions(comparison_id) == {}

    assert _states(session, comparison_id) == ["confirming"] * 4
    done = session.get(Release, release.id)
    assert done is not None and done.status == "confirming" and done.notified_at is None
    (job,) = session.scalars(select(Job).where(Job.kind == "confirm")).all()
    assert job.status == "cancelled"  # no reaper picks its runs up as ordinary runs
    runs = session.scalars(select(Run).where(Run.job_id == job.id)).all()
    assert {r.status for r in runs if r.id not in measured} == {"cancelled"}
    queue = session.get(Run, runs[0].id).queue  # type: ignore[union-attr]
    assert sent == [(confirm.TASK_CONFIRM_REGRESSIONS, [comparison_id, confirm.ROUNDS], queue)]


def test_each_kernel_is_settled_as_its_confirmation_ends_and_a_resent_one_resumes(
        session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels are confirmed largest slowdown first, and the regressions of a kernel whose
    confirm job was measured are settled before the next kernel's job starts: a worker stopped
    in that next job keeps them, and the confirmation sent again re-measures only the kernel
    still confirming."""
    from kernelwatch.core.results import store_point

    _, comparison_id = _confirming(session, monkeypatch)
    regs = list(session.scalars(select(Regression).where(
        Regression.comparison_id == comparison_id).order_by(Regression.id)))
    contender = regs[0].contender_version
    first = max(regs, key=lambda r: r.ratio).kernel
    (second,) = {r.kernel for r in regs} - {first}
    stop_in: list[str] = [second]

    def measure(session: Session, run: Run, job: Job, *rest: Any) -> bool:
        if job.kernel in stop_in:
            return False
        slower = 1.2 if run.flashinfer_version == contender else 1.0
        flagged = [r for r in regs if r.kernel == job.kernel]
        for index, r in zip(run.point_indices, flagged, strict=True):
            store_point(session, run, r.kernel, dict(r.params), {
                "type": "point", "point_index": index, "backend": r.backend, "status": "ok",
                "error": None, "samples_us": [10.0 * slower * (1 + i / 1000) for i in range(8)],
                "repeat_sizes": [4, 4]})
        session.commit()
        return True

    sent: list[tuple[str, list[Any], str]] = []
    monkeypatch.setattr(confirm, "_measure_run", measure)
    monkeypatch.setattr(confirm.app, "send_task",
                        lambda name, args, queue: sent.append((name, args, queue)))
    assert confirm.confirm_regressions(comparison_id) == {}
    session.expire_all()
    assert {r.kernel: str(session.get(Regression, r.id).state)  # type: ignore[union-attr]
            for r in regs} == {first: "confirmed", second: "confirming"}
    assert len(sent) == 1

    stop_in.clear()  # the confirmation sent again, on a worker that keeps going
    states = confirm.run_confirmation(session, comparison_id, service=confirm.node_mod.service())
    assert sorted(states.values()) == ["confirmed", "confirmed"]
    assert _states(session, comparison_id) == ["confirmed"] * 4
    jobs = session.scalars(select(Job).where(Job.kind == "confirm").order_by(Job.id)).all()
    assert [j.kernel for j in jobs] == [first, second, second]  # the first not measured again


def test_a_stopped_worker_without_a_broker_settles_rather_than_leave_it_hanging(
        session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    release, comparison_id = _confirming(session, monkeypatch)

    def refused(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(confirm, "_measure_run", lambda *args: False)
    monkeypatch.setattr(confirm.app, "send_task", refused)
    assert confirm.confirm_regressions(comparison_id) == {}
    assert _states(session, comparison_id) == ["confirm_failed"] * 4
    done = session.get(Release, release.id)
    assert done is not None and done.status == "complete"


def test_a_failed_confirmation_is_named_in_the_notification(
        session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    release, comparison_id = _confirming(session, monkeypatch)

    def broken(*args: Any) -> bool:
        raise RuntimeError("the harness could not start")

    monkeypatch.setattr(confirm, "_measure_run", broken)
    assert confirm.confirm_regressions(comparison_id) == {}
    assert _states(session, comparison_id) == ["confirm_failed"] * 4
    done = session.get(Release, release.id)
    assert done is not None and done.status == "complete"

    summary = notify.release_summary(session, done)
    (gpu,) = summary["gpus"]
    assert gpu["confirmed"] == [] and len(gpu["unconfirmed"]) == 4
    text = notify.release_text(summary)
    assert ("h200: no confirmed regression, 4 flagged that could not be confirmed (their "
            "re-measurement failed);") in text
    lines = [line for line in text.splitlines() if line.endswith(", not confirmed")]
    assert len(lines) == 4 and lines[0].startswith("    batch_prefill fa2 ")
    # the comparison's own change and CI: nothing re-measured it
    top = session.scalars(select(Regression).where(Regression.comparison_id == comparison_id)
                          .order_by(Regression.ratio.desc())).first()
    assert top is not None and top.confirm_ratio is None
    assert (f"{top.ratio - 1:+.1%} (95% CI {top.ci_low - 1:+.1%} .. {top.ci_high - 1:+.1%})"
            ", not confirmed") in lines[0]
