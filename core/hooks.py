"""Things that happen when a job reaches a terminal state (called by the worker after it
commits the job's final status). The release flow lives behind this: when a release's
baseline and contender jobs have both finished, compare them and confirm regressions."""

from __future__ import annotations


def on_job_finished(job_id: int) -> None:
    """Called once per job, after its terminal status is committed. Must not raise."""
