"""The ``kernelwatch`` command. Each area keeps its commands in its own module."""

from __future__ import annotations

import click

from kernelwatch.cli import jobs, releases, service


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Benchmark FlashInfer's GPU attention kernels: jobs, workers, results, regressions."""


for module in (service, jobs, releases):
    module.register(cli)


def main() -> None:
    cli()
