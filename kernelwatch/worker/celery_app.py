"""The worker's Celery app: ``celery -A worker.celery_app worker`` (``kernelwatch worker``
starts it the right way: one process per GPU, solo pool, the node's queues).

This process never initialises CUDA: GPU work happens in the harness subprocess, so nothing
CUDA-related can be inherited across a fork, and the worker never holds GPU memory itself.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from kernelwatch.core import db
from kernelwatch.core.broker import get_celery, queue_for_tag

log = logging.getLogger(__name__)

app = get_celery()

# Importing these registers their tasks (by explicit name) on the shared app.
import kernelwatch.worker.confirm  # noqa: E402
import kernelwatch.worker.tasks  # noqa: E402, F401

celery = app  # what `celery -A worker.celery_app` looks for besides `app`


@signals.worker_process_init.connect
def _fresh_engine(**_: Any) -> None:
    # A connection pool must never be shared across a fork.
    db.reset_engine()


@signals.celeryd_after_setup.connect
def _consume_node_queues(sender: str, instance: Any, **_: Any) -> None:
    """Consume the queue of each of the node's tags and its own queue, whatever -Q said; a GPU
    node does not take the default (cpu) queue unless it carries the cpu tag."""
    from kernelwatch.worker.node import current_identity

    ident = current_identity()
    queues = instance.app.amqp.queues
    for name in ident.queues:
        queues.select_add(name)
    default = queue_for_tag("cpu")
    if default not in ident.queues and default in queues.consume_from:
        queues.deselect([default])
    log.info("node %s consumes %s", ident.name, ", ".join(ident.queues))


@signals.worker_ready.connect
def _register_node(**_: Any) -> None:
    from kernelwatch.worker.node import start_service

    start_service()


@signals.worker_shutting_down.connect
def _shutting_down(**_: Any) -> None:
    from kernelwatch.worker.tasks import request_shutdown

    request_shutdown()


@signals.worker_shutdown.connect
def _stop_node(**_: Any) -> None:
    from kernelwatch.worker.node import stop_service

    stop_service()
