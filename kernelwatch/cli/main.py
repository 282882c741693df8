"""The ``kernelwatch`` command. Each area keeps its commands in its own module."""

from __future__ import annotations

import sys

import click
from sqlalchemy.exc import OperationalError, ProgrammingError

from kernelwatch.cli import catalogue, jobs, releases, service

# SQLite's and Postgres's (SQLSTATE 42P01) words for a table the database does not have
NO_TABLE = ("no such table", "UndefinedTable")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Benchmark FlashInfer's GPU kernels: jobs, workers, results, regressions, the catalogue."""


for module in (service, jobs, releases, catalogue):
    module.register(cli)


def unmigrated(error: Exception) -> bool:
    """Whether a database error says the schema is missing (a data directory or database no
    migration has run on yet), not something else gone wrong."""
    orig = getattr(error, "orig", None)
    return (getattr(orig, "sqlstate", None) == "42P01"
            or any(word in f"{type(orig).__name__} {orig}" for word in NO_TABLE))


def main() -> None:
    try:
        cli()
    except (OperationalError, ProgrammingError) as e:
        if not unmigrated(e):
            raise
        from kernelwatch.core.settings import get_settings

        sys.exit(f"Error: the database at {get_settings().shown_database_url} has no "
                 "kernelwatch schema yet: run `kernelwatch db upgrade` (or `kernelwatch up`, "
                 "which migrates it) first")
