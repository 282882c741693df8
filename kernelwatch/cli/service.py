"""Service commands: ``up`` (everything on one machine), ``api``, ``worker``, ``dashboard``,
``db upgrade``."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kernelwatch.cli.supervisor import Child, Supervisor, kernelwatch_argv
from kernelwatch.core.settings import get_settings

if TYPE_CHECKING:
    from kernelwatch.worker.gpu import GpuInfo


def _migrate() -> None:
    from kernelwatch.core.migrate import upgrade

    upgrade()


def _announce_token() -> None:
    from kernelwatch.core.db import session_scope
    from kernelwatch.core.tokens import ensure_local_token

    settings = get_settings()
    with session_scope() as session:
        token = ensure_local_token(session)
    if token:
        click.echo(f"API token: {token}")
        click.echo(f"  (saved in {settings.token_file}; the kernelwatch CLI reads it from there)")
    elif settings.token_file.exists():
        click.echo(f"API token: see {settings.token_file}")
    else:
        click.echo("API token: tokens exist already; create one with "
                   "`kernelwatch token create --name NAME`")


def worker_children(extra_tags: str = "", gpus: str | None = None,
                    name: str = "") -> list[Child]:
    """One Celery worker process per GPU (pinned with CUDA_VISIBLE_DEVICES), or one CPU worker
    when there is no GPU. ``gpus``: comma-separated indices to serve (default: all)."""
    from kernelwatch.worker.gpu import detect_gpus

    settings = get_settings()
    tags = ",".join(t for t in (settings.worker_tags, extra_tags) if t)
    name = name or settings.worker_name
    found = detect_gpus()
    if gpus is not None:
        wanted = {int(g) for g in gpus.split(",") if g.strip()}
        missing = wanted - {g.index for g in found}
        if missing:
            raise click.BadParameter(
                f"no GPU with index {', '.join(map(str, sorted(missing)))}; this machine has "
                f"{', '.join(str(g.index) for g in found) or 'none'}", param_hint="--gpus")
        found = [g for g in found if g.index in wanted]
    return plan_workers(list(found), tags, name)


def plan_workers(gpus: list[GpuInfo], tags: str = "", name: str = "") -> list[Child]:
    """The worker processes for these GPUs: one each, pinned to it; one CPU worker if none."""
    from kernelwatch.worker.node import NODE_ENV, identity_for

    children = []
    devices: list[GpuInfo | None] = list(gpus) or [None]
    for gpu in devices:
        ident = identity_for(gpu, tags, name)
        env = {NODE_ENV: ident.to_env()}
        if gpu is not None:
            # By UUID: NVML numbers GPUs by PCI bus, CUDA (by default) fastest first, so an
            # index could pin the process to another GPU than the one it registers as.
            env["CUDA_VISIBLE_DEVICES"] = gpu.uuid or str(gpu.index)
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        suffix = "cpu" if gpu is None else f"gpu{gpu.index}"
        argv = [
            sys.executable, "-m", "celery", "-A", "kernelwatch.worker.celery_app", "worker",
            "--pool", "solo", "--concurrency", "1",  # one measurement at a time on this GPU
            "--hostname", f"kernelwatch-{suffix}@{ident.hostname}",
            "--queues", ",".join(ident.queues),
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--loglevel", "INFO",
        ]
        children.append(Child(f"worker {ident.name} [{', '.join(ident.tags)}]", argv, env,
                              restart=True))
    return children


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def register(group: click.Group) -> None:
    """Add this module's commands to the ``kernelwatch`` group."""

    @group.command()
    @click.option("--dashboard/--no-dashboard", default=True, help="Also serve the dashboard.")
    @click.option("--worker/--no-worker", "with_worker", default=True,
                  help="Also start a local worker.")
    def up(dashboard: bool, with_worker: bool) -> None:
        """Everything on this machine: migrate, API, a local worker, dashboard.

        With nothing configured it runs embedded: a SQLite database and a SQLite-backed
        broker under the data directory. Set KERNELWATCH_DATABASE_URL / KERNELWATCH_BROKER_URL
        for Postgres and Redis."""
        s = get_settings()
        if s.embedded:
            s.ensure_dirs()
        click.echo(f"kernelwatch: database {s.shown_database_url}")
        click.echo(f"kernelwatch: broker   {s.resolved_broker_url}")
        for what, host, port in (("API", s.api_host, s.api_port),
                                 ("dashboard", s.dashboard_host, s.dashboard_port)):
            if (what == "API" or dashboard) and not _port_free(host, port):
                raise click.ClickException(
                    f"{what} port {host}:{port} is in use (another kernelwatch up?); set "
                    f"KERNELWATCH_{'API' if what == 'API' else 'DASHBOARD'}_PORT")
        _migrate()
        _announce_token()
        children = [Child("api", kernelwatch_argv("api"))]
        if with_worker:
            children += worker_children()
        if dashboard:
            children.append(Child("dashboard", kernelwatch_argv("dashboard")))
        click.echo(f"kernelwatch: API on http://{s.api_host}:{s.api_port} (docs at /docs)"
                   + (f", dashboard on http://{s.dashboard_host}:{s.dashboard_port}"
                      if dashboard else ""))
        click.echo("kernelwatch: Ctrl-C stops everything", err=True)
        sys.exit(Supervisor(children).run())

    @group.command()
    @click.option("--host", default=None, help="Default: KERNELWATCH_API_HOST.")
    @click.option("--port", type=int, default=None, help="Default: KERNELWATCH_API_PORT.")
    def api(host: str | None, port: int | None) -> None:
        """Serve the HTTP API (uvicorn)."""
        import uvicorn

        s = get_settings()
        uvicorn.run("kernelwatch.api.main:app", host=host or s.api_host, port=port or s.api_port,
                    log_level="info")

    @group.command()
    @click.option("--tags", default="", help="Operator tags added to the detected ones "
                  "(comma-separated; also KERNELWATCH_WORKER_TAGS).")
    @click.option("--gpus", default=None, help="GPU indices to serve, e.g. 0,1 (default all).")
    @click.option("--name", default="", help="Host part of the node names (default hostname).")
    def worker(tags: str, gpus: str | None, name: str) -> None:
        """Benchmark worker: one process per GPU (none: one CPU worker), each consuming the
        queues of its tags (architecture, SKU, operator tags) and its node queue."""
        children = worker_children(tags, gpus, name)
        for c in children:
            click.echo(f"kernelwatch: {c.name}", err=True)
        sys.exit(Supervisor(children).run())

    @group.command()
    @click.option("--host", default=None, help="Default: KERNELWATCH_DASHBOARD_HOST.")
    @click.option("--port", type=int, default=None, help="Default: KERNELWATCH_DASHBOARD_PORT.")
    def dashboard(host: str | None, port: int | None) -> None:
        """Serve the dashboard (Dash)."""
        from kernelwatch.dashboard.app import main

        s = get_settings()
        main(host or s.dashboard_host, port or s.dashboard_port)

    @group.group()
    def db() -> None:
        """Database schema."""

    @db.command()
    def upgrade() -> None:
        """Migrate the database to the latest schema (Alembic upgrade head)."""
        s = get_settings()
        _migrate()
        click.echo(f"database at head: {s.shown_database_url}")

    @group.group()
    def wheelhouse() -> None:
        """What nodes without network take from the wheelhouse (KERNELWATCH_WHEELHOUSE)."""

    @wheelhouse.command("benchmarks")
    @click.argument("version")
    @click.option("--from-git", "repo", required=True,
                  type=click.Path(exists=True, file_okay=False, path_type=Path),
                  help="A FlashInfer git checkout holding the tag v<VERSION>.")
    @click.option("--ref", default=None,
                  help="Take benchmarks/ from this ref instead of the tag v<VERSION> (a "
                       "release branch, when the checkout lacks the tag); recorded in the "
                       "archive's benchmarks/SOURCE.")
    @click.option("--other-release", is_flag=True,
                  help="Take a ref whose version.txt names another release (refused by "
                       "default); SOURCE records which release the scripts are.")
    @click.option("--dir", "out_dir", type=click.Path(file_okay=False, path_type=Path),
                  default=None, help="Default: KERNELWATCH_WHEELHOUSE.")
    def wheelhouse_benchmarks(version: str, repo: Path, out_dir: Path | None,
                              ref: str | None, other_release: bool) -> None:
        """Put VERSION's benchmarks/flashinfer_benchmark.py (from its tag) in the wheelhouse,
        for the cross-check on nodes that cannot download FlashInfer's source."""
        from kernelwatch.worker.benchmark_scripts import NoBenchmarkScript, archive_from_git

        target = out_dir or (Path(get_settings().wheelhouse) if get_settings().wheelhouse
                             else None)
        if target is None:
            raise click.UsageError("give --dir or set KERNELWATCH_WHEELHOUSE")
        try:
            out = archive_from_git(repo, version, target, ref, other_release)
        except NoBenchmarkScript as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"wrote {out}")
