"""A database no migration has run on: the CLI's commands that read or write it say so and
name the command that migrates it, on the embedded SQLite default and on Postgres, instead of
a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg

from tests.conftest import PG_ADMIN, _sqla_url

FAMILY = Path(__file__).parent / "fixtures" / "gpu" / "families" / "rope.json.gz"


def _kernelwatch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kernelwatch", *args], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=120)


def _says_migrate(res: subprocess.CompletedProcess[str], url_part: str) -> None:
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert "has no kernelwatch schema yet: run `kernelwatch db upgrade`" in res.stderr
    assert url_part in res.stderr


def test_an_unmigrated_embedded_database_names_the_command_that_migrates_it(
        tmp_path: Path) -> None:
    env = {"KERNELWATCH_DATA_DIR": str(tmp_path), "KERNELWATCH_DATABASE_URL": ""}
    _says_migrate(_kernelwatch(env, "import", str(FAMILY)), str(tmp_path))
    _says_migrate(_kernelwatch(env, "export", "1"), str(tmp_path))
    # migrated, the same import works
    assert _kernelwatch(env, "db", "upgrade").returncode == 0
    res = _kernelwatch(env, "import", str(FAMILY))
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["1", "2"]


def test_an_unmigrated_postgres_database_names_the_command_that_migrates_it(
        tmp_path: Path) -> None:
    name = f"kwtest_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        env = {"KERNELWATCH_DATA_DIR": str(tmp_path), "KERNELWATCH_DATABASE_URL": _sqla_url(name)}
        _says_migrate(_kernelwatch(env, "import", str(FAMILY)), name)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_messages_mask_the_database_password() -> None:
    """What ``kernelwatch up``, ``db upgrade`` and the message above print of the URL."""
    from kernelwatch.core.settings import Settings

    url = "postgresql+psycopg://kw:s3cret@127.0.0.1:5432/kw"
    assert Settings(database_url=url).shown_database_url == (
        "postgresql+psycopg://kw:***@127.0.0.1:5432/kw")
    embedded = Settings(database_url="", data_dir=Path("/d")).shown_database_url
    assert embedded == "sqlite:////d/kernelwatch.sqlite"
