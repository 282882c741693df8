"""Things that happen when a job reaches a terminal state (called by the worker after it
commits the job's final status). The release flow lives behind this: when a release's
baseline and contender jobs have both finished, compare them and confirm regressions."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def on_job_finished(job_id: int) -> None:
    """Called once per job, after its terminal status is committed. Must not raise."""
    try:
        from kernelwatch.core.releases import on_release_job_finished

        on_release_job_finished(job_id)
    except Exception:
        log.exception("on_job_finished(%s): the release flow failed", job_id)
