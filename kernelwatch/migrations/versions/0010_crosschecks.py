"""crosschecks: FlashInfer's own benchmark beside each cross-checked point

A spec with ``crosscheck: true`` runs flashinfer_benchmark.py on each measured point's shape
right after kernelwatch's measurement; its median, std, timer, command line and clock are
stored here, one row per point, with the agreement and the causes of a difference.

Create Date: 2026-12-05 02:00:00
"""

import sqlalchemy as sa
from alembic import op

revision: str = "0010_crosschecks"
down_revision: str | None = "0009_points_pos_encoding"


def upgrade() -> None:
    op.create_table(
        "crosschecks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("point_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  sa.ForeignKey("points.id", ondelete="CASCADE"), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("command", sa.Text()),
        sa.Column("median_us", sa.Float()),
        sa.Column("std_us", sa.Float()),
        sa.Column("method", sa.String(40)),
        sa.Column("resolved_backend", sa.String(40)),
        sa.Column("cold_l2", sa.Boolean()),
        sa.Column("cuda_graph_plan", sa.Boolean()),
        sa.Column("clock_mhz", sa.Float()),
        sa.Column("wall_s", sa.Float()),
        sa.Column("diff_pct", sa.Float()),
        sa.Column("agrees", sa.Boolean()),
        sa.Column("causes", sa.JSON()),
        sa.Column("row", sa.JSON()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_crosschecks_point_id", "crosschecks", ["point_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_crosschecks_point_id", table_name="crosschecks")
    op.drop_table("crosschecks")
