"""``kernelwatch catalogue``: every kernel, by family, with its parameters and backends. It
reads the installed catalogue (no server needed), the same one ``GET /v1/catalogue`` serves."""

from __future__ import annotations

import json

import click

from kernelwatch.cli import tables
from kernelwatch_harness.family import spell


def register(group: click.Group) -> None:
    """Add this module's commands to the ``kernelwatch`` group."""
    group.add_command(catalogue_cmd)


def _default(p: dict[str, object]) -> str:
    if p["by_backend"]:
        return ", ".join(f"{b}: {spell(v)}"
                         for b, v in p["by_backend"].items())  # type: ignore[attr-defined]
    v = p["default"]
    return "-" if v is None else spell(v)


@click.command("catalogue")
@click.argument("kernel", required=False)
@click.option("--family", help="Only this family's kernels.")
@click.option("--json", "as_json", is_flag=True, help="Print the catalogue as JSON.")
def catalogue_cmd(kernel: str | None, family: str | None, as_json: bool) -> None:
    """The kernels kernelwatch benchmarks; with KERNEL, its parameters: allowed values and
    defaults (per backend where they follow it)."""
    from kernelwatch_harness import catalogue

    kernels = catalogue.describe()
    if family is not None:
        if family not in catalogue.FAMILIES:
            raise click.BadParameter(f"{family!r}; allowed: {', '.join(catalogue.FAMILIES)}",
                                     param_hint="--family")
        kernels = [k for k in kernels if k["family"] == family]
    if kernel is not None:
        kernels = [k for k in kernels if k["name"] == kernel]
        if not kernels:
            raise click.BadParameter(f"unknown kernel {kernel!r}; allowed: "
                                     f"{', '.join(catalogue.KERNELS)}", param_hint="KERNEL")
    if as_json:
        click.echo(json.dumps(kernels, indent=1))
        return
    if kernel is None:
        table = tables.table("kernels", ["kernel", "family", "backends", "routine", "archs",
                                         "description"])
        for k in kernels:
            table.add_row(k["name"], k["family"], " ".join(k["backends"]), k["routine"] or "-",
                          " ".join(k["archs"]), k["description"])
        tables.console().print(table)
        return
    (k,) = kernels
    table = tables.table(f"{k['name']} ({k['family']}): {k['description']}",
                         ["parameter", "allowed", "default", "meaning"])
    for p in k["params"]:
        table.add_row(p["name"], p["allowed"], _default(p), p["doc"])
    tables.console().print(table)
    click.echo(f"backends: {', '.join(k['backends'])}; FlashInfer runs it on "
               f"{', '.join(k['archs'])}; flashinfer_benchmark.py routine: {k['routine'] or '-'}")
    if k["declared"]:
        click.echo("declared only: kernelwatch does not run its FlashInfer call; a point "
                   "naming it is reported unsupported, with the reason")
