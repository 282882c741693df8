"""samples.repeat: which repeat of its point a sample belongs to

Create Date: 2026-11-22 01:10:00
"""

import sqlalchemy as sa
from alembic import op

revision: str = "0002_sample_repeat"
down_revision: str | None = "0001_initial"


def upgrade() -> None:
    # Samples stored before repeats existed are one repeat: 0.
    with op.batch_alter_table("samples") as batch:
        batch.add_column(
            sa.Column("repeat", sa.SmallInteger(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.drop_column("repeat")
