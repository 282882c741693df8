"""points.ci_*: recomputed on the log scale (kernelwatch.core.stats.interval)

A point's CI was symmetric around its median, so a point whose repeats lie far apart (a noisy
CPU run) could read a CI below zero. The interval is now built on the log scale, for points
and comparisons alike; stored points keep their raw samples, so every CI is recomputed from
them exactly as core.stats computes it for new points.

Revision ID: 0005_point_ci_log_scale
Revises: 0004_release_tags
Create Date: 2026-12-04 23:10:00
"""
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from alembic import op

from kernelwatch.core.stats import bootstrap_median_ci

revision: str = "0005_point_ci_log_scale"
down_revision: str | None = "0004_release_tags"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 500


def _points(conn: sa.Connection) -> Iterator[tuple[int, list[float], list[int]]]:
    """(point id, samples, repeats) of every point with samples, streamed in point order."""
    rows = conn.execute(
        sa.text("SELECT point_id, latency_us, repeat FROM samples ORDER BY point_id, iteration"),
        execution_options={"stream_results": True, "yield_per": 10_000},
    )
    current: int | None = None
    values: list[float] = []
    repeats: list[int] = []
    for point_id, latency, repeat in rows:
        if point_id != current:
            if current is not None:
                yield current, values, repeats
            current, values, repeats = point_id, [], []
        values.append(float(latency))
        repeats.append(int(repeat))
    if current is not None:
        yield current, values, repeats


def upgrade() -> None:
    conn = op.get_bind()
    update = sa.text("UPDATE points SET ci_low_us = :lo, ci_high_us = :hi WHERE id = :id")
    # Read to the end before writing: the read streams through a server-side cursor.
    todo = [
        {"id": pid, "lo": lo, "hi": hi}
        for pid, values, repeats in _points(conn)
        for lo, hi in [bootstrap_median_ci(values, repeats=repeats)]
    ]
    for i in range(0, len(todo), BATCH):
        conn.execute(update, todo[i : i + BATCH])


def downgrade() -> None:
    # The symmetric interval is not kept anywhere to go back to; the samples are unchanged,
    # so the schema of 0004 holds these CIs as well.
    pass
