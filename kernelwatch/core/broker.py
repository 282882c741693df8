"""The Celery client every process shares. The API enqueues tasks *by name* through it, so
``api`` never imports ``worker``; the worker module registers the task bodies on this app.

Queues are per tag (``<prefix>.<tag>``): a node consumes the queues of its tags, so a job's
``targets`` route it. The database is the truth about jobs; Celery carries run ids only.
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from kernelwatch.core.settings import get_settings

TASK_EXECUTE_RUN = "kernelwatch.execute_run"
TASK_CONFIRM_REGRESSIONS = "kernelwatch.confirm_regressions"


def queue_for_tag(tag: str) -> str:
    return f"{get_settings().queue_prefix}.{tag}"


@lru_cache
def get_celery() -> Celery:
    settings = get_settings()
    if settings.embedded or settings.resolved_broker_url.startswith("sqla+"):
        settings.ensure_dirs()
    app = Celery("kernelwatch", broker=settings.resolved_broker_url)
    app.conf.update(
        task_acks_late=True,  # a run is acknowledged when it is done, not when it starts
        task_reject_on_worker_lost=True,  # a killed worker's run goes back to the queue
        worker_prefetch_multiplier=1,
        worker_concurrency=1,  # one measurement at a time per GPU
        task_default_queue=queue_for_tag("cpu"),
        task_ignore_result=True,  # results live in the database
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(settings.resolved_broker_url),
        worker_hijack_root_logger=False,
    )
    if settings.resolved_broker_url.startswith("sqla+"):
        # kombu's SQL transport has no fanout: remote control (pidbox) would fail on it.
        app.conf.worker_enable_remote_control = False
        # Its transport options all go to create_engine(), so the polling interval (how soon
        # an idle worker sees a new run; kombu's default is 1 s) is set on the class instead.
        from kombu.transport import sqlalchemy as kombu_sqla

        kombu_sqla.Transport.polling_interval = SQLA_POLLING_SECONDS
    return app


SQLA_POLLING_SECONDS = 0.2


def _transport_options(broker_url: str) -> dict[str, object]:
    if broker_url.startswith("sqla+"):
        # Passed to create_engine(): wait for SQLite's lock instead of failing a publish.
        return {"connect_args": {"timeout": 30}}
    # Redis redelivers an unacknowledged message after this; a sweep chunk may be long.
    return {"visibility_timeout": 6 * 3600}


def queue_for_node(name: str) -> str:
    """The queue only one node consumes (e.g. confirmations that must run on the same GPU)."""
    return queue_for_tag(f"node-{name}")
