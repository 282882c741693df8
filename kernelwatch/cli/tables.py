"""How the CLI prints tables: at the terminal's width, wrapping long values rather than
cutting them; piped (no terminal, no COLUMNS), wide enough that every value is whole, so a
script never reads "h200-1…" (``--csv`` and ``--json`` are there for machines)."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.table import Table

PIPED_WIDTH = 100_000


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty() or os.environ.get("COLUMNS"):
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=PIPED_WIDTH)


def table(title: str, columns: list[str], right: tuple[str, ...] = ()) -> Table:
    """A table whose columns fold long values onto further lines instead of an ellipsis."""
    out = Table(title=title, title_justify="left")
    for col in columns:
        out.add_column(col, justify="right" if col in right else "left", overflow="fold")
    return out
