"""points.ci_*: recomputed with the CI for few repeats (kernelwatch.core.stats.few_repeats_quantile)

The CI of a point measured in several repeats was the percentile interval of a two-stage
bootstrap, which two runs of the same sweep on an H200 showed to be too narrow for three
repeats (docs/measurement.md, "The CI with few repeats"). Points stored before keep their raw samples,
so their CI is recomputed from them, exactly as core.stats computes it for new points; points of
one repeat are unchanged (their interval is the same percentile interval as before).

Revision ID: 0003_point_ci_few_repeats
Revises: 0002_sample_repeat
Create Date: 2026-11-30 16:40:00
"""
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from alembic import op

from kernelwatch.core.stats import bootstrap_median_ci

revision: str = "0003_point_ci_few_repeats"
down_revision: str | None = "0002_sample_repeat"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 500


def _points(conn: sa.Connection) -> Iterator[tuple[int, list[float], list[int]]]:
    """(point id, samples, repeats) of every point whose samples span several repeats,
    streamed in point order so a large database is not read into memory at once."""
    rows = conn.execute(
        sa.text(
            "SELECT s.point_id, s.latency_us, s.repeat FROM samples s WHERE s.point_id IN "
            "(SELECT point_id FROM samples GROUP BY point_id HAVING COUNT(DISTINCT repeat) > 1)"
            " ORDER BY s.point_id, s.iteration"
        ),
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
    todo = [
        {"id": pid, "lo": lo, "hi": hi}
        for pid, values, repeats in _points(conn)
        for lo, hi in [bootstrap_median_ci(values, repeats=repeats)]
    ]
    for i in range(0, len(todo), BATCH):
        conn.execute(update, todo[i : i + BATCH])


def downgrade() -> None:
    # The percentile interval is not kept anywhere to go back to; the samples are unchanged,
    # so the schema of 0002 holds these CIs as well.
    pass
