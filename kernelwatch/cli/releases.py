"""Regression commands: ``kernelwatch compare`` (the verdict table of two sets of runs) and
``kernelwatch release`` (the release-CI flow by hand). Both use the database directly: they
are operator commands, run where the database is reachable (like ``export``)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from kernelwatch.cli import tables
from kernelwatch.core.db import session_scope
from kernelwatch.core.releases import prebuild_lines
from kernelwatch_harness.catalogue import point_label


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


# Per verdict (kernelwatch.core.compare.stats.Verdict, whose values these are): its colour
# and its place in the table. Keyed by value so that the command starts without numpy.
_STYLE = {"regression": "bold red", "improvement": "green", "unchanged": "dim",
          "not_comparable": "yellow", "baseline_only": "cyan", "contender_only": "cyan"}
_ORDER = {"regression": 0, "not_comparable": 1, "improvement": 2, "baseline_only": 3,
          "contender_only": 3, "unchanged": 4}


@click.command("compare")
@click.argument("baseline", required=False)
@click.argument("contender", required=False)
@click.option("--gpu", help="Instead of run ids: two versions on this GPU (a SKU tag, or cpu) "
              "compared over every finished run of each, pooled per series.")
@click.option("--from", "from_version", help="With --gpu: the baseline version.")
@click.option("--to", "to_version", help="With --gpu: the contender version.")
@click.option("--threshold", type=click.FloatRange(0, 1, max_open=True), default=0.03,
              show_default=True, help="Relative change that matters (0.03 = 3%).")
@click.option("--kernel-threshold", multiple=True, metavar="KERNEL=T",
              help="Per-kernel threshold, e.g. batch_decode=0.05 (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True)
@click.option("--all", "show_all", is_flag=True, help="List unchanged points too.")
def compare_cmd(baseline: str | None, contender: str | None, gpu: str | None,
                from_version: str | None, to_version: str | None, threshold: float,
                kernel_threshold: tuple[str, ...], fmt: str, show_all: bool) -> None:
    """Compare CONTENDER runs with BASELINE runs (run ids, comma-separated), or two versions
    on one GPU (--gpu, --from, --to): per point the ratio of medians with its 95% CI and a
    verdict; per kernel and backend the geometric mean."""
    from kernelwatch.core.compare import UnknownRunsError, Verdict, compare_runs
    from kernelwatch.core.compare.runs import compare_release_pair
    from kernelwatch.core.errors import NotFound

    options: dict[str, Any] = {"threshold": threshold,
                               "kernel_thresholds": _kernel_thresholds(kernel_threshold)}
    try:
        with session_scope() as session:
            if baseline is None and contender is None and gpu and from_version and to_version:
                result = compare_release_pair(session, None if gpu == "cpu" else gpu,
                                              from_version, to_version, **options)
            else:
                if baseline is None or contender is None:
                    raise click.UsageError("give BASELINE and CONTENDER run ids, or --gpu, "
                                           "--from and --to")
                result = compare_runs(session, _run_ids(baseline, "BASELINE"),
                                      _run_ids(contender, "CONTENDER"), **options)
    except (UnknownRunsError, NotFound, ValueError) as e:
        raise click.ClickException(str(e)) from None
    b, c = result.baseline_run_ids, result.contender_run_ids
    if fmt == "json":
        sys.stdout.write(json.dumps(result.to_dict(), indent=1) + "\n")
        return
    if fmt == "csv":
        sys.stdout.write(result.to_csv())
        return


    console = tables.console()
    title = (f"{result.contender_label} (runs {','.join(map(str, c))}) vs "
             f"{result.baseline_label} (runs {','.join(map(str, b))}), threshold "
             f"{threshold:.0%}, 95% CI")
    cols = ["kernel", "backend", "gpu", "geomean", "95% CI", "worst", "regr", "impr", "same",
            "one side", "not ok"]
    groups = tables.table(title, cols, right=tuple(cols[2:]))
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
    points = tables.table(f"points ({len(shown)} of {len(result.points)}; --all lists every "
                          "point)", ["verdict", "kernel", "backend", "params", "baseline us",
                                     "contender us", "change", "95% CI", "status"])
    for p in shown:
        ci = f"{_pct(p.ci_low)} .. {_pct(p.ci_high)}" if p.ci_low is not None else ""
        status = p.reason or (
            "" if p.baseline_status == p.contender_status == "ok"
            else f"{p.baseline_status or '-'} -> {p.contender_status or '-'}")
        points.add_row(
            f"[{_STYLE[p.verdict]}]{p.verdict}[/]", p.kernel, p.backend,
            point_label(p.kernel, p.params),
            f"{p.baseline_median_us:.2f}" if p.baseline_median_us else "",
            f"{p.contender_median_us:.2f}" if p.contender_median_us else "",
            _pct(p.ratio), ci, status,
        )
    console.print(points)
    counts = ", ".join(f"{v} {k}" for k, v in result.counts.items() if v)
    console.print(f"{len(result.points)} points: {counts}")
    for d in result.environment_differences:
        console.print(f"[yellow]environments differ: {d['text']}[/]")
    if result.sources:
        s = result.sources
        console.print(f"{s['series']} series from {s['jobs']} jobs ({s['runs']} runs): "
                      f"{s['how']}")


class _ReleaseGroup(click.Group):
    """``kernelwatch release VERSION`` starts a release (the webhook's flow by hand);
    ``kernelwatch release status VERSION`` follows one."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["start", *args]
        return super().resolve_command(ctx, args)


@click.group("release", cls=_ReleaseGroup)
def release_cmd() -> None:
    """Benchmark a FlashInfer release against the previous one (``release VERSION``), or
    follow one (``release status VERSION``)."""


@release_cmd.command("start")
@click.argument("version")
@click.option("--previous", help="The baseline version. Default: FlashInfer's previous "
              "release (the package index's or the wheelhouse's list; docs/regressions.md). "
              "On a release already recorded, another version re-runs it against that one.")
@click.option("--crosscheck/--no-crosscheck", default=None,
              help="Run flashinfer_benchmark.py beside every GPU point and count the points "
              "that agree. Default: KERNELWATCH_RELEASE_CROSSCHECK, else as the suite says.")
def release_start(version: str, previous: str | None, crosscheck: bool | None) -> None:
    """Benchmark FlashInfer VERSION against its baseline on every GPU tag of the fleet, then
    compare, confirm and notify: the webhook's flow, by hand."""
    from kernelwatch.core.releases import SuiteError, release_response, trigger_release

    try:
        with session_scope() as session:
            start = trigger_release(session, version, previous=previous, source="manual",
                                    submitted_by="cli", crosscheck=crosscheck)
            out = {**release_response(session, start.release), "created": start.created}
    except (ValueError, SuiteError) as e:
        raise click.ClickException(str(e)) from None
    if start.rebaselined_from is not None:
        verb = f"re-run against {previous} (was {start.rebaselined_from})"
    elif out["created"]:
        verb = "recorded"
    else:
        verb = "already known"
        if previous is not None:  # the same baseline again: nothing to re-run
            verb += f", {previous} is already its baseline"
    baseline = out.get("baseline") or {}
    click.echo(f"release {out['version']} {verb} (baseline: {out['previous_version']}"
               f"{', ' + baseline['source'] if baseline.get('source') else ''}; "
               f"status: {out['status']}; follow it: kernelwatch release status "
               f"{out['version']} --watch)", err=True)
    sys.stdout.write(json.dumps(out, indent=1) + "\n")


_FINAL = {"complete", "no_nodes"}


@release_cmd.command("status")
@click.argument("version")
@click.option("--watch", is_flag=True, help="Refresh until the release has its verdict.")
@click.option("--interval", type=click.FloatRange(min=0.5), default=10.0, show_default=True,
              help="Seconds between refreshes with --watch.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer instead.")
def release_status(version: str, watch: bool, interval: float, as_json: bool) -> None:
    """A release's progress per GPU tag, its regressions with their confirmation, its
    improvements, the notification's outcome and the verdict (GET /v1/releases/VERSION)."""
    import time

    from kernelwatch.cli.jobs import _request

    while True:
        body = _request("GET", f"/v1/releases/{version}").json()
        if as_json:
            sys.stdout.write(json.dumps(body, indent=1) + "\n")
        else:
            _print_status(body)
        if not watch or body["status"] in _FINAL:
            return
        time.sleep(interval)


def _print_status(body: dict[str, Any]) -> None:

    console = tables.console()
    baseline = body.get("baseline") or {}
    console.print(f"[bold]release {body['version']}[/] against {body['previous_version']}"
                  f"{' (' + baseline['source'] + ')' if baseline.get('source') else ''}: "
                  f"status {body['status']}, verdict [bold]{body['verdict']}[/]")
    jobs = {j["id"]: j for j in body["jobs"]}
    tags = tables.table("per GPU tag", ["tag", "state", "jobs done", "points compared",
                                         "regressions", "confirmed", "not reproduced",
                                         "improvements", "note"])
    for name, tag in body["tags"].items():
        ids = tag["jobs"]
        done = sum(jobs[i]["status"] in ("succeeded", "partial", "failed", "cancelled")
                   for i in ids if i in jobs)
        counts = tag.get("counts") or {}
        tags.add_row(name, tag["state"], f"{done}/{len(ids)}",
                     str(sum(counts.get(k, 0) for k in ("regression", "improvement",
                                                        "unchanged"))) if counts else "",
                     str(tag.get("regressions", "")), str(tag.get("confirmed", "")),
                     str(tag.get("not_reproduced", "")), str(counts.get("improvement", "")),
                     tag.get("message") or "")
    console.print(tags)
    for line in prebuild_lines(body.get("prebuild")):
        console.print(f"builds: {line}")
    regs = [r for c in body.get("comparisons", []) for r in c["regressions"]]
    if regs:
        table = tables.table("regressions", ["gpu", "kernel", "backend", "params", "change",
                                             "95% CI", "confirmation", "confirmed change",
                                             "confirmed CI"])
        for r in regs:
            table.add_row(r.get("gpu_sku") or "", r["kernel"], r["backend"],
                          point_label(r["kernel"], r["params"]), _pct(r["ratio"]),
                          f"{_pct(r['ci_low'])} .. {_pct(r['ci_high'])}", r["state"],
                          _pct(r.get("confirm_ratio")),
                          f"{_pct(r.get('confirm_ci_low'))} .. {_pct(r.get('confirm_ci_high'))}"
                          if r.get("confirm_ci_low") is not None else "")
        console.print(table)
    note = body.get("notification")
    if note:
        outcome = "sent" if note["sent"] else f"not sent ({note.get('error')})"
        code = note.get("response_code")
        console.print(f"notification: {outcome}; {note.get('attempts', 0)} attempt(s)"
                      + (f", last response HTTP {code}" if code is not None else ""))
    elif body["status"] not in _FINAL:
        console.print(f"waiting: poll {body['status_url']}")
