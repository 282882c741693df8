"""Regression commands: ``kernelwatch compare`` (the verdict table of two sets of runs) and
``kernelwatch release`` (the release-CI flow by hand). Both use the database directly: they
are operator commands, run where the database is reachable (like ``export``)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from kernelwatch.core.db import session_scope


def register(group: click.Group) -> None:
    """Add this module's commands to the ``kernelwatch`` group."""
    group.add_command(compare_cmd)
    group.add_command(release_cmd)


def _run_ids(value: str, name: str) -> list[int]:
    try:
        ids = [int(p) for p in value.split(",") if p.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of run ids",
                                 param_hint=name) from None
    if not ids:
        raise click.BadParameter("at least one run id is required", param_hint=name)
    return ids


def _kernel_thresholds(values: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for v in values:
        kernel, sep, t = v.partition("=")
        try:
            if not sep:
                raise ValueError
            out[kernel] = float(t)
        except ValueError:
            raise click.BadParameter(f"{v!r}: expected KERNEL=THRESHOLD, e.g. batch_decode=0.05",
                                     param_hint="--kernel-threshold") from None
    return out


def _pct(r: float | None) -> str:
    return "" if r is None else f"{(r - 1) * 100:+.1f}%"


def _params(p: dict[str, Any]) -> str:
    keys = ("batch_size", "qo_len", "kv_len", "num_qo_heads", "num_kv_heads", "head_dim",
            "page_size", "use_tensor_cores", "causal", "dtype")
    return " ".join(f"{k}={p[k]}" for k in keys if k in p)


# Per verdict (kernelwatch.core.compare.stats.Verdict, whose values these are): its colour
# and its place in the table. Keyed by value so that the command starts without numpy.
_STYLE = {"regression": "bold red", "improvement": "green", "unchanged": "dim",
          "not_comparable": "yellow", "baseline_only": "cyan", "contender_only": "cyan"}
_ORDER = {"regression": 0, "not_comparable": 1, "improvement": 2, "baseline_only": 3,
          "contender_only": 3, "unchanged": 4}


@click.command("compare")
@click.argument("baseline")
@click.argument("contender")
@click.option("--threshold", type=click.FloatRange(0, 1, max_open=True), default=0.03,
              show_default=True, help="Relative change that matters (0.03 = 3%).")
@click.option("--kernel-threshold", multiple=True, metavar="KERNEL=T",
              help="Per-kernel threshold, e.g. batch_decode=0.05 (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True)
@click.option("--all", "show_all", is_flag=True, help="List unchanged points too.")
def compare_cmd(baseline: str, contender: str, threshold: float,
                kernel_threshold: tuple[str, ...], fmt: str, show_all: bool) -> None:
    """Compare CONTENDER runs with BASELINE runs (run ids, comma-separated): per point the
    ratio of medians with its 95% CI and a verdict; per kernel and backend the geometric
    mean."""
    from kernelwatch.core.compare import UnknownRunsError, Verdict, compare_runs

    b, c = _run_ids(baseline, "BASELINE"), _run_ids(contender, "CONTENDER")
    try:
        with session_scope() as session:
            result = compare_runs(session, b, c, threshold=threshold,
                                  kernel_thresholds=_kernel_thresholds(kernel_threshold))
    except (UnknownRunsError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if fmt == "json":
        sys.stdout.write(json.dumps(result.to_dict(), indent=1) + "\n")
        return
    if fmt == "csv":
        sys.stdout.write(result.to_csv())
        return

    from rich.console import Console
    from rich.table import Table

    console = Console()
    title = (f"{result.contender_label} (runs {','.join(map(str, c))}) vs "
             f"{result.baseline_label} (runs {','.join(map(str, b))}), threshold "
             f"{threshold:.0%}, 95% CI")
    groups = Table(title=title, title_justify="left")
    for col in ("kernel", "backend", "gpu", "geomean", "95% CI", "worst", "regr", "impr",
                "same", "one side", "not ok"):
        groups.add_column(col, justify="right" if col not in ("kernel", "backend") else "left")
    for g in result.groups:
        ci = (f"{_pct(g.geomean_ci_low)} .. {_pct(g.geomean_ci_high)}"
              if g.geomean_ci_low is not None else "")
        groups.add_row(g.kernel, g.backend, g.gpu_sku or "cpu", _pct(g.geomean_ratio), ci,
                       _pct(g.worst_ratio), str(g.regressions), str(g.improvements),
                       str(g.unchanged), str(g.baseline_only + g.contender_only),
                       str(g.not_comparable))
    console.print(groups)
    shown = [p for p in result.points if show_all or p.verdict != Verdict.unchanged]
    shown.sort(key=lambda p: (_ORDER[p.verdict], -(p.ratio or 0)))
    points = Table(title=f"points ({len(shown)} of {len(result.points)}; --all lists every "
                   "point)", title_justify="left")
    for col in ("verdict", "kernel", "backend", "params", "baseline us", "contender us",
                "change", "95% CI", "status"):
        points.add_column(col)
    for p in shown:
        ci = f"{_pct(p.ci_low)} .. {_pct(p.ci_high)}" if p.ci_low is not None else ""
        status = p.reason or (
            "" if p.baseline_status == p.contender_status == "ok"
            else f"{p.baseline_status or '-'} -> {p.contender_status or '-'}")
        points.add_row(
            f"[{_STYLE[p.verdict]}]{p.verdict}[/]", p.kernel, p.backend, _params(p.params),
            f"{p.baseline_median_us:.2f}" if p.baseline_median_us else "",
            f"{p.contender_median_us:.2f}" if p.contender_median_us else "",
            _pct(p.ratio), ci, status,
        )
    console.print(points)
    counts = ", ".join(f"{v} {k}" for k, v in result.counts.items() if v)
    console.print(f"{len(result.points)} points: {counts}")
    for d in result.environment_differences:
        console.print(f"[yellow]environments differ: {d['text']}[/]")


@click.command("release")
@click.argument("version")
@click.option("--previous", help="The baseline version (default: the latest known release "
              "older than VERSION).")
def release_cmd(version: str, previous: str | None) -> None:
    """Benchmark FlashInfer VERSION against the previous release on every GPU tag of the
    fleet, then compare, confirm and notify: the webhook's flow, by hand."""
    from kernelwatch.core.releases import SuiteError, release_response, trigger_release

    try:
        with session_scope() as session:
            start = trigger_release(session, version, previous=previous, source="manual",
                                    submitted_by="cli")
            out = {**release_response(session, start.release), "created": start.created}
    except (ValueError, SuiteError) as e:
        raise click.ClickException(str(e)) from None
    verb = "recorded" if out["created"] else "already known"
    click.echo(f"release {out['version']} {verb} (previous: {out['previous_version']}, "
               f"status: {out['status']})", err=True)
    sys.stdout.write(json.dumps(out, indent=1) + "\n")
