"""Alembic builds the schema (never create_all): upgrade head on a fresh Postgres database and a
fresh SQLite file, and the models match what the migrations build (no autogenerate diff)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, inspect

from core.db import make_engine
from core.migrate import alembic_config, upgrade
from core.models import Base
from tests.conftest import PG_ADMIN, _sqla_url


def _diff(engine: Engine, metadata: MetaData = Base.metadata) -> list[object]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, metadata))


def _check(engine: Engine) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head
    tables = set(inspect(engine).get_table_names())
    assert {t.name for t in Base.metadata.sorted_tables} <= tables
    assert _diff(engine) == []
    # The comparison is live: against empty metadata every table shows up as a difference.
    assert len(_diff(engine, MetaData())) >= len(Base.metadata.sorted_tables)


@pytest.fixture
def fresh_pg() -> Iterator[str]:
    name = f"kwmig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _sqla_url(name)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_upgrade_head_on_fresh_postgres(fresh_pg: str) -> None:
    upgrade(fresh_pg)
    engine = make_engine(fresh_pg)
    try:
        _check(engine)
        upgrade(fresh_pg)  # idempotent: a second `kernelwatch db upgrade` is a no-op
        _check(engine)
    finally:
        engine.dispose()


def test_upgrade_head_on_fresh_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kw.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        _check(engine)
    finally:
        engine.dispose()
