"""points.ci_*: recomputed on the log scale (kernelwatch.core.stats.interval)

A point's CI was symmetric around its median, so a point whose repeats lie far apart (a noisy
CPU run) could read a CI below zero. The interval is now built on the log scale, for points
and comparisons alike; stored points keep their raw samples, so every CI is recomputed from
them exactly as core.stats computes it for new points.

Create Date: 2026-12-04 23:10:00
"""

from alembic import op

from kernelwatch.core.results import recompute_stored_cis

revision: str = "0005_point_ci_log_scale"
down_revision: str | None = "0004_release_tags"


def upgrade() -> None:
    recompute_stored_cis(op.get_bind(), repeated_only=False)


def downgrade() -> None:
    # The symmetric interval is not kept anywhere to go back to; the samples are unchanged,
    # so the schema of 0004 holds these CIs as well.
    pass
