"""core.outbox: what is deferred on a session is sent after its commit, and only then."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernelwatch.core import db, outbox
from kernelwatch.core.models import Token
from kernelwatch.core.settings import Settings


def _token(name: str) -> Token:
    return Token(name=name, token_hash=name.ljust(64, "0"))


def _count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Token)) or 0


def test_sent_after_the_commit_with_the_row_visible(kw_env: Settings) -> None:
    seen: list[int] = []
    with db.session_scope() as s:
        s.add(_token("a"))
        s.flush()

        def send() -> None:
            # Another connection sees the row: the send comes after the commit.
            with db.session_scope() as other:
                seen.append(_count(other))

        outbox.defer(s, send, "count")
        assert seen == [] and len(outbox.pending(s)) == 1
    assert seen == [1]
    assert outbox.failures(s) == []


def test_nothing_sent_on_rollback_or_close_without_commit(kw_env: Settings) -> None:
    sent: list[str] = []
    with pytest.raises(RuntimeError), db.session_scope() as s:
        outbox.defer(s, lambda: sent.append("rolled back"))
        raise RuntimeError("the transaction fails")
    s = db.new_session()
    outbox.defer(s, lambda: sent.append("closed"))
    s.close()
    s.commit()  # a later transaction of the same session does not inherit the send
    assert sent == []


def test_a_rolled_back_savepoint_drops_only_its_own_sends(session: Session) -> None:
    sent: list[str] = []
    outbox.defer(session, lambda: sent.append("outer"))
    with session.begin_nested():
        outbox.defer(session, lambda: sent.append("kept savepoint"))
    nested = session.begin_nested()
    outbox.defer(session, lambda: sent.append("dropped savepoint"))
    nested.rollback()
    assert sent == []  # releasing a savepoint is not the commit
    session.commit()
    assert sent == ["outer", "kept savepoint"]


def test_a_failing_send_keeps_the_commit_and_is_reported(session: Session) -> None:
    sent: list[str] = []

    def refuse() -> None:
        raise ConnectionError("broker down")

    session.add(_token("b"))
    outbox.defer(session, refuse, "refused")
    outbox.defer(session, lambda: sent.append("next"))
    session.commit()
    (failure,) = outbox.failures(session)
    assert failure.description == "refused" and isinstance(failure.error, ConnectionError)
    assert outbox.failures(session) == []  # read once
    assert sent == ["next"]  # one refusal does not stop the others
    with db.session_scope() as other:
        assert _count(other) == 1
