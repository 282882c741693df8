"""Run Alembic migrations from code (``kernelwatch db upgrade``, ``kernelwatch up``, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from kernelwatch.core.settings import get_settings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url or get_settings().resolved_database_url)
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    settings = get_settings()
    if url is None and settings.embedded:
        settings.ensure_dirs()
    command.upgrade(alembic_config(url), revision)
