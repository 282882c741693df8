"""Engine and sessions. One engine per process: Celery workers call ``reset_engine()`` in
``worker_process_init`` because a connection pool must never cross a fork."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from kernelwatch.core.settings import get_settings

_engine: Engine | None = None
_sessionmaker: sessionmaker[Session] | None = None


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the API read while the worker writes; foreign keys are off by default.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def get_engine() -> Engine:
    global _engine, _sessionmaker
    if _engine is None:
        settings = get_settings()
        if settings.embedded:
            settings.ensure_dirs()
        _engine = make_engine(settings.resolved_database_url)
        _sessionmaker = sessionmaker(_engine, expire_on_commit=False)
    return _engine


def reset_engine() -> None:
    """Forget the engine (after a fork, or when settings change in tests)."""
    global _engine, _sessionmaker
    if _engine is not None:
        _engine.dispose(close=False)
    _engine = None
    _sessionmaker = None


def new_session() -> Session:
    get_engine()
    assert _sessionmaker is not None
    return _sessionmaker()


@contextmanager
def session_scope() -> Iterator[Session]:
    """One transaction: committed at the end of the block, rolled back on error."""
    session = new_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


T = TypeVar("T")


def insert_or_existing(
    session: Session, insert: Callable[[], None], existing: Callable[[], T | None]
) -> T | None:
    """Run ``insert`` (adds and flushes a row under a unique constraint). None when it went in;
    when a concurrent transaction inserted the same key first, the row ``existing`` finds.

    Two requests with one key at once: the unique constraint lets exactly one insert win; the
    loser's flush fails (Postgres waits for the winner's commit) and it gets the winner's row.
    A savepoint keeps the rest of the caller's transaction; pysqlite's savepoints are
    unreliable, so on SQLite (one writer at a time) the transaction is rolled back instead."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    try:
        if sqlite:
            insert()
        else:
            with session.begin_nested():
                insert()
    except IntegrityError:
        if sqlite:
            session.rollback()
        found = existing()
        if found is None:
            raise
        return found
    return None
