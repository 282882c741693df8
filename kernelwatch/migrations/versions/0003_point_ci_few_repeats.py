"""points.ci_*: recomputed with the CI for few repeats (kernelwatch.core.stats.few_repeats_quantile)

The CI of a point measured in several repeats was the percentile interval of a two-stage
bootstrap, which two runs of the same sweep on an H200 showed to be too narrow for three
repeats (docs/measurement.md, "The CI with few repeats"). Points stored before keep their raw samples,
so their CI is recomputed from them, exactly as core.stats computes it for new points; points of
one repeat are unchanged (their interval is the same percentile interval as before).

Create Date: 2026-11-30 16:40:00
"""

from alembic import op

from kernelwatch.core.results import recompute_stored_cis

revision: str = "0003_point_ci_few_repeats"
down_revision: str | None = "0002_sample_repeat"


def upgrade() -> None:
    recompute_stored_cis(op.get_bind(), repeated_only=True)


def downgrade() -> None:
    # The percentile interval is not kept anywhere to go back to; the samples are unchanged,
    # so the schema of 0002 holds these CIs as well.
    pass
