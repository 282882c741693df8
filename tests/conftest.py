"""Shared fixtures. Tests run against real services: Postgres on 127.0.0.1:5432 and Redis on
127.0.0.1:6379 (``make test`` starts them when they are not running). Each pytest session gets
its own freshly migrated database and its own Celery queue prefix, so parallel sessions on one
machine never see each other's data."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import uvicorn
from sqlalchemy import text
from sqlalchemy.orm import Session

from kernelwatch.api.main import create_app
from kernelwatch.core import broker, db, models, settings
from kernelwatch.core.migrate import upgrade
from kernelwatch.core.models import Base
from tests.api_support import new_token
from tests.index_support import serve_index

PG_ADMIN = os.environ.get("KERNELWATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("KERNELWATCH_TEST_REDIS", "redis://127.0.0.1:6379/0")
SESSION_ID = uuid.uuid4().hex[:8]


def _sqla_url(dbname: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{dbname}"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh Postgres database migrated to head with Alembic (never create_all)."""
    name = f"kwtest_{SESSION_ID}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _sqla_url(name)
    upgrade(url)
    yield url
    db.reset_engine()
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def configure(monkeypatch: pytest.MonkeyPatch, **env: str) -> settings.Settings:
    """Set KERNELWATCH_* variables and drop every cached setting, engine and Celery app."""
    for key, value in env.items():
        monkeypatch.setenv(f"KERNELWATCH_{key.upper()}", value)
    settings.get_settings.cache_clear()
    broker.get_celery.cache_clear()
    db.reset_engine()
    return settings.get_settings()


@pytest.fixture(scope="session")
def index_url() -> Iterator[str]:
    """The recorded package-index listing of FlashInfer's releases, served locally."""
    yield from serve_index()


@pytest.fixture
def kw_env(
    pg_url: str, index_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[settings.Settings]:
    """Postgres + Redis configuration with empty tables and a queue prefix of this test's own."""
    prefix = f"kwtest-{SESSION_ID}-{uuid.uuid4().hex[:6]}"
    s = configure(
        monkeypatch,
        database_url=pg_url,
        broker_url=REDIS_URL,
        queue_prefix=prefix,
        data_dir=str(tmp_path / "data"),
        package_index_url=index_url,
    )
    _truncate_all()
    yield s
    db.reset_engine()
    settings.get_settings.cache_clear()
    broker.get_celery.cache_clear()


def _truncate_all() -> None:
    names = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with db.get_engine().begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture
def session(kw_env: settings.Settings) -> Iterator[Session]:
    s = db.new_session()
    try:
        yield s
    finally:
        s.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def api_server(kw_env: settings.Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    configure(monkeypatch, api_url=url)
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    monkeypatch.setenv("KERNELWATCH_TOKEN", new_token("cli"))
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps tables to 80 columns off a terminal
    yield url
    server.should_exit = True
    thread.join(5)


@pytest.fixture
def cpu_node(session: Session) -> models.Node:
    node = models.Node(name="host:cpu", hostname="host", tags=["cpu"], queues=[],
                last_heartbeat=models.utcnow())
    session.add(node)
    session.commit()
    return node
