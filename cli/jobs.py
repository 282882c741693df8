"""Job commands: tokens, submitting sweeps, listing jobs and results, fixture export/import.

``submit``, ``jobs`` and ``results`` talk HTTP to the API (``KERNELWATCH_API_URL``), so they
work against a remote deployment; ``token create``, ``export`` and ``import`` use the database
directly (they are operator commands run where the database is reachable).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from core.db import session_scope


def register(group: click.Group) -> None:
    """Add this module's commands to the ``kernelwatch`` group."""
    group.add_command(token)
    group.add_command(export_cmd)
    group.add_command(import_cmd)


@click.group()
def token() -> None:
    """Manage API tokens (writes to the API need one)."""


@token.command("create")
@click.option("--name", required=True, help="A label for the token (unique).")
def token_create(name: str) -> None:
    """Create a token and print it once; only its hash is stored."""
    from core.tokens import create_token

    try:
        with session_scope() as session:
            plaintext = create_token(session, name)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(plaintext)


@click.command("export")
@click.argument("job_id", type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="File to write (default: stdout).")
def export_cmd(job_id: int, output: Path | None) -> None:
    """Write a job with its runs, points and raw samples as JSON (a fixture)."""
    from core.fixtures import export_job

    try:
        with session_scope() as session:
            data = export_job(session, job_id)
    except LookupError as e:
        raise click.ClickException(str(e)) from None
    text = json.dumps(data, indent=1)
    if output is None:
        sys.stdout.write(text + "\n")
    else:
        output.write_text(text)
        n_points = sum(len(r["points"]) for r in data["runs"])
        click.echo(f"job {job_id}: {len(data['runs'])} runs, {n_points} points -> {output}",
                   err=True)


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_cmd(file: Path) -> None:
    """Insert a job exported with ``kernelwatch export`` as a new job; prints its id."""
    from core.fixtures import import_job

    try:
        data = json.loads(file.read_text())
        with session_scope() as session:
            job = import_job(session, data)
            session.flush()
            job_id = job.id
    except (ValueError, KeyError) as e:
        raise click.ClickException(f"{file}: {e}") from None
    click.echo(job_id)
