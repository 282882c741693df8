"""The ``kernelwatch`` command. Each area keeps its commands in its own module."""

from __future__ import annotations

import click

from kernelwatch.cli import catalogue, jobs, releases, service


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Benchmark FlashInfer's GPU kernels: jobs, workers, results, regressions, the catalogue."""


for module in (service, jobs, releases, catalogue):
    module.register(cli)


def main() -> None:
    cli()
