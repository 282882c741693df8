"""When a node counts as alive: its last heartbeat is within ``KERNELWATCH_NODE_STALE_SECONDS``
(or a window the caller names, e.g. the release flow's "seen this week"). Defined once, as a
test on a loaded node and as the same test in SQL, for the API, the workers, the dashboard and
the release flow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, Select, select

from kernelwatch.core.models import Node, utcnow
from kernelwatch.core.settings import get_settings


def stale_after() -> timedelta:
    """How long a node stays alive after its last heartbeat."""
    return timedelta(seconds=get_settings().node_stale_seconds)


def live_cutoff(now: datetime | None = None, window: timedelta | None = None) -> datetime:
    """The oldest heartbeat of a live node."""
    return (now or utcnow()) - (window if window is not None else stale_after())


def aware(t: datetime) -> datetime:
    """A stored time with its zone: SQLite hands back naive datetimes; every one is UTC."""
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def heartbeat_age(node: Node, now: datetime | None = None) -> timedelta:
    return (now or utcnow()) - aware(node.last_heartbeat)


def heartbeat_is_fresh(last_heartbeat: datetime, now: datetime | None = None,
                       window: timedelta | None = None) -> bool:
    return aware(last_heartbeat) >= live_cutoff(now, window)


def is_alive(node: Node | None, now: datetime | None = None,
             window: timedelta | None = None) -> bool:
    return node is not None and heartbeat_is_fresh(node.last_heartbeat, now, window)


def alive_clause(now: datetime | None = None,
                 window: timedelta | None = None) -> ColumnElement[bool]:
    """``is_alive`` as a WHERE clause on ``Node``."""
    return Node.last_heartbeat >= live_cutoff(now, window)


def alive_nodes(
    now: datetime | None = None, window: timedelta | None = None
) -> Select[Node]:
    return select(Node).where(alive_clause(now, window))
