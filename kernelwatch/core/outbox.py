"""Sending after the commit, as one mechanism: ``defer(session, send)`` registers a send (a
task to the broker) on the session; it runs only once the session's transaction has
committed, and is dropped when the transaction rolls back or the session closes without
committing. A worker therefore never receives an id that the database does not hold.

A send that fails (the broker is down) does not undo the commit: it is logged and kept, and
``failures(session)`` hands the failures of the last commit to the caller, which records them
(e.g. a job message that says why the job waits).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

log = logging.getLogger(__name__)

_PENDING = "kernelwatch.outbox.pending"
_FAILED = "kernelwatch.outbox.failed"


@dataclass(frozen=True)
class Deferred:
    send: Callable[[], None]
    description: str
    # The savepoint it was registered in (None: the outer transaction); rolling that savepoint
    # back drops it.
    savepoint: SessionTransaction | None


@dataclass(frozen=True)
class SendFailure:
    description: str
    error: Exception


def defer(session: Session, send: Callable[[], None], description: str = "") -> None:
    """Run ``send()`` after this session's transaction commits (never if it rolls back)."""
    if not session.in_transaction():
        session.begin()  # the send belongs to this transaction, not to a later one
    entry = Deferred(send, description or getattr(send, "__name__", "send"),
                     session.get_nested_transaction())
    session.info.setdefault(_PENDING, []).append(entry)


def pending(session: Session) -> list[Deferred]:
    return list(session.info.get(_PENDING, []))


def failures(session: Session) -> list[SendFailure]:
    """The sends of the last commit that raised, forgotten once read."""
    return session.info.pop(_FAILED, [])


@event.listens_for(Session, "after_commit")
def _send_after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint was released: the outer transaction is not committed yet
    entries: list[Deferred] = session.info.pop(_PENDING, [])
    failed: list[SendFailure] = []
    for entry in entries:
        try:
            entry.send()
        except Exception as e:
            log.exception("after commit: %s failed", entry.description)
            failed.append(SendFailure(entry.description, e))
    if failed:
        session.info.setdefault(_FAILED, []).extend(failed)


@event.listens_for(Session, "after_soft_rollback")
def _drop_after_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    entries: list[Deferred] = session.info.get(_PENDING, [])
    if not entries:
        return
    if previous_transaction.nested:
        session.info[_PENDING] = [e for e in entries if e.savepoint is not previous_transaction]
    else:
        session.info.pop(_PENDING, None)


@event.listens_for(Session, "after_transaction_end")
def _drop_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    # The outer transaction ended without the commit having taken the sends (closed without
    # committing): they must not linger into the session's next transaction.
    if transaction.parent is None and not transaction.nested:
        session.info.pop(_PENDING, None)
