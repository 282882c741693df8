"""Job commands: tokens, submitting sweeps, listing jobs and results, fixture export/import.

``submit``, ``jobs`` and ``results`` talk HTTP to the API (``KERNELWATCH_API_URL``), so they
work against a remote deployment; ``token create``, ``export`` and ``import`` use the database
directly (they are operator commands run where the database is reachable).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click
import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kernelwatch.cli import tables
from kernelwatch.core.db import session_scope
from kernelwatch.core.settings import get_settings

TERMINAL = ("succeeded", "partial", "failed", "cancelled")
YAML_SUFFIXES = (".yaml", ".yml")


def register(group: click.Group) -> None:
    """Add this module's commands to the ``kernelwatch`` group."""
    for command in (token, submit, jobs_cmd, results, cancel, export_cmd, import_cmd):
        group.add_command(command)


# ---------------------------------------------------------------------------------------------
# HTTP


def http_client() -> httpx.Client:
    from kernelwatch.core.tokens import read_local_token

    headers = {"X-Kernelwatch-Source": "cli"}
    tok = read_local_token()
    if tok:
        headers["Authorization"] = f"Bearer {tok}"
    return httpx.Client(base_url=get_settings().api_url, headers=headers, timeout=60)


def _fail(msg: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


def _request(method: str, path: str, **kw: Any) -> httpx.Response:
    """One API call; API errors are printed readably (422: one line per field) and exit 2."""
    url = get_settings().api_url
    try:
        with http_client() as client:
            resp = client.request(method, path, **kw)
    except httpx.TransportError as e:
        _fail(f"cannot reach the API at {url} ({e}); is `kernelwatch up` running? "
              "(KERNELWATCH_API_URL)")
    if resp.status_code < 400:
        return resp
    try:
        detail = resp.json().get("detail")
    except ValueError:
        detail = resp.text
    if resp.status_code == 422 and isinstance(detail, list):
        click.echo("error: the API rejected the request:", err=True)
        for err in detail:
            loc = ".".join(str(x) for x in err.get("loc", []) if x != "body") or "body"
            msg = str(err.get("msg"))
            # The API's messages usually start with the field already.
            click.echo(f"  {msg}" if msg.startswith(loc.split(".")[0]) else f"  {loc}: {msg}",
                       err=True)
        sys.exit(2)
    hint = ""
    if resp.status_code == 401:
        hint = (" (set KERNELWATCH_TOKEN, or create one with "
                "`kernelwatch token create --name NAME`)")
    _fail(f"HTTP {resp.status_code}: {detail}{hint}", 2 if resp.status_code < 500 else 1)


# ---------------------------------------------------------------------------------------------
# Submitting and reading


@click.command()
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Follow the job with a progress bar, then print "
              "a summary table.")
@click.option("--idempotency-key", help="Submitting twice with one key makes one job.")
@click.option("--poll", default=1.0, show_default=True, help="Seconds between status checks.")
@click.option("--from-testlist", is_flag=True, help="SPEC_FILE is a flashinfer_benchmark.py "
              "--testlist file: each line becomes the same experiment as a sweep (lines that "
              "cannot be mapped are refused, naming the flag). Needs --target and --versions.")
@click.option("--target", help="With --from-testlist: the worker tag to run on (e.g. h200).")
@click.option("--versions", help="With --from-testlist: FlashInfer versions, comma-separated.")
def submit(spec_file: Path, wait: bool, idempotency_key: str | None, poll: float,
           from_testlist: bool, target: str | None, versions: str | None) -> None:
    """Submit a sweep spec (YAML or JSON file) to the API. With --wait, exit status is 0 when
    the job succeeded or finished partially, 1 when it failed or was cancelled."""
    if not from_testlist:
        ctype = "application/yaml" if spec_file.suffix.lower() in YAML_SUFFIXES \
            else "application/json"
        jobs = [_submit_one(spec_file.read_bytes(), ctype, idempotency_key)]
    else:
        jobs = [_submit_one(json.dumps(spec).encode(), "application/json",
                            f"{idempotency_key}:{i}" if idempotency_key else None)
                for i, spec in enumerate(_testlist_specs(spec_file, target, versions))]
    if not wait:
        return
    statuses = []
    for job in jobs:
        try:
            job = _follow(job["id"], poll)
        except KeyboardInterrupt:
            click.echo(f"stopped following job {job['id']}; it goes on "
                       f"(kernelwatch results {job['id']})", err=True)
            sys.exit(130)
        _print_summary(job, _request("GET", f"/v1/jobs/{job['id']}/results").json()["rows"])
        statuses.append(job["status"])
    sys.exit(0 if all(s in ("succeeded", "partial") for s in statuses) else 1)


def _submit_one(content: bytes, ctype: str, idempotency_key: str | None) -> dict[str, Any]:
    headers = {"Content-Type": ctype}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    resp = _request("POST", "/v1/jobs", content=content, headers=headers)
    job: dict[str, Any] = resp.json()
    verb = "submitted" if resp.status_code == 201 else "already submitted (same key)"
    click.echo(f"job {job['id']} {verb}: {job['name']}, {len(job['runs'])} run(s), "
               f"{job['total_points']} measurements")
    if job.get("message"):
        click.echo(job["message"])
    return job


def _testlist_specs(path: Path, target: str | None, versions: str | None) -> list[dict[str, Any]]:
    from kernelwatch.core.benchmark_cli import read_testlist

    if not target or not versions:
        _fail("--from-testlist needs --target (a worker tag) and --versions (FlashInfer's)", 2)
    specs, refused = read_testlist(path.read_text().splitlines())
    for err in refused:
        click.echo(f"refused: {err}", err=True)
    if not specs:
        _fail(f"{path}: no testlist line could be mapped", 2)
    fi = [v.strip() for v in versions.split(",") if v.strip()]
    return [{**s, "targets": [target], "flashinfer_versions": fi} for s in specs]


def _follow(job_id: int, poll: float) -> dict[str, Any]:
    console = Console(stderr=True)
    with Progress(TextColumn("job {task.fields[job]} [bold]{task.fields[status]}"),
                  BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[errored]} errored"),
                  TimeElapsedColumn(), TextColumn("{task.fields[note]}"),
                  console=console) as bar:
        task = bar.add_task("job", total=None, job=job_id, status="queued", errored=0, note="")
        while True:
            job = _request("GET", f"/v1/jobs/{job_id}").json()
            p = job["progress"]
            bar.update(task, total=p["total"], completed=p["done"], status=job["status"],
                       errored=p["errored"], note=job.get("message") or "")
            if job["status"] in TERMINAL:
                return job
            time.sleep(poll)


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _print_summary(job: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Per point: kernel, backend, the parameters the spec names, status, median, CI, TB/s."""
    given = (job.get("spec") or {}).get("params", {})
    # Parameters that vary get a column; the fixed ones are said once, in the title.
    swept = [k for k, v in given.items() if isinstance(v, list) and len(v) > 1] or list(given)
    fixed = " ".join(f"{k}={v[0]}" for k, v in given.items() if k not in swept)
    checked = bool((job.get("spec") or {}).get("crosscheck"))
    table = tables.table(
        f"job {job['id']} {job['name']}: {job['status']} "
        f"({job['progress']['done']}/{job['progress']['total']} points, "
        f"{job['progress']['errored']} errored)" + (f"\n{fixed}" if fixed else ""),
        ["kernel", "backend", "params", "version", "gpu", "status", "median us", "95% CI us",
         "TB/s", *(["FI bench us", "vs FI %"] if checked else [])],
        right=("median us", "TB/s", "FI bench us", "vs FI %"))
    for r in rows:
        params = " ".join(f"{k}={r.get('param_' + k)}" for k in swept)
        ci = (f"{r['ci_low_us']:.2f}-{r['ci_high_us']:.2f}"
              if r.get("ci_low_us") is not None else "-")
        status = r["status"] if not r.get("error") else f"{r['status']}: {r['error']}"
        extra = [_fmt(r.get("crosscheck_median_us")),
                 _fmt(r.get("crosscheck_diff_pct"), 1)] if checked else []
        table.add_row(r["kernel"], r["backend"], params, r.get("flashinfer_version") or "-",
                      r.get("gpu_sku") or r.get("gpu_name") or "-", status,
                      _fmt(r.get("median_us")), ci, _fmt(r.get("tbps"), 3), *extra)
    tables.console().print(table)
    if checked:
        click.echo(crosscheck_line(job.get("crosscheck")))


def crosscheck_line(counts: dict[str, int] | None) -> str:
    """The job's cross-check in one line: how many points agree with flashinfer_benchmark.py."""
    from kernelwatch.core.crosscheck import CrosscheckCounts

    if not counts:
        return "cross-check: no point checked yet"
    c = CrosscheckCounts(**counts)
    return (f"cross-check with flashinfer_benchmark.py: {c.describe()}"
            + ("; the causes are in --csv (crosscheck_causes)" if c.disagree else ""))


@click.command("jobs")
@click.option("--status", help="Only jobs in this state (queued, running, succeeded, "
              "partial, failed, cancelled).")
@click.option("--limit", default=20, show_default=True)
@click.option("--offset", default=0, show_default=True)
def jobs_cmd(status: str | None, limit: int, offset: int) -> None:
    """List jobs, newest first."""
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if status:
        params["status"] = status
    page = _request("GET", "/v1/jobs", params=params).json()
    table = tables.table(f"jobs {offset + 1}-{offset + len(page['items'])} of {page['total']}",
                         ["id", "name", "kernel", "status", "points", "source", "by",
                          "created", "message"])
    for j in page["items"]:
        table.add_row(str(j["id"]), j["name"], j["kernel"], j["status"],
                      str(j["total_points"]), j["source"], j["submitted_by"] or "-",
                      j["created_at"][:19].replace("T", " "), j.get("message") or "")
    tables.console().print(table)


@click.command()
@click.argument("job_id", type=int)
@click.option("--csv", "as_csv", is_flag=True, help="Print every column as CSV.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def results(job_id: int, as_csv: bool, as_json: bool) -> None:
    """A job's measured points: a summary table, or every column with --csv / --json."""
    if as_csv:
        sys.stdout.write(_request("GET", f"/v1/jobs/{job_id}/results",
                                  params={"format": "csv"}).text)
        return
    data = _request("GET", f"/v1/jobs/{job_id}/results").json()
    if as_json:
        click.echo(json.dumps(data["rows"], indent=1))
        return
    _print_summary(_request("GET", f"/v1/jobs/{job_id}").json(), data["rows"])


@click.command()
@click.argument("job_id", type=int)
def cancel(job_id: int) -> None:
    """Cancel a queued or running job (workers stop at the next point, stored points stay)."""
    job = _request("POST", f"/v1/jobs/{job_id}/cancel").json()
    p = job["progress"]
    click.echo(f"job {job_id} {job['status']} ({p['done']}/{p['total']} points stored)")


# ---------------------------------------------------------------------------------------------
# Operator commands (database directly)


@click.group()
def token() -> None:
    """Manage API tokens (writes to the API need one)."""


@token.command("create")
@click.option("--name", required=True, help="A label for the token (unique).")
def token_create(name: str) -> None:
    """Create a token and print it once; only its hash is stored."""
    from kernelwatch.core.tokens import create_token

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
    from kernelwatch.core.fixtures import export_job

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
    """Insert a job exported with ``kernelwatch export`` as a new job (the file gzip-compressed
    when its name ends in .gz, as the committed fixtures are); prints its id. A file that
    holds several exported jobs under ``jobs`` (a release flow's ``release_flow.json``, a
    family's GPU fixture) inserts each, in one transaction, and prints each id."""
    from kernelwatch.core.fixtures import import_job, read_file

    try:
        data = read_file(file)
        exports = data["jobs"] if isinstance(data, dict) and "jobs" in data else [data]
        if not all(isinstance(e, dict) for e in exports):
            raise ValueError("not a kernelwatch job export, nor a file of them under 'jobs'")
        with session_scope() as session:
            jobs = [import_job(session, export) for export in exports]
            session.flush()
            job_ids = [job.id for job in jobs]
    except (ValueError, KeyError, OSError) as e:
        raise click.ClickException(f"{file}: {e}") from None
    for job_id in job_ids:
        click.echo(job_id)
