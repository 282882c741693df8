"""points.params: pos_encoding_mode, as stored points were measured

The positional encoding the attention kernels apply themselves (RoPE, ALiBi) became a
parameter. Points stored before were measured without any: they get pos_encoding_mode NONE,
and the series key of that parameter; jobs' specs name it (core.legacy).

Create Date: 2026-12-05 01:30:00
"""

from alembic import op

from kernelwatch.core.legacy import add_legacy_params, remove_legacy_params

revision: str = "0009_points_pos_encoding"
down_revision: str | None = "0008_points_attention_variant"

PARAMS = ["pos_encoding_mode"]


def upgrade() -> None:
    add_legacy_params(op.get_bind(), PARAMS)


def downgrade() -> None:
    remove_legacy_params(op.get_bind(), PARAMS)
